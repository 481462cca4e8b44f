//! Traffic counters and the shared stats snapshot.

use std::time::Instant;

use super::{Engine, STATS_EVERY};
use crate::{MediaStats, Role, StageStats};

/// Traffic counters of one session.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Traffic {
    pub(super) packets_received: u64,
    pub(super) bytes_received: u64,
    pub(super) packets_forwarded: u64,
    pub(super) bytes_forwarded: u64,
}

impl Traffic {
    pub(super) fn add(&mut self, o: &Traffic) {
        self.packets_received += o.packets_received;
        self.bytes_received += o.bytes_received;
        self.packets_forwarded += o.packets_forwarded;
        self.bytes_forwarded += o.bytes_forwarded;
    }
}

impl Engine {
    pub(super) fn publish_stats(&mut self, now: Instant) {
        if !self.stats_dirty && now < self.stats_at + STATS_EVERY {
            return;
        }
        if !self.stats_dirty && self.peers.is_empty() {
            return;
        }
        self.stats_dirty = false;
        self.stats_at = now;
        let mut s = MediaStats {
            sessions: self.peers.len(),
            send_drops: self.send_drops,
            ..MediaStats::default()
        };
        let mut total = self.retired;
        let mut stages: Vec<StageStats> = Vec::with_capacity(self.stages.len());
        for (id, stage) in &self.stages {
            let mut t = stage.retired;
            for p in stage
                .local_publishers()
                .chain(stage.subscribers.iter().copied())
            {
                if let Some(p) = self.peers.get(&p) {
                    t.add(&p.traffic);
                }
            }
            stages.push(StageStats {
                stage_id: id.to_string(),
                publishers: stage.local_publishers().count(),
                replicas: stage.replicas(),
                subscribers: stage.subscribers.len(),
                packets_received: t.packets_received,
                bytes_received: t.bytes_received,
                packets_forwarded: t.packets_forwarded,
                bytes_forwarded: t.bytes_forwarded,
            });
        }
        for p in self.peers.values() {
            total.add(&p.traffic);
            match p.role {
                Role::Publisher => s.publishers += 1,
                Role::Subscriber => s.subscribers += 1,
            }
        }
        stages.sort_by(|a, b| a.stage_id.cmp(&b.stage_id));
        s.packets_received = total.packets_received;
        s.bytes_received = total.bytes_received;
        s.packets_forwarded = total.packets_forwarded;
        s.bytes_forwarded = total.bytes_forwarded;
        s.stages = stages;
        match self.shared_stats.lock() {
            Ok(mut g) => *g = s,
            Err(poisoned) => *poisoned.into_inner() = s,
        }
    }
}
