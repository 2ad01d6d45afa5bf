//! The checks on a task's proof of identity (a signed, unsent `sts:GetCallerIdentity` request)
//! before ecs-xds sends it to STS.
//!
//! STS only says who signed a request; it is these checks that make the answer mean "this task
//! asks this server to certify this key, now". The lessons of Vault's CVE-2020-16250 are kept:
//! the request must be the one action we expect (so STS cannot be made to do anything else),
//! carry only headers we know (so nothing can steer it elsewhere), be signed for our STS
//! endpoint and for this server (so a proof made for another server cannot be replayed here),
//! bind the key being certified (so a proof cannot be reused for an attacker's key), and be
//! fresh. The signature itself is STS's to verify: a proof that passes here may still be
//! refused there.
//!
//! Nothing here logs the request: its authorization header and session token are the task's.

use std::time::{Duration, SystemTime};

use crate::aws::{SignedRequest, CALLER_IDENTITY_BODY};

/// The header that names the server a proof is for (signed, so it cannot be changed).
pub const SERVER_ID_HEADER: &str = "x-ecs-xds-server-id";
/// The header that binds a proof to the key being certified: the SHA-256 of its public key.
pub const KEY_HASH_HEADER: &str = "x-ecs-xds-key-sha256";

/// Every header a proof may carry. `x-amz-content-sha256` is optional in SigV4.
const ALLOWED_HEADERS: &[&str] = &[
    "host",
    "content-type",
    "content-length",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "authorization",
    SERVER_ID_HEADER,
    KEY_HASH_HEADER,
];
/// Headers every proof must sign: where it goes, when it was made, for whom and for what key.
const MUST_SIGN: &[&str] = &["host", "x-amz-date", SERVER_ID_HEADER, KEY_HASH_HEADER];

/// Bounds on a proof: a session token is a few KiB at most, and the body is one short form.
const MAX_HEADER_VALUE: usize = 8 * 1024;
const MAX_HEADERS: usize = 16;
const MAX_BODY: usize = 256;

/// Signatures older than this are refused (SigV4's own limit is 15 minutes too).
const MAX_AGE: Duration = Duration::from_secs(15 * 60);
/// Signatures from this far ahead are allowed, for clocks that run a little fast.
const MAX_AHEAD: Duration = Duration::from_secs(5 * 60);

/// What this server accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    /// The STS host proofs must be signed for (`sts_host(sts_region)`).
    pub sts_host: String,
    pub sts_region: String,
    /// This server's id, which a proof must name in [`SERVER_ID_HEADER`].
    pub server_id: String,
}

/// Why a proof is refused. [`Refusal::reason`] is a metric label and log field; Display says
/// it plainly, for the log (the caller is told less).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the proof is malformed: {0}")]
    Malformed(&'static str),
    #[error("the proof has no {0} header")]
    MissingHeader(&'static str),
    #[error("the body is not Action=GetCallerIdentity&Version=2011-06-15: {0}")]
    WrongAction(String),
    #[error("header {0:?} is not allowed in a proof")]
    HeaderNotAllowed(String),
    #[error("the proof is for host {0:?}, not this server's STS endpoint")]
    WrongHost(String),
    #[error("the proof's credential scope is not this server's: {0}")]
    WrongScope(String),
    #[error("header {0} is not signed")]
    UnsignedHeader(String),
    #[error("the signature is {}s old (at most {}s is accepted)", .0.as_secs(), MAX_AGE.as_secs())]
    StaleSignature(Duration),
    #[error("the signature is dated {}s ahead (at most {}s is accepted)", .0.as_secs(), MAX_AHEAD.as_secs())]
    FutureSignature(Duration),
    #[error("the proof is for another server")]
    WrongServerId,
    #[error("the proof is for another key than the one to certify")]
    KeyMismatch,
}

impl Refusal {
    /// A short, fixed label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Malformed(_) | Refusal::MissingHeader(_) => "proof_malformed",
            Refusal::WrongAction(_) => "wrong_action",
            Refusal::HeaderNotAllowed(_) => "header_not_allowed",
            Refusal::WrongHost(_) => "wrong_host",
            Refusal::WrongScope(_) => "wrong_scope",
            Refusal::UnsignedHeader(_) => "unsigned_header",
            Refusal::StaleSignature(_) => "stale_signature",
            Refusal::FutureSignature(_) => "future_signature",
            Refusal::WrongServerId => "wrong_server_id",
            Refusal::KeyMismatch => "key_mismatch",
        }
    }
}

/// Checks a proof before anything is sent to STS: `req` must be a GetCallerIdentity request
/// for `pins`' STS endpoint, signed at most 15 minutes before `now`, naming this server and
/// binding the key whose SHA-256 (lower-case hex) is `key_sha256_hex`.
pub fn check(
    req: &SignedRequest,
    pins: &Pins,
    key_sha256_hex: &str,
    now: SystemTime,
) -> Result<(), Refusal> {
    check_sizes(req)?;
    check_body(&req.body)?;
    check_header_names(req)?;
    check_content_length(req)?;
    let host = header(req, "host")?;
    if host != pins.sts_host {
        return Err(Refusal::WrongHost(shorten(host)));
    }
    let auth = Authorization::parse(header(req, "authorization")?)?;
    auth.check_scope(pins)?;
    check_signed_headers(req, &auth)?;
    check_date(header(req, "x-amz-date")?, auth.date, now)?;
    if header(req, SERVER_ID_HEADER)? != pins.server_id {
        return Err(Refusal::WrongServerId);
    }
    if header(req, KEY_HASH_HEADER)? != key_sha256_hex {
        return Err(Refusal::KeyMismatch);
    }
    Ok(())
}

/// Bounds first, so no later check works on an attacker's megabytes.
fn check_sizes(req: &SignedRequest) -> Result<(), Refusal> {
    if req.headers.len() > MAX_HEADERS {
        return Err(Refusal::Malformed("too many headers"));
    }
    if req.body.len() > MAX_BODY {
        return Err(Refusal::Malformed("the body is too long"));
    }
    // Header values go on the wire as they are: printable ASCII only, so no line breaks.
    let printable = |v: &str| v.bytes().all(|b| (b' '..=b'~').contains(&b));
    for value in req.headers.values() {
        if value.len() > MAX_HEADER_VALUE || !printable(value) {
            return Err(Refusal::Malformed(
                "a header value is too long or not printable",
            ));
        }
    }
    Ok(())
}

/// The body must be the one action: any other action, or any parameter more (which STS might
/// act on), is refused.
fn check_body(body: &str) -> Result<(), Refusal> {
    if body == CALLER_IDENTITY_BODY {
        return Ok(());
    }
    let pairs: Vec<(&str, &str)> = body
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .collect();
    let actions: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| *k == "Action")
        .map(|(_, v)| *v)
        .collect();
    let detail = match actions.as_slice() {
        [] => "no action".to_owned(),
        ["GetCallerIdentity"] => format!("{} parameters, not Action and Version", pairs.len()),
        [action] => format!("action {:?}", shorten(action)),
        _ => "more than one action".to_owned(),
    };
    Err(Refusal::WrongAction(detail))
}

/// STS reads as many bytes as content-length says: it must be the body's length.
fn check_content_length(req: &SignedRequest) -> Result<(), Refusal> {
    match req.headers.get("content-length") {
        Some(length) if *length != req.body.len().to_string() => Err(Refusal::Malformed(
            "content-length is not the body's length",
        )),
        _ => Ok(()),
    }
}

fn check_header_names(req: &SignedRequest) -> Result<(), Refusal> {
    match req
        .headers
        .keys()
        .find(|name| !ALLOWED_HEADERS.contains(&name.as_str()))
    {
        Some(name) => Err(Refusal::HeaderNotAllowed(shorten(name))),
        None => Ok(()),
    }
}

/// A header the checks need: its absence makes the proof malformed.
fn header<'r>(req: &'r SignedRequest, name: &'static str) -> Result<&'r str, Refusal> {
    req.headers
        .get(name)
        .map(String::as_str)
        .ok_or(Refusal::MissingHeader(name))
}

/// Every header but the authorization itself must be signed (so none can be changed on the
/// way), the ones that pin the proof above all; and every signed header must be there.
fn check_signed_headers(req: &SignedRequest, auth: &Authorization<'_>) -> Result<(), Refusal> {
    let signed = |name: &str| auth.signed_headers.contains(&name);
    if let Some(name) = MUST_SIGN.iter().find(|name| !signed(name)) {
        return Err(Refusal::UnsignedHeader((*name).to_owned()));
    }
    let unsigned = req
        .headers
        .keys()
        .find(|name| *name != "authorization" && !signed(name));
    if let Some(name) = unsigned {
        return Err(Refusal::UnsignedHeader(name.clone()));
    }
    if auth
        .signed_headers
        .iter()
        .any(|name| !req.headers.contains_key(*name))
    {
        return Err(Refusal::Malformed("a signed header is missing"));
    }
    Ok(())
}

/// `x-amz-date` (`yyyymmddThhmmssZ`), on the credential scope's day, within the freshness
/// window around `now`.
fn check_date(date: &str, scope_date: &str, now: SystemTime) -> Result<(), Refusal> {
    let format = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    let signed_at = time::PrimitiveDateTime::parse(date, format)
        .map_err(|_| Refusal::Malformed("x-amz-date is not yyyymmddThhmmssZ"))?
        .assume_utc();
    if date.get(..8) != Some(scope_date) {
        return Err(Refusal::WrongScope(format!(
            "its day {scope_date} is not x-amz-date's"
        )));
    }
    let signed_at = SystemTime::from(signed_at);
    match now.duration_since(signed_at) {
        Ok(age) if age > MAX_AGE => Err(Refusal::StaleSignature(age)),
        Ok(_) => Ok(()),
        Err(ahead) if ahead.duration() > MAX_AHEAD => {
            Err(Refusal::FutureSignature(ahead.duration()))
        }
        Err(_) => Ok(()),
    }
}

/// The parts of a SigV4 authorization header the checks read:
/// `AWS4-HMAC-SHA256 Credential=<id>/<yyyymmdd>/<region>/<service>/aws4_request,
/// SignedHeaders=<a;b;c>, Signature=<64 hex>`.
#[derive(Debug)]
struct Authorization<'a> {
    date: &'a str,
    region: &'a str,
    service: &'a str,
    signed_headers: Vec<&'a str>,
}

impl<'a> Authorization<'a> {
    fn parse(header: &'a str) -> Result<Self, Refusal> {
        let malformed = || Refusal::Malformed("the authorization header is not SigV4's");
        let rest = header
            .strip_prefix("AWS4-HMAC-SHA256 Credential=")
            .ok_or_else(malformed)?;
        let (credential, rest) = rest.split_once(", SignedHeaders=").ok_or_else(malformed)?;
        let (signed, signature) = rest.split_once(", Signature=").ok_or_else(malformed)?;
        let hex = |s: &str| {
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if signature.len() != 64 || !hex(signature) {
            return Err(malformed());
        }
        let parts: Vec<&str> = credential.split('/').collect();
        let [id, date, region, service, "aws4_request"] = parts.as_slice() else {
            return Err(malformed());
        };
        let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !id_ok || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        let signed_headers: Vec<&str> = signed.split(';').collect();
        let name_ok = |n: &&str| {
            let lower = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-';
            !n.is_empty() && n.bytes().all(lower)
        };
        if !signed_headers.iter().all(name_ok) {
            return Err(malformed());
        }
        Ok(Authorization {
            date,
            region,
            service,
            signed_headers,
        })
    }

    fn check_scope(&self, pins: &Pins) -> Result<(), Refusal> {
        if self.region == pins.sts_region && self.service == "sts" {
            return Ok(());
        }
        Err(Refusal::WrongScope(format!(
            "region {:?} and service {:?}, not {:?} and \"sts\"",
            shorten(self.region),
            shorten(self.service),
            pins.sts_region
        )))
    }
}

/// A caller's string, cut short for a log line.
fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::{sign_with, sts_host, test_credentials};

    const KEY: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    /// 2026-12-02T12:00:00Z.
    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_212_800)
    }

    fn pins() -> Pins {
        Pins {
            sts_host: sts_host("us-east-1"),
            sts_region: "us-east-1".into(),
            server_id: "mesh-prod".into(),
        }
    }

    /// A proof as an agent makes it, for these pins and KEY, signed at `at`.
    fn proof_at(token: Option<&str>, at: SystemTime) -> SignedRequest {
        let extra = [(SERVER_ID_HEADER, "mesh-prod"), (KEY_HASH_HEADER, KEY)];
        sign_with(&test_credentials(token), "us-east-1", &extra, at).unwrap()
    }

    fn proof() -> SignedRequest {
        proof_at(Some("session-token"), noon())
    }

    /// The reason `req` is refused at noon.
    fn refused(req: &SignedRequest) -> &'static str {
        check(req, &pins(), KEY, noon()).unwrap_err().reason()
    }

    fn edit_authorization(req: &mut SignedRequest, from: &str, to: &str) {
        let auth = req.headers.get_mut("authorization").unwrap();
        assert!(auth.contains(from), "{auth}");
        *auth = auth.replace(from, to);
    }

    #[test]
    fn a_proof_signed_with_a_session_token_passes() {
        assert_eq!(check(&proof(), &pins(), KEY, noon()), Ok(()));
    }

    #[test]
    fn a_proof_signed_without_a_session_token_passes() {
        let req = proof_at(None, noon());
        assert_eq!(check(&req, &pins(), KEY, noon()), Ok(()));
    }

    #[test]
    fn a_proof_signed_a_little_ahead_or_a_while_ago_passes() {
        for at in [
            noon() + Duration::from_secs(4 * 60),
            noon() - Duration::from_secs(14 * 60),
        ] {
            assert_eq!(check(&proof_at(None, at), &pins(), KEY, noon()), Ok(()));
        }
    }

    #[test]
    fn another_action_is_refused() {
        let mut req = proof();
        req.body = "Action=AssumeRole&Version=2011-06-15".into();
        assert_eq!(refused(&req), "wrong_action");
    }

    #[test]
    fn an_extra_body_parameter_is_refused() {
        let mut req = proof();
        req.body.push_str("&RoleArn=arn:aws:iam::1:role/admin");
        assert_eq!(refused(&req), "wrong_action");
    }

    #[test]
    fn a_foreign_header_is_refused() {
        let mut req = proof();
        req.headers
            .insert("x-forwarded-host".into(), "evil.example".into());
        assert_eq!(refused(&req), "header_not_allowed");
    }

    #[test]
    fn a_header_name_in_another_case_is_refused() {
        let mut req = proof();
        req.headers.insert("Host".into(), "evil.example".into());
        assert_eq!(refused(&req), "header_not_allowed");
    }

    #[test]
    fn a_proof_for_another_host_is_refused() {
        let mut req = proof();
        req.headers.insert("host".into(), "sts.evil.example".into());
        assert_eq!(refused(&req), "wrong_host");
    }

    #[test]
    fn a_scope_for_another_region_is_refused() {
        let mut req = proof();
        edit_authorization(&mut req, "/us-east-1/sts/", "/eu-west-1/sts/");
        assert_eq!(refused(&req), "wrong_scope");
    }

    #[test]
    fn a_scope_for_another_service_is_refused() {
        let mut req = proof();
        edit_authorization(&mut req, "/us-east-1/sts/", "/us-east-1/iam/");
        assert_eq!(refused(&req), "wrong_scope");
    }

    #[test]
    fn a_server_id_header_that_is_not_signed_is_refused() {
        let mut req = proof();
        edit_authorization(&mut req, ";x-ecs-xds-server-id", "");
        assert_eq!(refused(&req), "unsigned_header");
    }

    #[test]
    fn a_session_token_that_is_not_signed_is_refused() {
        let mut req = proof();
        edit_authorization(&mut req, ";x-amz-security-token", "");
        assert_eq!(refused(&req), "unsigned_header");
    }

    #[test]
    fn a_signed_header_that_is_missing_is_refused() {
        let mut req = proof();
        req.headers.remove("content-type");
        assert_eq!(refused(&req), "proof_malformed");
    }

    #[test]
    fn a_proof_for_another_server_is_refused() {
        let extra = [(SERVER_ID_HEADER, "mesh-staging"), (KEY_HASH_HEADER, KEY)];
        let req = sign_with(&test_credentials(None), "us-east-1", &extra, noon()).unwrap();
        assert_eq!(refused(&req), "wrong_server_id");
    }

    #[test]
    fn a_signature_sixteen_minutes_old_is_stale() {
        let req = proof_at(None, noon() - Duration::from_secs(16 * 60));
        assert_eq!(refused(&req), "stale_signature");
    }

    #[test]
    fn a_signature_six_minutes_ahead_is_refused() {
        let req = proof_at(None, noon() + Duration::from_secs(6 * 60));
        assert_eq!(refused(&req), "future_signature");
    }

    #[test]
    fn a_date_on_another_day_than_the_scope_is_refused() {
        let mut req = proof();
        req.headers
            .insert("x-amz-date".into(), "20261203T000100Z".into());
        assert_eq!(refused(&req), "wrong_scope");
    }

    #[test]
    fn a_proof_for_another_key_is_refused() {
        let other = "0".repeat(64);
        let err = check(&proof(), &pins(), &other, noon()).unwrap_err();
        assert_eq!(err.reason(), "key_mismatch");
    }

    #[test]
    fn a_malformed_authorization_is_refused() {
        for (from, to) in [
            ("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA512 "),
            (", Signature=", ", Signature=zz"),
            ("/aws4_request", "/aws4_request/more"),
            (", SignedHeaders=", ", SignedHeaders=;"),
        ] {
            let mut req = proof();
            edit_authorization(&mut req, from, to);
            assert_eq!(refused(&req), "proof_malformed", "{from} → {to}");
        }
    }

    #[test]
    fn oversized_proofs_are_refused_as_malformed() {
        let mut long_value = proof();
        long_value
            .headers
            .insert("x-amz-security-token".into(), "t".repeat(8 * 1024 + 1));
        let mut long_body = proof();
        long_body.body = format!("{CALLER_IDENTITY_BODY}&{}", "x".repeat(256));
        let mut many = proof();
        for i in 0..16 {
            many.headers.insert(format!("x-extra-{i}"), "1".into());
        }
        for req in [long_value, long_body, many] {
            assert_eq!(refused(&req), "proof_malformed");
        }
    }

    #[test]
    fn a_content_length_that_is_not_the_bodys_is_refused_as_malformed() {
        let mut req = proof();
        req.headers.insert("content-length".into(), "4300".into());
        assert_eq!(refused(&req), "proof_malformed");
    }

    #[test]
    fn a_header_value_with_a_line_break_is_refused_as_malformed() {
        let mut req = proof();
        req.headers
            .insert(SERVER_ID_HEADER.into(), "mesh-prod\r\nx-evil: 1".into());
        assert_eq!(refused(&req), "proof_malformed");
    }
}
