//! The state every request handler shares.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ivs_local_media::MediaPlane;
use stagefan_core::sigv4::Credentials;
use stagefan_core::token::SigningKey;

use crate::faults::Faults;
use crate::limits::Limits;
use crate::state::{MediaAction, Store};

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
    /// Scripted faults of the control plane (`/_local/faults`).
    pub faults: Faults,
    whip: Mutex<BTreeMap<&'static str, u64>>,
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
            faults: Faults::default(),
            whip: Mutex::new(BTreeMap::new()),
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
            match action {
                MediaAction::Replicate {
                    participant_id,
                    source_stage,
                    dest_stage,
                } => media.replicate(&source_stage, &participant_id, &dest_stage),
                MediaAction::StopReplication {
                    participant_id,
                    dest_stage,
                } => media.stop_replication(&participant_id, &dest_stage),
            }
        }
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
