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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use stagefan_core::policy::{IvsStage, KnownStages, Orphan, OrphanTracker};
use stagefan_core::pool::{Millis, Observation, Snapshot, StageObservation};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::edge::EdgeClient;
use crate::ivs::IvsClient;
use crate::metrics::Metrics;

use listing::{list_step, Listed, Listing};
use sampling::{sample_candidates, sample_step, StageSample};

mod listing;
mod orphans;
mod sampling;
mod scale_down;

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

/// A stage's last IVS sample.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
}

/// The poll loop over every region of the deployment: one [`RegionPoller`] per region
/// (its own IVS client, budget, listing, samples and orphans), run side by side each round
/// after the pools of every region have been read once.
pub struct Poller {
    edge: Arc<EdgeClient>,
    metrics: Arc<Metrics>,
    settings: PollSettings,
    origin: Instant,
    origin_unix_ms: u64,
    regions: Vec<RegionPoller>,
}

/// The loop's state in one region.
pub struct RegionPoller {
    edge: Arc<EdgeClient>,
    metrics: Arc<Metrics>,
    settings: PollSettings,
    origin: Instant,
    origin_unix_ms: u64,
    /// The deployment's primary region: its pools keep the broadcast's bare name.
    primary: String,
    ivs: IvsClient,
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

/// The pools of one region as a round read them.
struct RegionPools {
    snaps: Vec<Snapshot>,
    /// Broadcasts whose pool in the region could not be read.
    unread: Vec<String>,
}

impl Poller {
    /// A poller of a one-region deployment (the region of `ivs`), with nothing sampled yet.
    pub fn new(
        edge: EdgeClient,
        ivs: IvsClient,
        metrics: Arc<Metrics>,
        settings: PollSettings,
    ) -> Self {
        Self::regions(edge, vec![ivs], metrics, settings)
    }

    /// A poller of every region of `ivs` (one client per region, the primary first).
    pub fn regions(
        edge: EdgeClient,
        ivs: Vec<IvsClient>,
        metrics: Arc<Metrics>,
        settings: PollSettings,
    ) -> Self {
        let origin_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let origin = Instant::now();
        let edge = Arc::new(edge);
        let primary = ivs
            .first()
            .map(|c| c.region().to_string())
            .unwrap_or_default();
        let regions = ivs
            .into_iter()
            .map(|ivs| RegionPoller {
                edge: edge.clone(),
                metrics: metrics.clone(),
                settings: settings.clone(),
                origin,
                origin_unix_ms,
                primary: primary.clone(),
                ivs,
                listing: Listing::default(),
                listed: HashMap::new(),
                samples: HashMap::new(),
                sampled_broadcast: HashMap::new(),
                drift: HashMap::new(),
                orphans: OrphanTracker::new(),
                pending_orphans: Vec::new(),
                delete_throttled: false,
            })
            .collect();
        Self {
            edge,
            metrics,
            settings,
            origin,
            origin_unix_ms,
            regions,
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

    /// One round: the broadcasts, every region's pools, the regions' quota ledgers, then
    /// each region's IVS work side by side (each within its own budget, until the round's
    /// deadline).
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
        let mut read = Vec::with_capacity(self.regions.len());
        for region in &self.regions {
            read.push(region.read_pools(&ids).await);
        }
        let observed: Vec<(&str, &Snapshot)> = self
            .regions
            .iter()
            .zip(&read)
            .flat_map(|(r, pools)| pools.snaps.iter().map(move |s| (r.region(), s)))
            .collect();
        let kept: Vec<(String, String)> = self
            .regions
            .iter()
            .zip(&read)
            .flat_map(|(r, pools)| {
                pools
                    .unread
                    .iter()
                    .map(move |b| (b.clone(), r.region().to_string()))
            })
            .collect();
        self.metrics.pool.observe(&observed, &kept, ids.len());
        self.observe_quotas().await;

        let rounds = self
            .regions
            .iter_mut()
            .zip(&read)
            .map(|(region, pools)| region.round(pools, deadline));
        let reports = join_all(rounds.collect()).await;
        report.ok = true;
        for r in reports {
            report.ok &= r.ok;
            report.sampled += r.sampled;
            report.listing_completed |= r.listing_completed;
            report.actions_done += r.actions_done;
            report.actions_refused += r.actions_refused;
            report.orphans_deleted += r.orphans_deleted;
            report.deferred |= r.deferred;
        }
        self.finish(started, &report);
        report
    }

    /// Each region's quota ledger as the edge reads it, into `stagefan_region_quota_*`. An
    /// edge that cannot tell leaves the gauges as they were (logged).
    async fn observe_quotas(&self) {
        match self.edge.regions().await {
            Ok(regions) => {
                for r in regions {
                    self.metrics.quota.set(&r.region, &r.usage);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the regions' quota ledgers"),
        }
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
}

/// Runs `futures` side by side on the current task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(v) => *output = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

impl RegionPoller {
    /// The region this poller covers.
    pub fn region(&self) -> &str {
        self.ivs.region()
    }

    /// The name of `broadcast`'s pool in this region (`b`, or `b@region`).
    fn pool(&self, broadcast: &str) -> String {
        stagefan_core::regions::pool_name(broadcast, self.region(), &self.primary)
    }

    /// Unix milliseconds on tokio's clock (wall-clock based, pausable in tests).
    fn now_ms(&self) -> Millis {
        self.origin_unix_ms + self.origin.elapsed().as_millis() as u64
    }

    /// Reads the pool of each broadcast in this region.
    async fn read_pools(&self, ids: &[String]) -> RegionPools {
        let mut snaps = Vec::with_capacity(ids.len());
        let mut unread = Vec::new();
        for id in ids {
            let pool = self.pool(id);
            match self.edge.snapshot(&pool).await {
                Ok(s) => snaps.push(s),
                Err(e) => {
                    tracing::warn!(region = %self.region(), broadcast = %id, error = %e, "cannot read the pool");
                    unread.push(id.clone());
                }
            }
        }
        RegionPools { snaps, unread }
    }

    /// The region's part of a round, on the pools read for it.
    async fn round(&mut self, pools: &RegionPools, deadline: Instant) -> RoundReport {
        let mut report = RoundReport::default();
        let snaps = &pools.snaps;
        let all_read = pools.unread.is_empty();
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
                region = %self.region(),
                deployment = %self.settings.deployment,
                pools_deployment = %other,
                "the edge's pools belong to another deployment; no orphan is collected \
                 (set --deployment / STAGEFAN_DEPLOYMENT as the worker has it)"
            );
        }
        let may_collect = all_read && foreign.is_empty();

        let candidates = sample_candidates(snaps);
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
        self.post_observations(snaps, sampled.observations).await;
        self.forget_stages(&candidates);
        self.publish_coverage(&candidates);

        let (done, refused) = self.scale_down(snaps).await;
        report.actions_done = done;
        report.actions_refused = refused;

        if let Some(stages) = listed.complete {
            report.listing_completed = true;
            self.metrics
                .observed
                .set_ivs_stages(self.region(), stages.len());
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
                let known = KnownStages::from_snapshots(snaps);
                let grace = self.settings.orphan_grace.as_millis() as u64;
                let now = self.now_ms();
                self.pending_orphans =
                    self.orphans
                        .find(&ivs, &known, &self.settings.deployment, now, grace);
            }
        }
        if may_collect {
            report.orphans_deleted = self.collect_orphans(snaps, deadline).await;
        } else {
            self.pending_orphans.clear();
        }
        self.metrics
            .actions
            .set_orphans(self.region(), self.pending_orphans.len());

        report.ok = all_read;
        report
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
                    self.ivs.region(),
                    &s.arn,
                    s.publishers.len(),
                    s.subscribers.len(),
                );
            }
            match self.edge.observe(&self.pool(&broadcast), &obs).await {
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
                                region = %self.region(),
                                broadcast = %broadcast,
                                stage = %s.arn,
                                ivs_minus_pool = d,
                                "pool and IVS disagree on a stage's viewers"
                            );
                        }
                        self.metrics
                            .observed
                            .set_drift(&broadcast, self.region(), &s.arn, d);
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
            self.metrics.observed.set_drifting(b, self.region(), n);
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
                self.metrics.observed.forget(&b, self.region(), &arn);
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
            .set_oldest_sample_age(self.region(), oldest.as_secs_f64());
    }
}
