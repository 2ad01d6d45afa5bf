//! The value parsers of tags and labels: each turns one value into its typed setting or says
//! why it cannot.

use std::time::Duration;

use crate::inventory::RevisionWeight;

pub(super) fn boolean(value: &str) -> Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err("not a boolean (true/yes/1, false/no/0)".to_owned()),
    }
}

pub(super) fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| e.to_string())
}

/// A whole number from `low` to `high`.
pub(super) fn count(low: u32, high: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |value| match value.parse::<u32>() {
        Ok(n) if (low..=high).contains(&n) => Ok(n),
        _ => Err(format!("not a whole number from {low} to {high}")),
    }
}

/// Envoy's `retry_on` conditions (HTTP and gRPC), so a typo is caught where it is written
/// rather than by Envoy rejecting the whole route configuration.
const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// The items of a list written with spaces and/or commas.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
}

/// Envoy conditions, known ones only, in Envoy's form: comma-separated, no spaces.
pub(super) fn retry_on(value: &str) -> Result<String, String> {
    if items(value).next().is_none() {
        return Err("empty".to_owned());
    }
    let unknown: Vec<&str> = items(value).filter(|c| !RETRY_ON.contains(c)).collect();
    match unknown.as_slice() {
        [] => Ok(items(value).collect::<Vec<_>>().join(",")),
        _ => Err(format!(
            "unknown retry condition(s) {unknown:?}; Envoy knows {}",
            RETRY_ON.join(", ")
        )),
    }
}

/// `12=10 11=90` (or `12=10,11=90`): revision=weight pairs, each revision once, weights not
/// all zero.
pub(super) fn weights(value: &str) -> Result<Vec<RevisionWeight>, String> {
    let mut out: Vec<RevisionWeight> = Vec::new();
    for pair in items(value) {
        let parsed = pair.split_once('=').and_then(|(r, w)| {
            Some((r.trim().parse::<u32>().ok()?, w.trim().parse::<u32>().ok()?))
        });
        let Some((revision, weight)) = parsed else {
            return Err(format!(
                "`{pair}` is not revision=weight (e.g. `12=10 11=90`)"
            ));
        };
        if out.iter().any(|w| w.revision == revision) {
            return Err(format!("revision {revision} is given twice"));
        }
        out.push(RevisionWeight { revision, weight });
    }
    if out.iter().all(|w| w.weight == 0) {
        return Err("every weight is 0: that would send traffic nowhere".to_owned());
    }
    Ok(out)
}

/// Host names apps call a service by (`orders.prod.local checkout`): DNS names, lowercased, each
/// once, optionally with `:port`; a leading `*.` matches any subdomain, as in Envoy's domains.
pub(super) fn hosts(value: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for host in items(value) {
        let (name, port) = host.rsplit_once(':').unwrap_or((host, ""));
        let plain = name.strip_prefix("*.").unwrap_or(name);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if !plain.split('.').all(label_ok) || (!port.is_empty() && port.parse::<u16>().is_err()) {
            return Err(format!(
                "`{host}` is not a host name (e.g. `orders.prod.local`)"
            ));
        }
        let host = host.to_ascii_lowercase();
        if !out.contains(&host) {
            out.push(host);
        }
    }
    match out.is_empty() {
        true => Err("empty".to_owned()),
        false => Ok(out),
    }
}
