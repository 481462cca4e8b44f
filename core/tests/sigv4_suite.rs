//! Runs every case of AWS's SigV4 test suite (core/tests/sigv4-suite/, see SOURCE.md there)
//! through `stagefan_core::sigv4`, checking the canonical request, the string to sign and the
//! signature of each, then checks that `verify` accepts the signed request.

use std::fs;
use std::path::{Path, PathBuf};

use stagefan_core::sigv4::{
    self, Credentials, HttpRequest, SigningParams, SigningSettings, UtcDateTime, VerifyParams,
};

struct SuiteRequest {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Parses `request.txt`: request line, headers (continuation lines folded), blank line, body.
fn parse_request(text: &str) -> SuiteRequest {
    let (head, body) = match text.split_once("\n\n") {
        Some((h, b)) => (h, b.as_bytes().to_vec()),
        None => (text, Vec::new()),
    };
    let mut lines = head.lines();
    let request_line = lines.next().expect("request line");
    let (method, rest) = request_line.split_once(' ').expect("method");
    let target = rest
        .strip_suffix(" HTTP/1.1")
        .expect("HTTP/1.1 request line");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().expect("continuation after a header");
            last.1.push(' ');
            last.1.push_str(line);
        } else {
            let (n, v) = line.split_once(':').expect("header line");
            headers.push((n.to_string(), v.to_string()));
        }
    }
    SuiteRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    }
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sigv4-suite")
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{}/{name}: {e}", dir.display()))
}

#[test]
fn every_case_of_the_aws_sigv4_test_suite() {
    let mut cases: Vec<PathBuf> = fs::read_dir(suite_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 38, "suite has {} cases", cases.len());
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let ctx: serde_json::Value = serde_json::from_str(&read(dir, "context.json")).unwrap();
        let req = parse_request(&read(dir, "request.txt"));
        let expected_creq = read(dir, "header-canonical-request.txt");
        let expected_sts = read(dir, "header-string-to-sign.txt");
        let expected_sig = read(dir, "header-signature.txt").trim().to_string();

        let c = &ctx["credentials"];
        let creds = Credentials::new(
            c["access_key_id"].as_str().unwrap(),
            c["secret_access_key"].as_str().unwrap(),
            c["token"].as_str().map(str::to_string),
        );
        let time = UtcDateTime::parse_rfc3339(ctx["timestamp"].as_str().unwrap()).unwrap();
        let settings = SigningSettings {
            add_content_sha256: ctx["sign_body"].as_bool().unwrap_or(false),
            normalize_path: ctx["normalize"].as_bool().unwrap_or(true),
            omit_session_token_from_signature: ctx["omit_session_token"].as_bool().unwrap_or(false),
        };
        let region = ctx["region"].as_str().unwrap();
        let service = ctx["service"].as_str().unwrap();
        let headers: Vec<(&str, &str)> = req
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let http = HttpRequest {
            method: &req.method,
            path: &req.path,
            query: &req.query,
            headers: &headers,
            body: &req.body,
        };
        let params = SigningParams {
            credentials: &creds,
            region,
            service,
            time,
            settings,
        };
        let signed = sigv4::sign(&http, &params);

        // Each step on its own, too.
        let creq_ok = signed.canonical_request == expected_creq;
        let sts_ok = signed.string_to_sign == expected_sts;
        let sig_ok = signed.signature == expected_sig;
        let step_sts = sigv4::string_to_sign(
            &time.amz_date(),
            &sigv4::credential_scope(&time.date_stamp(), region, service),
            &expected_creq,
        );
        let step_sig = sigv4::signature(
            &sigv4::signing_key(
                creds.secret_access_key(),
                &time.date_stamp(),
                region,
                service,
            ),
            &expected_sts,
        );
        if !(creq_ok && sts_ok && sig_ok && step_sts == expected_sts && step_sig == expected_sig) {
            failures.push(format!(
                "{name}: creq {creq_ok} sts {sts_ok} sig {sig_ok}\n--- got creq\n{}\n--- want creq\n{expected_creq}",
                signed.canonical_request
            ));
            continue;
        }
        let auth = signed
            .headers
            .iter()
            .find(|(n, _)| *n == "authorization")
            .unwrap();
        assert!(
            auth.1.ends_with(&format!("Signature={expected_sig}")),
            "{name}"
        );

        // The server side accepts what the client side produced, unless the token was left
        // out of the signature on purpose (then the header is unsigned but present: still ok).
        let mut all: Vec<(&str, &str)> = headers.clone();
        all.extend(signed.headers.iter().map(|(n, v)| (*n, v.as_str())));
        let verified = sigv4::verify(
            &HttpRequest {
                headers: &all,
                ..http
            },
            &VerifyParams {
                region,
                service,
                now_unix: time.to_unix() + 60,
                max_skew_secs: sigv4::MAX_CLOCK_SKEW_SECS,
                normalize_path: settings.normalize_path,
            },
            |id| (id == creds.access_key_id).then(|| creds.clone()),
        );
        if let Err(e) = verified {
            failures.push(format!("{name}: verify refused its own signature: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
