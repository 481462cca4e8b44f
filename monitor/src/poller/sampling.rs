//! Sampling a pool's stages in IVS: who is connected to each, within the budget.

use std::collections::HashMap;

use stagefan_core::ivs::ParticipantState;
use stagefan_core::pool::{Snapshot, StageState};
use tokio::time::Instant;

use super::listing::Listed;
use super::Sample;
use crate::ivs::{CallError, IvsClient};

/// The pools' stages worth sampling: (broadcast, ARN) of every stage that exists in IVS
/// (warming, live or draining).
pub(super) fn sample_candidates(snaps: &[Snapshot]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for snap in snaps {
        for st in &snap.stages {
            if !matches!(
                st.state,
                StageState::Warming | StageState::Live | StageState::Draining
            ) {
                continue;
            }
            if let Some(arn) = &st.stage_arn {
                out.push((snap.broadcast.clone(), arn.clone()));
            }
        }
    }
    out
}

/// One stage's participants as IVS listed them.
#[derive(Debug, Clone)]
pub(super) struct StageSample {
    pub(super) broadcast: String,
    pub(super) arn: String,
    pub(super) at: Instant,
    pub(super) publishers: Vec<String>,
    pub(super) subscribers: Vec<String>,
    /// IVS no longer has the stage (GetStage answered not found): the pool is told, and
    /// marks it gone at once.
    pub(super) missing: bool,
}

pub(super) struct SampleOutcome {
    pub(super) observations: Vec<StageSample>,
    pub(super) deferred: bool,
}

/// Samples the candidates least recently sampled first, until the budget has no room left
/// before `deadline`. A stage that the last `ListStages` page showed without a session has
/// nobody connected: that costs no call. A stage with a session costs one
/// `ListParticipants` per page; a stage the listing has not shown yet (just created) a
/// `GetStage` first.
pub(super) async fn sample_step(
    ivs: &IvsClient,
    samples: &HashMap<String, Sample>,
    listed: &HashMap<String, Listed>,
    candidates: &[(String, String)],
    deadline: Instant,
) -> SampleOutcome {
    let mut order: Vec<&(String, String)> = candidates.iter().collect();
    // Never sampled first, then oldest sample first; ties by ARN for a stable order.
    order.sort_by(|a, b| {
        let ta = samples.get(&a.1).map(|s| s.at);
        let tb = samples.get(&b.1).map(|s| s.at);
        ta.cmp(&tb).then_with(|| a.1.cmp(&b.1))
    });
    let mut out = SampleOutcome {
        observations: Vec::new(),
        deferred: false,
    };
    for (broadcast, arn) in order {
        let last = samples.get(arn).map(|s| s.at);
        let sample = match listed.get(arn) {
            Some(l) if l.session.is_none() => {
                if last.is_some_and(|t| t >= l.at) {
                    continue; // nothing new since; the next listing pass refreshes it
                }
                Ok(Some((Vec::new(), Vec::new(), l.at)))
            }
            _ if out.deferred => continue, // the budget is spent for this round
            Some(l) => {
                let session = l.session.clone().unwrap_or_default();
                participants(ivs, arn, &session, deadline).await
            }
            None => sample_stage(ivs, arn, deadline).await,
        };
        match sample {
            Ok(Some((publishers, subscribers, at))) => out.observations.push(StageSample {
                broadcast: broadcast.clone(),
                arn: arn.clone(),
                at,
                publishers,
                subscribers,
                missing: false,
            }),
            Ok(None) => {}
            Err(SampleError::Missing) => out.observations.push(StageSample {
                broadcast: broadcast.clone(),
                arn: arn.clone(),
                at: Instant::now(),
                publishers: Vec::new(),
                subscribers: Vec::new(),
                missing: true,
            }),
            Err(SampleError::Deferred) => out.deferred = true,
        }
    }
    out
}

pub(super) enum SampleError {
    Deferred,
    /// The stage is gone from IVS.
    Missing,
}

/// Who a stage has: `(publishers, subscribers, when)`.
type Participants = (Vec<String>, Vec<String>, Instant);

/// `GetStage`, then every page of `ListParticipants` for its active session. `Ok(None)`:
/// the sample failed (logged) and the stage is tried again in a later round.
pub(super) async fn sample_stage(
    ivs: &IvsClient,
    arn: &str,
    deadline: Instant,
) -> Result<Option<Participants>, SampleError> {
    let stage = match ivs.get_stage(arn, deadline).await {
        Ok(s) => s,
        Err(CallError::Deferred(..)) => return Err(SampleError::Deferred),
        Err(e) if e.is_not_found() => {
            // The pool has a stage IVS does not: nobody can be connected to it, and the pool
            // must stop seating viewers there (it marks it gone and re-seats them).
            tracing::warn!(stage = %arn, "a pool's stage is missing in IVS");
            return Err(SampleError::Missing);
        }
        Err(e) => {
            tracing::warn!(stage = %arn, error = %e, "GetStage failed");
            return Ok(None);
        }
    };
    match stage.active_session_id.filter(|s| !s.is_empty()) {
        None => Ok(Some((Vec::new(), Vec::new(), Instant::now()))),
        Some(session) => participants(ivs, arn, &session, deadline).await,
    }
}

/// Every page of `ListParticipants` of one session: the connected publishers and
/// subscribers.
async fn participants(
    ivs: &IvsClient,
    arn: &str,
    session: &str,
    deadline: Instant,
) -> Result<Option<Participants>, SampleError> {
    let (mut publishers, mut subscribers) = (Vec::new(), Vec::new());
    let mut token = None;
    loop {
        match ivs.list_participants(arn, session, token, deadline).await {
            Ok(page) => {
                for p in page.participants {
                    if p.state.is_some_and(|s| s != ParticipantState::Connected) {
                        continue;
                    }
                    let Some(id) = p.participant_id else { continue };
                    if p.published == Some(true) {
                        publishers.push(id);
                    } else {
                        subscribers.push(id);
                    }
                }
                match page.next_token {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
            Err(CallError::Deferred(..)) => return Err(SampleError::Deferred),
            Err(e) if e.is_not_found() => {
                return Ok(Some((Vec::new(), Vec::new(), Instant::now())))
            }
            Err(e) => {
                tracing::warn!(stage = %arn, error = %e, "ListParticipants failed");
                return Ok(None);
            }
        }
    }
    Ok(Some((publishers, subscribers, Instant::now())))
}
