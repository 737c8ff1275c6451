//! Tests against the real xenstored in a Xen 4.17 dom0 (run by the lab as
//! root with `--ignored --test-threads=1`). Results are cross-checked with
//! the `xenstore-read`/`xenstore-write` tools and `xl`.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dom0_support::run;
use xenstore::{Error, Xenstore};

fn base() -> String {
    format!("/tool/xapi-rs-test-{}", std::process::id())
}

async fn next(w: &mut xenstore::Watch) -> xenstore::WatchEvent {
    tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("watch event in time")
        .expect("connection open")
}

#[tokio::test]
#[ignore = "needs a Xen dom0: run by lab test"]
async fn write_read_agree_with_xenstore_tools() {
    let xs = Xenstore::connect().await.unwrap();
    let p = format!("{}/rw", base());
    xs.write(&p, "from-rust").await.unwrap();
    assert_eq!(run("xenstore-read", &[&p]).trim(), "from-rust");
    run("xenstore-write", &[&p, "from-cli"]);
    assert_eq!(xs.read_string(&p).await.unwrap(), "from-cli");
    xs.mkdir(&format!("{}/dir", base())).await.unwrap();
    let mut kids = xs.directory(&base()).await.unwrap();
    kids.sort();
    assert_eq!(kids, vec!["dir", "rw"]);
    assert_eq!(xs.get_domain_path(0).await.unwrap(), "/local/domain/0");
    let perms = xs.get_perms(&p).await.unwrap();
    assert_eq!(perms[0].domid, 0, "dom0 owns what it wrote");
    xs.rm(&base()).await.unwrap();
    assert!(xs.try_read(&p).await.unwrap().is_none());
}

#[tokio::test]
#[ignore = "needs a Xen dom0: run by lab test"]
async fn watch_fires_on_write() {
    let xs = Xenstore::connect().await.unwrap();
    let p = format!("{}/watched", base());
    let mut w = xs.watch(&p).await.unwrap();
    assert_eq!(next(&mut w).await.path, p, "initial event");
    run("xenstore-write", &[&format!("{p}/child"), "1"]);
    assert_eq!(next(&mut w).await.path, format!("{p}/child"));
    drop(w);
    xs.rm(&base()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Xen dom0: run by lab test"]
async fn transaction_conflict_retries_and_commits() {
    let xs = Xenstore::connect().await.unwrap();
    let rival = Xenstore::connect().await.unwrap();
    let p = format!("{}/counter", base());
    xs.write(&p, "1").await.unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let v = xs
        .transaction(|tx| {
            let (rival, attempts, p) = (rival.clone(), attempts.clone(), p.clone());
            async move {
                let n: u32 = tx.read_string(&p).await?.parse().unwrap();
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    rival.write(&p, "50").await?;
                }
                tx.write(&p, (n + 1).to_string()).await?;
                Ok(n + 1)
            }
        })
        .await
        .unwrap();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "xenstored refused the first commit"
    );
    assert_eq!(v, 51);
    assert_eq!(run("xenstore-read", &[&p]).trim(), "51");
    xs.rm(&base()).await.unwrap();
}

#[tokio::test]
#[ignore = "needs a Xen dom0: run by lab test"]
async fn release_domain_watch_fires_when_a_guest_is_destroyed() {
    let xs = Xenstore::connect().await.unwrap();
    let name = "xenstore-dom0-test";
    let _ = Command::new("xl").args(["destroy", name]).output();
    let out = run("/usr/local/bin/lab-guest", &[name, "128", "0"]);
    let domid: u32 = out
        .lines()
        .rev()
        .find_map(|l| l.trim().parse().ok())
        .expect("domid");
    assert!(xs.is_domain_introduced(domid).await.unwrap());
    let home = xs.get_domain_path(domid).await.unwrap();
    assert_eq!(xs.read_string(&format!("{home}/name")).await.unwrap(), name);
    let mut w = xs.watch("@releaseDomain").await.unwrap();
    assert_eq!(next(&mut w).await.path, "@releaseDomain", "initial event");
    run("xl", &["destroy", name]);
    assert_eq!(next(&mut w).await.path, "@releaseDomain");
    // xenstored forgets the domain once it is gone.
    for _ in 0..100 {
        if !xs.is_domain_introduced(domid).await.unwrap() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("domain {domid} still introduced after destroy");
}

#[tokio::test]
#[ignore = "needs a Xen dom0: run by lab test"]
async fn errors_carry_op_path_and_errno() {
    let xs = Xenstore::connect().await.unwrap();
    let p = format!("{}/does/not/exist", base());
    let e = xs.read(&p).await.unwrap_err();
    assert_eq!(e.to_string(), format!("xenstore XS_READ {p}: ENOENT"));
    let e = xs.write("/bad path with spaces", "x").await.unwrap_err();
    assert_eq!(e.errno(), Some("EINVAL"), "{e}");
    let e = xs.release_domain(0x7fef).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Error::Xenstore {
                op: "XS_RELEASE",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.errno().is_some());
}

/// Re-runs this binary as `nobody`: xenstored's socket is root-only, so the
/// connection must fail with a permission error that names the endpoint.
#[test]
#[ignore = "needs a Xen dom0: run by lab test"]
fn unprivileged_connect_is_denied() {
    if dom0_support::in_unprivileged_child() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let e = rt
            .block_on(Xenstore::connect())
            .err()
            .expect("nobody cannot connect");
        match &e {
            Error::Connect { path, source } => {
                assert_eq!(path, xenstore::SOCKET_PATH);
                assert_eq!(source.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
            }
            other => panic!("unexpected {other}"),
        }
        return;
    }
    dom0_support::rerun_as_nobody("unprivileged_connect_is_denied");
}
