//! Configuration: flags with environment fallbacks (`--help` lists both).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use stagefan_core::config::{regions_from_lookup, RegionConfig};
use stagefan_core::ivs::Operation;
use stagefan_core::sigv4::Credentials;

use crate::ivs::IvsSettings;
use crate::poller::PollSettings;

/// IVS's own limit for the operations the monitor's budget paces (ListStages, GetStage,
/// ListParticipants: one family of 5 per second per account and region), from core's table.
pub const IVS_TPS_LIMIT: f64 = Operation::ListStages.documented_tps() as f64;

/// Where the monitor finds IVS when nothing says otherwise: the local stack's ivs-local.
pub const LOCAL_IVS_ENDPOINT: &str = "http://127.0.0.1:8790";

/// stagefan-monitor: polls the pools and IVS within IVS's API budget, exports Prometheus
/// metrics, and asks the pools to scale down.
#[derive(Parser, Clone)]
#[command(name = "stagefan-monitor", version, about)]
pub struct Config {
    /// The edge (worker) base URL.
    #[arg(
        long,
        env = "STAGEFAN_EDGE_URL",
        default_value = "http://127.0.0.1:8787"
    )]
    pub edge_url: String,
    /// The edge's admin key (Bearer token of the admin routes): from the environment
    /// (`STAGEFAN_ADMIN_KEY`) only, never a flag, since `ps` shows every process's arguments.
    #[arg(skip)]
    pub admin_key: String,
    /// This deployment's id: only stages tagged `stagefan:deployment` with it are orphan
    /// candidates (the worker's `STAGEFAN_DEPLOYMENT`).
    #[arg(long, env = "STAGEFAN_DEPLOYMENT", default_value = stagefan_core::config::DEFAULT_DEPLOYMENT, value_parser = parse_deployment)]
    pub deployment: String,
    /// IVS Real-Time endpoint of the primary region (ivs-local's `http://127.0.0.1:8790`
    /// when neither this nor `--ivs-endpoints` is given).
    #[arg(long, env = "IVS_ENDPOINT")]
    pub ivs_endpoint: Option<String>,
    /// IVS region of a one-region deployment (the primary of `--regions` if both are given).
    #[arg(long, env = "IVS_REGION")]
    pub region: Option<String>,
    /// The regions the deployment runs, primary first (`us-east-1,eu-west-1`), as the
    /// worker's `IVS_REGIONS`: each is polled with its own IVS client and budget.
    #[arg(long, env = "IVS_REGIONS")]
    pub regions: Option<String>,
    /// Each region's endpoint (`us-east-1=http://…,eu-west-1=http://…`), as the worker's
    /// `IVS_ENDPOINTS`; a region not named follows IVS's naming.
    #[arg(long, env = "IVS_ENDPOINTS")]
    pub ivs_endpoints: Option<String>,
    /// The regions as read from the four options above by core's parser (the worker's).
    #[arg(skip)]
    pub deployment_regions: Vec<RegionConfig>,
    /// AWS access key id (ivs-local's by default).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "AKIDLOCALSTAGEFAN")]
    pub aws_access_key_id: String,
    /// AWS secret access key (ivs-local's by default).
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        default_value = "stagefan-local-secret",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub aws_secret_access_key: String,
    /// AWS session token (temporary credentials).
    #[arg(long, env = "AWS_SESSION_TOKEN", hide_env_values = true)]
    pub aws_session_token: Option<String>,
    /// Time between poll rounds (`5s`, `500ms`, `2m`, or seconds).
    #[arg(long, env = "MONITOR_POLL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// IVS requests per second the monitor allows itself, per operation (IVS allows 5,
    /// shared with the edge).
    #[arg(long, env = "MONITOR_IVS_BUDGET", default_value_t = 2.0, value_parser = parse_budget)]
    pub ivs_budget: f64,
    /// Admin listen address for /metrics, /live, /ready (`host:port`, or just a port).
    #[arg(long, env = "MONITOR_PORT", default_value = "127.0.0.1:9464", value_parser = parse_listen)]
    pub listen: SocketAddr,
    /// How long a stage of this deployment unknown to every pool is left before it may be
    /// deleted (and then only when IVS lists nobody connected to it).
    #[arg(long, env = "MONITOR_ORPHAN_GRACE", default_value = "10m", value_parser = parse_duration)]
    pub orphan_grace: Duration,
    /// Timeout of one HTTP request (edge or IVS).
    #[arg(long, env = "MONITOR_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Log format: `text` or `json`.
    #[arg(long, env = "MONITOR_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("edge_url", &self.edge_url)
            .field("admin_key", &"<redacted>")
            .field("regions", &self.deployment_regions)
            .field("aws_access_key_id", &self.aws_access_key_id)
            .field("aws_secret_access_key", &"<redacted>")
            .field("poll_interval", &self.poll_interval)
            .field("ivs_budget", &self.ivs_budget)
            .field("listen", &self.listen)
            .field("deployment", &self.deployment)
            .field("orphan_grace", &self.orphan_grace)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Parses the process's arguments and environment.
    pub fn load() -> Config {
        let matches = Config::command().get_matches();
        match Config::from_matches(&matches, |k| std::env::var(k).ok()) {
            Ok(c) => c,
            Err(e) => e.exit(),
        }
    }

    /// The configuration of parsed arguments, with the admin key from `env`
    /// (`STAGEFAN_ADMIN_KEY`, required). The scaling knobs are not here: each pool's snapshot
    /// carries its own (`stagefan_core::policy::PolicyConfig::of_snapshot`).
    pub fn from_matches(
        matches: &ArgMatches,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, clap::Error> {
        let mut c = Config::from_arg_matches(matches)?;
        c.admin_key = env("STAGEFAN_ADMIN_KEY")
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Config::command().error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "STAGEFAN_ADMIN_KEY is not set: the edge's admin key comes from the \
                     environment only (a flag would show in `ps`)",
                )
            })?;
        c.deployment_regions = c.read_regions().map_err(|e| {
            Config::command().error(clap::error::ErrorKind::ValueValidation, e.to_string())
        })?;
        Ok(c)
    }

    /// The regions, by `stagefan_core::config::regions_from_lookup` over the options as the
    /// worker's variables, with ivs-local as the primary's endpoint when none is given.
    fn read_regions(&self) -> Result<Vec<RegionConfig>, stagefan_core::ids::InvalidField> {
        let local = (self.ivs_endpoint.is_none() && self.ivs_endpoints.is_none())
            .then(|| LOCAL_IVS_ENDPOINT.to_string());
        regions_from_lookup(|name| match name {
            "IVS_REGION" => self.region.clone(),
            "IVS_REGIONS" => self.regions.clone(),
            "IVS_ENDPOINT" => self.ivs_endpoint.clone().or_else(|| local.clone()),
            "IVS_ENDPOINTS" => self.ivs_endpoints.clone(),
            _ => None,
        })
    }

    /// How to reach IVS in each region, primary first.
    pub fn ivs(&self) -> Vec<IvsSettings> {
        self.deployment_regions
            .iter()
            .map(|r| IvsSettings {
                endpoint: r.endpoint.clone(),
                region: r.name.clone(),
                credentials: Credentials::new(
                    self.aws_access_key_id.clone(),
                    self.aws_secret_access_key.clone(),
                    self.aws_session_token.clone().filter(|t| !t.is_empty()),
                ),
                timeout: self.request_timeout,
            })
            .collect()
    }

    /// The loop's knobs.
    pub fn poll(&self) -> PollSettings {
        PollSettings {
            poll_interval: self.poll_interval,
            orphan_grace: self.orphan_grace,
            deployment: self.deployment.clone(),
        }
    }
}

/// `5s`, `250ms`, `2m`, `1h`, or a plain number of seconds (fractions allowed).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 5s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("{s:?}: unit must be ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a positive duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A deployment id as the worker's `STAGEFAN_DEPLOYMENT` takes it.
pub fn parse_deployment(s: &str) -> Result<String, String> {
    let s = s.trim();
    stagefan_core::config::validate_deployment_id(s).map_err(|e| e.to_string())?;
    Ok(s.to_string())
}

/// A rate above 0 and at most IVS's [`IVS_TPS_LIMIT`] per second.
pub fn parse_budget(s: &str) -> Result<f64, String> {
    let r: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number"))?;
    if !(r > 0.0 && r <= IVS_TPS_LIMIT) {
        return Err(format!(
            "the IVS budget must be above 0 and at most IVS's {IVS_TPS_LIMIT} requests per second"
        ));
    }
    Ok(r)
}

/// `host:port`, or a bare port (then on 127.0.0.1), so `MONITOR_PORT=9464` works.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is neither host:port nor a port"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn budget_is_kept_under_ivs_limit() {
        assert_eq!(parse_budget("2").unwrap(), 2.0);
        assert_eq!(parse_budget("5").unwrap(), 5.0);
        assert!(parse_budget("5.5").is_err());
        assert!(parse_budget("0").is_err());
        assert!(parse_budget("NaN").is_err());
    }

    #[test]
    fn listen_takes_a_port_or_an_address() {
        assert_eq!(
            parse_listen("9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_listen("0.0.0.0:1").unwrap(),
            "0.0.0.0:1".parse().unwrap()
        );
        assert!(parse_listen("nope").is_err());
    }

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Config, clap::Error> {
        let matches = Config::command().try_get_matches_from(args)?;
        Config::from_matches(&matches, |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    const KEY: [(&str, &str); 1] = [("STAGEFAN_ADMIN_KEY", "k")];

    #[test]
    fn flags_and_defaults() {
        let c = parse_with(
            &[
                "stagefan-monitor",
                "--poll-interval",
                "1s",
                "--ivs-budget",
                "3",
            ],
            &KEY,
        )
        .unwrap();
        assert_eq!(c.poll_interval, Duration::from_secs(1));
        assert_eq!(c.ivs_budget, 3.0);
        assert_eq!(c.ivs().len(), 1);
        assert_eq!(c.ivs()[0].region, "us-east-1");
        assert_eq!(c.ivs()[0].endpoint, LOCAL_IVS_ENDPOINT);
        assert_eq!(c.deployment, "local");
        assert_eq!(c.admin_key, "k");
        assert!(!format!("{c:?}").contains("stagefan-local-secret"));
        assert!(parse_with(&["stagefan-monitor", "--ivs-budget", "9"], &KEY).is_err());
        let c = parse_with(&["m", "--deployment", "eu-prod"], &KEY).unwrap();
        assert_eq!(c.deployment, "eu-prod");
        assert!(parse_with(&["m", "--deployment", "a b"], &KEY).is_err());
    }

    #[test]
    fn the_admin_key_comes_from_the_environment_only() {
        // Not a flag (`ps` would show it), and not a positional argument either.
        for args in [&["m", "--admin-key", "secret"][..], &["m", "secret"][..]] {
            let e = parse_with(args, &KEY).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::UnknownArgument,
                "{args:?}"
            );
        }
        for env in [&[][..], &[("STAGEFAN_ADMIN_KEY", "  ")][..]] {
            let e = parse_with(&["m"], env).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::MissingRequiredArgument);
            assert!(e.to_string().contains("STAGEFAN_ADMIN_KEY"), "{e}");
        }
        let c = parse_with(&["m"], &[("STAGEFAN_ADMIN_KEY", "from-env")]).unwrap();
        assert_eq!(c.admin_key, "from-env");
        assert!(!format!("{c:?}").contains("from-env"));
    }

    #[test]
    fn the_scaling_knobs_are_no_flags_any_more() {
        // They travel in each pool's snapshot; the old flags are refused, not ignored.
        for flag in ["--scale-down-grace", "--delete-grace", "--headroom"] {
            assert!(parse_with(&["m", flag, "1"], &KEY).is_err(), "{flag}");
        }
    }

    #[test]
    fn every_region_of_the_deployment_as_the_worker_reads_them() {
        let env = [("STAGEFAN_ADMIN_KEY", "k")];
        let c = parse_with(
            &[
                "m",
                "--regions",
                "us-east-1,eu-west-1,ap-south-1",
                "--ivs-endpoints",
                "us-east-1=http://127.0.0.1:1,eu-west-1=http://127.0.0.1:2",
            ],
            &env,
        )
        .unwrap();
        let got: Vec<(String, String)> = c
            .ivs()
            .into_iter()
            .map(|s| (s.region, s.endpoint))
            .collect();
        assert_eq!(
            got,
            [
                ("us-east-1".into(), "http://127.0.0.1:1".into()),
                ("eu-west-1".into(), "http://127.0.0.1:2".into()),
                (
                    "ap-south-1".into(),
                    "https://ivsrealtime.ap-south-1.amazonaws.com".into()
                ),
            ]
        );
        // One region named by IVS_REGION with its own endpoint.
        let c = parse_with(
            &["m", "--region", "eu-west-1", "--ivs-endpoint", "http://x:9"],
            &env,
        )
        .unwrap();
        assert_eq!(c.ivs()[0].region, "eu-west-1");
        assert_eq!(c.ivs()[0].endpoint, "http://x:9");
        // The worker's errors, naming the variable at fault.
        for (args, field) in [
            (&["m", "--regions", "us-east-1,Mars_1"][..], "IVS_REGIONS"),
            (
                &["m", "--regions", "us-east-1,us-east-1"][..],
                "IVS_REGIONS",
            ),
            (
                &[
                    "m",
                    "--regions",
                    "us-east-1",
                    "--ivs-endpoints",
                    "eu-west-1=http://x",
                ][..],
                "IVS_ENDPOINTS",
            ),
            (
                &[
                    "m",
                    "--region",
                    "eu-west-1",
                    "--regions",
                    "us-east-1,eu-west-1",
                ][..],
                "IVS_REGION",
            ),
        ] {
            let e = parse_with(args, &env).expect_err("refused");
            assert!(e.to_string().contains(field), "{args:?}: {e}");
        }
    }
}
