//! Client behaviour against the in-process fake xenstored (no Xen needed).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xenstore::fake::FakeXenstored;
use xenstore::{Access, Error, Perm};

async fn next_event(w: &mut xenstore::Watch) -> xenstore::WatchEvent {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch event within 5 s")
        .expect("watch stream open")
}

#[tokio::test]
async fn read_write_directory_rm() {
    let xs = FakeXenstored::new().connect();
    xs.write("/vm/a/name", "alpha").await.unwrap();
    xs.write("/vm/b", b"\x00\x01bin").await.unwrap();
    assert_eq!(xs.read_string("/vm/a/name").await.unwrap(), "alpha");
    assert_eq!(xs.read("/vm/b").await.unwrap(), b"\x00\x01bin");
    // Parents were created implicitly, with empty values.
    assert_eq!(xs.read("/vm/a").await.unwrap(), b"");
    assert_eq!(xs.directory("/vm").await.unwrap(), vec!["a", "b"]);
    xs.mkdir("/vm/c").await.unwrap();
    assert_eq!(xs.directory("/vm").await.unwrap(), vec!["a", "b", "c"]);
    xs.rm("/vm/a").await.unwrap();
    assert!(xs.try_read("/vm/a/name").await.unwrap().is_none());
    assert_eq!(xs.directory("/vm").await.unwrap(), vec!["b", "c"]);
    assert_eq!(xs.get_domain_path(7).await.unwrap(), "/local/domain/7");
}

#[tokio::test]
async fn errors_name_op_path_and_errno() {
    let xs = FakeXenstored::new().connect();
    let e = xs.read("/no/such/node").await.unwrap_err();
    assert!(e.is_enoent());
    assert_eq!(e.to_string(), "xenstore XS_READ /no/such/node: ENOENT");
    let e = xs.write("relative//bad", "x").await.unwrap_err();
    assert_eq!(e.errno(), Some("EINVAL"));
    assert!(matches!(&e, Error::Xenstore { op: "XS_WRITE", path, .. } if path == "relative//bad"));
    let big = vec![b'x'; 5000];
    assert_eq!(
        xs.write("/big", &big).await.unwrap_err().errno(),
        Some("E2BIG")
    );
}

#[tokio::test]
async fn permissions_are_enforced_for_guests() {
    let store = FakeXenstored::new();
    let dom0 = store.connect();
    let guest = store.connect_as(5);
    dom0.write("/secret", "s").await.unwrap();
    assert_eq!(
        dom0.get_perms("/secret").await.unwrap(),
        vec![Perm::new(0, Access::None)]
    );
    let e = guest.read("/secret").await.unwrap_err();
    assert_eq!(e.to_string(), "xenstore XS_READ /secret: EACCES");
    dom0.set_perms(
        "/secret",
        &[Perm::new(0, Access::None), Perm::new(5, Access::Read)],
    )
    .await
    .unwrap();
    assert_eq!(guest.read_string("/secret").await.unwrap(), "s");
    assert_eq!(
        guest.write("/secret", "x").await.unwrap_err().errno(),
        Some("EACCES")
    );
    assert_eq!(
        guest.release_domain(3).await.unwrap_err().errno(),
        Some("EACCES")
    );
}

#[tokio::test]
async fn watch_fires_on_set_and_on_write_below_and_unwatches_on_drop() {
    let store = FakeXenstored::new();
    let xs = store.connect();
    let mut w = xs.watch("/vm/x").await.unwrap();
    // The immediate event xenstored sends when a watch is set.
    assert_eq!(next_event(&mut w).await.path, "/vm/x");
    let other = store.connect();
    other.write("/vm/x/state", "running").await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!(ev.path, "/vm/x/state");
    other.write("/vm/y", "unrelated").await.unwrap();
    other.rm("/vm").await.unwrap();
    // The unrelated write is not delivered; the rm of an ancestor is.
    assert_eq!(next_event(&mut w).await.path, "/vm/x");
    assert_eq!(store.watch_count(), 1);
    drop(w);
    for _ in 0..100 {
        if store.watch_count() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(store.watch_count(), 0, "UNWATCH sent on drop");
}

#[tokio::test]
async fn transaction_conflict_retries_then_commits() {
    let store = FakeXenstored::new();
    let xs = store.connect();
    let rival = store.connect();
    xs.write("/counter", "10").await.unwrap();
    let attempts = Arc::new(AtomicU32::new(0));
    let mut w = xs.watch("/counter").await.unwrap();
    next_event(&mut w).await;
    let v = xs
        .transaction(|tx| {
            let (rival, attempts) = (rival.clone(), attempts.clone());
            async move {
                let n: u32 = tx.read_string("/counter").await?.parse().unwrap();
                if attempts.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Someone else changes the node mid-transaction.
                    rival.write("/counter", "100").await?;
                }
                tx.write("/counter", (n + 1).to_string()).await?;
                Ok(n + 1)
            }
        })
        .await
        .unwrap();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        2,
        "first commit got EAGAIN"
    );
    assert_eq!(v, 101);
    assert_eq!(xs.read_string("/counter").await.unwrap(), "101");
    // Watchers see the rival's write, then the committed one.
    assert_eq!(next_event(&mut w).await.path, "/counter");
    assert_eq!(next_event(&mut w).await.path, "/counter");
}

#[tokio::test]
async fn failed_transaction_is_aborted() {
    let xs = FakeXenstored::new().connect();
    let r: xenstore::Result<()> = xs
        .transaction(|tx| async move {
            tx.write("/tx/partial", "1").await?;
            tx.read("/tx/missing").await.map(drop)
        })
        .await;
    assert!(r.unwrap_err().is_enoent());
    assert!(xs.try_read("/tx/partial").await.unwrap().is_none());
    // Inside a transaction, reads see the transaction's own writes.
    let seen = xs
        .transaction(|tx| async move {
            tx.write("/tx/a", "1").await?;
            tx.read_string("/tx/a").await
        })
        .await
        .unwrap();
    assert_eq!(seen, "1");
}

#[tokio::test]
async fn domain_introduce_release_fire_special_watches() {
    let xs = FakeXenstored::new().connect();
    let mut intro = xs.watch("@introduceDomain").await.unwrap();
    let mut rel = xs.watch("@releaseDomain").await.unwrap();
    next_event(&mut intro).await;
    next_event(&mut rel).await;
    assert!(!xs.is_domain_introduced(9).await.unwrap());
    xs.introduce_domain(9, 0xfeffc, 1).await.unwrap();
    assert_eq!(next_event(&mut intro).await.path, "@introduceDomain");
    assert!(xs.is_domain_introduced(9).await.unwrap());
    xs.release_domain(9).await.unwrap();
    assert_eq!(next_event(&mut rel).await.path, "@releaseDomain");
    let e = xs.release_domain(9).await.unwrap_err();
    assert_eq!(e.to_string(), "xenstore XS_RELEASE domid 9: ENOENT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_are_matched_by_req_id() {
    let xs = FakeXenstored::new().connect();
    let mut tasks = Vec::new();
    for i in 0..50 {
        let xs = xs.clone();
        tasks.push(tokio::spawn(async move {
            let p = format!("/c/{i}");
            xs.write(&p, i.to_string()).await.unwrap();
            assert_eq!(xs.read_string(&p).await.unwrap(), i.to_string());
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(xs.directory("/c").await.unwrap().len(), 50);
}

#[tokio::test]
async fn unix_socket_transport_speaks_the_same_protocol() {
    // A minimal server on a real Unix socket that answers one READ, to
    // exercise connect_unix and framing over a socket.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("socket");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut h = [0u8; 16];
        s.read_exact(&mut h).await.unwrap();
        let len = u32::from_le_bytes(h[12..16].try_into().unwrap()) as usize;
        let mut p = vec![0; len];
        s.read_exact(&mut p).await.unwrap();
        assert_eq!(p, b"/x\0");
        let mut reply = h;
        reply[12..16].copy_from_slice(&2u32.to_le_bytes());
        s.write_all(&reply).await.unwrap();
        s.write_all(b"ok").await.unwrap();
    });
    let xs = xenstore::Xenstore::connect_unix(path.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(xs.read("/x").await.unwrap(), b"ok");
    // The server hung up: the next request fails with Closed, not a hang.
    let e = tokio::time::timeout(Duration::from_secs(5), xs.read("/y"))
        .await
        .unwrap();
    assert!(matches!(e, Err(Error::Closed)), "{e:?}");
}

#[tokio::test]
async fn shutdown_request_ack_and_suspend_evtchn() {
    let fake = FakeXenstored::new();
    let xs = fake.connect();
    let guest = fake.connect();
    assert_eq!(xs.suspend_event_channel(5).await.unwrap(), None);
    xs.write("/local/domain/5/device/suspend/event-channel", "17")
        .await
        .unwrap();
    assert_eq!(xs.suspend_event_channel(5).await.unwrap(), Some(17));

    xs.request_shutdown(5, "suspend").await.unwrap();
    assert_eq!(
        xs.read_string(&xenstore::control_shutdown_path(5))
            .await
            .unwrap(),
        "suspend"
    );
    // Nobody acknowledges: false after the timeout.
    assert!(!xs
        .wait_shutdown_acked(5, Duration::from_millis(100))
        .await
        .unwrap());
    // The "guest" clears the node a little later.
    let ack = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        guest
            .write("/local/domain/5/control/shutdown", "")
            .await
            .unwrap();
    });
    assert!(xs
        .wait_shutdown_acked(5, Duration::from_secs(5))
        .await
        .unwrap());
    ack.await.unwrap();
}
