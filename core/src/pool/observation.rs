//! What IVS showed (participant lists) applied to the pool, and the drift it reveals.

use serde::{Deserialize, Serialize};

use super::*;

/// What IVS showed for one stage (participant lists), as the monitor posts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct StageObservation {
    /// The stage.
    pub stage_arn: String,
    /// Connected participants that publish (the host, or its replica).
    #[serde(default)]
    pub publishers: Vec<String>,
    /// Connected participants that subscribe (viewers).
    #[serde(default)]
    pub subscribers: Vec<String>,
}

/// A round of observations of IVS (`POST .../observations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    /// When IVS was read (older than a host report, it does not override it).
    pub observed_at: Millis,
    /// The stages read.
    pub stages: Vec<StageObservation>,
    /// Stages of this pool that IVS no longer has (`GetStage` or `ListStages` said so): they
    /// are marked gone at once and their viewers re-seated.
    #[serde(default)]
    pub missing: Vec<String>,
}

/// A participant connected to a stage without a seat there: its lease lapsed or was given
/// back, or it never had one. The adapter disconnects it (`DisconnectParticipant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stranger {
    /// The stage.
    pub stage_arn: String,
    /// The participant IVS listed.
    pub participant_id: String,
}

/// A stage whose pool load differs from IVS's subscriber count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// The stage.
    pub stage_arn: String,
    /// Seats held in the pool.
    pub pool: u32,
    /// Subscribers IVS listed.
    pub ivs: u32,
}

/// The answer to an observation round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObservationReport {
    /// Observed stages whose counts differ (only those).
    pub drift: Vec<Drift>,
    /// Stages that went live because of this observation.
    pub became_live: Vec<String>,
    /// Observed ARNs this pool does not know.
    pub unknown_stages: Vec<String>,
    /// Subscribers connected without a seat on their stage (to disconnect).
    #[serde(default)]
    pub strangers: Vec<Stranger>,
    /// Stages marked gone by this observation (IVS no longer has them).
    #[serde(default)]
    pub gone: Vec<String>,
    /// Leases dropped with those stages: their viewers are told to take a new seat.
    #[serde(default)]
    pub evicted: Vec<String>,
}

impl Pool {
    /// Applies what IVS showed: a stage with a publisher has the host (a warming one goes
    /// live, replicas included), one without has not (unless a host report is newer than the
    /// observation). Returns the drift between loads and subscriber counts.
    pub fn observe(&mut self, obs: &Observation, now: Millis) -> ObservationReport {
        self.advance(now);
        let mut report = ObservationReport::default();
        for arn in &obs.missing {
            if let Some(&id) = self.by_arn.get(arn) {
                if let Ok(evicted) = self.gone(id, now) {
                    if self.stages[&id].gone {
                        report.gone.push(arn.clone());
                    }
                    report.evicted.extend(evicted);
                }
            }
        }
        for o in &obs.stages {
            let Some(&id) = self.by_arn.get(&o.stage_arn) else {
                report.unknown_stages.push(o.stage_arn.clone());
                continue;
            };
            let st = &self.stages[&id];
            if st.state == StageState::Deleted {
                report.unknown_stages.push(o.stage_arn.clone());
                continue;
            }
            for participant in &o.subscribers {
                let seated = self
                    .lease_of_participant(participant)
                    .is_some_and(|l| l.stage == id);
                if !seated && st.host_participant_id.as_deref() != Some(participant.as_str()) {
                    report.strangers.push(Stranger {
                        stage_arn: o.stage_arn.clone(),
                        participant_id: participant.clone(),
                    });
                }
            }
            let ivs = o.subscribers.len() as u32;
            if ivs != st.load {
                report.drift.push(Drift {
                    stage_arn: o.stage_arn.clone(),
                    pool: st.load,
                    ivs,
                });
            }
            if st.host_changed_at.is_some_and(|t| t > obs.observed_at) {
                continue;
            }
            let publisher = match &st.host_participant_id {
                Some(known) if o.publishers.contains(known) => Some(known.clone()),
                _ => o.publishers.first().cloned(),
            };
            let unchanged = st.host_publishing == publisher.is_some()
                && (publisher.is_none() || publisher == st.host_participant_id);
            if unchanged {
                continue;
            }
            if self.set_host(id, publisher.as_deref(), obs.observed_at) {
                report.became_live.push(o.stage_arn.clone());
            }
        }
        report
    }
}
