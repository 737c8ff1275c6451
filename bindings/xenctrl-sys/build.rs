//! Generates the FFI bindings from the installed Xen headers (libxen-dev).
use std::env;
use std::path::PathBuf;

fn main() {
    for lib in [
        "xenctrl",
        "xenguest",
        "xenforeignmemory",
        "xenevtchn",
        "xencall",
        "xengnttab",
        "xentoollog",
    ] {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=build.rs");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_arg("-D__XEN_TOOLS__")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        // Keep the generated surface (and build time) small: only what the
        // safe crate uses plus the types those functions pull in.
        .allowlist_function("xc_interface_(open|close)")
        .allowlist_function("xc_physinfo|xc_cputopoinfo|xc_getcpuinfo|xc_numainfo")
        .allowlist_function("xc_get_cpu_featureset(_size)?|xc_get_cpu_levelling_caps")
        .allowlist_function("xc_domain_.*")
        .allowlist_function("xc_vcpu_(getcontext|setcontext|getinfo)")
        .allowlist_function("xc_shadow_control|xc_logdirty_control")
        .allowlist_function("xc__hypercall_buffer_(alloc|free)(_pages)?")
        .allowlist_function("xc_evtchn_alloc_unbound|xc_evtchn_status|xc_evtchn_reset")
        .allowlist_function("xc_maximum_ram_page|xc_version|xc_domctl")
        .allowlist_function("xc_map_m2p|xc_machphys_mfn_list|xc_mmuext_op|xc_dom_gnttab_seed")
        .allowlist_function("xc_cpu_policy_(init|destroy|get_domain|serialise|get_size)")
        .allowlist_function("xc_set_domain_cpu_policy|xc_cpuid_apply_policy")
        // The PV domain builder (libxenguest) and libxc's last-error record,
        // where the builder leaves its messages.
        .allowlist_function("xc_dom_(allocate|release|kernel_file|module_file|boot_xen_init)")
        .allowlist_function("xc_dom_(parse_image|mem_init|boot_mem_init|build_image|boot_image)")
        .allowlist_function("xc_dom_(gnttab_init|translated|guest_os)")
        .allowlist_function("xc_get_last_error|xc_clear_last_error|xc_error_code_to_desc")
        .allowlist_function("xenforeignmemory_.*")
        .allowlist_function("xenevtchn_.*")
        .allowlist_type("xc_dominfo_t|xc_domaininfo_t|xc_physinfo_t|xc_cputopo_t|xc_cpuinfo_t")
        .allowlist_type("vcpu_guest_context_any_t|xen_domctl_createdomain|xc_shadow_op_stats_t")
        .allowlist_type("xc_dom_image|xc_error|mmuext_op|shared_info|xen_cpuid_leaf_t|xen_msr_entry_t|xc_vcpuinfo_t")
        .allowlist_var("XEN_DOMCTL_.*|XEN_DOMINF_.*|XEN_SYSCTL_PHYSCAP_.*|XEN_X86_EMU_.*")
        .allowlist_var("XEN_CPUID_.*|XC_CPU_.*|SHUTDOWN_.*|XEN_VERSION|XEN_SUBVERSION|SIF_.*")
        .allowlist_var("XC_PAGE_.*|XEN_PAGE_.*|DOMID_.*|XENFOREIGNMEMORY_.*|MMUEXT_.*")
        .allowlist_var("XEN_SYSCTL_cpu_featureset_.*|XEN_INVALID_.*|XC_HYPERCALL_BUFFER_.*")
        .derive_default(true)
        .derive_debug(true)
        .layout_tests(true)
        .generate()
        .expect("bindgen over the Xen headers failed (is libxen-dev installed?)");

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(out).expect("write bindings.rs");
}
