//! The hand-over logic against fake Xen operations over a socket pair:
//! who resumes, destroys or discards what, on every kind of failure.

use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

type Log = Arc<Mutex<Vec<String>>>;

fn log() -> Log {
    Arc::new(Mutex::new(Vec::new()))
}

fn events(l: &Log) -> Vec<String> {
    l.lock().unwrap().clone()
}

const PAYLOAD: usize = 300_000;

/// Writes `FAKE`, a length and that many bytes, as a save would stream.
struct FakeSource {
    log: Log,
    fail_suspend: bool,
}

impl Source for FakeSource {
    fn config(&mut self, _domid: u32) -> Result<String> {
        Ok("{}".into())
    }

    fn save(
        &mut self,
        _domid: u32,
        out: &mut dyn Write,
        opts: &SaveOptions,
        progress: &mut dyn FnMut(&Progress),
    ) -> save::Result<SaveStats> {
        assert_eq!(opts.after, AfterSave::LeaveSuspended);
        assert!(matches!(opts.wrapper, save::Wrapper::Xl { .. }));
        let body = vec![0x5a; PAYLOAD];
        let r = (|| -> std::io::Result<()> {
            out.write_all(b"FAKE")?;
            out.write_all(&(PAYLOAD as u64).to_le_bytes())?;
            out.write_all(&body[..PAYLOAD / 2])?;
            progress(&Progress::Suspending);
            if self.fail_suspend {
                return Err(std::io::Error::other("guest did not suspend"));
            }
            self.log.lock().unwrap().push("suspended".into());
            out.write_all(&body[PAYLOAD / 2..])?;
            out.flush()
        })();
        match r {
            Ok(()) => Ok(SaveStats {
                bytes: PAYLOAD as u64 + 12,
                ..SaveStats::default()
            }),
            Err(e) => {
                // As the real save: a failure resumes the guest itself.
                self.log.lock().unwrap().push("save failed".into());
                Err(e.into())
            }
        }
    }

    fn resume(&mut self, _domid: u32) -> save::Result<()> {
        self.log.lock().unwrap().push("resume".into());
        Ok(())
    }

    fn destroy(&mut self, _domid: u32) -> save::Result<()> {
        self.log.lock().unwrap().push("destroy".into());
        Ok(())
    }
}

struct FakeDest {
    log: Log,
    name_taken: bool,
    fail_unpause: bool,
}

impl FakeDest {
    fn new(log: &Log) -> Self {
        FakeDest {
            log: log.clone(),
            name_taken: true,
            fail_unpause: false,
        }
    }
}

impl Destination for FakeDest {
    fn restore(
        &mut self,
        input: &mut dyn Read,
        opts: &RestoreOptions,
    ) -> std::result::Result<Restored, RestoreError> {
        assert!(opts.paused && opts.incoming);
        let mut head = [0u8; 12];
        input.read_exact(&mut head)?;
        if &head[..4] != b"FAKE" {
            return Err(RestoreError::Invalid("bad magic".into()));
        }
        let n = u64::from_le_bytes(head[4..].try_into().unwrap());
        if n > PAYLOAD as u64 {
            return Err(RestoreError::Invalid("too long".into()));
        }
        let mut body = vec![0u8; n as usize];
        input.read_exact(&mut body).inspect_err(|_| {
            self.log.lock().unwrap().push("restore failed".into());
        })?;
        self.log.lock().unwrap().push("restored paused".into());
        Ok(Restored {
            domid: 7,
            name: if self.name_taken {
                "guest--incoming".into()
            } else {
                "guest".into()
            },
            uuid: String::new(),
            store_mfn: 0,
            store_port: 0,
            console_mfn: 0,
            console_port: 0,
            pages: 0,
            vcpus: 1,
            stream_version: 3,
        })
    }

    fn unpause(&mut self, _domid: u32) -> Result<()> {
        if self.fail_unpause {
            return Err(MigrateError::Destination("unpause: EINVAL".into()));
        }
        self.log.lock().unwrap().push("unpause".into());
        Ok(())
    }

    fn discard(&mut self, _domid: u32) -> Result<()> {
        self.log.lock().unwrap().push("discard".into());
        Ok(())
    }

    fn rename(&mut self, _domid: u32, name: &str) -> Result<()> {
        self.log.lock().unwrap().push(format!("rename {name}"));
        Ok(())
    }
}

fn src(l: &Log) -> FakeSource {
    FakeSource {
        log: l.clone(),
        fail_suspend: false,
    }
}

/// Runs our receiver on a thread against `sender` on this one.
fn run_pair<T>(mut dest: FakeDest, sender: impl FnOnce(UnixStream) -> T) -> (T, Result<Restored>) {
    let (a, b) = UnixStream::pair().unwrap();
    let h = std::thread::spawn(move || receive_with(&mut dest, b, &ReceiveOptions::default()));
    let t = sender(a);
    (t, h.join().unwrap())
}

#[test]
fn messages_round_trip() {
    let all = [
        Msg::Ready,
        Msg::Received {
            domid: 12,
            name: "my guest--incoming".into(),
        },
        Msg::Error("restore: bad stream content: pfn 0x10".into()),
        Msg::Unpause,
        Msg::Abort("user".into()),
        Msg::Running,
        Msg::SourceGone,
        Msg::Complete { name: "g".into() },
    ];
    for m in all {
        let line = m.encode();
        assert!(line.ends_with('\n') && line.starts_with("xenguest-migrate/1 "));
        assert_eq!(
            Msg::parse(line.trim_end_matches('\n').as_bytes()).unwrap(),
            m
        );
    }
    // Line breaks in free text cannot split a message.
    let l = Msg::Error("a\nb\r".into()).encode();
    assert_eq!(l.matches('\n').count(), 1);
    assert!(Msg::Error("x".repeat(10_000)).encode().len() <= MAX_LINE);
}

#[test]
fn bad_control_lines_are_errors_not_panics() {
    for l in [
        &b""[..],
        b"ready",
        b"xenguest-migrate/2 ready",
        b"xenguest-migrate/1",
        b"xenguest-migrate/1 ",
        b"xenguest-migrate/1 ready now",
        b"xenguest-migrate/1 received",
        b"xenguest-migrate/1 received x name",
        b"xenguest-migrate/1 received 99999999999 n",
        b"xenguest-migrate/1 received 3 ",
        b"xenguest-migrate/1 complete ",
        b"xenguest-migrate/1 UNPAUSE",
        b"xenguest-migrate/1 unpause\xff",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(Msg::parse(l), Err(MigrateError::Protocol(_))),
            "{l:?}"
        );
    }
}

#[test]
fn recv_needs_a_whole_line() {
    let mut c = Conn::new(std::io::Cursor::new(b"xenguest-migrate/1 unpause".to_vec()));
    assert!(matches!(c.recv("x"), Err(MigrateError::Closed(_))));
    let mut c = Conn::new(std::io::Cursor::new(vec![b'a'; 10 * MAX_LINE]));
    assert!(matches!(c.recv("x"), Err(MigrateError::Protocol(_))));
    let mut c = Conn::new(std::io::Cursor::new(Vec::new()));
    assert!(matches!(c.recv("x"), Err(MigrateError::Closed(_))));
}

#[test]
fn a_migration_hands_over_and_renames() {
    let (sl, rl) = (log(), log());
    let mut seen = Vec::new();
    let (s, r) = run_pair(FakeDest::new(&rl), |a| {
        send_with(&mut src(&sl), 5, a, &MigrateOptions::default(), |p| {
            seen.push(p.clone())
        })
    });
    let s = s.unwrap();
    let r = r.unwrap();
    assert_eq!(r.name, "guest");
    assert_eq!(s.dest_domid, 7);
    assert_eq!(s.dest_name.as_deref(), Some("guest"));
    assert_eq!(events(&sl), ["suspended", "destroy"]);
    assert_eq!(events(&rl), ["restored paused", "unpause", "rename guest"]);
    assert!(seen.contains(&MigrateProgress::ClearedToUnpause));
    assert_eq!(seen.last(), Some(&MigrateProgress::SourceDestroyed));
}

#[test]
fn no_rename_when_the_name_was_free() {
    let (sl, rl) = (log(), log());
    let mut d = FakeDest::new(&rl);
    d.name_taken = false;
    let (s, r) = run_pair(d, |a| {
        send_with(&mut src(&sl), 5, a, &MigrateOptions::default(), |_| {})
    });
    assert_eq!(s.unwrap().dest_name.as_deref(), Some("guest"));
    assert_eq!(r.unwrap().name, "guest");
    assert_eq!(events(&rl), ["restored paused", "unpause"]);
}

#[test]
fn a_failed_unpause_resumes_the_source() {
    let (sl, rl) = (log(), log());
    let mut d = FakeDest::new(&rl);
    d.fail_unpause = true;
    let (s, r) = run_pair(d, |a| {
        send_with(&mut src(&sl), 5, a, &MigrateOptions::default(), |_| {})
    });
    assert!(matches!(s, Err(MigrateError::Receiver(_))), "{s:?}");
    assert!(r.is_err());
    assert_eq!(events(&sl), ["suspended", "resume"]);
    assert_eq!(events(&rl), ["restored paused", "discard"]);
}

#[test]
fn a_failed_suspend_leaves_nothing_at_the_receiver() {
    let (sl, rl) = (log(), log());
    let (s, r) = run_pair(FakeDest::new(&rl), |a| {
        let mut x = FakeSource {
            log: sl.clone(),
            fail_suspend: true,
        };
        send_with(&mut x, 5, a, &MigrateOptions::default(), |_| {})
    });
    assert!(matches!(s, Err(MigrateError::Save(_))), "{s:?}");
    // The sender dropped the connection mid-stream.
    assert!(matches!(r, Err(MigrateError::Restore(_))), "{r:?}");
    assert_eq!(events(&sl), ["save failed"]);
    assert_eq!(events(&rl), ["restore failed"]);
}

/// A stream that fails every write after `left` bytes and shuts the
/// socket down (a cut connection).
struct Cut {
    s: UnixStream,
    left: usize,
}

impl Read for Cut {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.s.read(b)
    }
}

impl Write for Cut {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            let _ = self.s.shutdown(std::net::Shutdown::Both);
            return Err(std::io::ErrorKind::ConnectionReset.into());
        }
        let n = b.len().min(self.left);
        self.left -= n;
        self.s.write(&b[..n])
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

#[test]
fn a_cut_during_the_final_pass_resumes_the_source() {
    let (sl, rl) = (log(), log());
    let (s, r) = run_pair(FakeDest::new(&rl), |a| {
        let cut = Cut {
            s: a,
            left: PAYLOAD * 3 / 4,
        };
        send_with(&mut src(&sl), 5, cut, &MigrateOptions::default(), |_| {})
    });
    assert!(s.is_err());
    assert!(r.is_err());
    assert_eq!(events(&sl), ["suspended", "save failed"]);
    assert_eq!(events(&rl), ["restore failed"]);
}

#[test]
fn a_cut_before_unpause_resumes_the_source_and_discards_the_copy() {
    let (sl, rl) = (log(), log());
    // Enough for the stream, not for `unpause`.
    let (s, r) = run_pair(FakeDest::new(&rl), |a| {
        let cut = Cut {
            s: a,
            left: PAYLOAD + 12,
        };
        send_with(&mut src(&sl), 5, cut, &MigrateOptions::default(), |_| {})
    });
    assert!(matches!(s, Err(MigrateError::Io(_))), "{s:?}");
    assert!(matches!(r, Err(MigrateError::Closed(_))), "{r:?}");
    assert_eq!(events(&sl), ["suspended", "resume"]);
    assert_eq!(events(&rl), ["restored paused", "discard"]);
}

/// A scripted receiver: `ready`, reads the fake stream, then `script`.
fn scripted_receiver(script: impl FnOnce(&mut Conn<UnixStream>) + Send + 'static) -> UnixStream {
    let (a, b) = UnixStream::pair().unwrap();
    std::thread::spawn(move || {
        let mut c = Conn::new(b);
        c.send(&Msg::Ready).unwrap();
        let mut head = [0u8; 12];
        c.r.read_exact(&mut head).unwrap();
        let mut body = vec![0u8; PAYLOAD];
        c.r.read_exact(&mut body).unwrap();
        script(&mut c);
    });
    a
}

#[test]
fn receiver_gone_after_the_stream_resumes_the_source() {
    let sl = log();
    let a = scripted_receiver(|_| {});
    let s = send_with(&mut src(&sl), 5, a, &MigrateOptions::default(), |_| {});
    assert!(matches!(s, Err(MigrateError::Closed(_))), "{s:?}");
    assert_eq!(events(&sl), ["suspended", "resume"]);
}

#[test]
fn a_receiver_error_resumes_the_source() {
    let sl = log();
    let a = scripted_receiver(|c| c.send(&Msg::Error("no memory".into())).unwrap());
    let s = send_with(&mut src(&sl), 5, a, &MigrateOptions::default(), |_| {});
    assert!(
        matches!(&s, Err(MigrateError::Receiver(m)) if m == "no memory"),
        "{s:?}"
    );
    assert_eq!(events(&sl), ["suspended", "resume"]);
}

#[test]
fn silence_after_unpause_is_in_doubt_and_keeps_the_source_suspended() {
    let sl = log();
    let a = scripted_receiver(|c| {
        c.send(&Msg::Received {
            domid: 3,
            name: "g--incoming".into(),
        })
        .unwrap();
        assert_eq!(c.recv("x").unwrap(), Msg::Unpause);
        // Dies here: did it unpause?  The sender cannot know.
    });
    let s = send_with(&mut src(&sl), 5, a, &MigrateOptions::default(), |_| {});
    assert!(
        matches!(s, Err(MigrateError::InDoubt { domid: 5, .. })),
        "{s:?}"
    );
    assert_eq!(events(&sl), ["suspended"], "neither resumed nor destroyed");
}

#[test]
fn garbage_from_the_receiver_resumes_the_source() {
    let sl = log();
    let a = scripted_receiver(|c| {
        c.r.get_mut()
            .write_all(b"HTTP/1.1 400 Bad Request\r\n")
            .unwrap();
    });
    let s = send_with(&mut src(&sl), 5, a, &MigrateOptions::default(), |_| {});
    assert!(matches!(s, Err(MigrateError::Protocol(_))), "{s:?}");
    assert_eq!(events(&sl), ["suspended", "resume"]);
}

/// A scripted sender against our receiver.
fn scripted_sender(rl: &Log, script: impl FnOnce(&mut Conn<UnixStream>)) -> Result<Restored> {
    let ((), r) = run_pair(FakeDest::new(rl), |a| {
        let mut c = Conn::new(a);
        assert_eq!(c.recv("x").unwrap(), Msg::Ready);
        script(&mut c);
    });
    r
}

fn fake_stream(c: &mut Conn<UnixStream>) {
    let w = c.r.get_mut();
    w.write_all(b"FAKE").unwrap();
    w.write_all(&(PAYLOAD as u64).to_le_bytes()).unwrap();
    w.write_all(&vec![1u8; PAYLOAD]).unwrap();
}

#[test]
fn receiver_discards_on_abort_or_hangup_before_unpause() {
    let rl = log();
    let r = scripted_sender(&rl, |c| {
        fake_stream(c);
        assert!(matches!(c.recv("x").unwrap(), Msg::Received { .. }));
        c.send(&Msg::Abort("operator".into())).unwrap();
        assert!(matches!(c.recv("x").unwrap(), Msg::Error(_)));
    });
    assert!(matches!(r, Err(MigrateError::Aborted(_))), "{r:?}");
    assert_eq!(events(&rl), ["restored paused", "discard"]);

    let rl = log();
    let r = scripted_sender(&rl, |c| {
        fake_stream(c);
        assert!(matches!(c.recv("x").unwrap(), Msg::Received { .. }));
        // A partial `unpause` does not count.
        c.r.get_mut().write_all(b"xenguest-migrate/1 unpa").unwrap();
    });
    assert!(matches!(r, Err(MigrateError::Closed(_))), "{r:?}");
    assert_eq!(events(&rl), ["restored paused", "discard"]);
}

#[test]
fn receiver_reports_a_bad_stream() {
    let rl = log();
    let r = scripted_sender(&rl, |c| {
        c.r.get_mut().write_all(b"JUNKJUNKJUNK").unwrap();
        assert!(matches!(c.recv("x").unwrap(), Msg::Error(m) if m.contains("bad magic")));
    });
    assert!(matches!(r, Err(MigrateError::Restore(_))), "{r:?}");
    assert!(events(&rl).is_empty());
}

#[test]
fn receiver_keeps_running_without_source_gone() {
    let rl = log();
    let r = scripted_sender(&rl, |c| {
        fake_stream(c);
        assert!(matches!(c.recv("x").unwrap(), Msg::Received { .. }));
        c.send(&Msg::Unpause).unwrap();
        assert_eq!(c.recv("x").unwrap(), Msg::Running);
    });
    // Running, under the temporary name (the source may still exist).
    assert_eq!(r.unwrap().name, "guest--incoming");
    assert_eq!(events(&rl), ["restored paused", "unpause"]);
}
