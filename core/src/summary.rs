//! What a pool shows the public (`GET /api/broadcasts`, `/status`): its stages, their state
//! and fill, and in replicate mode which stage is an origin and which a replica of which
//! origin; no hosts, no counters. And the fan-out mode a pool keeps for its whole life.

use serde::{Deserialize, Serialize};

use crate::modes::FanoutMode;
use crate::pool::{BroadcastState, Pool, Snapshot, StageState};
use crate::time::UtcDateTime;

/// The public view of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicSummary {
    /// Broadcast id.
    pub broadcast: String,
    /// Seats per new stage.
    pub capacity: u32,
    /// How the host's stream reaches the stages.
    pub fanout_mode: FanoutMode,
    /// Viewers holding a seat.
    pub viewers: u32,
    /// Where the broadcast is in its life (`stagefan_core::pool::life`).
    pub broadcast_state: BroadcastState,
    /// Since when (RFC 3339, whole seconds).
    pub broadcast_state_since: String,
    /// Every stage not deleted, oldest first.
    pub stages: Vec<PublicStage>,
}

/// One stage of a [`PublicSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublicStage {
    /// `None` while the stage is being created.
    pub stage_arn: Option<String>,
    /// Its state.
    pub state: StageState,
    /// Seats taken.
    pub load: u32,
    /// Seats in all.
    pub capacity: u32,
    /// Replicate mode only: `role` (and `originArn`) flattened into the stage.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub role: Option<StageRole>,
}

/// In replicate mode, how a stage gets the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum StageRole {
    /// The host uploads to it.
    Origin,
    /// It gets the host by replication from its origin.
    Replica {
        /// The origin's ARN, `null` while that origin is being created.
        #[serde(rename = "originArn")]
        origin_arn: Option<String>,
    },
}

impl PublicSummary {
    /// The public view of `pool` as `snapshot` (taken of it) shows it.
    pub fn of(pool: &Pool, snapshot: &Snapshot) -> PublicSummary {
        let replicate = snapshot.fanout_mode == FanoutMode::Replicate;
        let stages = snapshot
            .stages
            .iter()
            .filter(|s| s.state != StageState::Deleted)
            .map(|s| PublicStage {
                stage_arn: s.stage_arn.clone(),
                state: s.state,
                load: s.load,
                capacity: s.capacity,
                role: replicate.then(|| match pool.stage(s.id).and_then(|st| st.origin) {
                    Some(_) => StageRole::Replica {
                        origin_arn: s.origin_arn.clone(),
                    },
                    None => StageRole::Origin,
                }),
            })
            .collect();
        let life = pool.life(snapshot.now);
        PublicSummary {
            broadcast: snapshot.broadcast.clone(),
            capacity: snapshot.capacity,
            fanout_mode: snapshot.fanout_mode,
            viewers: snapshot.viewers,
            broadcast_state: life.state,
            broadcast_state_since: rfc3339_ms(life.since),
            stages,
        }
    }
}

/// Unix milliseconds as RFC 3339 (whole seconds), as the edge's answers spell times.
pub fn rfc3339_ms(ms: u64) -> String {
    UtcDateTime::from_unix((ms / 1000) as i64).rfc3339()
}

/// A host asked a running pool for the other fan-out mode: a pool keeps the mode it was
/// created with (its stages were made and wired for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "this broadcast runs in {} mode since it was created; a running broadcast cannot switch \
     to {} (end it, or use another broadcast id)",
    current.as_str(),
    asked.as_str()
)]
pub struct FanoutLocked {
    /// The pool's mode.
    pub current: FanoutMode,
    /// The mode asked for.
    pub asked: FanoutMode,
}

/// Whether a host asking for `asked` (or for nothing in particular) may use a pool running
/// in `current`.
pub fn check_fanout(current: FanoutMode, asked: Option<FanoutMode>) -> Result<(), FanoutLocked> {
    match asked {
        Some(asked) if asked != current => Err(FanoutLocked { current, asked }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::PoolSettings;
    use serde_json::Value;

    const T0: u64 = 1_764_160_000_000;

    /// A pool of `created` stages with ARNs, plus one more being created.
    fn pool(fanout: FanoutMode, created: u64) -> Pool {
        let settings = PoolSettings {
            fanout,
            max_stages: 20,
            ..PoolSettings::default()
        };
        let mut pool = Pool::with_created_stages(settings, created, T0);
        pool.begin_create(T0).unwrap();
        pool
    }

    /// The keys of a JSON object, sorted.
    fn keys(value: &Value) -> Vec<&str> {
        value
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect()
    }

    fn summary(pool: &mut Pool) -> PublicSummary {
        let snapshot = pool.snapshot(T0);
        PublicSummary::of(pool, &snapshot)
    }

    #[test]
    fn replicate_mode_marks_origins_and_their_replicas() {
        let mut p = pool(FanoutMode::Replicate, 7);
        let s = summary(&mut p);
        assert_eq!(s.stages.len(), 8);
        let arn = |n: usize| s.stages[n].stage_arn.clone();
        // One origin per six stages: 0 and 6; 1-5 replicate 0, 7 (being created) replicates 6.
        for (n, stage) in s.stages.iter().enumerate() {
            match n {
                0 | 6 => assert_eq!(stage.role, Some(StageRole::Origin), "{stage:?}"),
                1..=5 => assert_eq!(stage.role, Some(StageRole::Replica { origin_arn: arn(0) })),
                _ => {
                    assert_eq!(stage.role, Some(StageRole::Replica { origin_arn: arn(6) }));
                    assert_eq!(stage.state, StageState::Creating);
                    assert_eq!(stage.stage_arn, None);
                }
            }
        }
    }

    #[test]
    fn replicate_json_names_role_and_origin() {
        let mut p = pool(FanoutMode::Replicate, 7);
        let json = serde_json::to_value(summary(&mut p)).unwrap();
        let stages = json["stages"].as_array().unwrap();
        assert_eq!(stages[0]["role"], "origin");
        assert!(stages[0].get("originArn").is_none(), "{}", stages[0]);
        assert_eq!(stages[1]["role"], "replica");
        assert_eq!(stages[1]["originArn"], stages[0]["stageArn"]);
        assert_eq!(stages[7]["stageArn"], Value::Null);
        assert_eq!(stages[7]["originArn"], stages[6]["stageArn"]);
        // The page's JSON reads back as the same summary.
        let back: PublicSummary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary(&mut p));
    }

    #[test]
    fn a_replica_of_an_origin_being_created_has_a_null_origin() {
        let p = PublicStage {
            stage_arn: None,
            state: StageState::Creating,
            load: 0,
            capacity: 10,
            role: Some(StageRole::Replica { origin_arn: None }),
        };
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["originArn"], Value::Null);
        assert!(json.as_object().unwrap().contains_key("originArn"));
    }

    #[test]
    fn multi_publish_stages_carry_no_role() {
        let mut p = pool(FanoutMode::MultiPublish, 2);
        let json = serde_json::to_value(summary(&mut p)).unwrap();
        for stage in json["stages"].as_array().unwrap() {
            assert_eq!(
                keys(stage),
                ["capacity", "load", "stageArn", "state"],
                "{stage}"
            );
        }
        assert_eq!(json["fanoutMode"], "multi-publish");
        assert_eq!(
            keys(&json),
            [
                "broadcast",
                "broadcastState",
                "broadcastStateSince",
                "capacity",
                "fanoutMode",
                "stages",
                "viewers"
            ]
        );
        assert_eq!(json["broadcastState"], "not_started");
        assert_eq!(json["broadcastStateSince"], "2025-11-26T12:26:40Z");
    }

    #[test]
    fn a_pool_keeps_its_fanout_mode() {
        use FanoutMode::*;
        assert_eq!(check_fanout(Replicate, None), Ok(()));
        assert_eq!(check_fanout(Replicate, Some(Replicate)), Ok(()));
        let e = check_fanout(MultiPublish, Some(Replicate)).unwrap_err();
        assert_eq!(
            e,
            FanoutLocked {
                current: MultiPublish,
                asked: Replicate
            }
        );
        let text = e.to_string();
        assert!(text.contains("runs in multi-publish mode"), "{text}");
        assert!(text.contains("cannot switch to replicate"), "{text}");
    }
}
