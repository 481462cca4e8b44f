//! Stages: their publishers (local or replicated), subscribers and the source they receive.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::UdpSocket;
use tracing::info;

use super::stats::Traffic;
use super::{Engine, PeerId};
use crate::Role;

/// A publisher of a stage: a session of the stage itself, or a replica of a publisher of
/// another stage (IVS participant replication).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Feed {
    Local(PeerId),
    Replica {
        participant_id: String,
        source_stage: Arc<str>,
    },
}

#[derive(Default)]
pub(super) struct Stage {
    /// In join (or replication start) order: the first one with media is the host, whom
    /// subscribers receive.
    pub(super) feeds: Vec<Feed>,
    pub(super) subscribers: Vec<PeerId>,
    /// The session whose frames the subscribers get: a local publisher, or the source session
    /// of a replica (while it is connected to its own stage).
    pub(super) source: Option<PeerId>,
    /// Counters of sessions that have left.
    pub(super) retired: Traffic,
}

impl Stage {
    pub(super) fn local_publishers(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.feeds.iter().filter_map(|f| match f {
            Feed::Local(id) => Some(*id),
            Feed::Replica { .. } => None,
        })
    }

    pub(super) fn replicas(&self) -> usize {
        self.feeds
            .iter()
            .filter(|f| matches!(f, Feed::Replica { .. }))
            .count()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.feeds.is_empty() && self.subscribers.is_empty()
    }
}

impl Engine {
    pub(super) fn stage_key(&self, stage: &str) -> Arc<str> {
        match self.stages.get_key_value(stage) {
            Some((k, _)) => k.clone(),
            None => Arc::from(stage),
        }
    }

    /// `participant_id` (a publisher of `source_stage`, now or later) is shown in `dest_stage`
    /// too. Its frames reach the destination's subscribers whenever it is connected to its
    /// own stage (a source that reconnects with the same id resumes the replica).
    pub(super) fn replicate(
        &mut self,
        participant_id: String,
        source_stage: &str,
        dest_stage: &str,
        socket: &UdpSocket,
        now: Instant,
    ) {
        if source_stage == dest_stage {
            return;
        }
        let source_key = self.stage_key(source_stage);
        let dest_key = self.stage_key(dest_stage);
        let feed = Feed::Replica {
            participant_id: participant_id.clone(),
            source_stage: source_key,
        };
        let stage = self.stages.entry(dest_key.clone()).or_default();
        if !stage.feeds.contains(&feed) {
            stage.feeds.push(feed);
        }
        let dests = self.replicated.entry(participant_id.clone()).or_default();
        if !dests.contains(&dest_key) {
            dests.push(dest_key.clone());
        }
        info!(participant = %participant_id, from = %source_stage, to = %dest_stage, "replication started");
        self.stats_dirty = true;
        self.refresh_source(&dest_key, socket, now);
    }

    pub(super) fn stop_replication(
        &mut self,
        participant_id: &str,
        dest_stage: &str,
        socket: &UdpSocket,
        now: Instant,
    ) {
        if let Some(dests) = self.replicated.get_mut(participant_id) {
            dests.retain(|d| **d != *dest_stage);
            if dests.is_empty() {
                self.replicated.remove(participant_id);
            }
        }
        let Some(key) = self
            .stages
            .get_key_value(dest_stage)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let stage = self.stages.get_mut(&key).expect("just found");
        let before = stage.feeds.len();
        stage.feeds.retain(
            |f| !matches!(f, Feed::Replica { participant_id: p, .. } if p == participant_id),
        );
        if stage.feeds.len() == before {
            return;
        }
        info!(participant = %participant_id, to = %dest_stage, "replication stopped");
        self.stats_dirty = true;
        self.refresh_source(&key, socket, now);
        if self.stages.get(&key).is_some_and(Stage::is_empty) {
            self.stages.remove(&key);
        }
    }

    /// The session a feed's frames come from now, if it has one.
    fn feed_session(&self, feed: &Feed) -> Option<PeerId> {
        match feed {
            Feed::Local(id) => Some(*id),
            Feed::Replica {
                participant_id,
                source_stage,
            } => {
                let id = *self.by_participant.get(participant_id)?;
                let p = self.peers.get(&id)?;
                (p.role == Role::Publisher && p.stage == *source_stage && !p.ended).then_some(id)
            }
        }
    }

    /// Recomputes which session a stage's subscribers receive. On a change their payload type
    /// maps are reset (the new source may number its codecs differently) and, when they can
    /// decode nothing until its next keyframe, the new source is asked for one.
    fn refresh_source(&mut self, stage: &Arc<str>, socket: &UdpSocket, now: Instant) {
        let Some(st) = self.stages.get(stage) else {
            return;
        };
        let source = st.feeds.iter().find_map(|f| self.feed_session(f));
        if source == st.source {
            return;
        }
        let st = self.stages.get_mut(stage).expect("checked");
        st.source = source;
        let has_subscribers = !st.subscribers.is_empty();
        for sub in &st.subscribers {
            if let Some(s) = self.peers.get_mut(sub) {
                s.pt_map.clear();
            }
        }
        if let (Some(s), true) = (source, has_subscribers) {
            self.want_keyframe(s, socket, now);
        }
    }

    /// Refreshes the stage of a publisher and every stage it is replicated into.
    pub(super) fn refresh_sources_of(
        &mut self,
        stage: &Arc<str>,
        participant_id: &str,
        socket: &UdpSocket,
        now: Instant,
    ) {
        self.refresh_source(stage, socket, now);
        let dests = self
            .replicated
            .get(participant_id)
            .cloned()
            .unwrap_or_default();
        for d in dests {
            self.refresh_source(&d, socket, now);
        }
    }
}
