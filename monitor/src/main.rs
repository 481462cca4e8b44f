//! Wiring only: configuration, tracing, state, then the poll loop, the admin server and
//! shutdown side by side.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use stagefan_monitor::admin::{self, AdminState};
use stagefan_monitor::budget::Budget;
use stagefan_monitor::config::Config;
use stagefan_monitor::edge::EdgeClient;
use stagefan_monitor::ivs::IvsClient;
use stagefan_monitor::metrics::Metrics;
use stagefan_monitor::poller::Poller;
use stagefan_monitor::shutdown;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::load();
    init_tracing(&config.log_format);
    match run(config).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %e, "stagefan-monitor failed");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(config: Config) -> Result<ExitCode, String> {
    tracing::info!(config = ?config, "starting");
    let metrics = Arc::new(Metrics::new().map_err(|e| e.to_string())?);
    // Each region its own client (SigV4 scope = the region) and its own budget: IVS's
    // limits hold per account and region.
    let ivs = config
        .ivs()
        .into_iter()
        .map(|settings| {
            let budget = Arc::new(Budget::new(config.ivs_budget));
            IvsClient::new(settings, budget, metrics.clone())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let edge = EdgeClient::new(
        &config.edge_url,
        config.admin_key.clone(),
        config.request_timeout,
        metrics.clone(),
    )?;
    let ready = Arc::new(AtomicBool::new(false));
    let poller = Poller::regions(edge, ivs, metrics.clone(), config.poll());

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(%addr, "admin server listening (/metrics, /live, /ready)");

    let (drain_tx, drain_rx) = watch::channel(false);
    let mut server_stop = drain_rx.clone();
    let server = admin::serve(
        listener,
        AdminState {
            metrics,
            ready: ready.clone(),
        },
        async move {
            let _ = server_stop.wait_for(|d| *d).await;
        },
    );
    let loop_done = poller.run(drain_rx, ready);

    tokio::select! {
        _ = shutdown::two_stage(drain_tx.clone()) => Ok(ExitCode::from(130)),
        (_, served) = async { tokio::join!(
            async { loop_done.await; let _ = drain_tx.send(true); },
            server,
        ) } => {
            served.map_err(|e| format!("admin server: {e}"))?;
            tracing::info!("stopped");
            Ok(ExitCode::SUCCESS)
        }
    }
}
