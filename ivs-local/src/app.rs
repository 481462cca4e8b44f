//! The state every request handler shares.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ivs_local_media::MediaPlane;
use stagefan_core::sigv4::Credentials;
use stagefan_core::token::SigningKey;

use crate::events::Hub;
use crate::faults::Faults;
use crate::limits::Limits;
use crate::state::Store;

/// Everything a handler needs.
pub struct App {
    /// The region's state.
    pub store: Mutex<Store>,
    /// Request rates and counters.
    pub limits: Limits,
    /// The one accepted access key.
    pub credentials: Credentials,
    /// The region (SigV4 scope).
    pub region: String,
    /// ivs-local's own P-384 key, for CreateParticipantToken.
    pub own_key: SigningKey,
    /// The `kid` of tokens signed with it.
    pub own_kid: String,
    /// Stage `endpoints.whip`.
    pub whip_url: String,
    /// Stage `endpoints.events`.
    pub events_url: String,
    /// The media plane (absent with `--no-media`).
    pub media: Option<MediaPlane>,
    /// Start time, for the stats.
    pub started: Instant,
    /// How long a media session has to connect (see [`App::watch_setup`]).
    pub ice_setup_timeout: Duration,
    /// The stages' events WebSockets (the IVS Web Broadcast SDK's connection).
    pub events: Hub,
    /// Scripted faults of the control plane (`/_local/faults`).
    pub faults: Faults,
    whip: Mutex<BTreeMap<&'static str, u64>>,
    events_counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl App {
    /// Assembles the shared state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        limits: Limits,
        credentials: Credentials,
        region: String,
        own_key: SigningKey,
        own_kid: String,
        whip_url: String,
        events_url: String,
        media: Option<MediaPlane>,
    ) -> Self {
        Self {
            store: Mutex::new(store),
            limits,
            credentials,
            region,
            own_key,
            own_kid,
            whip_url,
            events_url,
            media,
            started: Instant::now(),
            ice_setup_timeout: Duration::from_secs(30),
            events: Hub::default(),
            faults: Faults::default(),
            whip: Mutex::new(BTreeMap::new()),
            events_counts: Mutex::new(BTreeMap::new()),
        }
    }

    /// The store, locked (held only for the duration of one operation, never across `.await`).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the media-plane work the registry decided (replications started or ended).
    /// Called after every operation that may change replications, outside the store's lock
    /// for the media calls (they only queue commands for the media thread).
    pub fn sync_media(&self) {
        let actions = self.store().take_media_actions();
        let Some(media) = &self.media else {
            return;
        };
        for action in actions {
            media.apply(action);
        }
    }

    /// Ends connection `connection` of `pid` if ICE and DTLS are not up within the setup
    /// deadline: a session that never connects gives its seat back.
    pub fn watch_setup(self: &Arc<Self>, pid: &str, connection: u64) {
        let (app, pid) = (self.clone(), pid.to_string());
        tokio::spawn(async move {
            tokio::time::sleep(app.ice_setup_timeout).await;
            let expired = app.store().expire_setup(&pid, connection, unix_now());
            if expired {
                tracing::info!(participant = %pid, connection, "ICE setup deadline passed: session ended");
                app.count_whip("ICE_SETUP_TIMEOUT");
                app.sync_media();
                if let Some(media) = &app.media {
                    media.disconnect(&pid, Some(connection));
                }
            }
        });
    }

    /// Counts a WHIP outcome (`published`, `subscribed`, or an error code).
    pub fn count_whip(&self, outcome: &'static str) {
        *self
            .whip
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    /// Counts an events-socket outcome (`opened`, `replaced`, or a JOIN_ERROR code).
    pub fn count_events(&self, outcome: &'static str) {
        *self
            .events_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(outcome)
            .or_default() += 1;
    }

    /// Events-socket outcomes so far.
    pub fn events_counters(&self) -> BTreeMap<&'static str, u64> {
        self.events_counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// WHIP outcomes so far.
    pub fn whip_counters(&self) -> BTreeMap<&'static str, u64> {
        self.whip.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The wall clock, unix seconds (the adapter's job: `core` never reads it).
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
