//! `kube-standin`: serves the stand-in Kubernetes API on a port and writes a kubeconfig for it,
//! so a separate process (the operator under benchmark) can use it like a cluster.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "kube-standin",
    version,
    about = "In-process stand-in for the Kubernetes API server"
)]
struct Args {
    /// Loopback port to listen on (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Where to write a kubeconfig pointing at the server.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Make Deployments, StatefulSets, Jobs and CNPG Clusters ready as soon as they are written.
    #[arg(long)]
    auto_ready: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let standin = kube_standin::StandIn::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .context("starting the stand-in")?;
    standin.set_auto_ready(args.auto_ready);
    if let Some(path) = &args.kubeconfig {
        std::fs::write(path, standin.kubeconfig_yaml())
            .with_context(|| format!("writing kubeconfig {}", path.display()))?;
    }
    println!("kube-standin listening on {}", standin.url());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C")?,
        _ = term.recv() => {}
    }
    standin.shutdown().await;
    Ok(())
}
