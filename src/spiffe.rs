//! The SPIFFE ID a workload certificate names, and the one place that decides what a valid one
//! looks like. Peers authorize each other by this URI alone, so it is parsed strictly: a string
//! that two parsers could read differently (an upper-case trust domain, `%2F`, `..`, a trailing
//! slash) is refused rather than normalized.
//!
//! The shape is ours, inside the SPIFFE rules:
//! `spiffe://<trust_domain>/ecs/<account>/<region>/<cluster>/<service>`.

use std::fmt;

const SCHEME: &str = "spiffe://";
/// The one path prefix ecs-xds names; other shapes in the same trust domain are not ours.
const ECS: &str = "ecs";
/// The SPIFFE spec's bound on a trust domain name.
const MAX_TRUST_DOMAIN: usize = 255;
/// The SPIFFE spec's bound on a whole ID: longer ones do not fit every X.509 stack.
const MAX_ID: usize = 2048;

/// A workload's name: `spiffe://<trust_domain>/ecs/<account>/<region>/<cluster>/<service>`.
///
/// Build one with [`SpiffeId::new`] or [`SpiffeId::parse`], which check every part; the fields
/// are public for reading.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    pub trust_domain: String,
    pub account: String,
    pub region: String,
    pub cluster: String,
    pub service: String,
}

/// Why a string is not a SPIFFE ID (or a trust domain) ecs-xds accepts.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeError {
    #[error("`{0}` is not a SPIFFE ID: it must start with spiffe://")]
    NotSpiffe(String),
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("the trust domain is {0} characters long; at most 255 are allowed")]
    TrustDomainTooLong(usize),
    #[error(
        "the trust domain `{trust_domain}` holds {ch:?}; only lowercase letters, digits, '.', \
         '-' and '_' are allowed"
    )]
    TrustDomainChar { trust_domain: String, ch: char },
    #[error("the path `{0}` is not /ecs/<account>/<region>/<cluster>/<service>")]
    NotEcsPath(String),
    #[error("the {part} is empty")]
    EmptySegment { part: &'static str },
    #[error("the {part} may not be `{value}`")]
    DotSegment { part: &'static str, value: String },
    #[error(
        "the {part} `{value}` holds {ch:?}; only letters, digits, '.', '-' and '_' are allowed"
    )]
    SegmentChar {
        part: &'static str,
        value: String,
        ch: char,
    },
    #[error("the SPIFFE ID is {0} bytes long; at most 2048 are allowed")]
    TooLong(usize),
}

impl SpiffeId {
    /// The ID of `service` in `cluster`, checking each part.
    pub fn new(
        trust_domain: &str,
        account: &str,
        region: &str,
        cluster: &str,
        service: &str,
    ) -> Result<SpiffeId, SpiffeError> {
        check_trust_domain(trust_domain)?;
        check_segment("account", account)?;
        check_segment("region", region)?;
        check_segment("cluster", cluster)?;
        check_segment("service", service)?;
        let id = SpiffeId {
            trust_domain: trust_domain.to_owned(),
            account: account.to_owned(),
            region: region.to_owned(),
            cluster: cluster.to_owned(),
            service: service.to_owned(),
        };
        let len = id.to_string().len();
        if len > MAX_ID {
            return Err(SpiffeError::TooLong(len));
        }
        Ok(id)
    }

    /// Reads `spiffe://<trust_domain>/ecs/<account>/<region>/<cluster>/<service>`, exactly:
    /// no query, fragment, port, user, empty or dot segment, nor any other path.
    pub fn parse(uri: &str) -> Result<SpiffeId, SpiffeError> {
        let rest = uri
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeError::NotSpiffe(uri.to_owned()))?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        check_trust_domain(trust_domain)?;
        let not_ecs = || SpiffeError::NotEcsPath(format!("/{path}"));
        let segments: Vec<&str> = path.split('/').collect();
        let [ECS, account, region, cluster, service] = segments[..] else {
            return Err(not_ecs());
        };
        SpiffeId::new(trust_domain, account, region, cluster, service)
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/{ECS}/{}/{}/{}/{}",
            self.trust_domain, self.account, self.region, self.cluster, self.service
        )
    }
}

/// A trust domain as the SPIFFE spec allows it: 1 to 255 of `a-z 0-9 . - _`.
pub fn check_trust_domain(td: &str) -> Result<(), SpiffeError> {
    if td.is_empty() {
        return Err(SpiffeError::EmptyTrustDomain);
    }
    if td.len() > MAX_TRUST_DOMAIN {
        return Err(SpiffeError::TrustDomainTooLong(td.len()));
    }
    let allowed = |c: char| matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_');
    match td.chars().find(|&c| !allowed(c)) {
        Some(ch) => Err(SpiffeError::TrustDomainChar {
            trust_domain: td.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

/// A path segment as the SPIFFE spec allows it: `A-Z a-z 0-9 . - _`, not empty, `.` or `..`.
fn check_segment(part: &'static str, value: &str) -> Result<(), SpiffeError> {
    if value.is_empty() {
        return Err(SpiffeError::EmptySegment { part });
    }
    if value == "." || value == ".." {
        return Err(SpiffeError::DotSegment {
            part,
            value: value.to_owned(),
        });
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    match value.chars().find(|&c| !allowed(c)) {
        Some(ch) => Err(SpiffeError::SegmentChar {
            part,
            value: value.to_owned(),
            ch,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "spiffe://mesh.example/ecs/123456789012/eu-west-1/prod/checkout";

    fn checkout() -> SpiffeId {
        SpiffeId::new(
            "mesh.example",
            "123456789012",
            "eu-west-1",
            "prod",
            "checkout",
        )
        .unwrap()
    }

    #[test]
    fn an_id_prints_as_its_uri_and_parses_back() {
        assert_eq!(checkout().to_string(), URI);
        assert_eq!(SpiffeId::parse(URI), Ok(checkout()));
    }

    #[test]
    fn parts_keep_their_case_and_punctuation() {
        let uri = "spiffe://td/ecs/1/us-east-1/Blue_Cluster.v2/api-Gateway";
        let id = SpiffeId::parse(uri).unwrap();
        assert_eq!(id.cluster, "Blue_Cluster.v2");
        assert_eq!(id.service, "api-Gateway");
        assert_eq!(id.to_string(), uri);
    }

    #[test]
    fn a_uri_without_the_spiffe_scheme_is_refused() {
        for uri in [
            "https://mesh.example/ecs/1/r/c/s",
            "SPIFFE://mesh.example/ecs/1/r/c/s",
            "spiffe:/mesh.example/ecs/1/r/c/s",
            "",
        ] {
            assert_eq!(
                SpiffeId::parse(uri),
                Err(SpiffeError::NotSpiffe(uri.to_owned()))
            );
        }
    }

    #[test]
    fn a_trust_domain_with_upper_case_a_port_or_a_user_is_refused() {
        for (uri, ch) in [
            ("spiffe://Mesh.example/ecs/1/r/c/s", 'M'),
            ("spiffe://mesh.example:443/ecs/1/r/c/s", ':'),
            ("spiffe://user@mesh.example/ecs/1/r/c/s", '@'),
        ] {
            let Err(SpiffeError::TrustDomainChar { ch: found, .. }) = SpiffeId::parse(uri) else {
                panic!("{uri} was not refused for its trust domain");
            };
            assert_eq!(found, ch);
        }
    }

    #[test]
    fn an_empty_trust_domain_is_refused() {
        assert_eq!(
            SpiffeId::parse("spiffe:///ecs/1/r/c/s"),
            Err(SpiffeError::EmptyTrustDomain)
        );
        assert_eq!(check_trust_domain(""), Err(SpiffeError::EmptyTrustDomain));
    }

    #[test]
    fn a_trust_domain_of_255_characters_is_allowed_and_256_is_not() {
        assert_eq!(check_trust_domain(&"a".repeat(255)), Ok(()));
        assert_eq!(
            check_trust_domain(&"a".repeat(256)),
            Err(SpiffeError::TrustDomainTooLong(256))
        );
    }

    #[test]
    fn a_path_of_another_shape_is_refused() {
        for uri in [
            "spiffe://td",
            "spiffe://td/",
            "spiffe://td/ecs/1/r/c",
            "spiffe://td/ecs/1/r/c/s/extra",
            "spiffe://td/ecs/1/r/c/s/",
            "spiffe://td/k8s/1/r/c/s",
            "spiffe://td/ECS/1/r/c/s",
            "spiffe://td//ecs/1/r/c/s",
        ] {
            assert!(
                matches!(SpiffeId::parse(uri), Err(SpiffeError::NotEcsPath(_))),
                "{uri}: {:?}",
                SpiffeId::parse(uri)
            );
        }
    }

    #[test]
    fn an_empty_or_dot_segment_is_refused() {
        assert_eq!(
            SpiffeId::parse("spiffe://td/ecs/1//c/s"),
            Err(SpiffeError::EmptySegment { part: "region" })
        );
        assert_eq!(
            SpiffeId::parse("spiffe://td/ecs/1/r/../s"),
            Err(SpiffeError::DotSegment {
                part: "cluster",
                value: "..".into()
            })
        );
        assert_eq!(
            SpiffeId::new("td", "1", "r", "c", "."),
            Err(SpiffeError::DotSegment {
                part: "service",
                value: ".".into()
            })
        );
    }

    #[test]
    fn a_query_fragment_or_escape_in_the_path_is_refused() {
        for (uri, ch) in [
            ("spiffe://td/ecs/1/r/c/s?x=1", '?'),
            ("spiffe://td/ecs/1/r/c/s#frag", '#'),
            ("spiffe://td/ecs/1/r/c%2Fd/s", '%'),
            ("spiffe://td/ecs/1/r/c/s\u{e9}", '\u{e9}'),
        ] {
            let Err(SpiffeError::SegmentChar { ch: found, .. }) = SpiffeId::parse(uri) else {
                panic!("{uri} was not refused for its path");
            };
            assert_eq!(found, ch);
        }
    }

    #[test]
    fn new_checks_every_part() {
        assert_eq!(
            SpiffeId::new("Td", "1", "r", "c", "s"),
            Err(SpiffeError::TrustDomainChar {
                trust_domain: "Td".into(),
                ch: 'T'
            })
        );
        assert_eq!(
            SpiffeId::new("td", "", "r", "c", "s"),
            Err(SpiffeError::EmptySegment { part: "account" })
        );
        assert_eq!(
            SpiffeId::new("td", "1", "r", "c/d", "s"),
            Err(SpiffeError::SegmentChar {
                part: "cluster",
                value: "c/d".into(),
                ch: '/'
            })
        );
    }

    #[test]
    fn an_id_longer_than_2048_bytes_is_refused() {
        let long = "s".repeat(2048);
        assert!(matches!(
            SpiffeId::new("td", "1", "r", "c", &long),
            Err(SpiffeError::TooLong(_))
        ));
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let e = SpiffeId::parse("spiffe://td/ecs/1/r/c/a b").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the service `a b` holds ' '; only letters, digits, '.', '-' and '_' are allowed"
        );
    }
}
