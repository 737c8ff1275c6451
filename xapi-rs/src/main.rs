//! The `xapi-rs` daemon. See [`xapi_rs::USAGE`] for the flags.

use std::io::Write;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cfg = match xapi_rs::Config::from_args(&args) {
        Ok(c) => c,
        Err(e) if e == xapi_rs::USAGE => {
            println!("{e}");
            return;
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
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
