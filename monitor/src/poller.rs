//! The poll loop: one round every `poll_interval`.
//!
//! A round reads every pool from the edge, samples IVS within the budget, posts the
//! observations to the pools, asks the pools to scale down as core's policy decides, and
//! collects orphan stages. IVS sampling is spread over rounds:
//! - a paginated `ListStages` pass (100 stages a page, tags and `activeSessionId` included)
//!   runs continuously, a few pages a round: 1,000 stages take 10 calls;
//! - a pool's stage that the last listing showed without a session has nobody connected and
//!   costs no call; one with a session costs `ListParticipants` (per page of 100); one the
//!   listing has not shown yet (just created) costs a `GetStage` first;
//! - stages are taken least recently sampled first (round-robin).
//!
//! No IVS call waits past the round's end: what the budget cannot fit is put off to the next
//! round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stagefan_core::ivs::{Operation, ParticipantState, StageSummary};
use stagefan_core::policy::{
    self, IvsStage, KnownStages, Orphan, OrphanTracker, PolicyConfig, ScaleAction,
};
use stagefan_core::pool::{Millis, Observation, Snapshot, StageObservation, StageState};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::edge::{EdgeClient, EdgeError};
use crate::ivs::{CallError, IvsClient};
use crate::metrics::{ActionKind, Metrics, Outcome};

/// The knobs of the loop.
#[derive(Clone, Debug)]
pub struct PollSettings {
    /// Time between round starts; also the longest an IVS call may wait for budget.
    pub poll_interval: Duration,
    /// How long a stage of this deployment unknown to every pool is left alone.
    pub orphan_grace: Duration,
    /// This deployment's id (tag `stagefan:deployment`): only its stages are orphan
    /// candidates.
    pub deployment: String,
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Every pool was read.
    pub ok: bool,
    /// Broadcasts listed.
    pub broadcasts: usize,
    /// Stages sampled in IVS this round.
    pub sampled: usize,
    /// A `ListStages` pass completed this round.
    pub listing_completed: bool,
    /// Scaling actions the pools carried out.
    pub actions_done: usize,
    /// Scaling actions the pools refused.
    pub actions_refused: usize,
    /// Orphans deleted.
    pub orphans_deleted: usize,
    /// IVS calls put off for want of budget.
    pub deferred: bool,
}

/// A paginated `ListStages` pass, carried across rounds.
#[derive(Debug, Default)]
struct Listing {
    next_token: Option<String>,
    pages: Vec<StageSummary>,
}

/// What the last `ListStages` page showed of a stage: its active session, and when.
#[derive(Debug, Clone)]
struct Listed {
    session: Option<String>,
    at: Instant,
}

/// A stage's last IVS sample.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
}

/// The state the loop keeps between rounds.
pub struct Poller {
    edge: EdgeClient,
    ivs: IvsClient,
    metrics: Arc<Metrics>,
    settings: PollSettings,
    origin: Instant,
    origin_unix_ms: u64,
    listing: Listing,
    listed: HashMap<String, Listed>,
    samples: HashMap<String, Sample>,
    sampled_broadcast: HashMap<String, String>,
    drift: HashMap<String, (String, i64)>,
    orphans: OrphanTracker,
    pending_orphans: Vec<Orphan>,
    /// IVS throttled our last `DeleteStage`: the next slot request says so.
    delete_throttled: bool,
}

impl Poller {
    /// A poller with nothing sampled yet.
    pub fn new(
        edge: EdgeClient,
        ivs: IvsClient,
        metrics: Arc<Metrics>,
        settings: PollSettings,
    ) -> Self {
        let origin_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Self {
            edge,
            ivs,
            metrics,
            settings,
            origin: Instant::now(),
            origin_unix_ms,
            listing: Listing::default(),
            listed: HashMap::new(),
            samples: HashMap::new(),
            sampled_broadcast: HashMap::new(),
            drift: HashMap::new(),
            orphans: OrphanTracker::new(),
            pending_orphans: Vec::new(),
            delete_throttled: false,
        }
    }

    /// Unix milliseconds on tokio's clock (wall-clock based, pausable in tests).
    fn now_ms(&self) -> Millis {
        self.origin_unix_ms + self.origin.elapsed().as_millis() as u64
    }

    /// Runs rounds until `shutdown` turns true. A round under way is finished first; `ready`
    /// turns true after the first successful round.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>, ready: Arc<AtomicBool>) {
        let mut ticker = tokio::time::interval(self.settings.poll_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *shutdown.borrow() {
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => continue,
                _ = ticker.tick() => {}
            }
            let report = self.round().await;
            if report.ok && !ready.swap(true, Ordering::SeqCst) {
                tracing::info!("first round succeeded; ready");
            }
        }
        tracing::info!("poll loop stopped");
    }

    /// One round.
    pub async fn round(&mut self) -> RoundReport {
        let started = Instant::now();
        let deadline = started + self.settings.poll_interval;
        let mut report = RoundReport::default();

        let ids = match self.edge.broadcasts().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list broadcasts; round skipped");
                self.finish(started, &report);
                return report;
            }
        };
        report.broadcasts = ids.len();
        let mut snaps = Vec::with_capacity(ids.len());
        let mut unread = Vec::new();
        for id in &ids {
            match self.edge.snapshot(id).await {
                Ok(s) => snaps.push(s),
                Err(e) => {
                    tracing::warn!(broadcast = %id, error = %e, "cannot read the pool");
                    unread.push(id.clone());
                }
            }
        }
        let all_read = unread.is_empty();
        // A pool of another deployment means the monitor is pointed at the wrong edge (or runs
        // with the wrong --deployment): collecting would then take that edge's stages for
        // orphans. Nothing is collected until the two agree.
        let foreign: Vec<&str> = snaps
            .iter()
            .filter(|s| s.deployment != self.settings.deployment)
            .map(|s| s.deployment.as_str())
            .collect();
        if let Some(other) = foreign.first() {
            tracing::error!(
                deployment = %self.settings.deployment,
                pools_deployment = %other,
                "the edge's pools belong to another deployment; no orphan is collected \
                 (set --deployment / STAGEFAN_DEPLOYMENT as the worker has it)"
            );
        }
        let may_collect = all_read && foreign.is_empty();
        self.metrics.pool.observe(&snaps, &unread, ids.len());

        let candidates = sample_candidates(&snaps);
        let (listed, sampled) = tokio::join!(
            list_step(&self.ivs, &mut self.listing, deadline),
            sample_step(
                &self.ivs,
                &self.samples,
                &self.listed,
                &candidates,
                deadline
            ),
        );
        for (arn, entry) in &listed.seen {
            self.listed.insert(arn.clone(), entry.clone());
        }
        if let Some(complete) = &listed.complete {
            let present: HashSet<&str> = complete.iter().map(|s| s.arn.as_str()).collect();
            self.listed.retain(|arn, _| present.contains(arn.as_str()));
        }
        report.deferred = sampled.deferred || listed.deferred;
        report.sampled = sampled.observations.len();
        self.post_observations(&snaps, sampled.observations).await;
        self.forget_stages(&candidates);
        self.publish_coverage(&candidates);

        let (done, refused) = self.scale_down(&snaps).await;
        report.actions_done = done;
        report.actions_refused = refused;

        if let Some(stages) = listed.complete {
            report.listing_completed = true;
            self.metrics.observed.set_ivs_stages(stages.len());
            if may_collect {
                let ivs: Vec<IvsStage> = stages
                    .into_iter()
                    .map(|s| IvsStage {
                        arn: s.arn,
                        name: s.name,
                        tags: s.tags.unwrap_or_default(),
                        created_at: None,
                    })
                    .collect();
                let known = KnownStages::from_snapshots(&snaps);
                let grace = self.settings.orphan_grace.as_millis() as u64;
                let now = self.now_ms();
                self.pending_orphans =
                    self.orphans
                        .find(&ivs, &known, &self.settings.deployment, now, grace);
            }
        }
        if may_collect {
            report.orphans_deleted = self.collect_orphans(&snaps, deadline).await;
        } else {
            self.pending_orphans.clear();
        }
        self.metrics.actions.set_orphans(self.pending_orphans.len());

        report.ok = all_read;
        self.finish(started, &report);
        report
    }

    fn finish(&self, started: Instant, report: &RoundReport) {
        let secs = started.elapsed().as_secs_f64();
        self.metrics
            .rounds
            .finished(report.ok, secs, self.now_ms() as f64 / 1000.0);
        tracing::debug!(
            ok = report.ok,
            broadcasts = report.broadcasts,
            sampled = report.sampled,
            listing_completed = report.listing_completed,
            actions_done = report.actions_done,
            actions_refused = report.actions_refused,
            orphans_deleted = report.orphans_deleted,
            deferred = report.deferred,
            seconds = secs,
            "round finished"
        );
    }

    async fn post_observations(&mut self, snaps: &[Snapshot], observations: Vec<StageSample>) {
        let mut by_broadcast: BTreeMap<String, Vec<StageSample>> = BTreeMap::new();
        for o in observations {
            by_broadcast.entry(o.broadcast.clone()).or_default().push(o);
        }
        for (broadcast, samples) in by_broadcast {
            let observed_at = samples
                .iter()
                .map(|s| s.at)
                .min()
                .map(|at| self.origin_unix_ms + at.duration_since(self.origin).as_millis() as u64)
                .unwrap_or_else(|| self.now_ms());
            let obs = Observation {
                observed_at,
                missing: samples
                    .iter()
                    .filter(|s| s.missing)
                    .map(|s| s.arn.clone())
                    .collect(),
                stages: samples
                    .iter()
                    .filter(|s| !s.missing)
                    .map(|s| StageObservation {
                        stage_arn: s.arn.clone(),
                        publishers: s.publishers.clone(),
                        subscribers: s.subscribers.clone(),
                    })
                    .collect(),
            };
            for s in &samples {
                self.samples.insert(s.arn.clone(), Sample { at: s.at });
                self.sampled_broadcast
                    .insert(s.arn.clone(), broadcast.clone());
                self.metrics.observed.sampled(
                    &broadcast,
                    &s.arn,
                    s.publishers.len(),
                    s.subscribers.len(),
                );
            }
            match self.edge.observe(&broadcast, &obs).await {
                Ok(answer) => {
                    let drifted: HashMap<&str, i64> = answer
                        .drift
                        .iter()
                        .map(|d| (d.stage_arn.as_str(), i64::from(d.ivs) - i64::from(d.pool)))
                        .collect();
                    for s in &samples {
                        let d = drifted.get(s.arn.as_str()).copied().unwrap_or(0);
                        if d != 0 {
                            tracing::info!(
                                broadcast = %broadcast,
                                stage = %s.arn,
                                ivs_minus_pool = d,
                                "pool and IVS disagree on a stage's viewers"
                            );
                        }
                        self.metrics.observed.set_drift(&broadcast, &s.arn, d);
                        self.drift.insert(s.arn.clone(), (broadcast.clone(), d));
                    }
                    for arn in &answer.became_live {
                        tracing::info!(broadcast = %broadcast, stage = %arn, "stage went live (host seen in IVS)");
                    }
                }
                Err(e) => {
                    tracing::warn!(broadcast = %broadcast, error = %e, "cannot post observations");
                }
            }
        }
        let mut drifting: HashMap<&str, usize> = HashMap::new();
        for s in snaps {
            drifting.insert(s.broadcast.as_str(), 0);
        }
        for (b, d) in self.drift.values() {
            if *d != 0 {
                if let Some(n) = drifting.get_mut(b.as_str()) {
                    *n += 1;
                }
            }
        }
        for (b, n) in drifting {
            self.metrics.observed.set_drifting(b, n);
        }
    }

    /// Drops what is kept about stages no pool has any more.
    fn forget_stages(&mut self, candidates: &[(String, String)]) {
        let live: HashSet<&str> = candidates.iter().map(|(_, a)| a.as_str()).collect();
        let gone: Vec<String> = self
            .samples
            .keys()
            .filter(|a| !live.contains(a.as_str()))
            .cloned()
            .collect();
        for arn in gone {
            self.samples.remove(&arn);
            self.drift.remove(&arn);
            if let Some(b) = self.sampled_broadcast.remove(&arn) {
                self.metrics.observed.forget(&b, &arn);
            }
        }
    }

    fn publish_coverage(&self, candidates: &[(String, String)]) {
        let oldest = candidates
            .iter()
            .map(|(_, arn)| {
                self.samples
                    .get(arn)
                    .map_or_else(|| self.origin.elapsed(), |s| s.at.elapsed())
            })
            .max()
            .unwrap_or_default();
        self.metrics
            .observed
            .set_oldest_sample_age(oldest.as_secs_f64());
    }

    /// Asks the pools to carry out what core's policy decides for each, with the pool's own
    /// knobs (its snapshot carries them: the same policy and configuration as its alarm).
    async fn scale_down(&self, snaps: &[Snapshot]) -> (usize, usize) {
        let (mut done, mut refused) = (0, 0);
        for snap in snaps {
            let cfg = PolicyConfig::of_snapshot(snap);
            for action in policy::scale_down(&cfg, snap, snap.now) {
                let (kind, arn) = match &action {
                    ScaleAction::Drain { stage_arn } => (ActionKind::Drain, stage_arn.as_str()),
                    ScaleAction::Delete { stage_arn } => (ActionKind::Delete, stage_arn.as_str()),
                    ScaleAction::Create => (ActionKind::Create, ""),
                };
                let outcome = match self.edge.act(&snap.broadcast, &action).await {
                    Ok(answer) if answer.done() => {
                        done += 1;
                        tracing::info!(
                            action = kind.as_str(),
                            broadcast = %snap.broadcast,
                            stage = %arn,
                            outcome = "done",
                            "scaling action"
                        );
                        Outcome::Done
                    }
                    Ok(answer) => {
                        refused += 1;
                        tracing::info!(
                            action = kind.as_str(),
                            broadcast = %snap.broadcast,
                            stage = %arn,
                            outcome = "refused",
                            reason = answer.reason.as_deref().unwrap_or(""),
                            "scaling action"
                        );
                        Outcome::Refused
                    }
                    Err(e) => {
                        tracing::warn!(
                            action = kind.as_str(),
                            broadcast = %snap.broadcast,
                            stage = %arn,
                            outcome = "error",
                            error = %e,
                            "scaling action"
                        );
                        Outcome::Error
                    }
                };
                self.metrics.actions.action(kind, outcome);
            }
        }
        (done, refused)
    }

    /// Deletes the orphans found at the last complete listing that are still orphans, within
    /// the budget; what the budget cannot fit stays for the next round. A candidate is
    /// deleted only when (1) the pool its broadcast tag names, asked directly, does not know
    /// it (a pool whose registration has not landed yet is not in the edge's list), and
    /// (2) IVS lists nobody connected to it; the `DeleteStage` then waits for its slot in the
    /// account-wide budget the pools use.
    async fn collect_orphans(&mut self, snaps: &[Snapshot], deadline: Instant) -> usize {
        if self.pending_orphans.is_empty() {
            return 0;
        }
        let known = KnownStages::from_snapshots(snaps);
        let listed: HashSet<&str> = snaps.iter().map(|s| s.broadcast.as_str()).collect();
        let mut deleted = 0;
        let mut left = Vec::new();
        let pending = std::mem::take(&mut self.pending_orphans);
        let mut out_of_budget = false;
        for orphan in pending {
            if known.arns.contains(&orphan.arn) {
                tracing::info!(stage = %orphan.arn, "orphan candidate is now known to a pool; kept");
                continue;
            }
            if out_of_budget {
                left.push(orphan);
                continue;
            }
            let broadcast = orphan.broadcast.as_deref().unwrap_or("");
            match self.claimed_by_its_pool(&orphan, &listed).await {
                Claim::Known => {
                    tracing::info!(
                        stage = %orphan.arn,
                        broadcast,
                        "orphan candidate belongs to a pool the edge does not list (yet); kept"
                    );
                    continue;
                }
                Claim::Unsure => {
                    left.push(orphan);
                    continue;
                }
                Claim::Unclaimed => {}
            }
            match sample_stage(&self.ivs, &orphan.arn, deadline).await {
                Err(SampleError::Deferred) => {
                    out_of_budget = true;
                    left.push(orphan);
                    continue;
                }
                // Could not tell who is connected: not now.
                Ok(None) => {
                    left.push(orphan);
                    continue;
                }
                // Already gone from IVS: nothing to collect.
                Err(SampleError::Missing) => continue,
                Ok(Some((publishers, subscribers, _))) => {
                    if !publishers.is_empty() || !subscribers.is_empty() {
                        let connected = format!(
                            "{} publishers, {} subscribers",
                            publishers.len(),
                            subscribers.len()
                        );
                        let why = ("participants_connected", connected.as_str());
                        self.record_orphan_delete(&orphan, Outcome::Refused, Some(why));
                        // Dropped from the list; the next listing pass looks at it again.
                        continue;
                    }
                }
            }
            self.wait_for_delete_slot().await;
            // The slot is ours now: the call may run past the round's end rather than waste it.
            let call_by = Instant::now() + self.settings.poll_interval;
            match self
                .ivs
                .delete_stage(&orphan.arn, call_by.max(deadline))
                .await
            {
                Ok(()) => {
                    self.delete_throttled = false;
                    deleted += 1;
                    self.record_orphan_delete(&orphan, Outcome::Done, None);
                }
                Err(e) if e.is_not_found() => {
                    tracing::info!(stage = %orphan.arn, "orphan already gone");
                }
                Err(CallError::Deferred(..)) => {
                    out_of_budget = true;
                    left.push(orphan);
                }
                Err(e) => {
                    self.delete_throttled = e.is_throttling();
                    let error = e.to_string();
                    let why = ("call_failed", error.as_str());
                    self.record_orphan_delete(&orphan, Outcome::Error, Some(why));
                    left.push(orphan);
                }
            }
        }
        self.pending_orphans = left;
        deleted
    }

    /// Counts and logs one orphan delete the same way each time: done at `info`; refused or
    /// failed at `warn`, with why (a stable reason code and its detail).
    fn record_orphan_delete(
        &self,
        orphan: &Orphan,
        outcome: Outcome,
        why: Option<(&'static str, &str)>,
    ) {
        self.metrics
            .actions
            .action(ActionKind::OrphanDelete, outcome);
        let broadcast = orphan.broadcast.as_deref().unwrap_or("");
        let (stage, age_ms, outcome) = (&orphan.arn, orphan.age_ms, outcome.as_str());
        match why {
            None => {
                tracing::info!(action = "orphan_delete", %stage, broadcast, age_ms, outcome, "scaling action")
            }
            Some((reason, detail)) => {
                tracing::warn!(action = "orphan_delete", %stage, broadcast, age_ms, outcome, reason, detail, "scaling action")
            }
        }
    }

    /// Whether the pool an orphan candidate's broadcast tag names knows it. Pools the edge
    /// listed are already in `known`; a pool it did not list (its registration failed and is
    /// being retried) is asked for its snapshot.
    async fn claimed_by_its_pool(&self, orphan: &Orphan, listed: &HashSet<&str>) -> Claim {
        let Some(b) = orphan.broadcast.as_deref() else {
            return Claim::Unclaimed;
        };
        if listed.contains(b) || !crate::edge::valid_broadcast_id(b) {
            return Claim::Unclaimed;
        }
        match self.edge.snapshot(b).await {
            Ok(snap) => {
                if KnownStages::from_snapshots([&snap])
                    .arns
                    .contains(&orphan.arn)
                {
                    Claim::Known
                } else {
                    Claim::Unclaimed
                }
            }
            Err(EdgeError::Status { status: 404, .. }) => Claim::Unclaimed,
            Err(e) => {
                tracing::warn!(broadcast = b, error = %e, "cannot ask an orphan's pool; kept for now");
                Claim::Unsure
            }
        }
    }

    /// Waits for a `DeleteStage` slot of the account-wide IVS budget (the edge's, shared with
    /// every pool). When the edge cannot give one, the monitor's own budget still paces the
    /// call (at `--ivs-budget`, at most 5 per second) and the fallback is logged.
    async fn wait_for_delete_slot(&mut self) {
        let throttled = std::mem::take(&mut self.delete_throttled);
        match self
            .edge
            .reserve_slot(Operation::DeleteStage, throttled)
            .await
        {
            Ok(slot) => {
                if slot.wait_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(slot.wait_ms)).await;
                }
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "the account-wide IVS budget is out of reach: DeleteStage paced by the \
                     monitor's own budget alone"
                );
            }
        }
    }
}

/// What an orphan candidate's own pool says of it.
enum Claim {
    /// The pool knows the stage: not an orphan.
    Known,
    /// No pool claims it.
    Unclaimed,
    /// The pool could not be asked: decide later.
    Unsure,
}

/// The pools' stages worth sampling: (broadcast, ARN) of every stage that exists in IVS
/// (warming, live or draining).
fn sample_candidates(snaps: &[Snapshot]) -> Vec<(String, String)> {
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

struct ListOutcome {
    complete: Option<Vec<StageSummary>>,
    seen: Vec<(String, Listed)>,
    deferred: bool,
}

/// Continues the `ListStages` pass; returns the full list when its last page arrives, and
/// every stage's active session as the pages showed it.
async fn list_step(ivs: &IvsClient, listing: &mut Listing, deadline: Instant) -> ListOutcome {
    let mut out = ListOutcome {
        complete: None,
        seen: Vec::new(),
        deferred: false,
    };
    loop {
        match ivs.list_stages(listing.next_token.clone(), deadline).await {
            Ok(page) => {
                let at = Instant::now();
                for st in &page.stages {
                    out.seen.push((
                        st.arn.clone(),
                        Listed {
                            session: st.active_session_id.clone().filter(|s| !s.is_empty()),
                            at,
                        },
                    ));
                }
                listing.pages.extend(page.stages);
                match page.next_token {
                    Some(t) => listing.next_token = Some(t),
                    None => {
                        listing.next_token = None;
                        out.complete = Some(std::mem::take(&mut listing.pages));
                        return out;
                    }
                }
            }
            Err(CallError::Deferred(..)) => {
                out.deferred = true;
                return out;
            }
            Err(e) => {
                tracing::warn!(error = %e, "ListStages failed; the pass goes on next round");
                return out;
            }
        }
    }
}

/// One stage's participants as IVS listed them.
#[derive(Debug, Clone)]
struct StageSample {
    broadcast: String,
    arn: String,
    at: Instant,
    publishers: Vec<String>,
    subscribers: Vec<String>,
    /// IVS no longer has the stage (GetStage answered not found): the pool is told, and
    /// marks it gone at once.
    missing: bool,
}

struct SampleOutcome {
    observations: Vec<StageSample>,
    deferred: bool,
}

/// Samples the candidates least recently sampled first, until the budget has no room left
/// before `deadline`. A stage that the last `ListStages` page showed without a session has
/// nobody connected: that costs no call. A stage with a session costs one
/// `ListParticipants` per page; a stage the listing has not shown yet (just created) a
/// `GetStage` first.
async fn sample_step(
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

enum SampleError {
    Deferred,
    /// The stage is gone from IVS.
    Missing,
}

/// Who a stage has: `(publishers, subscribers, when)`.
type Participants = (Vec<String>, Vec<String>, Instant);

/// `GetStage`, then every page of `ListParticipants` for its active session. `Ok(None)`:
/// the sample failed (logged) and the stage is tried again in a later round.
async fn sample_stage(
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
