//! Configuration of stagefan, parsed from a string map (environment variables or wrangler
//! vars), and the validation of the identifiers that come in from clients.
//!
//! Every error is an [`InvalidField`] that names the variable or field and says what was
//! wrong with it, so the worker can answer a 400 with `field` set and the daemons can print a
//! clear message at start-up.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

pub use crate::ids::{
    validate_broadcast_id, validate_deployment_id, validate_user_id, InvalidField, HOST_USER_ID,
};
pub use crate::modes::{FanoutMode, MediaMode, TokenMode};
pub use crate::pool::{
    headroom_seats, DEFAULT_DEPLOYMENT, DEFAULT_HEADROOM, DEFAULT_LEASE_TTL_SECONDS,
    DEFAULT_MAX_SEATS_PER_CLIENT, DEFAULT_MAX_STAGES, DEFAULT_MIN_STAGES,
    DEFAULT_SCALE_DOWN_GRACE_SECONDS, DEFAULT_STAGE_CAPACITY, MAX_MAX_STAGES, MAX_STAGE_CAPACITY,
};

/// Default participant-token lifetime, in seconds: about as long as a seat lives, so a token
/// does not outlive the seat it was minted for by long (a held lease gets a fresh one).
pub const DEFAULT_TOKEN_TTL_SECONDS: u32 = 300;
/// Longest participant-token lifetime IVS accepts: 14 days.
pub const MAX_TOKEN_TTL_SECONDS: u32 = 14 * 24 * 3_600;
/// Largest rate accepted for a budgeted IVS operation (IVS's are 5; a raised quota is not
/// expected beyond this).
pub const MAX_OPERATION_TPS: u32 = 100;
/// Default AWS region.
pub const DEFAULT_IVS_REGION: &str = "us-east-1";
/// Default broadcast when a request names none.
pub const DEFAULT_BROADCAST_ID: &str = "default";
/// The configuration of stagefan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// `STAGE_CAPACITY`: viewer seats per stage, 1..=25000, default 50.
    pub stage_capacity: u32,
    /// `MIN_STAGES`: stages a broadcast keeps even when idle, 1..=MAX_STAGES, default 1.
    pub min_stages: u32,
    /// `MAX_STAGES`: stages a broadcast may use at most, 1..=10000, default 100.
    pub max_stages: u32,
    /// `LEASE_TTL_SECONDS`: a seat not renewed within this many seconds is freed, 5..=86400, default 60.
    pub lease_ttl_seconds: u32,
    /// `TOKEN_TTL_SECONDS`: lifetime of the participant tokens handed out, 60..=1209600, default 3600.
    pub token_ttl_seconds: u32,
    /// `TOKEN_MODE`: `self-signed` (default) or `api`.
    pub token_mode: TokenMode,
    /// `FANOUT_MODE`: `multi-publish` (default) or `replicate`.
    pub fanout_mode: FanoutMode,
    /// `MEDIA_MODE`: `local` or `ivs`; by default `local` when `IVS_ENDPOINT` is a loopback
    /// address (the local stack), `ivs` otherwise.
    pub media_mode: MediaMode,
    /// `HEADROOM`: free seats to keep ahead of need, as a fraction of one stage's capacity,
    /// greater than 0 and at most 10, default 0.5.
    pub headroom: f64,
    /// `SCALE_DOWN_GRACE_SECONDS`: how long a stage stays empty before it is drained, and
    /// drained before it is deleted, 0..=86400, default 300.
    pub scale_down_grace_seconds: u32,
    /// `IVS_ENDPOINT`: base URL of the IVS Real-Time control plane (no trailing slash);
    /// default `https://ivsrealtime.{region}.amazonaws.com`.
    pub ivs_endpoint: String,
    /// `IVS_REGION`: AWS region, default `us-east-1`; with `IVS_REGIONS`, its first (the
    /// primary region).
    pub ivs_region: String,
    /// `IVS_REGIONS` (a comma list, default the one `IVS_REGION`): every region the
    /// deployment runs pools in, the primary first, each with its endpoint (`IVS_ENDPOINTS`,
    /// `region=url` comma list; the primary's may also be `IVS_ENDPOINT`; else IVS's
    /// `https://ivsrealtime.{region}.amazonaws.com`). The `IVS_QUOTA_*` limits apply to each
    /// region on its own.
    #[serde(default)]
    pub regions: Vec<RegionConfig>,
    /// `DEFAULT_BROADCAST`: the broadcast used when a request names none; default `default`;
    /// set it to the empty string to require every request to name one.
    pub default_broadcast: Option<String>,
    /// `MAX_SEATS_PER_CLIENT`: seats one client address (IPv4, or IPv6 /64) may hold per
    /// broadcast, 0..=100000 (0: no limit), default 16.
    pub max_seats_per_client: u32,
    /// `ADMISSION_CONTROL`: `on` (default) or `off`. On, the viewer route limits each client
    /// address: seat requests per period (Cloudflare's rate-limiting binding
    /// `VIEWER_JOIN_LIMITER`) and seats held (`MAX_SEATS_PER_CLIENT`). Off is for a deploy
    /// behind a front door of its own that does this, and for measuring what it costs.
    pub admission_control: bool,
    /// `PRESENCE`: where viewers keep their seats alive, `stages` (default: each stage's
    /// object takes its heartbeats and reports frees to the pool in batches) or `pool` (every
    /// heartbeat goes to the pool: the design before, kept to measure against).
    pub presence: crate::presence::Presence,
    /// `CONSOLIDATE`: `on` (default) or `off`. On, when the audience shrinks the viewers of
    /// under-filled stages are moved (make-before-break) into fewer stages and the emptied
    /// stages deleted ([`crate::policy::scale_down`]).
    pub consolidate: bool,
    /// `TICKET_BROADCASTS`: broadcasts that seat only holders of a viewer ticket signed by the
    /// operator's backend (a comma list of broadcast ids, or `*` for all); default none.
    pub ticket_broadcasts: TicketScope,
    /// `IVS_CREATE_STAGE_TPS`, `IVS_DELETE_STAGE_TPS`, `IVS_REPLICATION_TPS` (each 1..=100,
    /// default 5, IVS's rate) and `IVS_BUDGET_GUARD_MS` (0..=1000, default 100): the
    /// account-wide budget of IVS stage operations shared by every pool.
    pub budget: crate::budget::BudgetConfig,
    /// `IVS_QUOTA_SUBSCRIPTIONS` (1..=10000000, default 20000), `IVS_QUOTA_PUBLISHERS` and
    /// `IVS_QUOTA_STAGES` (1..=1000000, default 1000): the account's region quotas;
    /// `IVS_QUOTA_RESERVE_PERCENT` (0..=90, default 0): the share kept for the account's
    /// other users; `IVS_QUOTA_GRANT_TTL_SECONDS` (10..=3600, default 300): how long a pool's
    /// grant outlives its last renewal. The account-quota ledger ([`crate::ledger`]).
    pub quota: crate::ledger::LedgerConfig,
    /// `STAGEFAN_DEPLOYMENT`: this deployment's id, put on every stage it creates as the tag
    /// `stagefan:deployment` (1 to 64 of `[A-Za-z0-9_.-]`, default `local`); the orphan
    /// collector of one deployment never touches another's stages on the same AWS account.
    pub deployment: String,
    /// `IVS_PARTICIPANT_HOUR_PRICES`: the cost meter's price table, USD per participant-hour
    /// of each kind (`viewer=0.072,host=0.072,replica=0.072`, or `all=…`); default 0.072 for
    /// each, an estimate ([`crate::meter`]).
    #[serde(default)]
    pub prices: crate::meter::Prices,
}

impl Default for Config {
    fn default() -> Self {
        Config::from_lookup(|_| None).expect("the defaults are valid")
    }
}

impl Config {
    /// Parses the configuration from a map of variable names to values.
    pub fn from_map(vars: &HashMap<String, String>) -> Result<Config, InvalidField> {
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    /// Parses the configuration from an ordered map of variable names to values.
    pub fn from_btree(vars: &BTreeMap<String, String>) -> Result<Config, InvalidField> {
        Config::from_lookup(|name| vars.get(name).cloned())
    }

    /// Parses the configuration from a lookup function (for example over wrangler's `Env`).
    ///
    /// A variable that is missing, or set to an empty or all-blank string, takes its default.
    pub fn from_lookup<F>(lookup: F) -> Result<Config, InvalidField>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |name: &str| -> Option<String> {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // DEFAULT_BROADCAST distinguishes "unset" (default) from "set to empty" (none).
        let default_broadcast = match lookup("DEFAULT_BROADCAST") {
            None => Some(DEFAULT_BROADCAST_ID.to_string()),
            Some(v) if v.trim().is_empty() => None,
            Some(v) => {
                let v = v.trim().to_string();
                validate_broadcast_id(&v)
                    .map_err(|e| InvalidField::new("DEFAULT_BROADCAST", e.problem))?;
                Some(v)
            }
        };

        let stage_capacity = parse_int(
            "STAGE_CAPACITY",
            get("STAGE_CAPACITY"),
            DEFAULT_STAGE_CAPACITY,
            1,
            MAX_STAGE_CAPACITY,
        )?;
        let max_stages = parse_int(
            "MAX_STAGES",
            get("MAX_STAGES"),
            DEFAULT_MAX_STAGES,
            1,
            MAX_MAX_STAGES,
        )?;
        let min_stages = parse_int(
            "MIN_STAGES",
            get("MIN_STAGES"),
            DEFAULT_MIN_STAGES,
            1,
            MAX_MAX_STAGES,
        )?;
        if min_stages > max_stages {
            return Err(InvalidField::new(
                "MIN_STAGES",
                format!("must not exceed MAX_STAGES ({max_stages}), got {min_stages}"),
            ));
        }
        let lease_ttl_seconds = parse_int(
            "LEASE_TTL_SECONDS",
            get("LEASE_TTL_SECONDS"),
            DEFAULT_LEASE_TTL_SECONDS,
            5,
            86_400,
        )?;
        let token_ttl_seconds = parse_int(
            "TOKEN_TTL_SECONDS",
            get("TOKEN_TTL_SECONDS"),
            DEFAULT_TOKEN_TTL_SECONDS,
            60,
            MAX_TOKEN_TTL_SECONDS,
        )?;
        let token_mode = match get("TOKEN_MODE") {
            Some(v) => TokenMode::parse(&v)?,
            None => TokenMode::default(),
        };
        let fanout_mode = match get("FANOUT_MODE") {
            Some(v) => FanoutMode::parse(&v)?,
            None => FanoutMode::default(),
        };
        let headroom = match get("HEADROOM") {
            None => DEFAULT_HEADROOM,
            Some(v) => match v.parse::<f64>() {
                Ok(h) if h.is_finite() && h > 0.0 && h <= 10.0 => h,
                _ => {
                    return Err(InvalidField::new(
                        "HEADROOM",
                        format!(
                            "must be a number greater than 0 and at most 10 (a fraction of one \
                             stage's capacity), got {v:?}"
                        ),
                    ))
                }
            },
        };
        let scale_down_grace_seconds = parse_int(
            "SCALE_DOWN_GRACE_SECONDS",
            get("SCALE_DOWN_GRACE_SECONDS"),
            DEFAULT_SCALE_DOWN_GRACE_SECONDS,
            0,
            86_400,
        )?;
        let (regions, ivs_region, ivs_endpoint) = parse_regions(&get)?;
        let tps = |name: &str| {
            parse_int(
                name,
                get(name),
                crate::budget::IVS_STAGE_OPERATION_TPS,
                1,
                MAX_OPERATION_TPS,
            )
        };
        let budget = crate::budget::BudgetConfig {
            create_stage_tps: tps("IVS_CREATE_STAGE_TPS")?,
            delete_stage_tps: tps("IVS_DELETE_STAGE_TPS")?,
            replication_tps: tps("IVS_REPLICATION_TPS")?,
            create_token_tps: parse_int(
                "IVS_CREATE_TOKEN_TPS",
                get("IVS_CREATE_TOKEN_TPS"),
                crate::budget::IVS_CREATE_TOKEN_TPS,
                1,
                1_000,
            )?,
            participant_tps: tps("IVS_PARTICIPANT_TPS")?,
            guard_ms: u64::from(parse_int(
                "IVS_BUDGET_GUARD_MS",
                get("IVS_BUDGET_GUARD_MS"),
                crate::budget::DEFAULT_GUARD_MS as u32,
                0,
                1_000,
            )?),
        };
        let quota_limit =
            |name: &str, default: u32, max: u32| parse_int(name, get(name), default, 1, max);
        let quota = crate::ledger::LedgerConfig {
            limits: crate::ledger::Quotas {
                subscriptions: quota_limit(
                    "IVS_QUOTA_SUBSCRIPTIONS",
                    crate::ledger::IVS_CONCURRENT_SUBSCRIPTIONS,
                    10_000_000,
                )?,
                publishers: quota_limit(
                    "IVS_QUOTA_PUBLISHERS",
                    crate::ledger::IVS_CONCURRENT_PUBLISHERS,
                    1_000_000,
                )?,
                stages: quota_limit("IVS_QUOTA_STAGES", crate::ledger::IVS_STAGES, 1_000_000)?,
            },
            reserve_percent: parse_int(
                "IVS_QUOTA_RESERVE_PERCENT",
                get("IVS_QUOTA_RESERVE_PERCENT"),
                0,
                0,
                90,
            )?,
            grant_ttl_ms: u64::from(parse_int(
                "IVS_QUOTA_GRANT_TTL_SECONDS",
                get("IVS_QUOTA_GRANT_TTL_SECONDS"),
                (crate::ledger::DEFAULT_GRANT_TTL_MS / 1000) as u32,
                10,
                3_600,
            )?) * 1000,
        };
        let deployment = match get("STAGEFAN_DEPLOYMENT") {
            None => DEFAULT_DEPLOYMENT.to_string(),
            Some(d) => {
                validate_deployment_id(&d)
                    .map_err(|e| InvalidField::new("STAGEFAN_DEPLOYMENT", e.problem))?;
                d
            }
        };
        let media_mode = match get("MEDIA_MODE") {
            Some(v) => MediaMode::parse(&v)?,
            None if is_loopback_url(&ivs_endpoint) => MediaMode::Local,
            None => MediaMode::Ivs,
        };

        let max_seats_per_client = parse_int(
            "MAX_SEATS_PER_CLIENT",
            get("MAX_SEATS_PER_CLIENT"),
            DEFAULT_MAX_SEATS_PER_CLIENT,
            0,
            100_000,
        )?;
        let ticket_broadcasts = TicketScope::parse(get("TICKET_BROADCASTS").as_deref())?;
        let admission_control = on_off("ADMISSION_CONTROL", get("ADMISSION_CONTROL"))?;
        let consolidate = on_off("CONSOLIDATE", get("CONSOLIDATE"))?;

        let prices = crate::meter::Prices::parse(get(crate::meter::PRICES_VAR).as_deref())?;

        let presence = crate::presence::Presence::parse(get("PRESENCE").as_deref())?;

        Ok(Config {
            prices,
            presence,
            consolidate,
            max_seats_per_client,
            ticket_broadcasts,
            admission_control,
            stage_capacity,
            min_stages,
            max_stages,
            lease_ttl_seconds,
            token_ttl_seconds,
            token_mode,
            fanout_mode,
            media_mode,
            headroom,
            scale_down_grace_seconds,
            ivs_endpoint,
            ivs_region,
            regions,
            default_broadcast,
            budget,
            quota,
            deployment,
        })
    }

    /// The configured region named `name`.
    pub fn region(&self, name: &str) -> Option<&RegionConfig> {
        self.regions.iter().find(|r| r.name == name)
    }

    /// The names of the configured regions, the primary first.
    pub fn region_names(&self) -> Vec<&str> {
        self.regions.iter().map(|r| r.name.as_str()).collect()
    }

    /// Whether the deployment runs more than one region.
    pub fn multi_region(&self) -> bool {
        self.regions.len() > 1
    }

    /// `TOKEN_PUBLIC_KEY_ARN`: the ARN of the token key's public half imported in IVS, one
    /// per region (self-signed tokens name the key of their stage's region): a comma list of
    /// ARNs, each for the region its ARN names (`arn:aws:ivs:{region}:…`), or for the primary
    /// when it names none. A region left out has the key imported on first use. Errors name
    /// `TOKEN_PUBLIC_KEY_ARN`.
    pub fn key_arns(&self, value: Option<&str>) -> Result<BTreeMap<String, String>, InvalidField> {
        let mut arns = BTreeMap::new();
        let bad = |why: String| InvalidField::new("TOKEN_PUBLIC_KEY_ARN", why);
        for arn in value
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            if !arn.starts_with("arn:") || arn.chars().any(|c| c.is_whitespace()) {
                return Err(bad(format!("{arn:?} is not an ARN")));
            }
            let region = crate::regions::region_of_arn(arn).unwrap_or(&self.ivs_region);
            if self.region(region).is_none() {
                return Err(bad(format!(
                    "{arn:?} is of region {region:?}, which is not in IVS_REGIONS ({})",
                    self.region_names().join(",")
                )));
            }
            if arns.insert(region.to_string(), arn.to_string()).is_some() {
                return Err(bad(format!("names two keys of region {region:?}")));
            }
        }
        Ok(arns)
    }

    /// The settings of a stage pool built from this configuration.
    pub fn pool_settings(&self) -> crate::pool::PoolSettings {
        crate::pool::PoolSettings {
            capacity: self.stage_capacity,
            min_stages: self.min_stages,
            max_stages: self.max_stages,
            lease_ttl_ms: u64::from(self.lease_ttl_seconds) * 1000,
            fanout: self.fanout_mode,
            max_seats_per_client: self.max_seats_per_client,
            deployment: self.deployment.clone(),
            headroom_seats: headroom_seats(self.stage_capacity, self.headroom),
            scale_down_grace_ms: u64::from(self.scale_down_grace_seconds) * 1000,
            delete_grace_ms: u64::from(self.scale_down_grace_seconds) * 1000,
            prices: self.prices,
            presence: self.presence,
            consolidate: self.consolidate,
        }
    }

    /// The scaling policy built from this configuration: the one of its pools
    /// ([`crate::policy::PolicyConfig::for_pool`]), which their snapshots also carry.
    pub fn policy(&self) -> crate::policy::PolicyConfig {
        crate::policy::PolicyConfig::for_pool(&self.pool_settings())
    }

    /// Resolves the broadcast a request is about: the one it names (validated), or the
    /// configured default; an error naming `broadcast` when it names none and there is no
    /// default.
    pub fn resolve_broadcast(&self, named: Option<&str>) -> Result<String, InvalidField> {
        match named {
            Some(b) => {
                validate_broadcast_id(b)?;
                Ok(b.to_string())
            }
            None => self.default_broadcast.clone().ok_or_else(|| {
                InvalidField::new(
                    "broadcast",
                    "is required: no DEFAULT_BROADCAST is configured",
                )
            }),
        }
    }
}

/// An `on`/`off` switch, `on` when unset; anything else is an error naming the variable.
fn on_off(name: &'static str, value: Option<String>) -> Result<bool, InvalidField> {
    match value.as_deref() {
        None | Some("on") => Ok(true),
        Some("off") => Ok(false),
        Some(other) => Err(InvalidField::new(
            name,
            format!("must be `on` or `off`, got {other:?}"),
        )),
    }
}

fn parse_int(
    name: &str,
    value: Option<String>,
    default: u32,
    min: u32,
    max: u32,
) -> Result<u32, InvalidField> {
    let Some(v) = value else { return Ok(default) };
    match v.parse::<u64>() {
        Ok(n) if n >= u64::from(min) && n <= u64::from(max) => Ok(n as u32),
        Ok(n) => Err(InvalidField::new(
            name,
            format!("must be between {min} and {max}, got {n}"),
        )),
        Err(_) => Err(InvalidField::new(
            name,
            format!("must be a whole number between {min} and {max}, got {v:?}"),
        )),
    }
}

/// Most regions one deployment runs.
pub const MAX_REGIONS: usize = 16;

/// A region the deployment runs pools in, and its IVS endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionConfig {
    /// The AWS region (`us-east-1`).
    pub name: String,
    /// Base URL of its IVS Real-Time control plane (no trailing slash).
    pub endpoint: String,
}

/// The regions a deployment runs, primary first, from `IVS_REGION`, `IVS_REGIONS`,
/// `IVS_ENDPOINT` and `IVS_ENDPOINTS` as `get` gives them (the worker's rules: a region's
/// endpoint follows IVS's naming unless `IVS_ENDPOINTS`, or `IVS_ENDPOINT` for the primary,
/// names one). For other processes of the deployment (the monitor) that must read these
/// variables exactly as the worker does; errors name the variable at fault.
pub fn regions_from_lookup(
    get: impl Fn(&str) -> Option<String>,
) -> Result<Vec<RegionConfig>, InvalidField> {
    let get = |name: &str| {
        get(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    parse_regions(&get).map(|(regions, _, _)| regions)
}

/// `IVS_REGION`, `IVS_REGIONS`, `IVS_ENDPOINT`, `IVS_ENDPOINTS`: the regions (primary
/// first), the primary's name and endpoint.
fn parse_regions(
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<(Vec<RegionConfig>, String, String), InvalidField> {
    let single = match get("IVS_REGION") {
        None => None,
        Some(r) => {
            validate_region("IVS_REGION", &r)?;
            Some(r)
        }
    };
    let names: Vec<String> = match get("IVS_REGIONS") {
        None => vec![single
            .clone()
            .unwrap_or_else(|| DEFAULT_IVS_REGION.to_string())],
        Some(list) => {
            let mut names: Vec<String> = Vec::new();
            for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                validate_region("IVS_REGIONS", name)?;
                if names.iter().any(|n| n == name) {
                    return Err(InvalidField::new(
                        "IVS_REGIONS",
                        format!("names {name:?} twice"),
                    ));
                }
                names.push(name.to_string());
            }
            if names.is_empty() {
                return Err(InvalidField::new(
                    "IVS_REGIONS",
                    "must name at least one region (`us-east-1,eu-west-1`)",
                ));
            }
            if names.len() > MAX_REGIONS {
                return Err(InvalidField::new(
                    "IVS_REGIONS",
                    format!("names {} regions, at most {MAX_REGIONS}", names.len()),
                ));
            }
            if let Some(single) = &single {
                if *single != names[0] {
                    return Err(InvalidField::new(
                        "IVS_REGION",
                        format!(
                            "is {single:?} but the first (primary) region of IVS_REGIONS is {:?}: \
                             leave IVS_REGION unset or make them agree",
                            names[0]
                        ),
                    ));
                }
            }
            names
        }
    };
    let mut endpoints: BTreeMap<String, String> = BTreeMap::new();
    if let Some(list) = get("IVS_ENDPOINTS") {
        for entry in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((region, url)) = entry.split_once('=') else {
                return Err(InvalidField::new(
                    "IVS_ENDPOINTS",
                    format!("must be `region=url` pairs separated by commas, got {entry:?}"),
                ));
            };
            let region = region.trim();
            if !names.iter().any(|n| n == region) {
                return Err(InvalidField::new(
                    "IVS_ENDPOINTS",
                    format!(
                        "names {region:?}, which is not in IVS_REGIONS ({})",
                        names.join(",")
                    ),
                ));
            }
            let url = validate_endpoint("IVS_ENDPOINTS", url.trim())?;
            if endpoints.insert(region.to_string(), url).is_some() {
                return Err(InvalidField::new(
                    "IVS_ENDPOINTS",
                    format!("names {region:?} twice"),
                ));
            }
        }
    }
    if let Some(e) = get("IVS_ENDPOINT") {
        let e = validate_endpoint("IVS_ENDPOINT", &e)?;
        match endpoints.get(&names[0]) {
            Some(other) if *other != e => {
                return Err(InvalidField::new(
                    "IVS_ENDPOINT",
                    format!(
                        "is {e:?} but IVS_ENDPOINTS gives {:?} for the primary region {:?}",
                        other, names[0]
                    ),
                ))
            }
            _ => {
                endpoints.insert(names[0].clone(), e);
            }
        }
    }
    let regions: Vec<RegionConfig> = names
        .iter()
        .map(|name| RegionConfig {
            name: name.clone(),
            endpoint: endpoints
                .get(name)
                .cloned()
                .unwrap_or_else(|| crate::regions::default_endpoint(name)),
        })
        .collect();
    let primary = regions[0].clone();
    Ok((regions, primary.name, primary.endpoint))
}

fn validate_region(field: &str, region: &str) -> Result<(), InvalidField> {
    crate::regions::validate_region(region).map_err(|e| InvalidField::new(field, e.problem))
}

fn validate_endpoint(field: &str, endpoint: &str) -> Result<String, InvalidField> {
    let rest = endpoint
        .strip_prefix("https://")
        .or_else(|| endpoint.strip_prefix("http://"));
    let Some(rest) = rest else {
        return Err(InvalidField::new(
            field,
            format!("must start with `http://` or `https://`, got {endpoint:?}"),
        ));
    };
    let trimmed = endpoint.trim_end_matches('/');
    let authority = rest.split('/').next().unwrap_or("");
    let bad_char = endpoint
        .chars()
        .any(|c| c.is_control() || c.is_whitespace());
    if authority.is_empty() || bad_char || rest.contains(['?', '#']) {
        return Err(InvalidField::new(
            field,
            format!(
                "must be a base URL with a host and no query, fragment or spaces, got {endpoint:?}"
            ),
        ));
    }
    Ok(trimmed.to_string())
}

fn is_loopback_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost" || host == "::1" || host.starts_with("127.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, InvalidField> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_map(&map)
    }

    #[test]
    fn defaults() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.stage_capacity, 50);
        assert_eq!(c.min_stages, 1);
        assert_eq!(c.max_stages, 100);
        assert_eq!(c.lease_ttl_seconds, 60);
        assert_eq!(c.token_ttl_seconds, 300);
        assert_eq!(c.token_mode, TokenMode::SelfSigned);
        assert_eq!(c.fanout_mode, FanoutMode::MultiPublish);
        assert_eq!(c.media_mode, MediaMode::Ivs);
        assert_eq!(c.ivs_region, "us-east-1");
        assert_eq!(
            c.ivs_endpoint,
            "https://ivsrealtime.us-east-1.amazonaws.com"
        );
        assert_eq!(c.default_broadcast.as_deref(), Some("default"));
        assert_eq!(c.scale_down_grace_seconds, 300);
        assert_eq!(c.deployment, "local");
        assert_eq!(c, Config::default());
    }
}

/// Which broadcasts require a viewer ticket (`TICKET_BROADCASTS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub enum TicketScope {
    /// Every broadcast is public (the default).
    #[default]
    None,
    /// Every broadcast requires a ticket (`*`).
    All,
    /// These broadcasts require one.
    Some(std::collections::BTreeSet<String>),
}

impl TicketScope {
    /// Parses `*`, or a comma list of broadcast ids; empty or absent is [`TicketScope::None`].
    pub fn parse(value: Option<&str>) -> Result<TicketScope, InvalidField> {
        let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(TicketScope::None);
        };
        if value == "*" {
            return Ok(TicketScope::All);
        }
        let mut ids = std::collections::BTreeSet::new();
        for id in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            validate_broadcast_id(id).map_err(|e| {
                InvalidField::new("TICKET_BROADCASTS", format!("{id:?}: {}", e.problem))
            })?;
            ids.insert(id.to_string());
        }
        Ok(if ids.is_empty() {
            TicketScope::None
        } else {
            TicketScope::Some(ids)
        })
    }

    /// Whether `broadcast` seats ticket holders only.
    pub fn requires(&self, broadcast: &str) -> bool {
        match self {
            TicketScope::None => false,
            TicketScope::All => true,
            TicketScope::Some(ids) => ids.contains(broadcast),
        }
    }
}
