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
pub(crate) const LEASE_SECRET_CHARS: usize = 22;

/// The broadcast part of a lease id (`{broadcast}.{22 url-safe characters}`, or
/// `{broadcast}@{region}.{…}` for a pool of another region, as the pools make them; see
/// [`crate::regions::pool_of_lease`]); errors name `leaseId`.
pub fn broadcast_of_lease(lease_id: &str) -> Result<&str, InvalidField> {
    crate::regions::pool_of_lease(lease_id).map(|p| p.broadcast)
}

/// One path segment with its percent-escapes decoded (`b%40eu-west-1` → `b@eu-west-1`), as a
/// client's URL library may write it; errors name `path`: a `%` not followed by two hex
/// digits, or bytes that are not UTF-8.
pub fn percent_decode_segment(segment: &str) -> Result<std::borrow::Cow<'_, str>, InvalidField> {
    if !segment.contains('%') {
        return Ok(std::borrow::Cow::Borrowed(segment));
    }
    let bad = |why: &str| InvalidField::new("path", format!("segment {segment:?}: {why}"));
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("`%` must be followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(std::borrow::Cow::Owned)
        .map_err(|_| bad("its escapes are not UTF-8"))
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
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode_segment("default").unwrap(), "default");
        assert_eq!(
            percent_decode_segment("b%40eu-west-1").unwrap(),
            "b@eu-west-1"
        );
        assert_eq!(percent_decode_segment("%41%62").unwrap(), "Ab");
        for bad in ["b%4", "b%zz", "%", "%c3%28"] {
            assert_eq!(
                percent_decode_segment(bad).unwrap_err().field,
                "path",
                "{bad}"
            );
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
