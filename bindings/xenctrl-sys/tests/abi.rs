//! Link and layout checks that run without Xen: the libraries resolve and
//! the structures the migration stream depends on have their 4.17 sizes.
use xenctrl_sys as sys;

#[test]
fn featureset_size_links_and_is_sane() {
    // Pure function in libxenguest: proves linking works without a hypervisor.
    let n = unsafe { sys::xc_get_cpu_featureset_size() };
    assert!(n > 0 && n < 64, "featureset size {n}");
}

#[test]
fn abi_sizes_match_xen_4_17() {
    // 5168 bytes is the x86_64 vcpu_guest_context carried in migration records.
    assert_eq!(
        std::mem::size_of::<sys::vcpu_guest_context_x86_64_t>(),
        5168
    );
    assert_eq!(std::mem::size_of::<sys::xen_domctl_createdomain>(), 64);
    assert_eq!(std::mem::size_of::<sys::xc_physinfo_t>(), 112);
}
