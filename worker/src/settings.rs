//! The worker's configuration: `stagefan_core::config::Config` parsed from wrangler vars, plus
//! the secrets (keys, AWS credentials, the token key), read from `Env`.

use stagefan_core::config::Config;
use stagefan_core::sigv4::Credentials;
use worker::Env;

use crate::error::{AppError, AppResult};

/// Everything a request handler or a Durable Object reads from `Env`.
pub struct Settings {
    pub config: Config,
    pub host_key: Option<String>,
    pub admin_key: Option<String>,
    pub credentials: Option<Credentials>,
    pub token_private_key: Option<String>,
    /// `TOKEN_PUBLIC_KEY_ARN`: the key's ARN per region ([`Config::key_arns`]).
    pub token_public_key_arns: std::collections::BTreeMap<String, String>,
    pub token_signer: Option<String>,
    /// `VIEWER_TICKET_SECRET`: the HS256 secret of viewer tickets (at least 32 bytes).
    pub ticket_secret: Option<String>,
    /// `VIEWER_TICKET_PUBLIC_KEY`: the SPKI PEM public keys (one or more blocks, while a key
    /// is rotated) of ES256 (P-256) and RS256 (RSA) tickets.
    pub ticket_public_key: Option<String>,
}

/// A var or secret, `None` when absent or blank.
pub fn var(env: &Env, name: &str) -> Option<String> {
    env.var(name)
        .map(|v| v.to_string())
        .or_else(|_| env.secret(name).map(|v| v.to_string()))
        .ok()
        .filter(|v| !v.trim().is_empty())
}

impl Settings {
    pub fn from_env(env: &Env) -> AppResult<Settings> {
        let config = Config::from_lookup(|name| var(env, name))
            .map_err(|e| AppError::Internal(format!("configuration: {e}")))?;
        let credentials = match (
            var(env, "AWS_ACCESS_KEY_ID"),
            var(env, "AWS_SECRET_ACCESS_KEY"),
        ) {
            (Some(id), Some(secret)) => Some(Credentials::new(
                id.trim(),
                secret.trim(),
                var(env, "AWS_SESSION_TOKEN"),
            )),
            _ => None,
        };
        Ok(Settings {
            host_key: var(env, "STAGEFAN_HOST_KEY"),
            admin_key: var(env, "STAGEFAN_ADMIN_KEY"),
            credentials,
            token_private_key: var(env, "TOKEN_PRIVATE_KEY"),
            token_public_key_arns: config
                .key_arns(var(env, "TOKEN_PUBLIC_KEY_ARN").as_deref())
                .map_err(|e| AppError::Internal(format!("configuration: {e}")))?,
            token_signer: var(env, "TOKEN_SIGNER"),
            ticket_secret: var(env, "VIEWER_TICKET_SECRET"),
            ticket_public_key: var(env, "VIEWER_TICKET_PUBLIC_KEY"),
            config,
        })
    }

    pub fn credentials(&self) -> AppResult<&Credentials> {
        self.credentials.as_ref().ok_or(AppError::NotConfigured(
            "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY",
        ))
    }
}
