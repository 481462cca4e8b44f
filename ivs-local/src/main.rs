//! ivs-local: the embedded default for Amazon IVS Real-Time. A local control plane (the
//! operations stagefan uses, SigV4-verified, IVS's JSON, errors, quotas and request rates) and
//! WHIP/WHEP-style signaling in front of the `ivs-local-media` WebRTC plane.
//!
//! `main` only wires: configuration, tracing, state, the media plane and its event feed, the
//! HTTP server, and shutdown (first Ctrl-C or SIGTERM drains, a second one exits at once).

mod api;
mod app;
mod config;
mod events;
mod faults;
mod limits;
mod state;
mod whip;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::{delete, get, post};
use axum::Router;
use clap::Parser;
use ivs_local_media::{MediaConfig, MediaEvent, MediaPlane};
use stagefan_core::ivs::Arn;
use stagefan_core::sigv4::Credentials;
use stagefan_core::token::{self, SigningKey};
use tokio::sync::mpsc;
use tracing_subscriber::EnvFilter;

use crate::app::{unix_now, App};
use crate::config::Config;
use crate::limits::Limits;
use crate::state::{RegionConfig, Store};

/// A fresh P-384 key from the OS's random source (the adapter draws; `core` only computes).
fn generate_key() -> SigningKey {
    loop {
        let mut scalar = [0u8; 48];
        rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut scalar);
        if let Ok(k) = token::signing_key_from_bytes(&scalar) {
            return k;
        }
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/_local/stats", get(api::stats))
        .route("/events", get(events::socket))
        .route("/events/{*topic}", get(events::socket_at))
        .route(
            "/_local/faults",
            get(faults::list).post(faults::add).delete(faults::clear),
        )
        .route("/whip", post(whip::publish).options(whip::preflight))
        .route(
            "/whip/publish/{participant_id}",
            post(whip::sdk_publish).options(whip::preflight),
        )
        .route(
            "/whip/subscribe/{publisher_id}",
            post(whip::sdk_subscribe).options(whip::preflight),
        )
        .route(
            "/whip/subscribe",
            post(whip::subscribe).options(whip::preflight),
        )
        .route(
            "/whip/session/{*session}",
            delete(whip::delete_session)
                .get(whip::session_status)
                .options(whip::preflight),
        )
        .fallback(api::control_plane)
        .with_state(app)
}

/// Feeds the media plane's events into the participant registry.
async fn feed_events(app: Arc<App>, mut events: mpsc::Receiver<MediaEvent>) {
    while let Some(event) = events.recv().await {
        let now = unix_now();
        let mut store = app.store();
        match event {
            MediaEvent::Connected {
                stage_id,
                participant_id,
                connection,
            } => store.on_connected(&stage_id, &participant_id, connection, now),
            MediaEvent::Published {
                stage_id,
                participant_id,
                connection,
            } => store.on_published(&stage_id, &participant_id, connection, now),
            MediaEvent::Disconnected {
                stage_id,
                participant_id,
                connection,
            } => store.media_disconnected(&stage_id, &participant_id, connection, now),
        }
        drop(store);
        app.sync_media();
    }
}

/// Ends replications whose source did not come back within its reconnect window, once a
/// second (operations that touch replications also check).
async fn replication_clock(app: Arc<App>) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        app.store().expire_replications(unix_now());
        app.sync_media();
    }
}

/// Resolves on the first Ctrl-C or SIGTERM; a second one exits the process at once.
async fn shutdown_signal() {
    async fn one_signal() {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = ctrl_c.await;
        }
    }
    one_signal().await;
    tracing::info!("shutting down (a second signal exits at once)");
    tokio::spawn(async {
        one_signal().await;
        std::process::exit(130);
    });
}

#[tokio::main]
async fn main() {
    let cfg = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,str0m=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cfg.validate() {
        eprintln!("ivs-local: {e}");
        std::process::exit(2);
    }
    let listener = match tokio::net::TcpListener::bind(SocketAddr::new(cfg.bind, cfg.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("ivs-local: cannot listen on {}:{}: {e}", cfg.bind, cfg.port);
            std::process::exit(1);
        }
    };
    let http_addr = listener.local_addr().expect("bound socket has an address");
    let (media, media_events) = if cfg.no_media {
        (None, None)
    } else {
        let media_cfg = MediaConfig {
            udp_bind: SocketAddr::new(cfg.bind, cfg.media_port),
            public_ip: cfg.public_ip,
        };
        match MediaPlane::start(media_cfg).await {
            Ok((m, events)) => (Some(m), Some(events)),
            Err(e) => {
                eprintln!("ivs-local: cannot start the media plane: {e}");
                std::process::exit(1);
            }
        }
    };
    let base = format!("{}:{}", cfg.public_host, http_addr.port());
    let whip_url = format!("http://{base}/whip");
    let events_url = format!("ws://{base}/events");
    let store = Store::new(RegionConfig {
        region: cfg.region.clone(),
        account_id: cfg.account_id.clone(),
        whip_url: whip_url.clone(),
        events_url: events_url.clone(),
        stage_quota: cfg.stage_quota(),
        publisher_cap: cfg.publisher_cap,
        subscriber_cap: cfg.subscriber_cap,
        publisher_quota: cfg.publisher_quota,
        subscription_quota: cfg.subscription_quota,
    });
    let own_kid = Arn::public_key(&cfg.region, &cfg.account_id, "ivs-local-own-key").to_string();
    let media_addr = media.as_ref().map(|m| m.local_addr());
    let mut app = App::new(
        store,
        Limits::new(cfg.rate_scale),
        Credentials::new(
            cfg.access_key_id.clone(),
            cfg.secret_access_key.clone(),
            None,
        ),
        cfg.region.clone(),
        generate_key(),
        own_kid,
        whip_url,
        events_url,
        media,
    );
    app.ice_setup_timeout = std::time::Duration::from_secs(cfg.ice_setup_timeout_secs);
    let app = Arc::new(app);
    if let Some(events) = media_events {
        tokio::spawn(feed_events(app.clone(), events));
    }
    tokio::spawn(replication_clock(app.clone()));
    tokio::spawn(events::snapshot_loop(app.clone()));
    tracing::info!(
        http = %http_addr,
        media = ?media_addr,
        region = %cfg.region,
        rate_scale = cfg.rate_scale,
        "ivs-local ready"
    );
    // One machine-readable line on stdout for whoever started us (tests, scripts).
    let media_text = media_addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    println!("ivs-local ready http=http://{http_addr} media={media_text}");
    let _ = std::io::stdout().flush();
    let served = stagefan_serve::serve(listener, router(app), shutdown_signal()).await;
    if let Err(e) = served {
        eprintln!("ivs-local: server error: {e}");
        std::process::exit(1);
    }
    tracing::info!("stopped");
}
