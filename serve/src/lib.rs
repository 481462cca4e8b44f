//! The HTTP server loop of ivs-local and the monitor's admin port: an axum router behind
//! hyper's HTTP/1.1 connection with a header-read timeout, which axum's own `serve` does not
//! set. A client that has not sent a whole request head within [`HEADER_READ_TIMEOUT`]
//! (headers sent byte by byte, or nothing at all) is cut off, so slow clients cannot pile up
//! open connections. The timeout also runs between requests on a kept-alive connection:
//! idle connections close after it, and clients should keep theirs idle for less.

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

/// The longest a client may take to send a request head (IVS's own front end cuts slow
/// clients off too; a real SDK or Prometheus sends its headers in one write).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a graceful shutdown waits for requests under way.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` resolves, then lets requests under way finish (for
/// at most [`DRAIN_TIMEOUT`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, most likely: let connections close first.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Finished connections leave the set as they end.
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .serve_connection(
                TokioIo::new(stream),
                TowerToHyperService::new(router.clone()),
            )
            // WebSockets (ivs-local's events socket, the SDK's) are HTTP/1.1 upgrades.
            .with_upgrades();
        let mut stop = stop_rx.clone();
        connections.spawn(async move {
            let mut conn = pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|stopping| *stopping) => {}
            }
            // Shutting down: finish the request under way, take no more.
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the drain timeout; closed");
        connections.abort_all();
    }
    Ok(())
}
