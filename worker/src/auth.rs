//! Host and admin keys: `Authorization: Bearer <key>`, compared in constant time. A key that is
//! not configured closes its routes (503 `not_configured`); it never opens them.

use sha2::{Digest, Sha256};
use worker::Request;

use crate::error::{AppError, AppResult};

/// Which key a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Host,
    Admin,
}

impl Role {
    fn var(self) -> &'static str {
        match self {
            Role::Host => "STAGEFAN_HOST_KEY",
            Role::Admin => "STAGEFAN_ADMIN_KEY",
        }
    }
}

/// Checks the request's bearer key against the configured key of `role`.
pub fn require(req: &Request, role: Role, configured: Option<&str>) -> AppResult<()> {
    check(presented_key(req).as_deref(), role, configured)
}

/// The decision of [`require`], on the key presented (if any).
pub fn check(presented: Option<&str>, role: Role, configured: Option<&str>) -> AppResult<()> {
    let configured = match configured {
        Some(k) if !k.is_empty() => k,
        _ => return Err(AppError::NotConfigured(role.var())),
    };
    if presented.is_some_and(|key| keys_equal(key, configured)) {
        Ok(())
    } else {
        Err(AppError::Unauthorized)
    }
}

/// Whether the request carries the configured key of `role` (for routes that show more to
/// admins but are public otherwise).
pub fn has(req: &Request, configured: Option<&str>) -> bool {
    match (presented_key(req), configured) {
        (Some(key), Some(configured)) if !configured.is_empty() => keys_equal(&key, configured),
        _ => false,
    }
}

fn presented_key(req: &Request) -> Option<String> {
    let header = req.headers().get("authorization").ok()??;
    let (scheme, key) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim().to_string())
}

/// Compares digests so that neither the content nor the length of the key leaks through timing.
pub fn keys_equal(presented: &str, configured: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(configured.as_bytes());
    a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unconfigured_keys_close_the_routes() {
        for configured in [None, Some("")] {
            assert!(matches!(
                check(Some("anything"), Role::Host, configured),
                Err(AppError::NotConfigured("STAGEFAN_HOST_KEY"))
            ));
            assert!(matches!(
                check(None, Role::Admin, configured),
                Err(AppError::NotConfigured("STAGEFAN_ADMIN_KEY"))
            ));
        }
        assert!(check(Some("k"), Role::Admin, Some("k")).is_ok());
        assert!(matches!(
            check(Some("x"), Role::Admin, Some("k")),
            Err(AppError::Unauthorized)
        ));
        assert!(matches!(
            check(None, Role::Host, Some("k")),
            Err(AppError::Unauthorized)
        ));
        assert_eq!(AppError::NotConfigured("STAGEFAN_HOST_KEY").status(), 503);
    }

    #[test]
    fn compares_keys() {
        assert!(keys_equal("secret", "secret"));
        assert!(!keys_equal("secret", "secreT"));
        assert!(!keys_equal("secret", "secret2"));
        assert!(!keys_equal("", "secret"));
    }
}
