//! Run the reference's stream verifier (`verify-stream-v2` from Xen's
//! tools/python) over streams written by this crate.
//!
//! Looked for at `$XENGUEST_VERIFY_STREAM_V2` (with `$XENGUEST_VERIFY_PYTHONPATH`)
//! or where Debian's xen-utils-4.17 installs it (`lab test` unpacks it
//! from the cached Xen source). Skipped with a `skipped: NAME (reason)`
//! line when absent; under `lab test` (`XAPI_LAB_STRICT=1`) or CI a failure.

use std::path::{Path, PathBuf};
use std::process::Command;

use xenguest::stream::libxc::{DomainHeader, ImageHeader};
use xenguest::stream::sample::{sample_pv_records, sample_pv_stream};
use xenguest::stream::{LibxlHeader, LibxlRecord, StreamWriter, XlHeader};

fn find_verifier() -> Result<(PathBuf, PathBuf), String> {
    if let Ok(script) = std::env::var("XENGUEST_VERIFY_STREAM_V2") {
        let pp = std::env::var("XENGUEST_VERIFY_PYTHONPATH").unwrap_or_default();
        return Ok((script.into(), pp.into()));
    }
    for (script, pp) in [
        (
            "/usr/lib/xen-4.17/bin/verify-stream-v2",
            "/usr/lib/xen-4.17/lib/python",
        ),
        (
            "/usr/lib/xen/bin/verify-stream-v2",
            "/usr/lib/xen/lib/python",
        ),
    ] {
        if Path::new(script).exists() {
            return Ok((script.into(), pp.into()));
        }
    }
    Err(
        "verify-stream-v2 not found (install xen-utils-4.17, or set \
         XENGUEST_VERIFY_STREAM_V2 and XENGUEST_VERIFY_PYTHONPATH to a Xen \
         source tree's tools/python/scripts/verify-stream-v2 and tools/python)"
            .into(),
    )
}

/// A missing prerequisite: a failure when strict, else a visible skip (the
/// line goes to the real stdout, past libtest's capture).
fn skip(format: &str, why: &str) {
    let strict = ["XAPI_LAB_STRICT", "CI"]
        .iter()
        .any(|k| std::env::var(k).is_ok_and(|v| !v.is_empty() && v != "0"));
    assert!(!strict, "reference verifier ({format}): {why}");
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "skipped: reference verifier, {format} ({why})");
}

fn verify(format: &str, bytes: &[u8]) {
    let (script, pythonpath) = match find_verifier() {
        Ok(v) => v,
        Err(why) => {
            skip(format, &why);
            return;
        }
    };
    if Command::new("python3").arg("--version").output().is_err() {
        skip(format, "python3 not available");
        return;
    }
    let path = std::env::temp_dir().join(format!(
        "xenguest-verify-{}-{format}.bin",
        std::process::id()
    ));
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("python3")
        .arg(&script)
        .args(["-v", "-f", format, "-i"])
        .arg(&path)
        .env("PYTHONPATH", &pythonpath)
        .output()
        .expect("run python3");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "verify-stream-v2 -f {format} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reference_verifier_accepts_libxc_stream() {
    verify("libxc", &sample_pv_stream());
}

#[test]
fn reference_verifier_accepts_xl_save_file() {
    // No EMULATOR_XENSTORE_DATA here: the reference verifier's check of it
    // compares bytes with str under Python 3 and rejects any non-empty one.
    let mut w = StreamWriter::new(Vec::new());
    w.write_xl_header(&XlHeader::with_json_config(r#"{"c_info":{"type":"pv"}}"#))
        .unwrap();
    w.write_libxl_header(&LibxlHeader::default()).unwrap();
    w.write_libxl_record(&LibxlRecord::LibxcContext).unwrap();
    w.write_libxc_headers(&ImageHeader::default(), &DomainHeader::x86_pv(4, 17))
        .unwrap();
    for r in sample_pv_records() {
        w.write_record(&r).unwrap();
    }
    w.write_libxl_record(&LibxlRecord::End).unwrap();
    verify("xl", &w.into_inner());
}
