//! Lab hosts: Xen under QEMU TCG, each dom0 reachable over ssh and the
//! toolstack's ports forwarded to 127.0.0.1, all joined by a private network.
//!
//! The private network is a userspace hub (`lab hub`) relaying Ethernet frames
//! between the hosts' QEMU `dgram` netdevs over Unix datagram sockets, so lab
//! traffic never touches an IP stack of the build machine.

use crate::image::{Credentials, Dom0Image};
use crate::util::{
    base_run_dir, belongs_to_lab, output_with_timeout, pid_alive, poll, run_dir, say, shell_quote,
    tail, wait_output, OWN_LABS,
};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Xen options the TCG hosts need.
///
/// `spec-ctrl=eager-fpu`: QEMU 7.2's TCG evidently does not reliably raise #NM for SSE
/// instructions while CR0.TS is set, and Xen switches FPU state lazily on
/// this (AMD-flavoured) CPU, relying on that #NM: a vCPU then used another
/// context's XMM registers. Seen as the last 48 bytes of a 4 KiB memcpy in
/// dom0 going wrong (zeros or another program's bytes: glibc keeps the tail
/// of a copy in XMM registers across its `rep movsb`), about once per 250 000
/// page copies under load, which corrupted guest pages in migration
/// streams, files written in dom0 and processes' heaps. With eager FPU
/// switching Xen never relies on #NM; `dom0_lab_integrity` checks it.
const XEN_TCG_ARGS: &str = "spec-ctrl=eager-fpu";

/// QEMU's CPU for the hosts. Without -smap,-smep dom0 crashes at boot under
/// TCG (lab.md). QEMU 7.2's TCG emulation of AVX/AVX2 is new and corrupts
/// registers in OpenSSL's vector code (sshd segfaulted in libcrypto), so the
/// hosts get no AVX: software then takes its SSE paths, which TCG runs right.
/// The hosts also get no PCID/INVPCID, so Xen flushes with plain CR3/CR4
/// writes (tried while chasing the memory corruption [`XEN_TCG_ARGS`] fixes;
/// kept as the simpler path).
pub const CPU_MODEL: &str = "max,-smap,-smep,-avx,-avx2,-fma,-f16c,-pcid,-invpcid";

/// The QEMU CPU model: [`CPU_MODEL`] unless `XAPI_LAB_QEMU_CPU` says otherwise
/// (for trying the lab on other CPU models).
fn cpu_model() -> String {
    std::env::var("XAPI_LAB_QEMU_CPU").unwrap_or_else(|_| CPU_MODEL.to_string())
}

/// TCG with one thread per vCPU unless `XAPI_LAB_TCG_THREAD=single`.
fn tcg_accel() -> String {
    let t = std::env::var("XAPI_LAB_TCG_THREAD").unwrap_or_else(|_| "multi".into());
    format!("tcg,thread={t}")
}

/// Memory per host and for its dom0 (lab.md: 3 GiB hosts, 1.5 GiB dom0).
pub const HOST_MEM_MB: u32 = 3072;
pub const DOM0_MEM_MB: u32 = 1536;

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HostState {
    pub index: u32,
    pub pid: u32,
    pub ssh_port: u16,
    pub http_port: u16,
    pub https_port: u16,
    pub serial_log: PathBuf,
    /// QEMU's command line, to boot the host again on the same overlay
    /// ([`LabState::power_on`]).
    #[serde(default)]
    pub qemu_argv: Vec<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct LabState {
    pub hosts: Vec<HostState>,
    pub hub_pid: u32,
    pub key: PathBuf,
    pub password: String,
    /// What the hosts run, for saving them to a snapshot ([`crate::snapshot`]).
    #[serde(default)]
    pub machine: Option<Machine>,
}

pub fn state_path() -> PathBuf {
    run_dir().join("state.json")
}

impl LabState {
    /// The running lab, if any.
    pub fn load() -> Result<LabState> {
        Self::load_from(&run_dir())
    }

    /// The lab whose run directory is `dir`.
    pub fn load_from(dir: &Path) -> Result<LabState> {
        let p = dir.join("state.json");
        let s = std::fs::read_to_string(&p)
            .with_context(|| format!("no lab is up ({} missing): run `lab up`", p.display()))?;
        Ok(serde_json::from_str(&s)?)
    }

    pub(crate) fn save(&self) -> Result<()> {
        std::fs::write(state_path(), serde_json::to_string_pretty(self)?)?;
        Ok(())
    }

    pub fn host(&self, n: u32) -> Result<&HostState> {
        self.hosts
            .iter()
            .find(|h| h.index == n)
            .with_context(|| format!("the lab has no host {n} ({} up)", self.hosts.len()))
    }

    pub fn all_alive(&self) -> bool {
        !self.hosts.is_empty() && self.hosts.iter().all(|h| pid_alive(h.pid))
    }

    /// The ssh multiplexing socket of a host: one authenticated connection
    /// carries every `exec`, so TCG-slow key exchanges happen once per boot.
    fn control_path(h: &HostState) -> PathBuf {
        run_dir().join(format!("ssh-{}.ctl", h.ssh_port))
    }

    /// Starts the host's ssh master connection (in the background). If it
    /// dies, later commands quietly fall back to their own connections.
    pub fn start_ssh_master(&self, h: &HostState) -> Result<()> {
        let mut c = self.ssh_cmd(h);
        c.args([
            "-o",
            "ControlMaster=yes",
            "-o",
            "ControlPersist=yes",
            "-f",
            "-N",
        ]);
        // stdio must not be pipes: the backgrounded master would hold them.
        let st = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !st.success() {
            bail!("host {}: ssh master connection failed ({st})", h.index);
        }
        Ok(())
    }

    /// Restarts the master connection if it is gone (ssh drops it when a
    /// dom0 under heavy load misses its keep-alives for a minute): fresh
    /// connections of their own then time out in the banner exchange.
    fn revive_ssh_master(&self, h: &HostState) {
        if !Self::control_path(h).exists() {
            let _ = self.start_ssh_master(h);
        }
    }

    fn ssh_cmd(&self, h: &HostState) -> Command {
        let mut c = Command::new("ssh");
        c.arg("-o")
            .arg(format!("ControlPath={}", Self::control_path(h).display()))
            .args(["-o", "ControlMaster=no"]);
        c.args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "-o",
            "ServerAliveInterval=15",
            "-o",
            "ServerAliveCountMax=4",
            "-i",
        ])
        .arg(&self.key)
        .args(["-p", &h.ssh_port.to_string(), "root@127.0.0.1"]);
        c
    }

    /// Runs a shell command in host `n`'s dom0, bounded by `timeout`.
    pub fn exec(&self, n: u32, script: &str, timeout: Duration) -> Result<Output> {
        self.exec_tries(n, script, timeout, 5)
    }

    /// `exec` with at most `max_tries` connection attempts (1: no retry).
    pub fn exec_tries(
        &self,
        n: u32,
        script: &str,
        timeout: Duration,
        max_tries: u32,
    ) -> Result<Output> {
        let h = self.host(n)?;
        let secs = timeout.as_secs().max(1);
        let remote = format!("timeout -k 5 {secs} sh -c {}", shell_quote(script));
        with_ssh_retries(max_tries, || {
            self.revive_ssh_master(h);
            let mut c = self.ssh_cmd(h);
            c.arg(&remote);
            output_with_timeout(&mut c, timeout + Duration::from_secs(30))
                .with_context(|| format!("lab exec on host {n}: {script}"))
        })
    }

    /// Runs a command in dom0 and returns its stdout; non-zero exit is an error
    /// carrying its output.
    pub fn exec_ok(&self, n: u32, script: &str, timeout: Duration) -> Result<String> {
        let out = self.exec(n, script, timeout)?;
        if !out.status.success() {
            bail!(
                "host {n}: `{script}` failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs a command in dom0 with the caller's stdio; returns its exit code.
    pub fn exec_interactive(&self, n: u32, argv: &[String]) -> Result<i32> {
        let h = self.host(n)?;
        let remote: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        let st = self.ssh_cmd(h).arg(remote.join(" ")).status()?;
        Ok(st.code().unwrap_or(255))
    }

    /// Copies `data` to `remote` in host `n`'s dom0 with mode `mode`.
    pub fn push_bytes(&self, n: u32, data: &[u8], remote: &str, mode: u32) -> Result<()> {
        let h = self.host(n)?;
        let q = shell_quote(remote);
        let script = format!(
            "mkdir -p \"$(dirname {q})\" && cat > {q}.part && chmod {mode:o} {q}.part && mv -f {q}.part {q}"
        );
        let out = with_ssh_retries(5, || {
            self.revive_ssh_master(h);
            let mut child = self
                .ssh_cmd(h)
                .arg(&script)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            let mut stdin = child.stdin.take().context("ssh stdin")?;
            let data = data.to_vec();
            let writer = std::thread::spawn(move || stdin.write_all(&data));
            let out = wait_output(child, Duration::from_secs(600), "lab push")?;
            let _ = writer.join();
            Ok(out)
        })?;
        if !out.status.success() {
            bail!(
                "copying to host {n}:{remote} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    pub fn push(&self, n: u32, local: &Path, remote: &str) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let data = std::fs::read(local).with_context(|| format!("reading {}", local.display()))?;
        let mode = std::fs::metadata(local)?.permissions().mode() & 0o7777;
        self.push_bytes(n, &data, remote, mode)
    }

    /// The shell lines of `lab env`: `export NAME=VALUE`, quoted for a
    /// POSIX shell, for `eval "$(lab env)"`.
    pub fn env_lines(&self) -> Result<String> {
        let h = self.host(1)?;
        let vars = [
            ("XAPI_URL", format!("https://127.0.0.1:{}", h.https_port)),
            ("XAPI_HTTP", format!("http://127.0.0.1:{}", h.http_port)),
            ("XAPI_USER", "root".to_string()),
            ("XAPI_PASSWORD", self.password.clone()),
            ("XAPI_LAB_SSH_PORT", h.ssh_port.to_string()),
            ("XAPI_LAB_HOSTS", self.hosts.len().to_string()),
            // So that `lab` commands in that shell reach this lab.
            ("XAPI_LAB_RUN", run_dir().display().to_string()),
        ];
        Ok(vars
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
            .collect())
    }

    /// A command line of the workspace's `xe` (built by `lab up`) for host
    /// 1 with `args`, ready to paste: `-s localhost` for TLS to the
    /// forwarded HTTPS port (our `xe`, like the reference's, takes
    /// `127.0.0.1` for "this host": Unix socket, then plain HTTP).
    pub fn xe_line(&self, args: &[&str]) -> Result<String> {
        let h = self.host(1)?;
        let xe = crate::guestkit::target_dir().join("release/xe");
        let xe = xe.canonicalize().unwrap_or(xe);
        let port = h.https_port.to_string();
        let words = [xe.display().to_string()]
            .into_iter()
            .chain(
                [
                    "-s",
                    "localhost",
                    "-p",
                    &port,
                    "-u",
                    "root",
                    "-pw",
                    &self.password,
                ]
                .map(String::from),
            )
            .chain(args.iter().map(|a| a.to_string()));
        Ok(words.map(|w| shell_quote(&w)).collect::<Vec<_>>().join(" "))
    }

    /// `lab status`: one line per host.
    pub fn status_lines(&self) -> String {
        self.hosts
            .iter()
            .map(|h| {
                format!(
                    "host {}: {} pid {} ssh {} http {} https {} serial {}\n",
                    h.index,
                    if pid_alive(h.pid) { "running" } else { "DEAD" },
                    h.pid,
                    h.ssh_port,
                    h.http_port,
                    h.https_port,
                    h.serial_log.display()
                )
            })
            .collect()
    }
}

/// The labs with a state file in the run directory `base`: the user's
/// (`lab up`), then those `lab test` and `lab bench migrate` boot in its
/// subdirectories ([`OWN_LABS`]).
pub fn labs_in(base: &Path) -> Vec<(PathBuf, LabState)> {
    std::iter::once(base.to_path_buf())
        .chain(crate::util::own_lab_dirs(base))
        .filter_map(|d| LabState::load_from(&d).ok().map(|st| (d, st)))
        .collect()
}

/// [`labs_in`] the user's run directory.
pub fn labs() -> Vec<(PathBuf, LabState)> {
    labs_in(&base_run_dir())
}

/// Runs an ssh invocation up to `max_tries` times while ssh itself failed to
/// connect (exit 255 before the remote command ran): the dom0 may be busy
/// under TCG. Any other outcome is returned as it is.
fn with_ssh_retries(max_tries: u32, mut run: impl FnMut() -> Result<Output>) -> Result<Output> {
    let mut tries = 0;
    loop {
        let out = run()?;
        tries += 1;
        if out.status.code() == Some(255) && ssh_transport_failed(&out.stderr) && tries < max_tries
        {
            std::thread::sleep(Duration::from_secs(2));
            continue;
        }
        return Ok(out);
    }
}

/// Whether ssh's stderr says the connection itself failed (so the remote
/// command never started and a retry is safe).
fn ssh_transport_failed(stderr: &[u8]) -> bool {
    let e = String::from_utf8_lossy(stderr);
    // 255 and nothing said: seen under load when the connection dropped.
    if e.trim().is_empty() {
        return true;
    }
    [
        "kex_exchange_identification",
        "Connection closed by",
        "Connection reset",
        "Connection refused",
        "Connection timed out",
        "banner exchange",
        // Seen once under TCG with the right key: auth failed before the
        // command ran, so a retry is still safe.
        "Permission denied (publickey",
    ]
    .iter()
    .any(|m| e.contains(m))
}

/// `n` distinct free ports. All listeners are held until every port is
/// picked: released one by one, the kernel may hand out the same port twice
/// (CI once got one port for both :80 and :443, and QEMU refused to start).
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0u16; N];
    for (p, l) in ports.iter_mut().zip(&listeners) {
        *p = l.local_addr()?.port();
    }
    Ok(ports)
}

/// Runs the lab network hub until killed: every frame from one host's socket
/// goes to every other host's socket.
pub fn hub(dir: &Path, hosts: u32) -> Result<()> {
    use std::os::unix::net::UnixDatagram;
    let me = dir.join("hub.sock");
    let _ = std::fs::remove_file(&me);
    let sock = UnixDatagram::bind(&me)?;
    let peers: Vec<PathBuf> = (1..=hosts)
        .map(|i| dir.join(format!("host{i}.net.sock")))
        .collect();
    let mut buf = vec![0u8; 65536 + 64];
    loop {
        let (n, from) = sock.recv_from(&mut buf)?;
        let from = from.as_pathname().map(Path::to_path_buf);
        for p in &peers {
            if Some(p) != from.as_ref() {
                // A host not up yet or gone: drop the frame, as a cable would.
                let _ = sock.send_to(&buf[..n], p);
            }
        }
    }
}

/// What every host of a lab runs: the same on a cold boot and when a host
/// is restored from a snapshot (QEMU must be given the same machine to
/// load a saved state into).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Machine {
    pub xen: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cpus: u32,
}

/// Host `h`'s disk overlay in the run directory `dir`.
pub fn overlay_path(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("host{i}.qcow2"))
}

/// Host `i`'s QMP socket (QEMU's machine protocol: [`crate::qmp`]).
pub fn qmp_path(dir: &Path, i: u32) -> PathBuf {
    dir.join(format!("host{i}.qmp"))
}

/// A host with fresh ports and its files in `dir`; not running yet.
pub(crate) fn new_host(dir: &Path, i: u32) -> Result<HostState> {
    let [ssh_port, http_port, https_port] = free_ports::<3>()?;
    Ok(HostState {
        index: i,
        pid: 0,
        ssh_port,
        http_port,
        https_port,
        serial_log: dir.join(format!("host{i}.serial.log")),
        qemu_argv: vec![],
    })
}

/// QEMU's command line for host `h` of machine `m` in the run directory
/// `dir`: a cold boot from its overlay ([`overlay_path`]).
pub fn qemu_argv(m: &Machine, dir: &Path, h: &HostState) -> Vec<String> {
    let i = h.index;
    let cpus = m.cpus;
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-name", &format!("xapi-rs-lab-host{i}")])
        .args(["-accel", &tcg_accel(), "-cpu", &cpu_model()])
        .args(["-m", &HOST_MEM_MB.to_string(), "-smp", &cpus.to_string()])
        .arg("-kernel")
        .arg(&m.xen)
        .args([
            "-append",
            &format!(
                "dom0_mem={DOM0_MEM_MB}M,max:{DOM0_MEM_MB}M dom0_max_vcpus={cpus} console=com1 com1=115200 noreboot {XEN_TCG_ARGS} {}",
                std::env::var("XAPI_LAB_XEN_ARGS").unwrap_or_default()
            ),
        ])
        .arg("-initrd")
        .arg(format!(
            "{} root=/dev/vda rw console=hvc0 net.ifnames=0 lab.host={i},{}",
            m.kernel.display(),
            m.initrd.display()
        ))
        .arg("-drive")
        .arg(format!(
            "file={},if=virtio,format=qcow2,cache=unsafe",
            overlay_path(dir, i).display()
        ))
        .arg("-netdev")
        .arg(format!(
            "user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:{}-:22,hostfwd=tcp:127.0.0.1:{}-:80,hostfwd=tcp:127.0.0.1:{}-:443",
            h.ssh_port, h.http_port, h.https_port
        ))
        .args(["-device", "virtio-net-pci,netdev=mgmt"])
        .arg("-netdev")
        .arg(format!(
            "dgram,id=lab,local.type=unix,local.path={},remote.type=unix,remote.path={}",
            dir.join(format!("host{i}.net.sock")).display(),
            dir.join("hub.sock").display()
        ))
        .args([
            "-device",
            &format!("virtio-net-pci,netdev=lab,mac=52:54:00:77:00:{i:02x}"),
        ])
        .args(["-display", "none", "-monitor", "none", "-vga", "none"])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", qmp_path(dir, i).display()))
        // Appending: a host restored from a snapshot continues the log the
        // snapshot's boot wrote (copied in first).
        .arg("-chardev")
        .arg(format!(
            "file,id=serial0,path={},append=on",
            h.serial_log.display()
        ))
        .args(["-serial", "chardev:serial0"])
        .arg("-pidfile")
        .arg(dir.join(format!("host{i}.pid")))
        .arg("-daemonize");
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
}

/// Starts the lab network hub for `n` hosts in `dir`; returns its pid.
pub(crate) fn start_hub(dir: &Path, n: u32) -> Result<u32> {
    let exe = crate::util::lab_exe()?;
    // The hub runs in its own process group so it outlives this command; its
    // command line names the run directory so `lab down` always finds it.
    let hub_log = dir.join("hub.log");
    let hub = Command::new(&exe)
        .arg("hub")
        .arg("--dir")
        .arg(dir)
        .args(["--hosts", &n.to_string()])
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&hub_log)?)
        .stderr(std::fs::File::create(dir.join("hub.err.log"))?)
        .spawn()
        .context("starting the lab network hub")?;
    poll(
        "the lab network hub",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || Ok(dir.join("hub.sock").exists().then_some(())),
    )
    .with_context(|| format!("hub log: {}", tail(&dir.join("hub.err.log"), 10)))?;
    Ok(hub.id())
}

/// Boots `n` hosts and returns once every dom0 answers ssh and runs xenstored.
pub fn boot(
    n: u32,
    xen: &Path,
    img: &Dom0Image,
    cred: &Credentials,
    cpus: u32,
    timeout: Duration,
) -> Result<LabState> {
    let dir = run_dir();
    std::fs::create_dir_all(&dir)?;
    let machine = Machine {
        xen: xen.to_path_buf(),
        kernel: img.kernel.clone(),
        initrd: img.initrd.clone(),
        cpus,
    };
    let mut state = LabState {
        hosts: vec![],
        hub_pid: 0,
        key: cred.key.clone(),
        password: cred.password.clone(),
        machine: Some(machine.clone()),
    };
    state.hub_pid = start_hub(&dir, n)?;
    for i in 1..=n {
        let overlay = overlay_path(&dir, i);
        let _ = std::fs::remove_file(&overlay);
        crate::util::capture(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(&img.rootfs)
                .arg(&overlay),
        )?;
        let h = launch_new_host(&dir, i, |h| {
            let cold = qemu_argv(&machine, &dir, h);
            Ok((cold.clone(), cold))
        })?;
        let pid = h.pid;
        state.hosts.push(h);
        state.save()?;
        say(format!(
            "host {i}: QEMU pid {pid}, serial log {}",
            dir.join(format!("host{i}.serial.log")).display()
        ));
    }
    let start = Instant::now();
    for h in state.hosts.clone() {
        wait_ready(&state, &h, timeout.saturating_sub(start.elapsed()))?;
        if let Err(e) = state.start_ssh_master(&h) {
            say(format!("{e:#}; using one connection per command"));
        }
        say(format!(
            "host {}: dom0 ready after {}s",
            h.index,
            start.elapsed().as_secs()
        ));
    }
    Ok(state)
}

/// Picks host `i`'s ports and starts its QEMU with the command line that
/// `argv` builds for them, as `(cold boot, this launch)`; returns the host,
/// keeping the cold-boot line. A port free when picked can be taken by
/// another program before QEMU binds it; QEMU then refuses the forwarding
/// rule, and fresh ports are picked (a few times) instead of failing.
pub(crate) fn launch_new_host(
    dir: &Path,
    i: u32,
    argv: impl Fn(&HostState) -> Result<(Vec<String>, Vec<String>)>,
) -> Result<HostState> {
    let mut tries = 0;
    loop {
        let h = new_host(dir, i)?;
        let (cold, now) = argv(&h)?;
        match launch_qemu(i, &now) {
            Ok(pid) => {
                return Ok(HostState {
                    pid,
                    qemu_argv: cold,
                    ..h
                })
            }
            Err(e)
                if tries < 3 && format!("{e:#}").contains("Could not set up host forwarding") =>
            {
                tries += 1;
                say(format!(
                    "host {i}: a port was taken before QEMU bound it; picking others"
                ));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Starts host `i`'s QEMU from its command line (which daemonizes and
/// writes `host<i>.pid`); returns its pid.
pub(crate) fn launch_qemu(i: u32, argv: &[String]) -> Result<u32> {
    let dir = run_dir();
    let pidfile = dir.join(format!("host{i}.pid"));
    let _ = std::fs::remove_file(&pidfile);
    // QEMU binds its end of the lab network here (left behind by a killed one).
    let _ = std::fs::remove_file(dir.join(format!("host{i}.net.sock")));
    let qemu_log = dir.join(format!("host{i}.qemu.log"));
    let (prog, args) = argv.split_first().context("no QEMU command line")?;
    let mut c = Command::new(prog);
    c.args(args);
    let out = output_with_timeout(&mut c, Duration::from_secs(60))?;
    std::fs::write(&qemu_log, [&out.stdout[..], &out.stderr[..]].concat())?;
    if !out.status.success() {
        bail!(
            "step 'boot host {i}': QEMU failed to start ({}); log: {}\n{}",
            out.status,
            qemu_log.display(),
            tail(&qemu_log, 20)
        );
    }
    Ok(std::fs::read_to_string(&pidfile)
        .with_context(|| format!("QEMU wrote no pidfile {}", pidfile.display()))?
        .trim()
        .parse()?)
}

impl LabState {
    /// Cuts host `n`'s power: SIGKILLs its QEMU, so whatever its dom0 had
    /// not written to the virtual disk (its page cache) is lost, as in a
    /// power cut. (The disk is `cache=unsafe`: what QEMU wrote is in the
    /// build machine's page cache, which survives QEMU.)
    pub fn power_cut(&self, n: u32) -> Result<()> {
        let h = self.host(n)?;
        let _ = Command::new("kill")
            .args(["-9", &h.pid.to_string()])
            .status();
        poll(
            &format!("host {n}'s QEMU (pid {}) to die", h.pid),
            Duration::from_secs(30),
            Duration::from_millis(50),
            || Ok((!pid_alive(h.pid)).then_some(())),
        )?;
        // The ssh master's connection went with it.
        self.stop_ssh_master(h);
        Ok(())
    }

    /// Ends host `h`'s ssh master connection, if any.
    pub fn stop_ssh_master(&self, h: &HostState) {
        let _ = self
            .ssh_cmd(h)
            .args(["-O", "exit"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(Self::control_path(h));
    }

    /// Boots host `n` again on its disk overlay (after [`power_cut`]),
    /// with the same ports, and waits until its dom0 is ready; the state
    /// file is updated with the new pid. The previous serial log is kept
    /// as `<log>.prev`.
    ///
    /// [`power_cut`]: LabState::power_cut
    pub fn power_on(&mut self, n: u32, timeout: Duration) -> Result<()> {
        let h = self.host(n)?.clone();
        if pid_alive(h.pid) {
            bail!("host {n}'s QEMU (pid {}) is still running", h.pid);
        }
        if h.qemu_argv.is_empty() {
            bail!("host {n} was booted by an older lab without its QEMU command line: run `lab down` and `lab up`");
        }
        let _ = std::fs::rename(&h.serial_log, h.serial_log.with_extension("log.prev"));
        // A killed QEMU's last threads may still hold the disk's lock for a
        // moment after its pid looks gone.
        let start = Instant::now();
        let pid = loop {
            match launch_qemu(n, &h.qemu_argv) {
                Err(e)
                    if format!("{e:#}").contains("Failed to get \"write\" lock")
                        && start.elapsed() < Duration::from_secs(60) =>
                {
                    std::thread::sleep(Duration::from_secs(1));
                }
                r => break r?,
            }
        };
        if let Some(x) = self.hosts.iter_mut().find(|x| x.index == n) {
            x.pid = pid;
        }
        self.save()?;
        let h = self.host(n)?.clone();
        wait_ready(self, &h, timeout)?;
        if let Err(e) = self.start_ssh_master(&h) {
            say(format!("{e:#}; using one connection per command"));
        }
        Ok(())
    }
}

pub(crate) fn wait_ready(state: &LabState, h: &HostState, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut next_beat = Duration::from_secs(30);
    loop {
        if !pid_alive(h.pid) {
            bail!(
                "step 'boot host {}': QEMU (pid {}) died; serial log: {}\n--- last lines ---\n{}",
                h.index,
                h.pid,
                h.serial_log.display(),
                tail(&h.serial_log, 30)
            );
        }
        // One attempt per poll, bounded by the time left, so the deadline holds.
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_secs(1));
        if let Ok(out) = state.exec_tries(
            h.index,
            "test -e /proc/xen/capabilities && xenstore-read domid >/dev/null && pgrep -x xenconsoled >/dev/null && ip -4 addr show xenbr0 | grep -q 10.77",
            left.min(Duration::from_secs(20)),
            1,
        ) {
            if out.status.success() {
                return Ok(());
            }
        }
        let el = start.elapsed();
        if el > timeout {
            bail!(
                "step 'boot host {}': dom0 not ready (ssh, xenstored, xenconsoled, xenbr0) after {}s; serial log: {}\n--- last lines ---\n{}",
                h.index,
                el.as_secs(),
                h.serial_log.display(),
                tail(&h.serial_log, 30)
            );
        }
        if el >= next_beat {
            say(format!("host {}: booting... {}s", h.index, el.as_secs()));
            next_beat += Duration::from_secs(30);
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The processes of the lab in `dir` (not of the labs in its
/// subdirectories): pid and command line.
pub fn lab_processes(dir: &Path) -> Vec<(u32, String)> {
    let me = std::process::id();
    let out = Command::new("pgrep")
        .args(["-a", "-f"])
        .arg(dir)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let (pid, cmd) = l.trim().split_once(' ')?;
            Some((pid.parse().ok()?, cmd.to_string()))
        })
        .filter(|(pid, cmd)| *pid != me && belongs_to_lab(cmd, dir))
        .collect()
}

/// Stops this process's lab ([`run_dir`]) and removes its files but its
/// snapshot ([`crate::snapshot`]), which later hosts are restored from; the
/// labs of its subdirectories are left alone. Safe to repeat.
pub fn down() -> Result<()> {
    down_dir(&run_dir(), true)
}

/// [`down`], the snapshot included.
pub fn down_with_snapshot() -> Result<()> {
    down_dir(&run_dir(), false)
}

/// `lab down`: stops every lab of the user's run directory, its own and
/// those `lab test` and `lab bench migrate` keep in its subdirectories.
pub fn down_all() -> Result<()> {
    let base = base_run_dir();
    for dir in crate::util::own_lab_dirs(&base) {
        // A `lab test` that is running would lose its hosts mid-test (seen:
        // a user's `lab down` failed the test run beside it).
        if let Some(pid) = crate::util::running_owner(&dir) {
            say(format!(
                "{} belongs to a running lab command (pid {pid}): left up; it stops its hosts itself",
                dir.display()
            ));
            continue;
        }
        down_dir(&dir, false)?;
    }
    down_dir(&base, false)
}

fn down_dir(dir: &Path, keep_snapshot: bool) -> Result<()> {
    let mut pids = vec![];
    if let Ok(st) = LabState::load_from(dir) {
        pids.extend(st.hosts.iter().map(|h| h.pid));
        pids.push(st.hub_pid);
    }
    // Anything else started for this run directory (a lost state file).
    pids.extend(lab_processes(dir).into_iter().map(|(p, _)| p));
    pids.sort();
    pids.dedup();
    // 0 (no process recorded) would be `kill 0`: this whole process group.
    pids.retain(|p| *p != 0 && *p != std::process::id());
    for p in &pids {
        let _ = Command::new("kill").arg(p.to_string()).status();
    }
    let gone = poll(
        "lab processes to exit",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || Ok(pids.iter().all(|p| !pid_alive(*p)).then_some(())),
    );
    if gone.is_err() {
        for p in &pids {
            let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
        }
        poll(
            "lab processes to die after SIGKILL",
            Duration::from_secs(10),
            Duration::from_millis(100),
            || Ok(pids.iter().all(|p| !pid_alive(*p)).then_some(())),
        )?;
    }
    // Everything but the subdirectories' labs.
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let keep = OWN_LABS.iter().any(|s| e.file_name() == *s)
                || (keep_snapshot && e.file_name() == crate::snapshot::SNAPSHOT_DIR);
            if keep && p.is_dir() {
                continue;
            }
            // This command's own mark stays while it takes its hosts down
            // between phases (a stale one is ignored once it has exited).
            if e.file_name() == crate::util::OWNER_FILE
                && std::fs::read_to_string(&p).ok().as_deref().map(str::trim)
                    == Some(std::process::id().to_string().as_str())
            {
                continue;
            }
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.with_context(|| format!("removing {}", p.display()))?;
        }
        // Gone unless a subdirectory's lab is still there.
        let _ = std::fs::remove_dir(dir);
    }
    Ok(())
}

/// Whether something answers HTTP on 127.0.0.1:`port` (any status line).
pub fn http_answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let body = r#"{"jsonrpc":"2.0","method":"system.listMethods","params":[],"id":1}"#;
    let req = format!(
        "POST /jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hosts_ports_are_distinct() {
        for _ in 0..50 {
            let h = new_host(Path::new("/nowhere"), 1).unwrap();
            let mut p = [h.ssh_port, h.http_port, h.https_port];
            p.sort();
            assert!(p[0] != p[1] && p[1] != p[2], "{p:?}");
        }
    }

    fn lab(password: &str) -> LabState {
        LabState {
            hosts: vec![HostState {
                index: 1,
                pid: 0,
                ssh_port: 2201,
                http_port: 8001,
                https_port: 4431,
                serial_log: "/nowhere/host1.serial.log".into(),
                qemu_argv: vec![],
            }],
            hub_pid: 0,
            key: "/nowhere/key".into(),
            password: password.into(),
            machine: None,
        }
    }

    /// What `sh` makes of `script` then `printf` of `expr`.
    fn sh(script: &str, expr: &str) -> String {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{script}\nprintf '%s|' {expr}"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn env_lines_are_quoted_exports() {
        let pw = "it's $(x) `y` \"z\"";
        let lines = lab(pw).env_lines().unwrap();
        for l in lines.lines() {
            assert!(l.starts_with("export XAPI_"), "{l}");
        }
        // Exported, with the values intact, for a child of that shell too.
        let got = sh(
            &lines,
            "\"$(sh -c 'echo $XAPI_PASSWORD')\" \"$XAPI_URL\" \"$XAPI_HTTP\" \"$XAPI_USER\" \"$XAPI_LAB_SSH_PORT\" \"$XAPI_LAB_HOSTS\" \"$XAPI_LAB_RUN\"",
        );
        assert_eq!(
            got,
            format!(
                "{pw}|https://127.0.0.1:4431|http://127.0.0.1:8001|root|2201|1|{}|",
                run_dir().display()
            )
        );
    }

    #[test]
    fn the_xe_line_names_the_built_xe_and_localhost() {
        let line = lab("pa ss").xe_line(&["host-list"]).unwrap();
        let words = sh(&format!("set -- {line}"), "\"$@\"");
        let words: Vec<&str> = words.trim_end_matches('|').split('|').collect();
        assert!(
            words[0].starts_with('/') && words[0].ends_with("/release/xe"),
            "{line}"
        );
        assert_eq!(
            &words[1..],
            [
                "-s",
                "localhost",
                "-p",
                "4431",
                "-u",
                "root",
                "-pw",
                "pa ss",
                "host-list"
            ]
        );
    }

    #[test]
    fn labs_are_found_in_the_run_directory_and_its_own_labs() {
        let base = std::env::temp_dir().join(format!("lab-labs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let write = |d: &Path, pw: &str| {
            std::fs::create_dir_all(d).unwrap();
            let s = serde_json::to_string(&lab(pw)).unwrap();
            std::fs::write(d.join("state.json"), s).unwrap();
        };
        assert!(labs_in(&base).is_empty());
        write(&base.join("bench"), "b");
        write(&base, "user");
        write(&base.join("test"), "t");
        std::fs::create_dir_all(base.join("elsewhere")).unwrap();
        let found: Vec<(PathBuf, String)> = labs_in(&base)
            .into_iter()
            .map(|(d, st)| (d, st.password))
            .collect();
        assert_eq!(
            found,
            [
                (base.clone(), "user".to_string()),
                (base.join("test"), "t".to_string()),
                (base.join("bench"), "b".to_string()),
            ]
        );
        // Between phases the test's snapshot stays; at the end it goes.
        let snap = base.join("test").join(crate::snapshot::SNAPSHOT_DIR);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("host1.state"), "s").unwrap();
        std::fs::write(base.join("test/host1.qcow2"), "o").unwrap();
        down_dir(&base.join("test"), true).unwrap();
        assert!(snap.join("host1.state").exists());
        assert!(!base.join("test/host1.qcow2").exists());
        assert!(!base.join("test/state.json").exists());
        // Taking down the test's lab leaves the user's and the bench's.
        down_dir(&base.join("test"), false).unwrap();
        assert!(!base.join("test").exists());
        assert_eq!(labs_in(&base).len(), 2);
        // Taking down the user's lab leaves the bench's files.
        down_dir(&base, false).unwrap();
        assert_eq!(labs_in(&base).len(), 1);
        assert!(base.join("bench/state.json").exists());
        let _ = std::fs::remove_dir_all(&base);
    }
}
