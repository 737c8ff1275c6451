//! `lab`: the nested-virt lab's command line. See `lab help`.

use anyhow::{bail, Context, Result};
use lab::hosts::{self, LabState};
use lab::{testrun, UpOptions};

const HELP: &str = "\
lab: real Xen hosts under QEMU, with the xapi-rs toolstack in each dom0

  lab up [--hosts N] [--cpus C] [--no-xapi]   boot the lab (installs what it needs)
  lab env                                     shell lines: XAPI_URL, XAPI_HTTP, XAPI_USER, XAPI_PASSWORD
  lab status                                  the hosts and their ports
  lab exec [--host N] -- CMD...               run CMD in a dom0, with its exit status
  lab push [--host N] LOCAL REMOTE            copy a file into a dom0
  lab down                                    stop every lab process
  lab test [--keep]                           the whole test suite (unit, then on real Xen)
  lab build-xen                               build the lab hypervisor, print its path
  lab bench api [--requests N]                xapi-rs request rate, latency, event wake-up, xe time
  lab bench migrate [--runs N]                xl migrate vs ours to localhost (3 runs each), ratio line
";

fn take_value(args: &mut Vec<String>, flag: &str) -> Result<Option<String>> {
    if let Some(i) = args.iter().position(|a| a == flag) {
        if i + 1 >= args.len() {
            bail!("{flag} needs a value");
        }
        let v = args.remove(i + 1);
        args.remove(i);
        return Ok(Some(v));
    }
    Ok(None)
}

fn take_flag(args: &mut Vec<String>, flag: &str) -> bool {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args.remove(i);
        true
    } else {
        false
    }
}

fn host_arg(args: &mut Vec<String>) -> Result<u32> {
    Ok(take_value(args, "--host")?
        .map(|v| v.parse())
        .transpose()
        .context("--host takes a number")?
        .unwrap_or(1))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(mut args: Vec<String>) -> Result<i32> {
    if args.is_empty() {
        print!("{HELP}");
        return Ok(2);
    }
    let cmd = args.remove(0);
    match cmd.as_str() {
        "up" => {
            let mut o = UpOptions::default();
            if let Some(n) = take_value(&mut args, "--hosts")? {
                o.hosts = n.parse().context("--hosts takes a number")?;
            }
            if let Some(n) = take_value(&mut args, "--cpus")? {
                o.cpus = n.parse().context("--cpus takes a number")?;
            }
            o.wait_xapi = !take_flag(&mut args, "--no-xapi");
            let st = lab::up(&o)?;
            let h = st.host(1)?;
            println!(
                "\nThe lab is up: {} host(s). Host 1 is reachable at:\n  XenAPI  https://127.0.0.1:{} (http://127.0.0.1:{})  user root, password {}\n  ssh     cargo run --release -p lab -- exec -- CMD\n  xe      xe -s 127.0.0.1 -p {} -u root -pw {} host-list\n  shell   eval \"$(cargo run -q --release -p lab -- env)\"\n",
                st.hosts.len(),
                h.https_port,
                h.http_port,
                st.password,
                h.https_port,
                st.password
            );
            Ok(0)
        }
        "env" => {
            print!("{}", LabState::load()?.env_lines()?);
            Ok(0)
        }
        "status" => {
            let st = LabState::load()?;
            for h in &st.hosts {
                println!(
                    "host {}: {} pid {} ssh {} http {} https {} serial {}",
                    h.index,
                    if lab::util::pid_alive(h.pid) {
                        "running"
                    } else {
                        "DEAD"
                    },
                    h.pid,
                    h.ssh_port,
                    h.http_port,
                    h.https_port,
                    h.serial_log.display()
                );
            }
            Ok(0)
        }
        "exec" => {
            let host = host_arg(&mut args)?;
            if args.first().map(String::as_str) == Some("--") {
                args.remove(0);
            }
            if args.is_empty() {
                bail!("usage: lab exec [--host N] -- CMD...");
            }
            LabState::load()?.exec_interactive(host, &args)
        }
        "push" => {
            let host = host_arg(&mut args)?;
            let [local, remote] = <[String; 2]>::try_from(args)
                .map_err(|_| anyhow::anyhow!("usage: lab push [--host N] LOCAL REMOTE"))?;
            LabState::load()?.push(host, local.as_ref(), &remote)?;
            Ok(0)
        }
        "down" => {
            hosts::down()?;
            lab::util::say("lab down");
            Ok(0)
        }
        "test" => {
            let keep = take_flag(&mut args, "--keep");
            testrun::run(keep)
        }
        "bench" => {
            let what = if args.is_empty() {
                String::new()
            } else {
                args.remove(0)
            };
            let n = take_value(&mut args, "--requests")?
                .map(|v| v.parse())
                .transpose()
                .context("--requests takes a number")?
                .unwrap_or(500);
            let runs = take_value(&mut args, "--runs")?
                .map(|v| v.parse())
                .transpose()
                .context("--runs takes a number")?
                .unwrap_or(3);
            match what.as_str() {
                "api" => lab::bench::api(n)?,
                "migrate" => lab::bench::migrate(runs)?,
                _ => bail!("usage: lab bench api [--requests N] | lab bench migrate [--runs N]"),
            }
            Ok(0)
        }
        "deb" => {
            println!("{}", lab::deb::build()?.display());
            Ok(0)
        }
        "build-xen" => {
            let src = lab::deps::ensure()?;
            let xen = lab::xen::build(&src)?;
            println!("{}", xen.with_extension("gz").display());
            Ok(0)
        }
        "hub" => {
            let n: u32 = take_value(&mut args, "--hosts")?
                .context("--hosts")?
                .parse()?;
            let dir = take_value(&mut args, "--dir")?.context("--dir")?;
            hosts::hub(std::path::Path::new(&dir), n)?;
            Ok(0)
        }
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(0)
        }
        other => {
            eprint!("lab: unknown command '{other}'\n\n{HELP}");
            Ok(2)
        }
    }
}
