//! The identifiers that come in from clients and configuration, and the one error every
//! refused value becomes: an [`InvalidField`] naming the variable or field and saying what was
//! wrong with it (the worker answers it as a 400 with `field` set).

/// A value that was refused: which variable or field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct InvalidField {
    /// The variable (`STAGE_CAPACITY`) or request field (`userId`) that was wrong.
    pub field: String,
    /// What was wrong with it, in words, including the value where that is safe to show.
    pub problem: String,
}

impl InvalidField {
    /// An error for `field` with the explanation `problem`.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// Checks a broadcast id: 1 to 64 characters from `[A-Za-z0-9_-]`; errors name `broadcast`.
pub fn validate_broadcast_id(id: &str) -> Result<(), InvalidField> {
    validate_broadcast_field("broadcast", id)
}

/// Checks a broadcast id that arrives in `field` (a query's `after`, say): the rules of
/// [`validate_broadcast_id`], errors naming `field`.
pub fn validate_broadcast_field(field: &str, id: &str) -> Result<(), InvalidField> {
    validate_id(
        id,
        field,
        64,
        |c| c.is_ascii_alphanumeric() || c == '_' || c == '-',
        "letters, digits, `_` and `-`",
    )
}

/// Checks a deployment id: 1 to 64 characters from `[A-Za-z0-9_.-]`; errors name
/// `deployment`.
pub fn validate_deployment_id(id: &str) -> Result<(), InvalidField> {
    validate_id(
        id,
        "deployment",
        64,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'),
        "letters, digits, `_`, `.` and `-`",
    )
}

/// Checks a user id: 1 to 128 characters from `[A-Za-z0-9_.@:-]` (so no control characters
/// or spaces); errors name `userId`.
pub fn validate_user_id(id: &str) -> Result<(), InvalidField> {
    validate_id(
        id,
        "userId",
        128,
        |c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '@' | ':' | '-'),
        "letters, digits, `_`, `.`, `@`, `:` and `-`",
    )?;
    if id.eq_ignore_ascii_case(HOST_USER_ID) {
        return Err(InvalidField::new(
            "userId",
            format!("`{HOST_USER_ID}` is reserved for the broadcast's host"),
        ));
    }
    Ok(())
}

/// The `user_id` of the host's participant tokens; no viewer may call itself that.
pub const HOST_USER_ID: &str = "host";

fn validate_id(
    id: &str,
    field: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
    allowed_text: &str,
) -> Result<(), InvalidField> {
    let len = id.chars().count();
    if len == 0 {
        return Err(InvalidField::new(field, "must not be empty"));
    }
    if len > max {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max} characters, got {len}"),
        ));
    }
    if let Some((pos, c)) = id.chars().enumerate().find(|(_, c)| !allowed(*c)) {
        let what = if c.is_control() {
            format!("a control character (U+{:04X})", c as u32)
        } else {
            format!("{c:?}")
        };
        return Err(InvalidField::new(
            field,
            format!("may hold only {allowed_text}; found {what} at position {pos}"),
        ));
    }
    Ok(())
}

/// Characters of a lease id's random part: 16 random bytes in url-safe base64, unpadded.
const LEASE_SECRET_CHARS: usize = 22;

/// Where a lease id routes: its broadcast's pool, and, for a lease of stage presence, its
/// stage's object (`crate::presence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRoute<'a> {
    /// The broadcast.
    pub broadcast: &'a str,
    /// The stage whose object keeps the lease alive (`None`: the pool keeps it).
    pub stage: Option<crate::pool::StageId>,
}

/// Reads a lease id as the pool makes them, `{broadcast}.{22 url-safe characters}` or, in
/// stage presence, `{broadcast}.{stage number}.{22 url-safe characters}`; errors name
/// `leaseId`. Only the form is checked: whether the lease exists is its object's question.
pub fn lease_route(lease_id: &str) -> Result<LeaseRoute<'_>, InvalidField> {
    let bad = |why: &str| InvalidField::new("leaseId", format!("is not a lease id: {why}"));
    let (head, secret) = lease_id
        .rsplit_once('.')
        .ok_or_else(|| bad("no `.` between broadcast and secret"))?;
    let (broadcast, stage) = match head.split_once('.') {
        None => (head, None),
        Some((broadcast, stage)) => {
            let number = (!stage.is_empty()
                && stage.len() <= 19
                && stage.bytes().all(|b| b.is_ascii_digit()))
            .then(|| stage.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| bad("its stage must be a number"))?;
            (broadcast, Some(crate::pool::StageId(number)))
        }
    };
    validate_broadcast_id(broadcast).map_err(|e| bad(&format!("its broadcast {}", e.problem)))?;
    let len = secret.chars().count();
    if len != LEASE_SECRET_CHARS {
        return Err(bad(&format!(
            "its secret must be {LEASE_SECRET_CHARS} characters, got {len}"
        )));
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(bad(
            "its secret may hold only url-safe base64 (letters, digits, `_`, `-`)",
        ));
    }
    Ok(LeaseRoute { broadcast, stage })
}

/// The broadcast part of a lease id (see [`lease_route`]), which routes the lease to its
/// pool; errors name `leaseId`.
pub fn broadcast_of_lease(lease_id: &str) -> Result<&str, InvalidField> {
    lease_route(lease_id).map(|r| r.broadcast)
}

/// Longest stage ARN accepted from a client.
const MAX_ARN_CHARS: usize = 256;

/// Checks a stage ARN as IVS writes them (`arn:aws…:stage/…`, printable ASCII, at most 256
/// characters); errors name `stageArn`. Whether the stage is one of a pool's own is the
/// pool's question.
pub fn validate_stage_arn(arn: &str) -> Result<(), InvalidField> {
    let problem = if arn.len() > MAX_ARN_CHARS {
        format!(
            "must be at most {MAX_ARN_CHARS} characters, got {}",
            arn.len()
        )
    } else if !arn.bytes().all(|b| b.is_ascii_graphic()) {
        "may hold only printable ASCII, no spaces".to_string()
    } else if !arn.starts_with("arn:aws") || !arn.contains(":stage/") {
        format!(
            "must be a stage ARN (`arn:aws:ivs:{{region}}:{{account}}:stage/{{id}}`), got {arn:?}"
        )
    } else {
        return Ok(());
    };
    Err(InvalidField::new("stageArn", problem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcast_ids_in_any_field() {
        assert!(validate_broadcast_field("broadcast", "default").is_ok());
        let err = validate_broadcast_field("after", "de.fault").unwrap_err();
        assert_eq!(err.field, "after");
        assert!(err.problem.contains("'.' at position 2"), "{err}");
    }

    #[test]
    fn lease_ids_name_their_broadcast() {
        assert_eq!(
            broadcast_of_lease("default.abcdefghijABCDEFGHIJ-_").unwrap(),
            "default"
        );
        for bad in [
            "default.short",
            "nodot",
            ".abcdefghijABCDEFGHIJ-_",
            "default.abcdefghijABCDEFGHIJ+/",
        ] {
            let err = broadcast_of_lease(bad).unwrap_err();
            assert_eq!(err.field, "leaseId", "{bad}");
        }
    }

    #[test]
    fn lease_ids_of_stage_presence_name_their_stage() {
        let route = lease_route("default.12.abcdefghijABCDEFGHIJ-_").unwrap();
        assert_eq!(route.broadcast, "default");
        assert_eq!(route.stage, Some(crate::pool::StageId(12)));
        assert_eq!(
            lease_route("default.abcdefghijABCDEFGHIJ-_").unwrap().stage,
            None
        );
        for bad in [
            "default..abcdefghijABCDEFGHIJ-_",
            "default.x1.abcdefghijABCDEFGHIJ-_",
            "default.-1.abcdefghijABCDEFGHIJ-_",
            "default.99999999999999999999.abcdefghijABCDEFGHIJ-_",
            "default.1.2.abcdefghijABCDEFGHIJ-_",
            "de fault.1.abcdefghijABCDEFGHIJ-_",
            "default.1.short",
        ] {
            let err = lease_route(bad).unwrap_err();
            assert_eq!(err.field, "leaseId", "{bad}");
        }
    }

    #[test]
    fn stage_arns() {
        assert!(validate_stage_arn("arn:aws:ivs:us-east-1:123456789012:stage/abcd").is_ok());
        for bad in [
            "",
            "arn:aws:ivs:us-east-1:1:channel/x",
            "arn:aws:ivs:r:1:stage/a b",
        ] {
            assert_eq!(
                validate_stage_arn(bad).unwrap_err().field,
                "stageArn",
                "{bad}"
            );
        }
        assert!(validate_stage_arn(&format!("arn:aws:ivs:r:1:stage/{}", "a".repeat(300))).is_err());
    }
}
