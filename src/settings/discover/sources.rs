//! `[[ecs.sources]]`: the AWS accounts and regions discovery watches, each with its own
//! credentials (an assumed role, or the standard chain's), ECS clusters and Cloud Map
//! namespaces. Without any, the top-level `[ecs]` and `[cloud_map]` lists are the one source:
//! the caller's own account in `aws.region`.

use serde::{Deserialize, Serialize};

use super::DiscoverSettings;
use crate::problem::{Problem, Problems};

/// One `[[ecs.sources]]` entry: one account, one or more regions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    /// The 12-digit account id. Absent: the role's account, else the caller's own.
    pub account: Option<String>,
    /// A role to assume for this account (the SDK's assume-role provider caches the session and
    /// refreshes it before it expires). Absent: the standard credential chain.
    pub role_arn: Option<String>,
    /// The external id the role's trust policy asks for.
    pub external_id: Option<String>,
    /// Regions watched; empty: `aws.region` (or the chain's region).
    pub regions: Vec<String>,
    /// ECS cluster names, in priority order.
    pub clusters: Vec<String>,
    /// Every ECS cluster of the account and region, instead of `clusters`.
    pub auto_discover_clusters: bool,
    /// Cloud Map namespaces of this account and region, in priority order.
    pub cloud_map_namespaces: Vec<String>,
}

/// One (account, region) to poll: a source expanded over its regions. Without
/// `[[ecs.sources]]`, the one scope of the top-level lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `None`: the caller's own account (what the credentials are).
    pub account: Option<String>,
    /// `None`: `aws.region`, or the standard chain's.
    pub region: Option<String>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
    pub clusters: Vec<String>,
    pub auto_discover_clusters: bool,
    pub namespaces: Vec<String>,
}

impl Scope {
    /// The scope's name in logs, metrics and `/readyz`: `account/region`, with `self` for the
    /// caller's own account and `default` for the configured region.
    pub fn label(&self) -> String {
        let account = self.account.as_deref().unwrap_or("self");
        let region = self.region.as_deref().unwrap_or("default");
        format!("{account}/{region}")
    }
}

impl DiscoverSettings {
    /// Every (account, region) discovery polls, in priority order: the sources' order, each
    /// source's regions in order.
    pub fn scopes(&self) -> Vec<Scope> {
        if self.ecs.sources.is_empty() {
            return vec![Scope {
                account: None,
                region: None,
                role_arn: None,
                external_id: None,
                clusters: self.ecs.clusters.clone(),
                auto_discover_clusters: self.ecs.auto_discover_clusters,
                namespaces: self.cloud_map.namespaces.clone(),
            }];
        }
        let mut scopes = Vec::new();
        for source in &self.ecs.sources {
            let account = source
                .account
                .clone()
                .or_else(|| source.role_arn.as_deref().and_then(role_account));
            let regions: Vec<Option<String>> = match source.regions.is_empty() {
                true => vec![None],
                false => source.regions.iter().cloned().map(Some).collect(),
            };
            for region in regions {
                scopes.push(Scope {
                    account: account.clone(),
                    region,
                    role_arn: source.role_arn.clone(),
                    external_id: source.external_id.clone(),
                    clusters: source.clusters.clone(),
                    auto_discover_clusters: source.auto_discover_clusters,
                    namespaces: source.cloud_map_namespaces.clone(),
                });
            }
        }
        scopes
    }

    /// Checks `[[ecs.sources]]`: ids and ARNs well formed, each source watching something, no
    /// (account, region) twice, and no top-level list beside them.
    pub(super) fn validate_sources(&self, errors: &mut Problems) {
        let sources = &self.ecs.sources;
        if sources.is_empty() {
            return;
        }
        for (key, given) in [
            ("ecs.clusters", !self.ecs.clusters.is_empty()),
            (
                "ecs.auto_discover_clusters",
                self.ecs.auto_discover_clusters,
            ),
            (
                "cloud_map.namespaces",
                !self.cloud_map.namespaces.is_empty(),
            ),
        ] {
            if given {
                errors.push(Problem::at(
                    key,
                    "with [[ecs.sources]], give clusters and namespaces in each source",
                ));
            }
        }
        for (i, source) in sources.iter().enumerate() {
            source.validate(&format!("ecs.sources[{i}]"), errors);
        }
        let scopes = self.scopes();
        for (i, scope) in scopes.iter().enumerate() {
            let same = |s: &&Scope| s.account == scope.account && s.region == scope.region;
            if scopes[..i].iter().any(|s| same(&s)) {
                errors.push(Problem::at(
                    "ecs.sources",
                    format!("{} is watched by two sources", scope.label()),
                ));
            }
        }
    }
}

impl SourceSettings {
    fn validate(&self, at: &str, errors: &mut Problems) {
        if let Some(account) = &self.account {
            if !is_account_id(account) {
                errors.push(Problem::at(
                    format!("{at}.account"),
                    format!("`{account}` is not a 12-digit AWS account id"),
                ));
            }
        }
        if let Some(arn) = &self.role_arn {
            match role_account(arn) {
                None => errors.push(Problem::at(
                    format!("{at}.role_arn"),
                    format!("`{arn}` is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)"),
                )),
                Some(of_role) if self.account.as_ref().is_some_and(|a| *a != of_role) => errors
                    .push(Problem::at(
                        format!("{at}.role_arn"),
                        format!(
                            "the role is in account {of_role}, the source says {}",
                            self.account.as_deref().unwrap_or_default()
                        ),
                    )),
                Some(_) => {}
            }
        }
        self.validate_external_id(at, errors);
        for (i, region) in self.regions.iter().enumerate() {
            if !is_region(region) {
                errors.push(Problem::at(
                    format!("{at}.regions[{i}]"),
                    format!("`{region}` is not an AWS region name (such as us-east-1)"),
                ));
            } else if self.regions[..i].contains(region) {
                errors.push(Problem::at(
                    format!("{at}.regions[{i}]"),
                    format!("`{region}` is listed twice"),
                ));
            }
        }
        self.validate_lists(at, errors);
    }

    fn validate_external_id(&self, at: &str, errors: &mut Problems) {
        let Some(id) = &self.external_id else {
            return;
        };
        let allowed = |c: char| c.is_ascii_alphanumeric() || "+=,.@:/-_".contains(c);
        if self.role_arn.is_none() {
            errors.push(Problem::at(
                format!("{at}.external_id"),
                "an external id needs a role_arn to assume",
            ));
        } else if !(2..=1224).contains(&id.len()) || !id.chars().all(allowed) {
            // Never the value itself: it is a shared secret of sorts.
            errors.push(Problem::at(
                format!("{at}.external_id"),
                "must be 2 to 1224 of A-Z a-z 0-9 + = , . @ : / - _",
            ));
        }
    }

    fn validate_lists(&self, at: &str, errors: &mut Problems) {
        if self.auto_discover_clusters && !self.clusters.is_empty() {
            errors.push(Problem::at(
                format!("{at}.clusters"),
                "give either a list of clusters or auto_discover_clusters = true, not both",
            ));
        }
        if !self.auto_discover_clusters
            && self.clusters.is_empty()
            && self.cloud_map_namespaces.is_empty()
        {
            errors.push(Problem::at(
                at,
                "watches nothing: give clusters, auto_discover_clusters or cloud_map_namespaces",
            ));
        }
        for (key, list) in [
            ("clusters", &self.clusters),
            ("cloud_map_namespaces", &self.cloud_map_namespaces),
        ] {
            for (i, name) in list.iter().enumerate() {
                if name.trim().is_empty() {
                    errors.push(Problem::at(format!("{at}.{key}[{i}]"), "empty name"));
                } else if list[..i].contains(name) {
                    errors.push(Problem::at(
                        format!("{at}.{key}[{i}]"),
                        format!("`{name}` is listed twice"),
                    ));
                }
            }
        }
    }
}

/// The account of an IAM role ARN (`arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`).
fn role_account(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(6, ':');
    let (arn_, partition, service, region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    let role = resource.strip_prefix("role/")?;
    let well_formed = arn_ == "arn"
        && partition.starts_with("aws")
        && service == "iam"
        && region.is_empty()
        && is_account_id(account)
        && !role.is_empty();
    well_formed.then(|| account.to_owned())
}

fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-4`: letters, dashes, a number.
fn is_region(name: &str) -> bool {
    let Some((head, number)) = name.rsplit_once('-') else {
        return false;
    };
    let words: Vec<&str> = head.split('-').collect();
    words.len() >= 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> DiscoverSettings {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn without_sources_the_top_level_lists_are_the_one_scope() {
        let s = parse("[ecs]\nclusters = [\"prod\"]\n[cloud_map]\nnamespaces = [\"a.local\"]\n");
        let scopes = s.scopes();
        assert_eq!(scopes.len(), 1);
        assert_eq!(scopes[0].label(), "self/default");
        assert_eq!(
            (&scopes[0].clusters[..], &scopes[0].namespaces[..]),
            (&["prod".to_owned()][..], &["a.local".to_owned()][..])
        );
        assert!(s.validate().is_ok());
    }

    #[test]
    fn a_source_is_one_scope_per_region_with_the_roles_account() {
        let s = parse(
            r#"
            [[ecs.sources]]
            clusters = ["prod"]
            [[ecs.sources]]
            role_arn = "arn:aws:iam::222222222222:role/ecs-xds-reader"
            external_id = "mesh-prod"
            regions = ["us-east-1", "eu-west-1"]
            auto_discover_clusters = true
            cloud_map_namespaces = ["b.local"]
            "#,
        );
        assert!(s.validate().is_ok(), "{:?}", s.validate());
        let labels: Vec<String> = s.scopes().iter().map(Scope::label).collect();
        assert_eq!(
            labels,
            [
                "self/default",
                "222222222222/us-east-1",
                "222222222222/eu-west-1"
            ]
        );
        let eu = &s.scopes()[2];
        assert!(eu.auto_discover_clusters);
        assert_eq!(eu.external_id.as_deref(), Some("mesh-prod"));
        assert_eq!(eu.namespaces, ["b.local"]);
    }

    #[test]
    fn every_bad_source_value_is_reported_with_its_path() {
        let s = parse(
            r#"
            [ecs]
            clusters = ["top"]
            [[ecs.sources]]
            account = "2222"
            role_arn = "arn:aws:iam::222222222222:user/bob"
            regions = ["us-east-1", "Mars", "us-east-1"]
            clusters = ["a", "a"]
            auto_discover_clusters = true
            [[ecs.sources]]
            account = "333333333333"
            role_arn = "arn:aws:iam::444444444444:role/r"
            external_id = "x"
            [[ecs.sources]]
            external_id = "abc"
            clusters = ["b"]
            [[ecs.sources]]
            clusters = ["c"]
            "#,
        );
        let errors = s.validate().unwrap_err().0;
        let expected = [
            "ecs.clusters: with [[ecs.sources]]",
            "ecs.sources[0].account: `2222` is not",
            "ecs.sources[0].role_arn: `arn:aws:iam::222222222222:user/bob` is not",
            "ecs.sources[0].regions[1]: `Mars`",
            "ecs.sources[0].regions[2]: `us-east-1` is listed twice",
            "ecs.sources[0].clusters: give either",
            "ecs.sources[0].clusters[1]: `a` is listed twice",
            "ecs.sources[1].role_arn: the role is in account 444444444444",
            "ecs.sources[1].external_id: must be",
            "ecs.sources[1]: watches nothing",
            "ecs.sources[2].external_id: an external id needs",
            "ecs.sources: self/default is watched by two sources",
            "ecs.sources: 2222/us-east-1 is watched by two sources",
        ];
        for prefix in expected {
            assert!(
                errors.iter().any(|e| e.to_string().starts_with(prefix)),
                "no error starting with {prefix:?} in {errors:#?}"
            );
        }
        assert_eq!(errors.len(), expected.len(), "{errors:#?}");
    }

    #[test]
    fn region_names_and_role_arns_are_recognised() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-4",
        ] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["us-east", "useast1", "US-EAST-1", "us--1", "-1"] {
            assert!(!is_region(bad), "{bad}");
        }
        let arn = "arn:aws-cn:iam::123456789012:role/path/reader";
        assert_eq!(role_account(arn).as_deref(), Some("123456789012"));
        assert_eq!(role_account("arn:aws:iam::123456789012:role/"), None);
        assert_eq!(role_account("arn:aws:sts::123456789012:role/x"), None);
    }
}
