//! The `xapi-rs` daemon. `xapi-rs --help` lists the flags ([`xapi_rs::Args`]).

use std::io::Write;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    // --help prints and exits 0; a bad command line exits 2, as clap does.
    let cfg: xapi_rs::Config = <xapi_rs::Args as clap::Parser>::parse().into();
    match xapi_rs::start(cfg).await {
        Ok((bound, _ctx)) => {
            tracing::info!("xapi-rs ready: {bound}");
            let mut out = std::io::stdout();
            let _ = writeln!(out, "READY {bound}");
            let _ = out.flush();
        }
        Err(e) => {
            eprintln!("xapi-rs: {e}");
            std::process::exit(1);
        }
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("xapi-rs stopping");
}
