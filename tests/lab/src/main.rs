//! `lab`: the nested-virt lab's command line. See `lab --help`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use lab::hosts::{self, LabState};
use lab::util::{self, shell_quote};
use lab::{testrun, UpOptions};
use std::path::PathBuf;

/// Real Xen hosts under QEMU, with the xapi-rs toolstack in each dom0.
#[derive(Parser, Debug)]
#[command(
    name = "lab",
    arg_required_else_help = true,
    after_help = "The lab lives in XAPI_LAB_RUN (default /var/tmp/xapi-rs-lab); `lab test` and \
                  `lab bench migrate` boot their own hosts in its test/ and bench/ \
                  subdirectories, so a lab brought up by `lab up` keeps running. \
                  XAPI_LAB_CACHE moves the image cache (default /var/cache/xapi-rs-lab)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Boot the lab (installs what it needs) and print how to reach it
    Up {
        #[arg(long, default_value_t = 1)]
        hosts: u32,
        /// vCPUs per host [default: XAPI_LAB_CPUS, else 2]
        #[arg(long)]
        cpus: Option<u32>,
        /// Do not wait for xapi-rs to answer
        #[arg(long)]
        no_xapi: bool,
    },
    /// Shell lines for clients: `eval "$(lab env)"` exports XAPI_URL,
    /// XAPI_HTTP, XAPI_USER, XAPI_PASSWORD, XAPI_LAB_*
    Env,
    /// The hosts and their ports (also of a kept test or bench lab)
    Status,
    /// Run CMD in a dom0; exits with its status
    Exec {
        #[arg(long, default_value_t = 1)]
        host: u32,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Copy a file into a dom0
    Push {
        #[arg(long, default_value_t = 1)]
        host: u32,
        local: PathBuf,
        remote: String,
    },
    /// Rebuild the toolstack package and the guest kit and install them
    /// into the lab that is up (after a change, without a new `lab up`)
    Deploy,
    /// Stop every lab process: the lab and a kept test or bench lab
    Down,
    /// The whole test suite (lints, unit tests, then on real Xen), on hosts
    /// of its own
    Test {
        /// Leave the test's last lab up (XAPI_LAB_RUN=<run>/test reaches it;
        /// `lab down` stops it)
        #[arg(long)]
        keep: bool,
    },
    /// Build the lab hypervisor and print its path
    BuildXen,
    /// Benchmarks: the API of the lab that is up, or live migration on a
    /// host of its own
    #[command(subcommand)]
    Bench(Bench),
    /// Build the toolstack's Debian package (target/debian/xapi-rs_VERSION_amd64.deb), print its path
    Deb,
    // New commands go here, with their arm in `run`.
    /// `lab test`'s second stream of phases (started by `lab test`)
    #[command(hide = true)]
    TestStream,
    /// The lab network's hub (started by `lab up`)
    #[command(hide = true)]
    Hub {
        #[arg(long)]
        hosts: u32,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// xapi-rs request rate, latency, event wake-up and xe time, on the lab
    /// that is up
    Api {
        #[arg(long, default_value_t = 500)]
        requests: usize,
        /// Instead: create this many VM records and measure the calls over
        /// them (VM.get_all_records, xe vm-list, single gets, event.from)
        #[arg(long)]
        vms: Option<usize>,
        /// With --vms: run a daemon of our own on the build machine (fake
        /// probe) instead of using the lab, for figures comparable with the
        /// reference's published ones
        #[arg(long, requires = "vms")]
        native: bool,
    },
    /// Start and clean shutdown of a guest-kit VM, xl against xe,
    /// interleaved, and the ratio line; on the lab that is up
    Vm {
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// xl migrate against ours to localhost, interleaved, and the ratio
    /// line; boots a host of its own
    Migrate {
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Leave the bench's host up (XAPI_LAB_RUN=<run>/bench reaches it)
        #[arg(long)]
        keep: bool,
    },
}

fn main() {
    // --help prints and exits 0; a bad command line exits 2, as clap does.
    match run(Cli::parse().cmd) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("lab: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run(cmd: Cmd) -> Result<i32> {
    match cmd {
        Cmd::Up {
            hosts,
            cpus,
            no_xapi,
        } => {
            let d = UpOptions::default();
            let st = lab::up(&UpOptions {
                hosts,
                cpus: cpus.unwrap_or(d.cpus),
                wait_xapi: !no_xapi,
                ..d
            })?;
            print!("{}", up_message(&st)?);
            Ok(0)
        }
        Cmd::Env => {
            print!("{}", LabState::load()?.env_lines()?);
            Ok(0)
        }
        Cmd::Status => {
            let labs = hosts::labs();
            if labs.is_empty() {
                // The usual message: no lab is up, run `lab up`.
                LabState::load()?;
            }
            for (dir, st) in labs {
                if dir != util::run_dir() {
                    println!("{} lab (XAPI_LAB_RUN={}):", lab_name(&dir), dir.display());
                }
                print!("{}", st.status_lines());
            }
            Ok(0)
        }
        Cmd::Exec { host, cmd } => LabState::load()?.exec_interactive(host, &cmd),
        Cmd::Push {
            host,
            local,
            remote,
        } => {
            LabState::load()?.push(host, &local, &remote)?;
            Ok(0)
        }
        Cmd::Deploy => {
            lab::deploy(&LabState::load()?, true)?;
            util::say("deployed");
            Ok(0)
        }
        Cmd::Down => {
            hosts::down_all()?;
            util::say("lab down");
            Ok(0)
        }
        Cmd::Test { keep } => testrun::run(keep),
        Cmd::TestStream => testrun::run_stream(),
        Cmd::Deb => {
            println!("{}", lab::deb::build()?.display());
            Ok(0)
        }
        Cmd::BuildXen => {
            let src = lab::deps::ensure()?;
            let xen = lab::xen::build(&src)?;
            println!("{}", xen.with_extension("gz").display());
            Ok(0)
        }
        Cmd::Bench(Bench::Api {
            requests,
            vms,
            native,
        }) => {
            match vms {
                Some(n) => lab::bench::api_vms(n, native)?,
                None => lab::bench::api(requests)?,
            }
            Ok(0)
        }
        Cmd::Bench(Bench::Vm { runs }) => {
            lab::bench::vm(runs)?;
            Ok(0)
        }
        Cmd::Bench(Bench::Migrate { runs, keep }) => {
            lab::bench::migrate(runs, keep)?;
            Ok(0)
        }
        Cmd::Hub { hosts, dir } => {
            hosts::hub(&dir, hosts)?;
            Ok(0)
        }
    }
}

/// "test" for `<run>/test`: what a nested lab is for.
fn lab_name(dir: &std::path::Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// What `lab up` prints: how to reach host 1, as lines that work when
/// pasted into a shell (absolute paths, the run directory when it is not
/// the default).
fn up_message(st: &LabState) -> Result<String> {
    let h = st.host(1)?;
    let lab = util::lab_exe()?;
    let run = std::env::var_os("XAPI_LAB_RUN")
        .map(|_| {
            format!(
                "XAPI_LAB_RUN={} ",
                shell_quote(&util::run_dir().display().to_string())
            )
        })
        .unwrap_or_default();
    let lab = format!("{run}{}", shell_quote(&lab.display().to_string()));
    Ok(format!(
        "\nThe lab is up: {} host(s). Host 1 is reachable at:\n  \
         XenAPI  https://127.0.0.1:{} (http://127.0.0.1:{})  user root, password {}\n  \
         ssh     {lab} exec -- CMD\n  \
         xe      {}\n  \
         shell   eval \"$({lab} env)\"\n  \
         stop    {lab} down\n",
        st.hosts.len(),
        h.https_port,
        h.http_port,
        st.password,
        st.xe_line(&["host-list"])?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{error::ErrorKind, CommandFactory};

    fn parse(a: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("lab").chain(a.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_flags_are_errors_and_help_is_not() {
        let kind = |a: &[&str]| parse(a).unwrap_err().kind();
        assert_eq!(kind(&["up", "--bogus"]), ErrorKind::UnknownArgument);
        assert_eq!(
            kind(&["bench", "migrate", "--requests", "3"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(kind(&["up", "--hosts", "two"]), ErrorKind::ValueValidation);
        assert_eq!(kind(&["frobnicate"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["--help"]), ErrorKind::DisplayHelp);
        assert_eq!(kind(&["bench", "--help"]), ErrorKind::DisplayHelp);
        assert_eq!(parse(&["up", "--bogus"]).unwrap_err().exit_code(), 2);
        // No command: the help, as an error (exit 2).
        assert_eq!(
            kind(&[]),
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        );
    }

    #[test]
    fn exec_takes_the_command_as_it_is() {
        let cmd = |a: &[&str]| match parse(a).unwrap().cmd {
            Cmd::Exec { host, cmd } => (host, cmd),
            c => panic!("{c:?}"),
        };
        assert_eq!(
            cmd(&["exec", "--", "ls", "-l"]),
            (1, vec!["ls".into(), "-l".into()])
        );
        assert_eq!(
            cmd(&["exec", "--host", "2", "--", "xl", "list"]),
            (2, vec!["xl".into(), "list".into()])
        );
        assert_eq!(cmd(&["exec", "uname", "-a"]).1, vec!["uname", "-a"]);
        assert_eq!(
            parse(&["exec"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
    }
}
