//! `xenguest inspect FILE` on sample streams.

use std::process::Command;

use xenguest::stream::sample::{sample_pv_stream, sample_xl_save_file};

fn inspect(bytes: &[u8], name: &str) -> std::process::Output {
    let path = std::env::temp_dir().join(format!("xenguest-inspect-{}-{name}", std::process::id()));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xenguest"))
        .arg("inspect")
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    out
}

#[test]
fn inspect_lists_records() {
    let out = inspect(&sample_xl_save_file(), "xl");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "xl header",
        "libxl record LIBXC_CONTEXT",
        "X86_PV_INFO",
        "STATIC_DATA_END",
        "PAGE_DATA (0x1): 8 pfns",
        "X86_PV_VCPU_MSRS",
        "libxl record END",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn inspect_reports_truncation() {
    let s = sample_pv_stream();
    let out = inspect(&s[..s.len() - 8], "trunc");
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("truncated"), "{err}");
}

#[test]
fn usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_xenguest"))
        .arg("inspect")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
