//! Command-line flags, each with an environment fallback.

use std::net::IpAddr;

use clap::Parser;

/// ivs-local: a local Amazon IVS Real-Time control plane (SigV4-verified, IVS's JSON, errors,
/// quotas and request rates) with WHIP/WHEP-style media signaling.
#[derive(Clone, Debug, Parser)]
#[command(name = "ivs-local", version)]
pub struct Config {
    /// Address to bind the HTTP server (control plane and WHIP) to.
    #[arg(long, env = "IVS_LOCAL_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// HTTP port; 0 picks a free one (the chosen port is logged and printed on stdout).
    #[arg(long, env = "IVS_LOCAL_PORT", default_value_t = 8790)]
    pub port: u16,
    /// UDP port of the media plane (one socket for every WebRTC session); 0 picks a free one.
    #[arg(long, env = "IVS_LOCAL_MEDIA_PORT", default_value_t = 8791)]
    pub media_port: u16,
    /// The IP address written into ICE candidates.
    #[arg(long, env = "IVS_LOCAL_PUBLIC_IP", default_value = "127.0.0.1")]
    pub public_ip: IpAddr,
    /// Host name or IP put into the stage endpoints (`whip`, `events`).
    #[arg(long, env = "IVS_LOCAL_PUBLIC_HOST", default_value = "127.0.0.1")]
    pub public_host: String,
    /// The region ivs-local claims to be (SigV4 scope and ARNs).
    #[arg(long, env = "IVS_LOCAL_REGION", default_value = "us-east-1")]
    pub region: String,
    /// The account id in ARNs.
    #[arg(long, env = "IVS_LOCAL_ACCOUNT_ID", default_value = "123456789012")]
    pub account_id: String,
    /// The only access key id accepted.
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "AKIDLOCALSTAGEFAN")]
    pub access_key_id: String,
    /// Its secret.
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        default_value = "stagefan-local-secret",
        hide_env_values = true
    )]
    pub secret_access_key: String,
    /// Multiplies IVS's per-operation request rates (5 TPS, 50 TPS, …); 0 turns throttling off.
    #[arg(long, env = "IVS_LOCAL_RATE_SCALE", default_value_t = 1.0)]
    pub rate_scale: f64,
    /// Subscribers allowed per stage (IVS default 10,000).
    #[arg(long, env = "IVS_LOCAL_SUBSCRIBER_CAP", default_value_t = 10_000)]
    pub subscriber_cap: usize,
    /// Publishers allowed per stage (IVS: 12, not adjustable).
    #[arg(long, env = "IVS_LOCAL_PUBLISHER_CAP", default_value_t = 12)]
    pub publisher_cap: usize,
    /// Stages allowed in the region (IVS default 1,000) [default: 1000]; the older variable
    /// IVS_LOCAL_STAGE_QUOTA still works when neither this flag nor IVS_QUOTA_STAGES is set.
    #[arg(
        long = "stage-quota",
        env = "IVS_QUOTA_STAGES",
        value_name = "STAGE_QUOTA"
    )]
    stage_quota_arg: Option<usize>,
    /// IVS_LOCAL_STAGE_QUOTA, the stage quota's older variable, kept as an alias: clap reads one
    /// variable per flag, so it is a hidden flag of its own, below `--stage-quota` and
    /// IVS_QUOTA_STAGES (see [`Config::stage_quota`]).
    #[arg(
        long = "legacy-stage-quota",
        env = "IVS_LOCAL_STAGE_QUOTA",
        hide = true
    )]
    legacy_stage_quota: Option<usize>,
    /// Concurrent publishers allowed across all stages of the region (IVS default 1,000;
    /// replicas count).
    #[arg(long, env = "IVS_QUOTA_PUBLISHERS", default_value_t = 1_000)]
    pub publisher_quota: usize,
    /// Concurrent subscriptions (one subscriber receiving one publisher) allowed across all
    /// stages of the region (IVS default 20,000).
    #[arg(long, env = "IVS_QUOTA_SUBSCRIPTIONS", default_value_t = 20_000)]
    pub subscription_quota: usize,
    /// Seconds a WHIP/WHEP session has to complete ICE and DTLS after its answer; one that
    /// has not is ended and its seat freed (IVS ends such sessions too).
    #[arg(long, env = "IVS_LOCAL_ICE_SETUP_TIMEOUT", default_value_t = 30)]
    pub ice_setup_timeout_secs: u64,
    /// Run without the media plane (control plane and token checks only; WHIP answers 503).
    #[arg(long, env = "IVS_LOCAL_NO_MEDIA", default_value_t = false)]
    pub no_media: bool,
}

/// IVS's default stage quota per region.
const DEFAULT_STAGE_QUOTA: usize = 1_000;

impl Config {
    /// Stages allowed in the region: `--stage-quota`, else IVS_QUOTA_STAGES, else the older
    /// IVS_LOCAL_STAGE_QUOTA, else 1,000.
    pub fn stage_quota(&self) -> usize {
        self.stage_quota_arg
            .or(self.legacy_stage_quota)
            .unwrap_or(DEFAULT_STAGE_QUOTA)
    }

    /// Refuses values that cannot work.
    pub fn validate(&self) -> Result<(), String> {
        if self.ice_setup_timeout_secs == 0 || self.ice_setup_timeout_secs > 3600 {
            return Err("--ice-setup-timeout-secs must be 1 to 3600".into());
        }
        if !(self.rate_scale >= 0.0 && self.rate_scale.is_finite()) {
            return Err("--rate-scale must be a finite number >= 0".into());
        }
        if self.account_id.len() != 12 || !self.account_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err("--account-id must be 12 digits".into());
        }
        if self.region.is_empty()
            || !self
                .region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err("--region must look like us-east-1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("ivs-local").chain(args.iter().copied())).unwrap()
    }

    // Flags only: the environment is the process's, shared by every test thread. clap reads a
    // variable exactly as it reads the flag that names it.
    #[test]
    fn quotas_default_to_ivs_and_take_flags() {
        let c = parse(&[]);
        assert_eq!(
            (c.stage_quota(), c.publisher_quota, c.subscription_quota),
            (1_000, 1_000, 20_000)
        );
        let c = parse(&["--publisher-quota", "2", "--subscription-quota", "3"]);
        assert_eq!((c.publisher_quota, c.subscription_quota), (2, 3));
        assert!(Config::try_parse_from(["ivs-local", "--subscription-quota", "-1"]).is_err());
    }

    #[test]
    fn the_older_stage_quota_variable_is_an_alias_below_the_new_one() {
        assert_eq!(parse(&["--stage-quota", "5"]).stage_quota(), 5);
        assert_eq!(parse(&["--legacy-stage-quota", "7"]).stage_quota(), 7);
        let both = parse(&["--stage-quota", "5", "--legacy-stage-quota", "7"]);
        assert_eq!(both.stage_quota(), 5);
    }
}
