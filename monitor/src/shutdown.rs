//! Shutdown: the first SIGINT/SIGTERM asks the loop to finish its round and stop; a second
//! one ends the process at once.

use tokio::sync::watch;

/// Waits for SIGINT or SIGTERM.
pub async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        match (term, int) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Sends `true` on `drain` at the first signal, then returns at the second: the caller
/// exits at once when this future completes.
pub async fn two_stage(drain: watch::Sender<bool>) {
    signal().await;
    tracing::info!("signal received: finishing the current round (send another to exit now)");
    let _ = drain.send(true);
    signal().await;
    tracing::warn!("second signal: exiting now");
}
