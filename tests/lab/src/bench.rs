//! `lab bench api`: how fast xapi-rs answers in the lab, the way clients use
//! it, from the build machine over the forwarded HTTP port. It prints figures;
//! it asserts nothing (speed is measured, not tested).
//!
//! There is no reference xapi in the lab to run beside it, so these are
//! absolute figures under TCG: compare runs of the same lab, not machines.

use crate::hosts::LabState;
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One keep-alive HTTP/1.1 connection speaking JSON-RPC 2.0.
struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
    id: u64,
}

impl Client {
    fn connect(port: u16) -> Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        s.set_nodelay(true)?;
        Ok(Client {
            r: BufReader::new(s.try_clone()?),
            w: s,
            id: 0,
        })
    }

    fn call(&mut self, method: &str, params: Value) -> Result<Value> {
        self.id += 1;
        let body = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": self.id})
            .to_string();
        write!(
            self.w,
            "POST /jsonrpc HTTP/1.1\r\nHost: lab\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        let mut len = None;
        let mut line = String::new();
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                bail!("connection closed by xapi-rs");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = Some(v.trim().parse::<usize>()?);
                }
            }
        }
        let mut buf = vec![0; len.context("response without Content-Length")?];
        self.r.read_exact(&mut buf)?;
        let v: Value = serde_json::from_slice(&buf)?;
        if let Some(e) = v.get("error") {
            bail!("{method} failed: {e}");
        }
        Ok(v["result"].clone())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the API benchmark against host 1 and prints the figures.
pub fn api(requests: usize) -> Result<()> {
    let st = LabState::load()?;
    let h = st.host(1)?;
    let mut c = Client::connect(h.http_port)?;
    let session = c.call(
        "session.login_with_password",
        json!(["root", st.password, "1.0", "lab-bench"]),
    )?;
    // host.get_all_records: the call clients make constantly.
    let mut lat = Vec::with_capacity(requests);
    let start = Instant::now();
    for _ in 0..requests {
        let t = Instant::now();
        let r = c.call("host.get_all_records", json!([session]))?;
        lat.push(t.elapsed());
        if r.as_object().map(|o| o.is_empty()).unwrap_or(true) {
            bail!("host.get_all_records returned no host");
        }
    }
    let total = start.elapsed();
    lat.sort();
    println!(
        "host.get_all_records: {requests} requests on one connection: {:.1} req/s, p50 {:.2} ms, p99 {:.2} ms",
        requests as f64 / total.as_secs_f64(),
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99))
    );

    // event.from wake-up: a change made on one connection, seen on another.
    let pool = c.call("pool.get_all", json!([session]))?[0].clone();
    let mut waker = Client::connect(h.http_port)?;
    let mut wakeups = vec![];
    for i in 0..10 {
        let token = c.call("event.from", json!([session, ["pool"], "", 0.0]))?["token"].clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let s2 = session.clone();
        let mut listener = Client::connect(h.http_port)?;
        let waiter = std::thread::spawn(move || -> Result<()> {
            tx.send(())?;
            let r = listener.call("event.from", json!([s2, ["pool"], token, 30.0]))?;
            if r["events"].as_array().map(|e| e.is_empty()).unwrap_or(true) {
                bail!("event.from returned no event");
            }
            Ok(())
        });
        rx.recv()?;
        // Give the listener time to block in event.from before the change.
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        waker.call(
            "pool.set_name_label",
            json!([session, pool, format!("bench-{i}")]),
        )?;
        waiter
            .join()
            .map_err(|_| anyhow::anyhow!("listener panicked"))??;
        wakeups.push(t.elapsed());
    }
    wakeups.sort();
    println!(
        "event.from wake-up after pool.set_name_label: p50 {:.1} ms, max {:.1} ms (10 runs)",
        ms(percentile(&wakeups, 0.5)),
        ms(*wakeups.last().unwrap_or(&Duration::ZERO))
    );

    // `xe host-cpu-list` wall time, the whole client process, over TLS.
    let xe = crate::guestkit::target_dir().join("release/xe");
    if xe.exists() {
        let mut walls = vec![];
        for _ in 0..5 {
            let t = Instant::now();
            let out = std::process::Command::new(&xe)
                .args(["-s", "localhost", "-p", &h.https_port.to_string()])
                .args(["-u", "root", "-pw", &st.password, "host-cpu-list"])
                .output()?;
            walls.push(t.elapsed());
            if !out.status.success() {
                bail!(
                    "xe host-cpu-list failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        walls.sort();
        println!(
            "xe host-cpu-list (TLS, whole process): median {:.1} ms, max {:.1} ms (5 runs)",
            ms(percentile(&walls, 0.5)),
            ms(*walls.last().unwrap_or(&Duration::ZERO))
        );
    } else {
        println!("xe host-cpu-list: skipped, {} not built", xe.display());
    }
    c.call("session.logout", json!([session]))?;
    Ok(())
}

/// One migration's figures.
struct MigrationRun {
    /// The largest pause the guest's probe reported (`probe: gap ms=`);
    /// None if it saw none above its threshold.
    gap_ms: Option<u64>,
    total: Duration,
    bytes: u64,
}

const BENCH_GUEST: &str = "bench-mig";

/// The probe's gap lines so far (ms each).
fn guest_gaps(st: &LabState) -> Result<Vec<u64>> {
    let log = st.exec_ok(
        1,
        &format!("lab-guest-log {BENCH_GUEST}"),
        Duration::from_secs(120),
    )?;
    Ok(log
        .lines()
        .filter_map(|l| l.split("probe: gap ms=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect())
}

/// Runs `script` (which prints `bytes N` and `ns N` lines) in dom0 and
/// collects the figures and the guest's pause.
fn migration_run(st: &LabState, script: &str) -> Result<MigrationRun> {
    let before = guest_gaps(st)?.len();
    let out = st.exec_ok(1, script, Duration::from_secs(1200))?;
    let field = |k: &str| -> Option<u64> {
        out.lines()
            .rev()
            .filter_map(|l| l.strip_prefix(k))
            .find_map(|v| v.trim().parse().ok())
    };
    let (Some(bytes), Some(ns)) = (field("bytes "), field("ns ")) else {
        bail!("migration printed no figures:\n{out}");
    };
    // The guest prints its gap once it runs again: poll for it a while.
    let t = Instant::now();
    let mut gaps = guest_gaps(st)?;
    while gaps.len() <= before && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_secs(1));
        gaps = guest_gaps(st)?;
    }
    Ok(MigrationRun {
        gap_ms: gaps.get(before..).and_then(|g| g.iter().copied().max()),
        total: Duration::from_nanos(ns),
        bytes,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// `lab bench migrate`: on a freshly booted lab (migrations wear the TCG
/// dom0 out), one probe guest (256 MiB, 16 MiB working set) is migrated to
/// localhost `runs` times by `xl migrate` and `runs` times by xenguest;
/// prints each run's guest-observed downtime, total time and bytes, and
/// the medians' ratios (ours / xl).
pub fn migrate(runs: usize) -> Result<()> {
    if LabState::load().map(|s| s.all_alive()).unwrap_or(false) {
        crate::util::say("bench migrate: taking the running lab down for a fresh host");
        crate::hosts::down()?;
    }
    let st = crate::up(&crate::UpOptions {
        wait_xapi: false,
        ..crate::UpOptions::default()
    })?;
    st.exec_ok(
        1,
        &format!(
            "rm -f /var/log/xen/console/guest-{g}*.log; lab-guest {g} 256 16",
            g = BENCH_GUEST
        ),
        Duration::from_secs(300),
    )?;
    let t = Instant::now();
    while !st
        .exec_ok(
            1,
            &format!("lab-guest-log {BENCH_GUEST}"),
            Duration::from_secs(60),
        )?
        .contains("probe: verify ok")
    {
        if t.elapsed() > Duration::from_secs(300) {
            bail!("the bench guest never verified its memory");
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    // xl's bytes: its "ssh" command counts the stream on its way through.
    st.push_bytes(
        1,
        b"#!/bin/bash\n# lab-ssh-count HOST CMD...: lab-ssh-local that counts the bytes sent\nshift\ntee >(wc -c > /tmp/lab-xl-bytes) | sh -c \"$*\"\n",
        "/usr/local/bin/lab-ssh-count",
        0o755,
    )?;
    let xl = format!(
        "set -e; rm -f /tmp/lab-xl-bytes; s=$(date +%s%N); xl migrate -s lab-ssh-count {g} localhost >&2; \
         e=$(date +%s%N); for i in $(seq 50); do [ -s /tmp/lab-xl-bytes ] && break; sleep 0.2; done; \
         echo ns $((e - s)); echo bytes $(cat /tmp/lab-xl-bytes)",
        g = BENCH_GUEST
    );
    let ours = format!(
        "set -e; X=/usr/local/lib/xapi-rs/xenguest; rm -f /tmp/bench-recv.out; \
         $X migrate-receive --listen 127.0.0.1:7799 > /tmp/bench-recv.out 2>&1 & \
         for i in $(seq 100); do grep -q listening /tmp/bench-recv.out && break; sleep 0.2; done; \
         s=$(date +%s%N); $X migrate-send --domid $(xl domid {g}) --to 127.0.0.1:7799 --quiet 2> /tmp/bench-send.err || {{ cat /tmp/bench-send.err; exit 1; }}; \
         e=$(date +%s%N); wait; echo ns $((e - s)); \
         echo bytes $(sed -n 's/.* bytes \\([0-9]*\\) .*/\\1/p' /tmp/bench-send.err | tail -1); cat /tmp/bench-send.err >&2",
        g = BENCH_GUEST
    );
    let mut results: Vec<(&str, Vec<MigrationRun>)> = vec![];
    for (who, script) in [("xl", &xl), ("xenguest", &ours)] {
        let mut v = vec![];
        for i in 1..=runs {
            let r = migration_run(&st, script).with_context(|| format!("{who} migration {i}"))?;
            println!(
                "{who:>8} run {i}: guest downtime {}, total {:.0} ms, bytes {}",
                r.gap_ms
                    .map_or("< probe threshold (300 ms)".to_string(), |g| format!(
                        "{g} ms"
                    )),
                ms(r.total),
                r.bytes
            );
            v.push(r);
        }
        results.push((who, v));
        // Speed is not all: the probe checks the guest's memory as it runs.
        let log = st.exec_ok(
            1,
            &format!("lab-guest-log {BENCH_GUEST}"),
            Duration::from_secs(120),
        )?;
        println!(
            "{who:>8} runs done: {} `verify ok`, {} `verify FAILED` in the guest's log so far",
            log.matches("probe: verify ok").count(),
            log.matches("probe: verify FAILED").count()
        );
    }
    let med =
        |v: &[MigrationRun], f: &dyn Fn(&MigrationRun) -> f64| median(v.iter().map(f).collect());
    let gap = |r: &MigrationRun| r.gap_ms.unwrap_or(0) as f64;
    let tot = |r: &MigrationRun| ms(r.total);
    let byt = |r: &MigrationRun| r.bytes as f64;
    let (x, o) = (&results[0].1, &results[1].1);
    for (who, v) in &results {
        println!(
            "{who:>8} medians: downtime {:.0} ms, total {:.0} ms, bytes {:.0}",
            med(v, &gap),
            med(v, &tot),
            med(v, &byt)
        );
    }
    println!(
        "ratio downtime={:.2} total={:.2} bytes={:.2}",
        med(o, &gap) / med(x, &gap),
        med(o, &tot) / med(x, &tot),
        med(o, &byt) / med(x, &byt)
    );
    Ok(())
}
