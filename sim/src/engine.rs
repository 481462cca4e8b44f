//! The discrete-event engine: a priority queue of timed events over a virtual clock, the
//! modelled world (viewers, the host, IVS per region, the ledger and budget of each region,
//! Durable Object restarts), and the adapter's sequence of core calls for each request, as
//! the worker's pool object makes them (`worker/src/pool_object/`): every decision is the
//! real `stagefan_core` one.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use stagefan_core::alarm;
use stagefan_core::budget::BudgetConfig;
use stagefan_core::ivs::Operation;
use stagefan_core::ledger::{GrantAnswer, Ledger, LedgerConfig, Quotas};
use stagefan_core::pacing::SlotSchedule;
use stagefan_core::policy::{self, PolicyConfig, ScaleAction};
use stagefan_core::pool::{
    AssignError, DeleteIntent, JoinRequest, Lease, LoadSummary, Pool, PoolError, PoolMeta,
    PoolRows, PoolSettings, Stage, StageEndpoints, StageId, StageState,
};
use stagefan_core::time::Millis;

use crate::checks::{Check, Checks};
use crate::ivs::{IvsRegion, Outcome};
use crate::report::{Report, Sample};
use crate::rng::Rng;
use crate::scenario::Scenario;

/// The virtual clock's origin (unix milliseconds): the run's `t = 0`.
pub const T0: Millis = 1_764_160_000_000;
/// How long a join waits for a stage being created (the worker's `WAIT_FOR_CREATE_MS`).
const WAIT_FOR_CREATE_MS: Millis = 4_000;
/// How long a join waits for the ledger (the worker's `WAIT_FOR_LEDGER_MS`).
const WAIT_FOR_LEDGER_MS: Millis = 3_000;
/// `CreateStage` attempts (the worker's `CREATE_ATTEMPTS`).
const CREATE_ATTEMPTS: u32 = 6;
/// Other budgeted calls' attempts (the worker's `BUDGETED_ATTEMPTS`).
const BUDGETED_ATTEMPTS: u32 = 4;
/// One `GetStage` per stage at most this often for viewers' missing reports.
const MISSING_CHECK_INTERVAL_MS: Millis = 10_000;
/// The host page's poll of its stages (`publisher-all`).
const HOST_POLL_MS: Millis = 2_000;
/// A Durable Object call inside Cloudflare (pool → IvsBudget ledger), one way.
const DO_HOP_MS: Millis = 8;
/// A join's answer must come within this (ledger wait + create wait + slack).
const ANSWER_WITHIN_MS: Millis = WAIT_FOR_LEDGER_MS + WAIT_FOR_CREATE_MS + 3_000;
/// An IVS stage unknown to its pool (and not a create in flight) for longer is an orphan.
const ORPHAN_AFTER_MS: Millis = 3 * 60_000;

/// Faults the simulator can substitute for a decision, to show the invariants catch them.
/// None of them is a switch in core.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// A broken assigner: a viewer refused for want of a seat is given the token of the
    /// oldest live stage anyway, ignoring its capacity.
    pub ignore_capacity: bool,
    /// A broken adapter: lease rows are not written (a restart loses them).
    pub lose_lease_writes: bool,
}

/// A viewer of the model.
#[derive(Debug, Clone, Default)]
struct Viewer {
    region: u8,
    client: u32,
    hostile: bool,
    arrived: Millis,
    first_seat: Option<Millis>,
    depart_at: Millis,
    lease: Option<String>,
    /// The lease is live in the model's view (until `lease_exp`).
    lease_live: bool,
    stage: StageId,
    lease_region: u8,
    lease_since: Millis,
    lease_exp: Millis,
    connected: bool,
    rogue_arn: Option<String>,
    /// The current join attempt started here, unanswered.
    waiting: Option<Millis>,
    attempt: u32,
    in_create_wait: bool,
    asked_stage_quota: bool,
    /// The subscriptions granted when this join made its own ledger call.
    quota_asked: Option<u32>,
    in_quota_wait: bool,
    spill: u8,
    refusals: u32,
    done: bool,
    told: Option<&'static str>,
    hb_gen: u32,
    blip_at: Option<Millis>,
}

/// A call to IVS in flight.
#[derive(Debug, Clone)]
enum CallKind {
    Create {
        stage: StageId,
        name: String,
    },
    Delete {
        stage: StageId,
        arn: String,
    },
    Missing {
        stage: StageId,
        arn: String,
    },
    /// `ListStages` page `page` looking for a create's stage by name; `stale`: from the
    /// maintenance alarm (`policy::stale_creates`).
    Lookup {
        stage: StageId,
        name: String,
        page: u32,
        stale: bool,
        attempt_of_create: u32,
    },
}

#[derive(Debug, Clone)]
struct Call {
    region: u8,
    inc: u32,
    attempt: u32,
    kind: CallKind,
}

impl Call {
    fn op(&self) -> Operation {
        match self.kind {
            CallKind::Create { .. } => Operation::CreateStage,
            CallKind::Delete { .. } => Operation::DeleteStage,
            CallKind::Missing { .. } => Operation::GetStage,
            CallKind::Lookup { .. } => Operation::ListStages,
        }
    }
}

#[derive(Debug, Clone)]
enum Ev {
    Arrive(u32),
    Join(u32, u32),
    Retry(u32, u32),
    Heartbeat(u32, u32),
    Depart(u32),
    Blip(u32),
    Missing(u32, u32),
    Alarm(u8, u64),
    LedgerArrive {
        region: u8,
        inc: u32,
        want: Quotas,
        asked_at: Millis,
    },
    LedgerAnswer {
        region: u8,
        inc: u32,
        answer: GrantAnswer,
        asked_at: Millis,
    },
    IvsSend(Call),
    IvsArrive(Call),
    IvsAnswer(Call, Outcome, Option<String>),
    HostPublish(u8, StageId),
    HostUnpublish(u8, StageId),
    HostDrop(Millis),
    HostBack,
    End,
    Restart(u8),
    Vanish(u8),
    Audit,
    Sample,
}

struct Sched {
    at: Millis,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Sched {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Sched {}
impl PartialOrd for Sched {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sched {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The rows a pool's Durable Object has stored (`take_changes` applied after each
/// mutation, as the worker's `persist` does).
#[derive(Debug, Default)]
struct Store {
    meta: Option<PoolMeta>,
    stages: BTreeMap<StageId, Stage>,
    leases: BTreeMap<String, Lease>,
}

/// One region: IVS, the region's ledger and budget (the `IvsBudget` object), and the
/// broadcast's pool there (its `StagePool` object).
struct Region {
    ivs: IvsRegion,
    ledger: Ledger,
    ledger_cfg: LedgerConfig,
    budget: BTreeMap<Operation, SlotSchedule>,
    pool: Pool,
    settings: PoolSettings,
    policy: PolicyConfig,
    store: Store,
    inc: u32,
    quota_busy: bool,
    quota_waiters: Vec<u32>,
    grow_after_quota: bool,
    create_waiters: Vec<u32>,
    create_slots: BTreeMap<StageId, Millis>,
    /// Bumped at every write of the pool's rows: what was decided at one epoch and instant
    /// is not decided again (a woken herd of joins asks the policy once, not once each).
    epoch: u64,
    /// When this instance loaded the pool, and the creates whose lookup failed: what
    /// `policy::abandoned_creates` looks up (the worker keeps the same two).
    loaded_at: Millis,
    failed_lookups: BTreeMap<StageId, Millis>,
    scaled_at: Option<(u64, Millis)>,
    summary: Option<(u64, LoadSummary)>,
    alarm_at: Option<Millis>,
    alarm_gen: u64,
    lookups: BTreeSet<StageId>,
    deleting: BTreeSet<StageId>,
    missing_checked: BTreeMap<StageId, Millis>,
    orphan_since: BTreeMap<String, Millis>,
    ghosts: BTreeMap<StageId, u32>,
    restarts: u64,
}

/// A simulation run.
pub struct Sim {
    sc: Scenario,
    seed: u64,
    faults: Faults,
    now: Millis,
    step: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<Sched>>,
    rng: Rng,
    regions: Vec<Region>,
    viewers: Vec<Viewer>,
    lease_expiry: BTreeSet<(Millis, u32)>,
    model_closed_ms: u128,
    open_leases: u128,
    open_since_sum: u128,
    host_away: bool,
    ended: bool,
    budget_cfg: BudgetConfig,
    checks: Checks,
    report: Report,
}

fn region_weights(sc: &Scenario) -> Vec<u32> {
    sc.regions.iter().map(|r| r.weight).collect()
}

impl Sim {
    /// A run of `sc` with `seed`, with `faults` substituted.
    pub fn new(sc: Scenario, seed: u64, faults: Faults) -> Sim {
        let now = T0;
        let regions = sc
            .regions
            .iter()
            .map(|spec| {
                let mut pool = Pool::new("main", sc.pool.clone(), now).expect("valid broadcast");
                pool.enforce_quota();
                Region {
                    ivs: IvsRegion::new(spec.name, spec.quotas, now),
                    ledger: Ledger::default(),
                    ledger_cfg: LedgerConfig {
                        limits: spec.quotas,
                        ..LedgerConfig::default()
                    },
                    budget: BTreeMap::new(),
                    policy: PolicyConfig::for_pool(&sc.pool),
                    settings: sc.pool.clone(),
                    pool,
                    store: Store::default(),
                    inc: 0,
                    quota_busy: false,
                    quota_waiters: Vec::new(),
                    grow_after_quota: false,
                    create_waiters: Vec::new(),
                    create_slots: BTreeMap::new(),
                    epoch: 0,
                    loaded_at: now,
                    failed_lookups: BTreeMap::new(),
                    scaled_at: None,
                    summary: None,
                    alarm_at: None,
                    alarm_gen: 0,
                    lookups: BTreeSet::new(),
                    deleting: BTreeSet::new(),
                    missing_checked: BTreeMap::new(),
                    orphan_since: BTreeMap::new(),
                    ghosts: BTreeMap::new(),
                    restarts: 0,
                }
            })
            .collect();
        let report = Report::new(&sc, seed);
        let mut sim = Sim {
            seed,
            faults,
            now,
            step: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng: Rng::new(seed),
            regions,
            viewers: Vec::new(),
            lease_expiry: BTreeSet::new(),
            model_closed_ms: 0,
            open_leases: 0,
            open_since_sum: 0,
            host_away: false,
            ended: false,
            budget_cfg: BudgetConfig::default(),
            checks: Checks::default(),
            report,
            sc,
        };
        sim.setup();
        sim
    }

    fn at(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Sched {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        }));
    }

    fn latency(&mut self) -> Millis {
        let f = &self.sc.ivs;
        let (base, mean, slow) = (f.latency_base_ms, f.latency_mean_ms, f.slow_share);
        let d = base + self.rng.exp_ms(mean);
        if self.rng.chance(slow) {
            d * 10
        } else {
            d
        }
    }

    fn setup(&mut self) {
        let weights = region_weights(&self.sc);
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum::<u64>().max(1);
        let n = self.sc.viewers;
        let hostile_every = if self.sc.hostile_share > 0.0 {
            (1.0 / self.sc.hostile_share) as u32
        } else {
            u32::MAX
        };
        let group = self.sc.hostile_group.max(1);
        let mut hostile_client = 0u32;
        let mut hostile_left = 0u32;
        let mut hostile_region = 0u8;
        self.viewers.reserve(n as usize);
        for i in 0..n {
            let arrived = T0 + self.sc.arrival_at(i, self.rng.unit());
            let mut pick = self.rng.below(total);
            let mut region = 0u8;
            for (k, &w) in weights.iter().enumerate() {
                if pick < u64::from(w) {
                    region = k as u8;
                    break;
                }
                pick -= u64::from(w);
            }
            // A hostile address makes `group` joins in a row, all to its nearest region;
            // everyone else has an address of their own.
            if hostile_left == 0 && hostile_every != u32::MAX && i % (hostile_every * group) == 0 {
                hostile_left = group;
                hostile_client += 1;
                hostile_region = region;
            }
            let (hostile, client) = if hostile_left > 0 {
                hostile_left -= 1;
                region = hostile_region;
                (true, u32::MAX - hostile_client)
            } else {
                (false, i)
            };
            let stay = self.rng.exp_ms(self.sc.stay_mean_ms).max(1_000);
            let blip_at = self
                .rng
                .chance(self.sc.blip_chance)
                .then(|| arrived + self.rng.below(stay));
            self.viewers.push(Viewer {
                region,
                client,
                hostile,
                arrived,
                depart_at: arrived + stay,
                blip_at,
                ..Viewer::default()
            });
            self.at(arrived, Ev::Arrive(i));
        }
        for &(t, span) in &self.sc.host_drops.clone() {
            self.at(T0 + t, Ev::HostDrop(span));
        }
        self.at(T0 + self.sc.end_at, Ev::End);
        for r in 0..self.regions.len() as u8 {
            if self.sc.restart_mean_ms > 0.0 {
                let d = self.rng.exp_ms(self.sc.restart_mean_ms);
                self.at(T0 + d, Ev::Restart(r));
            }
            if self.sc.ivs.vanish_mean_ms > 0.0 {
                let d = self.rng.exp_ms(self.sc.ivs.vanish_mean_ms);
                self.at(T0 + d, Ev::Vanish(r));
            }
            // The host's first request makes the pool and its first stages.
            self.scale_up(r);
            self.schedule_alarm(r);
        }
        self.at(T0 + 1_000, Ev::Audit);
        self.at(T0, Ev::Sample);
    }

    /// Runs to the end; the report.
    pub fn run(mut self) -> Report {
        let horizon = T0 + self.sc.horizon_ms;
        let profile = std::env::var_os("SIM_PROFILE").is_some();
        let mut prof: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        while let Some(Reverse(s)) = self.queue.pop() {
            if s.at > horizon || (matches!(s.ev, Ev::Audit) && self.world_done()) {
                break;
            }
            self.now = s.at;
            self.step += 1;
            self.lapse_model_leases();
            if profile {
                let kind = format!("{:?}", s.ev)
                    .chars()
                    .take_while(|c| c.is_alphanumeric())
                    .collect::<String>();
                let t = std::time::Instant::now();
                self.handle(s.ev);
                let e = prof.entry(kind).or_insert((0u64, 0f64));
                e.0 += 1;
                e.1 += t.elapsed().as_secs_f64();
            } else {
                self.handle(s.ev);
            }
        }
        if profile {
            for (k, (n, t)) in &prof {
                eprintln!("{k:<14} {n:>10} {t:>8.3} s");
            }
        }
        self.now = self.now.max(horizon.min(self.now));
        self.finish();
        self.report
    }

    fn violate(&mut self, check: Check, detail: String) {
        let (step, at, seed) = (self.step, self.now - T0, self.seed);
        self.checks.violate(check, step, at, seed, detail);
    }

    // ----- the model's lease bookkeeping (the metered side of participant-hours) -----

    fn lease_open(&mut self, v: u32, exp: Millis) {
        let now = self.now;
        let vw = &mut self.viewers[v as usize];
        vw.lease_live = true;
        vw.lease_since = now;
        vw.lease_exp = exp;
        self.lease_expiry.insert((exp, v));
        self.open_leases += 1;
        self.open_since_sum += u128::from(now);
    }

    fn lease_renew(&mut self, v: u32, exp: Millis) {
        let vw = &mut self.viewers[v as usize];
        if !vw.lease_live || exp == vw.lease_exp {
            return;
        }
        self.lease_expiry.remove(&(vw.lease_exp, v));
        vw.lease_exp = exp;
        self.lease_expiry.insert((exp, v));
    }

    fn lease_close(&mut self, v: u32, at: Millis) {
        let vw = &mut self.viewers[v as usize];
        if !vw.lease_live {
            return;
        }
        vw.lease_live = false;
        self.lease_expiry.remove(&(vw.lease_exp, v));
        self.model_closed_ms += u128::from(at.saturating_sub(vw.lease_since));
        self.open_leases -= 1;
        self.open_since_sum -= u128::from(vw.lease_since);
        if !vw.connected {
            let (r, st) = (vw.lease_region as usize, vw.stage);
            ghost_add(&mut self.regions[r].ghosts, st, -1);
        }
    }

    /// Leases whose time ran out in the model's view lapse at their expiry.
    fn lapse_model_leases(&mut self) {
        while let Some(&(exp, v)) = self.lease_expiry.first() {
            if exp > self.now {
                break;
            }
            self.lease_close(v, exp);
        }
    }

    fn model_seat_ms(&self) -> u128 {
        self.model_closed_ms + self.open_leases * u128::from(self.now) - self.open_since_sum
    }

    /// The viewer connects to (or leaves) its lease's stage in IVS.
    fn set_connected(&mut self, v: u32, on: bool) -> bool {
        let now = self.now;
        let vw = &self.viewers[v as usize];
        if vw.connected == on {
            return true;
        }
        let (r, st) = (vw.lease_region as usize, vw.stage);
        let arn = self.regions[r]
            .pool
            .stage(st)
            .and_then(|s| s.arn.clone())
            .unwrap_or_default();
        let region = &mut self.regions[r];
        let ok = if on {
            region.ivs.subscribe(&arn, now)
        } else {
            region.ivs.unsubscribe(&arn, now);
            true
        };
        if ok {
            let vw = &mut self.viewers[v as usize];
            vw.connected = on;
            if vw.lease_live {
                ghost_add(&mut region.ghosts, st, if on { -1 } else { 1 });
            }
        }
        if on && ok {
            self.check_stage(r as u8, st);
        }
        ok
    }

    // ----- events -----

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(v) => {
                self.report.arrived += 1;
                self.start_attempt(v);
            }
            Ev::Join(v, attempt) => {
                if self.viewers[v as usize].attempt == attempt
                    && self.viewers[v as usize].waiting.is_some()
                {
                    self.join(v);
                }
            }
            Ev::Retry(v, attempt) => {
                if self.viewers[v as usize].attempt == attempt {
                    self.start_attempt(v);
                }
            }
            Ev::Heartbeat(v, g) => self.heartbeat(v, g),
            Ev::Depart(v) => self.depart(v),
            Ev::Blip(v) => self.blip(v),
            Ev::Missing(v, g) => self.missing(v, g),
            Ev::Alarm(r, g) => {
                if self.regions[r as usize].alarm_gen == g {
                    self.maintain(r);
                }
            }
            Ev::LedgerArrive {
                region,
                inc,
                want,
                asked_at,
            } => {
                let now = self.now;
                let reg = &mut self.regions[region as usize];
                let broadcast = reg.pool.broadcast().to_string();
                let answer = reg.ledger.grant(&reg.ledger_cfg, &broadcast, want, now);
                self.report.ledger_calls += 1;
                self.check_ledger(region);
                self.at(
                    now + DO_HOP_MS,
                    Ev::LedgerAnswer {
                        region,
                        inc,
                        answer,
                        asked_at,
                    },
                );
            }
            Ev::LedgerAnswer {
                region,
                inc,
                answer,
                asked_at,
            } => self.quota_answer(region, inc, &answer, asked_at),
            Ev::IvsSend(call) => self.ivs_send(call),
            Ev::IvsArrive(call) => self.ivs_arrive(call),
            Ev::IvsAnswer(call, outcome, arn) => self.ivs_answer(call, outcome, arn),
            Ev::HostPublish(r, st) => self.host_publish(r, st),
            Ev::HostUnpublish(r, st) => self.host_unpublish(r, st),
            Ev::HostDrop(span) => {
                self.host_away = true;
                for r in 0..self.regions.len() as u8 {
                    let on: Vec<StageId> = self.regions[r as usize]
                        .pool
                        .stages()
                        .filter(|s| s.host_publishing)
                        .map(|s| s.id)
                        .collect();
                    for st in on {
                        self.host_unpublish(r, st);
                    }
                }
                let now = self.now;
                self.at(now + span, Ev::HostBack);
            }
            Ev::HostBack => {
                self.host_away = false;
                for r in 0..self.regions.len() as u8 {
                    let stages: Vec<StageId> = self.regions[r as usize]
                        .pool
                        .publisher_stages()
                        .iter()
                        .map(|s| s.id)
                        .collect();
                    for st in stages {
                        self.host_publish(r, st);
                    }
                }
            }
            Ev::End => self.end(),
            Ev::Restart(r) => self.restart(r),
            Ev::Vanish(r) => self.vanish(r),
            Ev::Audit => {
                self.audit();
                if !self.world_done() {
                    let now = self.now;
                    self.at(now + 1_000, Ev::Audit);
                }
            }
            Ev::Sample => {
                self.sample();
                if !self.world_done() {
                    let now = self.now;
                    self.at(now + self.sc.sample_ms, Ev::Sample);
                }
            }
        }
    }

    /// Nothing more can happen: the broadcast ended, IVS holds none of its stages, no seat
    /// and no call is left.
    fn world_done(&self) -> bool {
        self.ended
            && self.regions.iter().all(|r| {
                r.ivs.stages.is_empty()
                    && r.pool.viewers() == 0
                    && !r.quota_busy
                    && r.pool.load_summary().existing() == 0
            })
    }

    // ----- viewers -----

    fn start_attempt(&mut self, v: u32) {
        let now = self.now;
        let vw = &mut self.viewers[v as usize];
        if vw.done {
            return;
        }
        vw.attempt += 1;
        vw.waiting = Some(now);
        vw.asked_stage_quota = false;
        vw.in_create_wait = false;
        vw.in_quota_wait = false;
        vw.quota_asked = None;
        let attempt = vw.attempt;
        self.at(now, Ev::Join(v, attempt));
    }

    /// The viewer's join, as `StagePool::join` carries it out (see the worker's
    /// `pool_object/seats.rs` and `quota.rs`).
    fn join(&mut self, v: u32) {
        let now = self.now;
        let vw = &self.viewers[v as usize];
        let r = vw.region;
        let started = vw.waiting.expect("a join is waiting");
        let lease_id = vw.lease.clone().filter(|_| vw.lease_region == r);
        let client = format!("c{}", vw.client);
        let attempt = vw.attempt;
        let reg = &mut self.regions[r as usize];
        // quota_before_join: a new seat needs a subscription of the grant.
        let holds_lease = lease_id
            .as_deref()
            .is_some_and(|id| reg.pool.lease(id).is_some());
        if !holds_lease {
            let exhausted = reg
                .pool
                .quota_granted(now)
                .is_some_and(|g| reg.pool.viewers() >= g.subscriptions);
            let granted = reg.pool.quota_granted(now).map_or(0, |g| g.subscriptions);
            if exhausted && now < started + WAIT_FOR_LEDGER_MS {
                let busy = reg.quota_busy;
                // A join whose own call changed nothing stops waiting (the region is short).
                let asked = self.viewers[v as usize].quota_asked.take();
                let gave_nothing = asked == Some(granted) && !busy;
                if !gave_nothing && (busy || self.sync_quota(r, 0, false)) {
                    let vw = &mut self.viewers[v as usize];
                    if !busy {
                        vw.quota_asked = Some(granted);
                    }
                    let first_wait = !vw.in_quota_wait;
                    vw.in_quota_wait = true;
                    self.regions[r as usize].quota_waiters.push(v);
                    if first_wait {
                        self.at(started + WAIT_FOR_LEDGER_MS, Ev::Join(v, attempt));
                    }
                    return;
                }
            } else if !exhausted && reg.pool.quota_want(now, 0, false).is_some() {
                self.sync_quota(r, 0, false);
            }
        }
        let reg = &mut self.regions[r as usize];
        let req = JoinRequest {
            user_id: "viewer",
            lease_id: lease_id.as_deref(),
            client: Some(&client),
            moving: false,
        };
        let has_room_or_seat = req
            .lease_id
            .and_then(|id| reg.pool.lease(id))
            .is_some_and(|l| reg.pool.stage(l.stage).is_some_and(|s| s.is_active()))
            || reg.pool.peek_assignment().is_some();
        let at_limit = reg.pool.client_at_limit(&req);
        if !has_room_or_seat && !at_limit {
            // quota_for_stages, then scale_up, then wait for a create.
            let beyond = policy::stages_beyond_grant(&reg.policy, &reg.pool, now);
            if beyond > 0 && !self.viewers[v as usize].asked_stage_quota {
                self.viewers[v as usize].asked_stage_quota = true;
                let wanted = {
                    let reg = &self.regions[r as usize];
                    policy::scale_up(&reg.policy, &reg.pool.load_summary()).create
                };
                let reg = &mut self.regions[r as usize];
                let busy = reg.quota_busy;
                if busy || self.sync_quota(r, wanted, false) {
                    let reg = &mut self.regions[r as usize];
                    reg.grow_after_quota = true;
                    reg.quota_waiters.push(v);
                    return;
                }
            }
            self.scale_up(r);
            let deadline = started + WAIT_FOR_CREATE_MS;
            let creating = self.load_summary(r).creating;
            let reg = &mut self.regions[r as usize];
            let next = alarm::next_create_at(creating, reg.create_slots.values().copied(), now);
            if now < deadline && creating > 0 && next.is_none_or(|at| at < deadline) {
                let vw = &mut self.viewers[v as usize];
                if !vw.in_create_wait {
                    vw.in_create_wait = true;
                    self.regions[r as usize].create_waiters.push(v);
                    self.at(deadline, Ev::Join(v, attempt));
                }
                return;
            }
        }
        let random = self.rng.bytes16();
        let reg = &mut self.regions[r as usize];
        let req = JoinRequest {
            user_id: "viewer",
            lease_id: lease_id.as_deref(),
            client: Some(&client),
            moving: false,
        };
        let result = reg.pool.join(&req, now, &random);
        self.persist(r);
        match result {
            Ok(a) => {
                let vw = &mut self.viewers[v as usize];
                let moved_or_new = !a.reconnected;
                if moved_or_new && vw.lease_live {
                    // The old lease (on a draining stage, or lapsed) is given back.
                    self.lease_close(v, now);
                }
                let vw = &mut self.viewers[v as usize];
                if moved_or_new {
                    if vw.connected {
                        self.set_connected(v, false);
                    }
                    let vw = &mut self.viewers[v as usize];
                    vw.lease = Some(a.lease_id.clone());
                    vw.lease_region = r;
                    vw.stage = a.stage;
                    vw.connected = false;
                    self.lease_open(v, a.expires_at);
                    // A new lease starts unconnected (a ghost) until the viewer connects.
                    ghost_add(&mut self.regions[r as usize].ghosts, a.stage, 1);
                } else {
                    self.lease_renew(v, a.expires_at);
                }
                self.answered(v, None);
                let vw = &mut self.viewers[v as usize];
                if vw.first_seat.is_none() {
                    vw.first_seat = Some(now);
                    let waited = now - vw.arrived;
                    self.report.seated(now - T0, waited);
                }
                self.viewers[v as usize].spill = 0;
                self.start_heartbeats(v);
                if !self.set_connected(v, true) {
                    // The stage is not in IVS (it vanished): the viewer reports it.
                    let g = self.viewers[v as usize].attempt;
                    self.at(now + 1_000, Ev::Missing(v, g));
                }
                self.check_stage(r, a.stage);
                self.scale_up(r);
                self.schedule_alarm(r);
            }
            Err(AssignError::LeaseIdTaken(_)) => self.join(v),
            Err(AssignError::Ended) => self.told(v, "broadcast_ended", None),
            Err(AssignError::ClientLimit { .. }) => {
                let pool = &self.regions[r as usize].pool;
                let retry = u64::from(alarm::seat_limit_retry_after_secs(pool)) * 1000;
                self.told(v, "client_seat_limit", Some(retry));
            }
            Err(AssignError::NoSeat(no)) => {
                self.schedule_alarm(r);
                if self.faults.ignore_capacity {
                    // The broken assigner: the oldest stage's token, whatever its load.
                    let oldest_live = self.regions[r as usize]
                        .pool
                        .stages()
                        .find(|s| s.is_active())
                        .and_then(|s| Some((s.id, s.arn.clone()?)));
                    if let Some((st, arn)) = oldest_live {
                        self.regions[r as usize].ivs.subscribe(&arn, now);
                        let vw = &mut self.viewers[v as usize];
                        vw.rogue_arn = Some(arn);
                        self.answered(v, None);
                        let vw = &mut self.viewers[v as usize];
                        if vw.first_seat.is_none() {
                            vw.first_seat = Some(now);
                            let waited = now - vw.arrived;
                            self.report.seated(now - T0, waited);
                        }
                        self.check_stage(r, st);
                        return;
                    }
                }
                if no.region_quota.is_some() {
                    // The next region (the multi-region placement of docs/contract.md).
                    let n = self.regions.len() as u8;
                    let vw = &mut self.viewers[v as usize];
                    if vw.spill + 1 < n && !vw.lease_live {
                        vw.spill += 1;
                        vw.region = (vw.region + 1) % n;
                        self.report.spills += 1;
                        self.answered(v, Some("region_quota"));
                        self.start_attempt(v);
                        return;
                    }
                    let retry = u64::from(alarm::REGION_QUOTA_RETRY_AFTER_SECS) * 1000;
                    self.told(v, "region_quota", Some(retry));
                } else {
                    let reg = &self.regions[r as usize];
                    let creating = reg.pool.load_summary().creating;
                    let next =
                        alarm::next_create_at(creating, reg.create_slots.values().copied(), now);
                    let retry = u64::from(alarm::retry_after_secs(&reg.pool, next, now)) * 1000;
                    self.told(v, "no_capacity", Some(retry));
                }
            }
        }
    }

    /// The join is answered (a seat, or `reason`); checks it came in time.
    fn answered(&mut self, v: u32, reason: Option<&'static str>) {
        let now = self.now;
        let vw = &mut self.viewers[v as usize];
        let Some(started) = vw.waiting.take() else {
            return;
        };
        vw.in_create_wait = false;
        if let Some(reason) = reason {
            *self.report.refusals.entry(reason).or_default() += 1;
        }
        let waited = now - started;
        if waited > ANSWER_WITHIN_MS {
            self.violate(
                Check::ViewerAnswered,
                format!("viewer {v}'s join waited {waited} ms for an answer"),
            );
        }
    }

    /// The viewer is told why it has no seat; it comes back after `retry` (or gives up).
    fn told(&mut self, v: u32, reason: &'static str, retry: Option<Millis>) {
        self.answered(v, Some(reason));
        let now = self.now;
        let jitter = self.rng.below(500);
        let give_up = self.sc.give_up_after;
        let vw = &mut self.viewers[v as usize];
        vw.told = Some(reason);
        vw.refusals += 1;
        vw.spill = 0;
        match retry {
            Some(ms) if vw.refusals < give_up && now + ms < vw.depart_at => {
                let t = now + ms + jitter;
                self.retry_at(v, t);
            }
            _ => {
                if !vw.done {
                    vw.done = true;
                    *self.report.gave_up.entry(reason).or_default() += 1;
                }
            }
        }
    }

    /// The viewer asks again at `t` (a new attempt then; nothing waits meanwhile).
    fn retry_at(&mut self, v: u32, t: Millis) {
        let vw = &mut self.viewers[v as usize];
        vw.attempt += 1;
        vw.waiting = None;
        vw.in_create_wait = false;
        vw.in_quota_wait = false;
        vw.quota_asked = None;
        let attempt = vw.attempt;
        self.at(t, Ev::Retry(v, attempt));
    }

    fn start_heartbeats(&mut self, v: u32) {
        let now = self.now;
        let every = self.sc.pool.lease_ttl_ms / 3;
        let vw = &mut self.viewers[v as usize];
        vw.hb_gen += 1;
        let g = vw.hb_gen;
        let (depart, blip) = (vw.depart_at, vw.blip_at);
        if now + every < depart && blip.is_none_or(|b| now + every < b) {
            self.at(now + every, Ev::Heartbeat(v, g));
        } else if let Some(b) = blip.filter(|&b| b < depart) {
            self.at(b.max(now), Ev::Blip(v));
        } else {
            self.at(depart.max(now), Ev::Depart(v));
        }
    }

    fn heartbeat(&mut self, v: u32, g: u32) {
        let now = self.now;
        let vw = &self.viewers[v as usize];
        if vw.hb_gen != g || vw.done || vw.waiting.is_some() {
            return;
        }
        if vw.rogue_arn.is_some() {
            self.start_heartbeats(v);
            return;
        }
        let Some(lease) = vw.lease.clone() else {
            return;
        };
        let r = vw.lease_region;
        let res = self.regions[r as usize].pool.heartbeat(&lease, now);
        self.persist(r);
        match res {
            Ok(l) => {
                self.lease_renew(v, l.expires_at);
                self.start_heartbeats(v);
                self.schedule_alarm(r);
            }
            Err(PoolError::Ended) => {
                self.set_connected(v, false);
                self.viewers[v as usize].done = true;
                *self.report.refusals.entry("broadcast_ended").or_default() += 1;
            }
            Err(_) => {
                // The seat is gone (evicted, lapsed): a new seat, presenting the lease.
                self.set_connected(v, false);
                self.report.reseats += 1;
                self.start_attempt(v);
            }
        }
    }

    fn depart(&mut self, v: u32) {
        let now = self.now;
        let graceful = self.rng.chance(self.sc.graceful_leave);
        let vw = &mut self.viewers[v as usize];
        if vw.done {
            return;
        }
        vw.done = true;
        vw.hb_gen += 1;
        vw.attempt += 1;
        vw.waiting = None;
        if let Some(arn) = vw.rogue_arn.take() {
            let r = vw.region as usize;
            self.regions[r].ivs.unsubscribe(&arn, now);
            return;
        }
        self.set_connected(v, false);
        let vw = &self.viewers[v as usize];
        if graceful && vw.lease_live {
            let (r, lease) = (vw.lease_region, vw.lease.clone().expect("live lease"));
            if self.regions[r as usize].pool.leave(&lease, now) {
                self.lease_close(v, now);
            }
            self.persist(r);
            let st = self.viewers[v as usize].stage;
            self.check_stage(r, st);
        }
    }

    /// The connection drops; the viewer asks again with its lease a moment later.
    fn blip(&mut self, v: u32) {
        let now = self.now;
        let vw = &mut self.viewers[v as usize];
        vw.blip_at = None;
        if vw.done || vw.rogue_arn.is_some() {
            return;
        }
        vw.hb_gen += 1;
        self.set_connected(v, false);
        let t = now + 500 + self.rng.below(3_000);
        self.retry_at(v, t);
    }

    /// A viewer found its stage missing in IVS: `check_missing_stage`.
    fn missing(&mut self, v: u32, g: u32) {
        let now = self.now;
        let vw = &self.viewers[v as usize];
        if vw.attempt != g || vw.done || vw.waiting.is_some() || vw.connected {
            return;
        }
        let r = vw.lease_region;
        let lease = vw.lease.clone().unwrap_or_default();
        let reg = &mut self.regions[r as usize];
        let stage = reg.pool.lease(&lease).and_then(|l| {
            let st = reg.pool.stage(l.stage)?;
            Some((st.id, st.arn.clone(), st.is_active()))
        });
        let Some((stage, Some(arn), true)) = stage else {
            // No live lease or stage: a new seat.
            self.report.reseats += 1;
            self.start_attempt(v);
            return;
        };
        let recent = reg
            .missing_checked
            .get(&stage)
            .is_some_and(|&t| now < t + MISSING_CHECK_INTERVAL_MS);
        if !recent {
            reg.missing_checked.insert(stage, now);
            let inc = reg.inc;
            self.send_budgeted(Call {
                region: r,
                inc,
                attempt: 1,
                kind: CallKind::Missing { stage, arn },
            });
        }
        // The viewer page asks again a little later.
        self.at(now + 5_000, Ev::Missing(v, g));
    }

    // ----- the pool's quota grant (worker/src/pool_object/quota.rs) -----

    /// `sync_quota`: asks the ledger for what the pool wants, unless a call is in flight or
    /// nothing is wanted. Whether a call was started.
    fn sync_quota(&mut self, r: u8, extra: u32, trim: bool) -> bool {
        let now = self.now;
        let reg = &mut self.regions[r as usize];
        if reg.quota_busy {
            return false;
        }
        let Some(want) = reg.pool.quota_want(now, extra, trim) else {
            return false;
        };
        reg.pool.lower_quota(want);
        reg.quota_busy = true;
        let inc = reg.inc;
        self.persist(r);
        self.at(
            now + DO_HOP_MS,
            Ev::LedgerArrive {
                region: r,
                inc,
                want,
                asked_at: now,
            },
        );
        true
    }

    fn quota_answer(&mut self, r: u8, inc: u32, answer: &GrantAnswer, asked_at: Millis) {
        let now = self.now;
        let reg = &mut self.regions[r as usize];
        if reg.inc != inc {
            return; // the object restarted: the answer went nowhere
        }
        reg.pool.apply_quota(answer, asked_at);
        reg.quota_busy = false;
        self.persist(r);
        if std::mem::take(&mut self.regions[r as usize].grow_after_quota) {
            self.scale_up(r);
        }
        let waiters = std::mem::take(&mut self.regions[r as usize].quota_waiters);
        for v in waiters {
            let attempt = self.viewers[v as usize].attempt;
            self.at(now, Ev::Join(v, attempt));
        }
        self.schedule_alarm(r);
    }

    // ----- stages: creates, deletes, the host -----

    /// `StagePool::scale_up`: the policy's creates, each in its budget slot.
    fn scale_up(&mut self, r: u8) {
        let now = self.now;
        self.persist(r);
        let reg = &mut self.regions[r as usize];
        if reg.scaled_at == Some((reg.epoch, now)) {
            return;
        }
        self.scale_up_now(r);
        let reg = &mut self.regions[r as usize];
        reg.scaled_at = Some((reg.epoch, now));
    }

    /// The pool's load summary (O(stages)), once per epoch.
    fn load_summary(&mut self, r: u8) -> LoadSummary {
        self.persist(r);
        let reg = &mut self.regions[r as usize];
        match &reg.summary {
            Some((e, s)) if *e == reg.epoch => *s,
            _ => {
                let s = reg.pool.load_summary();
                reg.summary = Some((reg.epoch, s));
                s
            }
        }
    }

    fn scale_up_now(&mut self, r: u8) {
        let now = self.now;
        let reg = &mut self.regions[r as usize];
        if policy::stages_beyond_grant(&reg.policy, &reg.pool, now) > 0 {
            let wanted = policy::scale_up(&reg.policy, &reg.pool.load_summary()).create;
            if self.sync_quota(r, wanted, false) {
                self.regions[r as usize].grow_after_quota = true;
            }
        }
        let reg = &mut self.regions[r as usize];
        let intents = policy::plan_creates(&reg.policy, &mut reg.pool, now);
        if intents.is_empty() {
            return;
        }
        self.persist(r);
        let inc = self.regions[r as usize].inc;
        for intent in intents {
            self.send_budgeted(Call {
                region: r,
                inc,
                attempt: 1,
                kind: CallKind::Create {
                    stage: intent.stage,
                    name: intent.name,
                },
            });
        }
    }

    /// A call in its slot of the region's account-wide budget (`IvsBudget`).
    fn send_budgeted(&mut self, call: Call) {
        let now = self.now;
        let op = call.op();
        let rate = self.budget_cfg.rate(op).expect("a budgeted operation");
        let reg = &mut self.regions[call.region as usize];
        let slot = reg.budget.entry(op).or_default().reserve(&rate, now);
        if let CallKind::Create { stage, .. } = &call.kind {
            reg.create_slots.insert(*stage, slot);
        }
        self.at(slot, Ev::IvsSend(call));
    }

    fn ivs_send(&mut self, call: Call) {
        let now = self.now;
        let op = call.op();
        let reg = &mut self.regions[call.region as usize];
        if let CallKind::Create { stage, .. } = &call.kind {
            reg.create_slots.remove(stage);
        }
        if reg.inc != call.inc {
            // The object died while the call waited for its slot: never sent.
            return;
        }
        let n = reg.ivs.sent(op, now);
        let tps = op.documented_tps() as usize;
        *self.report.sent.entry((call.region, op)).or_default() += 1;
        if n > tps {
            let name = self.regions[call.region as usize].ivs.name;
            self.violate(
                Check::IvsRate,
                format!("{name}: {n} {op:?} calls sent within one second (IVS allows {tps})"),
            );
        }
        let d = self.latency();
        self.at(now + d, Ev::IvsArrive(call));
    }

    fn ivs_arrive(&mut self, call: Call) {
        let now = self.now;
        let op = call.op();
        let (p5, plost) = (self.sc.ivs.server_error, self.sc.ivs.answer_lost);
        let fail = self.rng.chance(p5);
        let lose = self.rng.chance(plost);
        let reg = &mut self.regions[call.region as usize];
        let mut arn = None;
        let outcome = if !reg.ivs.admit(op, now) {
            Outcome::Throttled
        } else if fail {
            Outcome::ServerError
        } else {
            let effect = match &call.kind {
                CallKind::Create { name, .. } => match reg.ivs.create_stage(name, now) {
                    Ok(a) => {
                        arn = Some(a);
                        Outcome::Ok
                    }
                    Err(o) => o,
                },
                CallKind::Delete { arn: a, .. } => {
                    let had = reg.ivs.stages.get(a).map(|s| s.subscribers);
                    match had {
                        None => Outcome::NotFound,
                        Some(subs) => {
                            if subs > 0 {
                                self.disconnect_all(call.region, a.clone());
                            }
                            self.regions[call.region as usize].ivs.delete_stage(a, now);
                            Outcome::Ok
                        }
                    }
                }
                CallKind::Missing { arn: a, .. } => {
                    if reg.ivs.stages.contains_key(a) {
                        Outcome::Ok
                    } else {
                        Outcome::NotFound
                    }
                }
                CallKind::Lookup { name, page, .. } => {
                    arn = reg.ivs.find_on_page(name, *page);
                    Outcome::Ok
                }
            };
            if effect == Outcome::Ok && lose {
                Outcome::Lost
            } else {
                effect
            }
        };
        let reg = &mut self.regions[call.region as usize];
        reg.ivs.count(op, outcome);
        self.check_region(call.region);
        let d = if outcome == Outcome::Lost {
            // The caller's timeout.
            10_000
        } else {
            self.latency()
        };
        self.at(now + d, Ev::IvsAnswer(call, outcome, arn));
    }

    fn ivs_answer(&mut self, call: Call, outcome: Outcome, arn: Option<String>) {
        let now = self.now;
        let r = call.region;
        if self.regions[r as usize].inc != call.inc {
            return; // the object that made the call is gone
        }
        let op = call.op();
        let retryable = matches!(
            outcome,
            Outcome::Throttled | Outcome::ServerError | Outcome::Lost
        );
        if outcome == Outcome::Throttled {
            if let Some(rate) = self.budget_cfg.rate(op) {
                let reg = &mut self.regions[r as usize];
                reg.budget.entry(op).or_default().throttled(&rate, now);
            }
        }
        match call.kind.clone() {
            CallKind::Create { stage, name } => match outcome {
                Outcome::Ok => self.record_create(r, stage, arn),
                Outcome::Lost => {
                    // Outcome unknown: look the stage up by name, never create twice.
                    self.lookup(r, stage, name, false, call.attempt);
                }
                _ if retryable && call.attempt < CREATE_ATTEMPTS => {
                    self.send_budgeted(Call {
                        attempt: call.attempt + 1,
                        ..call
                    });
                }
                _ => self.record_create(r, stage, None),
            },
            CallKind::Lookup {
                stage,
                name,
                page,
                stale,
                attempt_of_create,
            } => {
                if outcome != Outcome::Ok {
                    // The lookup failed: the intent stays `creating` for the alarm.
                    let reg = &mut self.regions[r as usize];
                    reg.lookups.remove(&stage);
                    if !stale {
                        reg.failed_lookups.insert(stage, now);
                    }
                    self.wake_create_waiters(r);
                    return;
                }
                let pages = (self.regions[r as usize].ivs.stages.len() as u32).div_ceil(100);
                if arn.is_none() && page + 1 < pages {
                    let call = Call {
                        kind: CallKind::Lookup {
                            stage,
                            name,
                            page: page + 1,
                            stale,
                            attempt_of_create,
                        },
                        ..call
                    };
                    self.send_budgeted(call);
                    return;
                }
                self.regions[r as usize].lookups.remove(&stage);
                match arn {
                    Some(arn) => self.record_create(r, stage, Some(arn)),
                    // IVS surely has no such stage: the create may be sent again.
                    None if !stale && attempt_of_create < CREATE_ATTEMPTS => {
                        let inc = self.regions[r as usize].inc;
                        self.send_budgeted(Call {
                            region: r,
                            inc,
                            attempt: attempt_of_create + 1,
                            kind: CallKind::Create { stage, name },
                        });
                    }
                    None => self.record_create(r, stage, None),
                }
            }
            CallKind::Delete { stage, .. } => match outcome {
                Outcome::Ok | Outcome::NotFound => {
                    self.regions[r as usize].deleting.remove(&stage);
                    let res = self.regions[r as usize].pool.deleted(stage, now);
                    self.persist(r);
                    if let Ok(evicted) = res {
                        self.evicted(r, &evicted);
                    }
                }
                _ if retryable && call.attempt < BUDGETED_ATTEMPTS => {
                    self.send_budgeted(Call {
                        attempt: call.attempt + 1,
                        ..call
                    });
                }
                _ => {
                    // Retried by the next alarm's action.
                    self.regions[r as usize].deleting.remove(&stage);
                }
            },
            CallKind::Missing { stage, .. } => match outcome {
                Outcome::NotFound => {
                    let res = self.regions[r as usize].pool.gone(stage, now);
                    self.persist(r);
                    if let Ok(evicted) = res {
                        self.report.evicted += evicted.len() as u64;
                        self.evicted(r, &evicted);
                    }
                    self.scale_up(r);
                }
                _ if retryable && call.attempt < BUDGETED_ATTEMPTS => {
                    self.send_budgeted(Call {
                        attempt: call.attempt + 1,
                        ..call
                    });
                }
                _ => {}
            },
        }
    }

    fn lookup(&mut self, r: u8, stage: StageId, name: String, stale: bool, attempt: u32) {
        let reg = &mut self.regions[r as usize];
        if !reg.lookups.insert(stage) {
            return;
        }
        let inc = reg.inc;
        // `find_stage_by_name` pages through ListStages, each page in its budget slot.
        self.send_budgeted(Call {
            region: r,
            inc,
            attempt: 1,
            kind: CallKind::Lookup {
                stage,
                name,
                page: 0,
                stale,
                attempt_of_create: attempt,
            },
        });
    }

    /// `record_create`: the stage IVS has for an intent, or none; wakes the waiting joins.
    fn record_create(&mut self, r: u8, stage: StageId, arn: Option<String>) {
        let now = self.now;
        let reg = &mut self.regions[r as usize];
        reg.failed_lookups.remove(&stage);
        let still_creating = reg
            .pool
            .stage(stage)
            .is_some_and(|s| s.state == StageState::Creating);
        if still_creating {
            match arn {
                Some(arn) => {
                    let _ = reg
                        .pool
                        .created(stage, &arn, StageEndpoints::default(), now);
                    self.report.stages_created += 1;
                    self.at(now + HOST_POLL_MS, Ev::HostPublish(r, stage));
                }
                None => {
                    let _ = reg.pool.create_failed(stage, now);
                    self.report.create_failures += 1;
                }
            }
            self.persist(r);
        }
        self.wake_create_waiters(r);
        self.scale_up(r);
        self.schedule_alarm(r);
    }

    fn wake_create_waiters(&mut self, r: u8) {
        let now = self.now;
        let waiters = std::mem::take(&mut self.regions[r as usize].create_waiters);
        for v in waiters {
            let vw = &mut self.viewers[v as usize];
            vw.in_create_wait = false;
            let attempt = vw.attempt;
            self.at(now, Ev::Join(v, attempt));
        }
    }

    fn host_publish(&mut self, r: u8, st: StageId) {
        let now = self.now;
        if self.host_away || self.ended {
            return;
        }
        let reg = &mut self.regions[r as usize];
        let Some(stage) = reg.pool.stage(st) else {
            return;
        };
        if !stage.is_active() {
            return;
        }
        let arn = stage.arn.clone().unwrap_or_default();
        if !reg.ivs.stages.contains_key(&arn) {
            return;
        }
        reg.ivs.publish(&arn, true, now);
        let _ = reg.pool.mark_live(st, "host-participant", now);
        self.persist(r);
        self.check_region(r);
        // Viewers waiting for a warming stage may now be seated on a live one.
        self.wake_create_waiters(r);
    }

    fn host_unpublish(&mut self, r: u8, st: StageId) {
        let now = self.now;
        let reg = &mut self.regions[r as usize];
        let Some(arn) = reg.pool.stage(st).and_then(|s| s.arn.clone()) else {
            return;
        };
        reg.ivs.publish(&arn, false, now);
        let _ = reg.pool.host_unpublished(st, now);
        self.persist(r);
    }

    /// Leases dropped with their stage: their viewers ask for new seats with their lease.
    fn evicted(&mut self, r: u8, leases: &[String]) {
        if leases.is_empty() {
            return;
        }
        let ids: BTreeSet<&str> = leases.iter().map(String::as_str).collect();
        let now = self.now;
        let hit: Vec<u32> = (0..self.viewers.len() as u32)
            .filter(|&v| {
                let vw = &self.viewers[v as usize];
                vw.lease_live
                    && vw.lease_region == r
                    && vw.lease.as_deref().is_some_and(|l| ids.contains(l))
            })
            .collect();
        for v in hit {
            self.lease_close(v, now);
            let vw = &mut self.viewers[v as usize];
            vw.connected = false;
            if !vw.done && vw.waiting.is_none() {
                vw.hb_gen += 1;
                self.report.reseats += 1;
                let t = now + 200 + self.rng.below(1_000);
                self.retry_at(v, t);
            }
        }
    }

    /// Every viewer connected to `arn` is disconnected (the stage is deleted or vanished).
    fn disconnect_all(&mut self, r: u8, arn: String) {
        let Ok(st) = self.regions[r as usize].pool.stage_id(&arn) else {
            return;
        };
        let now = self.now;
        let hit: Vec<u32> = (0..self.viewers.len() as u32)
            .filter(|&v| {
                let vw = &self.viewers[v as usize];
                (vw.connected && vw.lease_region == r && vw.stage == st)
                    || vw.rogue_arn.as_deref() == Some(arn.as_str())
            })
            .collect();
        for v in hit {
            if self.viewers[v as usize].rogue_arn.take().is_some() {
                self.regions[r as usize].ivs.unsubscribe(&arn, now);
                continue;
            }
            self.set_connected(v, false);
            let vw = &mut self.viewers[v as usize];
            if !vw.done {
                // The SDK says the stage was deleted: the page reports it missing.
                let g = vw.attempt;
                let t = now + 500 + self.rng.below(1_500);
                self.at(t, Ev::Missing(v, g));
            }
        }
    }

    fn vanish(&mut self, r: u8) {
        let now = self.now;
        let reg = &self.regions[r as usize];
        let live: Vec<String> = reg
            .pool
            .stages()
            .filter(|s| s.is_active())
            .filter_map(|s| s.arn.clone())
            .filter(|a| reg.ivs.stages.contains_key(a))
            .collect();
        if !live.is_empty() && !self.ended {
            let arn = live[self.rng.below(live.len() as u64) as usize].clone();
            self.disconnect_all(r, arn.clone());
            self.regions[r as usize].ivs.delete_stage(&arn, now);
            self.report.vanished += 1;
        }
        let d = self.rng.exp_ms(self.sc.ivs.vanish_mean_ms).max(1);
        if !self.ended {
            self.at(now + d, Ev::Vanish(r));
        }
    }

    fn end(&mut self) {
        let now = self.now;
        self.ended = true;
        for r in 0..self.regions.len() as u8 {
            let on: Vec<StageId> = self.regions[r as usize]
                .pool
                .stages()
                .filter(|s| s.host_publishing)
                .map(|s| s.id)
                .collect();
            for st in on {
                self.host_unpublish(r, st);
            }
            let ending = self.regions[r as usize].pool.end(now);
            self.persist(r);
            let freed: BTreeSet<String> = ending.leases_freed.into_iter().collect();
            let hit: Vec<u32> = (0..self.viewers.len() as u32)
                .filter(|&v| {
                    let vw = &self.viewers[v as usize];
                    vw.lease_live
                        && vw.lease_region == r
                        && vw.lease.as_ref().is_some_and(|l| freed.contains(l))
                })
                .collect();
            for v in hit {
                self.set_connected(v, false);
                self.lease_close(v, now);
                let vw = &mut self.viewers[v as usize];
                vw.done = true;
                vw.told = Some("broadcast_ended");
            }
            self.spawn_deletes(r, ending.deletes);
            self.schedule_alarm(r);
        }
        // Rogue viewers (the broken assigner) and waiting ones are told as well.
        for v in 0..self.viewers.len() as u32 {
            if let Some(arn) = self.viewers[v as usize].rogue_arn.take() {
                let r = self.viewers[v as usize].region as usize;
                self.regions[r].ivs.unsubscribe(&arn, now);
                self.viewers[v as usize].done = true;
            }
        }
    }

    fn spawn_deletes(&mut self, r: u8, deletes: Vec<DeleteIntent>) {
        for d in deletes {
            let reg = &mut self.regions[r as usize];
            if !reg.deleting.insert(d.stage) {
                continue;
            }
            let inc = reg.inc;
            self.send_budgeted(Call {
                region: r,
                inc,
                attempt: 1,
                kind: CallKind::Delete {
                    stage: d.stage,
                    arn: d.arn,
                },
            });
        }
    }

    // ----- the maintenance alarm (worker/src/pool_object/maintenance.rs) -----

    fn schedule_alarm(&mut self, r: u8) {
        let now = self.now;
        let reg = &mut self.regions[r as usize];
        if reg.alarm_at.is_some() {
            return;
        }
        if let Some(at) = alarm::next_wake(&reg.pool, true, now) {
            reg.alarm_at = Some(at);
            reg.alarm_gen += 1;
            let g = reg.alarm_gen;
            self.at(at, Ev::Alarm(r, g));
        }
    }

    fn maintain(&mut self, r: u8) {
        let now = self.now;
        self.regions[r as usize].alarm_at = None;
        let wanted = {
            let reg = &self.regions[r as usize];
            policy::scale_up(&reg.policy, &reg.pool.load_summary()).create
        };
        self.sync_quota(r, wanted, true);
        let reg = &mut self.regions[r as usize];
        let snapshot = reg.pool.snapshot(now);
        self.persist(r);
        let reg = &mut self.regions[r as usize];
        let ended = reg.pool.is_ended();
        if ended {
            let deletes = reg.pool.end_deletes(now);
            self.persist(r);
            self.spawn_deletes(r, deletes);
        } else {
            let actions = policy::scale_down(&reg.policy, &snapshot, now);
            for action in actions {
                let reg = &mut self.regions[r as usize];
                match action {
                    ScaleAction::Drain { stage_arn } => {
                        if let Ok(id) = reg.pool.stage_id(&stage_arn) {
                            if reg.pool.drain(id, now).is_ok() {
                                self.report.drains += 1;
                                // The host page leaves a stage no longer in its list.
                                self.at(now + HOST_POLL_MS, Ev::HostUnpublish(r, id));
                            }
                        }
                        self.persist(r);
                    }
                    ScaleAction::Consolidate { stage_arn } => {
                        // The simulated viewers do not move (their pages are not modelled
                        // that far): they stay on the draining stage until they leave, and
                        // the host keeps publishing there until it is empty.
                        if let Ok(id) = reg.pool.stage_id(&stage_arn) {
                            if reg.pool.consolidate(id, now).is_ok() {
                                self.report.drains += 1;
                            }
                        }
                        self.persist(r);
                    }
                    ScaleAction::Delete { stage_arn } => {
                        let intent = reg
                            .pool
                            .stage_id(&stage_arn)
                            .and_then(|id| reg.pool.request_delete(id, now));
                        self.persist(r);
                        if let Ok(intent) = intent {
                            self.spawn_deletes(r, vec![intent]);
                        }
                    }
                    ScaleAction::Create => {}
                }
            }
        }
        let reg = &self.regions[r as usize];
        let mut stale = policy::stale_creates(&reg.policy, &snapshot, now);
        for id in policy::abandoned_creates(&snapshot, reg.loaded_at, &reg.failed_lookups, now) {
            if !stale.contains(&id) {
                stale.push(id);
            }
        }
        for id in stale {
            let reg = &self.regions[r as usize];
            let Some(name) = reg.pool.stage(id).map(|s| s.name.clone()) else {
                continue;
            };
            if reg.create_slots.contains_key(&id) {
                continue; // still waiting for its slot in this instance
            }
            self.lookup(r, id, name, true, CREATE_ATTEMPTS);
        }
        self.scale_up(r);
        self.schedule_alarm(r);
    }

    // ----- the Durable Object's storage and restarts (worker/src/pool_object/storage.rs) --

    /// Writes the rows the last mutations touched, as the worker's `persist` does.
    fn persist(&mut self, r: u8) {
        let lose = self.faults.lose_lease_writes;
        let reg = &mut self.regions[r as usize];
        let changes = reg.pool.take_changes();
        if changes.is_empty() {
            return;
        }
        reg.epoch += 1;
        if changes.meta {
            reg.store.meta = Some(reg.pool.meta().clone());
        }
        for id in &changes.stages {
            if let Some(st) = reg.pool.stage(*id) {
                reg.store.stages.insert(*id, st.clone());
            }
        }
        for id in &changes.stages_removed {
            reg.store.stages.remove(id);
        }
        if !lose {
            for id in &changes.leases_upserted {
                let Some(l) = reg.pool.lease(id) else {
                    continue;
                };
                match reg.store.leases.get_mut(id) {
                    // A renewal rewrites the row's times (no new strings for the same row).
                    Some(row)
                        if row.user_id == l.user_id
                            && row.participant_id == l.participant_id
                            && row.client == l.client =>
                    {
                        row.stage = l.stage;
                        row.joined_at = l.joined_at;
                        row.renewed_at = l.renewed_at;
                        row.expires_at = l.expires_at;
                    }
                    _ => {
                        reg.store.leases.insert(id.clone(), l.clone());
                    }
                }
            }
        }
        for id in &changes.leases_removed {
            reg.store.leases.remove(id);
        }
    }

    /// The pool's object restarts: in-flight calls and waits are lost; the pool is rebuilt
    /// from its stored rows through JSON, as the worker's `load` reads them.
    fn restart(&mut self, r: u8) {
        let now = self.now;
        self.persist(r);
        let reg = &mut self.regions[r as usize];
        let to_json = |s: String| s;
        let meta = reg.store.meta.clone().expect("a stored meta row");
        let meta_json = to_json(serde_json::to_string(&meta).expect("serializes"));
        let stages_json: Vec<String> = reg
            .store
            .stages
            .values()
            .map(|s| serde_json::to_string(s).expect("serializes"))
            .collect();
        let leases_json: Vec<String> = reg
            .store
            .leases
            .values()
            .map(|l| serde_json::to_string(l).expect("serializes"))
            .collect();
        let rows = PoolRows {
            meta: serde_json::from_str(&meta_json).expect("parses"),
            stages: stages_json
                .iter()
                .map(|s| serde_json::from_str(s).expect("parses"))
                .collect(),
            leases: leases_json
                .iter()
                .map(|s| serde_json::from_str(s).expect("parses"))
                .collect(),
        };
        let rebuilt = Pool::from_rows(reg.settings.clone(), rows);
        let mut rebuilt = match rebuilt {
            Ok(p) => p,
            Err(e) => {
                let detail = format!("{}: stored rows refused: {e}", reg.ivs.name);
                self.violate(Check::SeatsAcrossRestart, detail);
                return;
            }
        };
        rebuilt.enforce_quota();
        let mut old = std::mem::replace(&mut reg.pool, rebuilt);
        old.expire(now);
        reg.pool.expire(now);
        let seats = |p: &Pool| -> Vec<(String, StageId, Millis)> {
            p.leases()
                .map(|l| (l.id.clone(), l.stage, l.expires_at))
                .collect()
        };
        let (before, after) = (seats(&old), seats(&reg.pool));
        let meter = (old.meter(now), reg.pool.meter(now));
        reg.inc += 1;
        reg.quota_busy = false;
        reg.grow_after_quota = false;
        reg.lookups.clear();
        reg.deleting.clear();
        reg.create_slots.clear();
        reg.missing_checked.clear();
        reg.failed_lookups.clear();
        reg.loaded_at = now;
        reg.restarts += 1;
        self.report.restarts += 1;
        let name = reg.ivs.name;
        if before != after {
            let lost = before.iter().filter(|s| !after.contains(s)).count();
            let extra = after.iter().filter(|s| !before.contains(s)).count();
            self.violate(
                Check::SeatsAcrossRestart,
                format!(
                    "{name}: {} seats before the restart, {} after ({lost} lost, {extra} new)",
                    before.len(),
                    after.len()
                ),
            );
        }
        if meter.0 != meter.1 {
            self.violate(
                Check::SeatsAcrossRestart,
                format!(
                    "{name}: the cost meter {:?} before, {:?} after",
                    meter.0, meter.1
                ),
            );
        }
        // Joins waiting inside the dead instance get a 5xx: the page asks again shortly.
        let mut waiting = std::mem::take(&mut self.regions[r as usize].quota_waiters);
        waiting.append(&mut std::mem::take(
            &mut self.regions[r as usize].create_waiters,
        ));
        waiting.sort_unstable();
        waiting.dedup();
        for v in waiting {
            if self.viewers[v as usize].waiting.is_some() {
                self.answered(v, Some("restarted"));
                let t = now + 1_000 + self.rng.below(1_000);
                self.retry_at(v, t);
            }
        }
        // The rebuilt pool's own sweep is written like any other change.
        self.persist(r);
        self.regions[r as usize].alarm_at = None;
        self.schedule_alarm(r);
        self.check_pool(r, true);
        let d = self.rng.exp_ms(self.sc.restart_mean_ms).max(1);
        self.at(now + d, Ev::Restart(r));
    }

    // ----- invariants -----

    /// One stage: within capacity in the pool and in IVS, its load equal to what IVS holds.
    fn check_stage(&mut self, r: u8, st: StageId) {
        let now = self.now;
        self.regions[r as usize].pool.expire(now);
        self.persist(r);
        let reg = &mut self.regions[r as usize];
        let Some(stage) = reg.pool.stage(st) else {
            return;
        };
        let (load, capacity) = (stage.load, stage.capacity);
        let ivs_subs = stage
            .arn
            .as_ref()
            .and_then(|a| reg.ivs.stages.get(a))
            .map_or(0, |s| s.subscribers);
        let ghosts = reg.ghosts.get(&st).copied().unwrap_or(0);
        let name = reg.ivs.name;
        if load > capacity || ivs_subs > capacity {
            self.violate(
                Check::StageCapacity,
                format!(
                    "{name} stage {st}: {load} seats, {ivs_subs} IVS subscribers, capacity {capacity}"
                ),
            );
        }
        if load != ivs_subs + ghosts {
            self.violate(
                Check::LoadsMatchIvs,
                format!(
                    "{name} stage {st}: load {load}, IVS holds {ivs_subs} subscribers and \
                     {ghosts} seats are held by viewers not connected"
                ),
            );
        }
    }

    fn check_region(&mut self, r: u8) {
        let reg = &self.regions[r as usize];
        let (ivs, q) = (&reg.ivs, reg.ivs.quotas);
        let over = [
            ("subscriptions", ivs.subscriptions, q.subscriptions),
            ("publishers", ivs.publishers, q.publishers),
            ("stages", ivs.stages.len() as u64, q.stages),
        ]
        .into_iter()
        .find(|&(_, used, limit)| used > u64::from(limit));
        if let Some((quota, used, limit)) = over {
            let name = ivs.name;
            self.violate(
                Check::RegionQuota,
                format!("{name}: {used} {quota} in use, quota {limit}"),
            );
        }
    }

    fn check_ledger(&mut self, r: u8) {
        let reg = &self.regions[r as usize];
        let (held, usable) = (reg.ledger.held_total(), reg.ledger_cfg.usable());
        if !usable.covers(&held) {
            let name = reg.ivs.name;
            self.violate(
                Check::RegionQuota,
                format!("{name}: the ledger hands out {held:?}, usable {usable:?}"),
            );
        }
    }

    /// Every stage of a pool (and, when `deep`, the pool's own indexes).
    fn check_pool(&mut self, r: u8, deep: bool) {
        let ids: Vec<StageId> = self.regions[r as usize]
            .pool
            .stages()
            .map(|s| s.id)
            .collect();
        for id in ids {
            self.check_stage(r, id);
        }
        self.check_region(r);
        if deep {
            if let Err(e) = self.regions[r as usize].pool.check_consistency() {
                self.violate(Check::PoolConsistency, e.to_string());
            }
        }
        // Every IVS stage is known to the pool (or a create in flight), or collected soon.
        let now = self.now;
        let reg = &mut self.regions[r as usize];
        let mut unknown = Vec::new();
        for (arn, st) in &reg.ivs.stages {
            let known = reg
                .pool
                .stage_by_arn(arn)
                .is_some_and(|s| s.state != StageState::Deleted)
                || reg
                    .pool
                    .stages()
                    .any(|s| s.state == StageState::Creating && s.name == st.name);
            if known {
                reg.orphan_since.remove(arn);
            } else {
                let since = *reg.orphan_since.entry(arn.clone()).or_insert(now);
                if now - since > ORPHAN_AFTER_MS {
                    unknown.push(arn.clone());
                }
            }
        }
        reg.orphan_since
            .retain(|a, _| reg.ivs.stages.contains_key(a));
        for arn in unknown {
            let name = self.regions[r as usize].ivs.name;
            self.violate(
                Check::StagesKnown,
                format!("{name}: IVS stage {arn} is unknown to the pool for over 3 minutes"),
            );
            self.regions[r as usize].orphan_since.insert(arn, now);
        }
    }

    fn audit(&mut self) {
        let deep = (self.now - T0) % 60_000 < 1_000;
        for r in 0..self.regions.len() as u8 {
            self.check_pool(r, deep);
        }
        self.check_meter();
    }

    /// Seat time the pools' cost meters show against the lease lifetimes the viewers saw.
    fn check_meter(&mut self) {
        let now = self.now;
        let mut metered: u128 = 0;
        for reg in &mut self.regions {
            reg.pool.expire(now);
            metered += u128::from(reg.pool.meter(now).participant_ms.viewers);
        }
        for r in 0..self.regions.len() as u8 {
            self.persist(r);
        }
        let model = self.model_seat_ms();
        if metered != model {
            self.violate(
                Check::ParticipantHours,
                format!("the pools metered {metered} seat-ms, the viewers held {model}"),
            );
        }
    }

    fn sample(&mut self) {
        let t = self.now - T0;
        for (i, reg) in self.regions.iter().enumerate() {
            let load = reg.pool.load_summary();
            self.report.samples.push(Sample {
                at: t,
                region: i as u8,
                live: load.live,
                warming: load.warming,
                creating: load.creating,
                draining: load.draining,
                viewers: load.viewers,
                ivs_stages: reg.ivs.stages.len() as u32,
            });
        }
    }

    fn finish(&mut self) {
        let t = self.now - T0;
        if self.report.samples.last().is_none_or(|s| s.at != t) {
            self.sample();
        }
        self.audit();
        for r in 0..self.regions.len() as u8 {
            self.check_pool(r, true);
        }
        // Every viewer was seated or told why; none is still waiting for an answer.
        let waiting = self
            .viewers
            .iter()
            .filter(|v| v.waiting.is_some() && !v.done)
            .count();
        let never = self
            .viewers
            .iter()
            .filter(|v| v.first_seat.is_none() && v.told.is_none())
            .count();
        if waiting > 0 || never > 0 {
            self.violate(
                Check::ViewerAnswered,
                format!("{waiting} joins unanswered at the end, {never} viewers neither seated nor told why"),
            );
        }
        // Everything the broadcast made is collected once it ended.
        if self.ended {
            for r in 0..self.regions.len() {
                let left = self.regions[r].ivs.stages.len();
                if left > 0 {
                    let name = self.regions[r].ivs.name;
                    self.violate(
                        Check::StagesKnown,
                        format!("{name}: {left} IVS stages left after the broadcast ended"),
                    );
                }
            }
        }
        let now = self.now;
        let mut metered: u128 = 0;
        for (i, reg) in self.regions.iter_mut().enumerate() {
            reg.ivs.integrate(now);
            metered += u128::from(reg.pool.meter(now).participant_ms.viewers);
            let stats = reg.pool.stats().clone();
            self.report.region(i as u8, &reg.ivs, stats, reg.restarts);
        }
        self.report.metered_seat_ms = metered;
        self.report.model_seat_ms = self.model_seat_ms();
        self.report.ended_at = now - T0;
        self.report.never_seated = self
            .viewers
            .iter()
            .filter(|v| v.first_seat.is_none())
            .count() as u64;
        self.report.hostile = self.viewers.iter().filter(|v| v.hostile).count() as u64;
        self.report.hostile_seated = self
            .viewers
            .iter()
            .filter(|v| v.hostile && v.first_seat.is_some())
            .count() as u64;
        self.report.steps = self.step;
        self.report.checks = std::mem::take(&mut self.checks);
    }
}

fn ghost_add(ghosts: &mut BTreeMap<StageId, u32>, st: StageId, d: i32) {
    let e = ghosts.entry(st).or_default();
    *e = e.checked_add_signed(d).expect("ghost count stays positive");
    if *e == 0 {
        ghosts.remove(&st);
    }
}
