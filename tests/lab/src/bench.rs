//! `lab bench api`: how fast xapi-rs answers in the lab, the way clients use
//! it, from the build machine over the forwarded HTTP port. It prints figures;
//! it asserts nothing (speed is measured, not tested).
//!
//! There is no reference xapi in the lab to run beside it, so these are
//! absolute figures under TCG: compare runs of the same lab, not machines.

mod migrate;
pub use migrate::migrate;

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
