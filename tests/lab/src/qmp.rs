//! A client for QEMU's machine protocol (QMP) on a host's Unix socket: the
//! few commands the lab's snapshots need (stop, migrate to a file, status,
//! quit). QMP is one JSON object per line each way; the greeting is
//! answered with `qmp_capabilities`, then every command gets one `return`
//! or `error` reply, with asynchronous `event` lines in between.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the QMP socket at `path` and leaves negotiation mode.
    pub fn connect(path: &Path) -> Result<Qmp> {
        let s = UnixStream::connect(path)
            .with_context(|| format!("connecting to QMP at {}", path.display()))?;
        // Every reply is prompt (migration is polled, not waited for).
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut q = Qmp {
            reader: BufReader::new(s.try_clone()?),
            writer: s,
        };
        let greeting = q.read()?;
        if greeting.get("QMP").is_none() {
            bail!("not a QMP greeting: {greeting}");
        }
        q.execute("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    fn read(&mut self) -> Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP connection closed");
        }
        serde_json::from_str(&line).with_context(|| format!("bad QMP line {line:?}"))
    }

    /// Runs `command` and returns its `return` value; a QMP `error` is an
    /// error carrying its description.
    pub fn execute(&mut self, command: &str, arguments: Value) -> Result<Value> {
        let mut msg = serde_json::to_vec(&json!({"execute": command, "arguments": arguments}))?;
        msg.push(b'\n');
        self.writer.write_all(&msg)?;
        loop {
            let v = self.read()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {}", reply_error(e));
            }
            // An event (STOP, RESUME, MIGRATION...): not the reply.
        }
    }
}

/// The text of a QMP `error` object: `{"class": ..., "desc": ...}`.
pub fn reply_error(e: &Value) -> String {
    format!(
        "{} ({})",
        e["desc"].as_str().unwrap_or("no description"),
        e["class"].as_str().unwrap_or("?")
    )
}

/// Where a migration stands, from `query-migrate`'s reply.
#[derive(Debug, PartialEq)]
pub enum Migration {
    Running,
    Completed,
    Failed(String),
}

pub fn migration_state(reply: &Value) -> Migration {
    match reply["status"].as_str() {
        Some("completed") => Migration::Completed,
        Some("failed") | Some("cancelled") => Migration::Failed(
            reply["error-desc"]
                .as_str()
                .unwrap_or(reply["status"].as_str().unwrap_or_default())
                .to_string(),
        ),
        // "setup", "active", "device", ... and none yet.
        _ => Migration::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn migration_states_from_query_migrate() {
        assert_eq!(
            migration_state(&json!({"status": "active", "ram": {}})),
            Migration::Running
        );
        assert_eq!(migration_state(&json!({})), Migration::Running);
        assert_eq!(
            migration_state(&json!({"status": "completed"})),
            Migration::Completed
        );
        assert_eq!(
            migration_state(&json!({"status": "failed", "error-desc": "disk full"})),
            Migration::Failed("disk full".into())
        );
        assert_eq!(
            migration_state(&json!({"status": "cancelled"})),
            Migration::Failed("cancelled".into())
        );
    }

    /// Against a fake QEMU: the greeting, capabilities, an event before the
    /// reply, and an error reply.
    #[test]
    fn commands_skip_events_and_report_errors() {
        let dir = std::env::temp_dir().join(format!("lab-qmp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("q.sock");
        let _ = std::fs::remove_file(&sock);
        let l = UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut w = s;
            let mut got = vec![];
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            for reply in [
                r#"{"return": {}}"#,
                "{\"event\": \"STOP\"}\n{\"return\": {\"status\": \"paused\", \"running\": false}}",
                r#"{"error": {"class": "GenericError", "desc": "no such thing"}}"#,
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                got.push(serde_json::from_str::<Value>(&line).unwrap());
                writeln!(w, "{reply}").unwrap();
            }
            got
        });
        let mut q = Qmp::connect(&sock).unwrap();
        let st = q.execute("query-status", json!({})).unwrap();
        assert_eq!(st["status"], "paused");
        let e = q.execute("bogus", json!({})).unwrap_err().to_string();
        assert!(e.contains("no such thing") && e.contains("bogus"), "{e}");
        let got = server.join().unwrap();
        assert_eq!(got[0]["execute"], "qmp_capabilities");
        assert_eq!(got[1]["execute"], "query-status");
        let _ = std::fs::remove_dir_all(dir);
    }
}
