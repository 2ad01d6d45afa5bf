//! What a service asks for about who may call it and how (`<prefix>mtls`, `<prefix>allow-from`,
//! `<prefix>authz`), and where its workload certificates say it runs. Only parsed values:
//! synthesis turns them into TLS contexts and RBAC filters (`synthesize::security`).

use serde::{Deserialize, Serialize};

/// A service's security settings, as its tags ask for them. `None`: the node type's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    /// The account, region and ECS cluster of its tasks (from their ARNs): with the service
    /// name, the SPIFFE ID its certificates carry. `None` for Cloud Map services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    /// The same service's workloads in the other accounts or regions it was merged with
    /// (`ecs.merge`): their SPIFFE IDs are its too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged: Vec<Workload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<AllowFrom>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authz: Option<AuthzMode>,
}

impl Security {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Every workload of the service: its own, then those it was merged with.
    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.workload.iter().chain(&self.merged)
    }
}

/// Where a service's tasks run, as their task ARNs say (`arn:aws:ecs:REGION:ACCOUNT:task/CLUSTER/ID`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Workload {
    pub account: String,
    pub region: String,
    pub ecs_cluster: String,
}

impl Workload {
    /// The account, region and cluster of a task ARN; `None` for anything else.
    pub fn of_task_arn(arn: &str) -> Option<Workload> {
        let mut parts = arn.splitn(6, ':');
        let (_, _, service, region, account) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        let resource = parts.next()?.strip_prefix("task/")?;
        let (ecs_cluster, id) = resource.split_once('/')?;
        let ok = service == "ecs" && !region.is_empty() && !account.is_empty();
        (ok && !ecs_cluster.is_empty() && !id.is_empty()).then(|| Workload {
            account: account.to_owned(),
            region: region.to_owned(),
            ecs_cluster: ecs_cluster.to_owned(),
        })
    }
}

/// How a service's Envoy takes connections from other services, and how they connect to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MtlsMode {
    /// Mutual TLS only: a plaintext connection is refused.
    Strict,
    /// Mutual TLS and plaintext side by side, for rolling a fleet over; callers use TLS.
    Permissive,
    /// Plaintext, as without `[mtls]`.
    Off,
}

impl std::str::FromStr for MtlsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "strict" => Ok(Self::Strict),
            "permissive" => Ok(Self::Permissive),
            "off" => Ok(Self::Off),
            _ => Err("not one of strict, permissive, off".into()),
        }
    }
}

/// The callers a service accepts (`<prefix>allow-from`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllowFrom {
    /// ECS service names, sorted and unique; empty: nobody.
    Services(Vec<String>),
    /// The tag is there but does not parse: synthesis keeps the service's previous policy
    /// (or denies every caller), never "allow all" by accident.
    Invalid,
}

/// Whether a service's authorization rules are enforced (`<prefix>authz`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthzMode {
    Enforce,
    /// Evaluated and counted (Envoy's `rbac.shadow_denied`), not enforced.
    Shadow,
    /// A value that does not parse: the previous mode is kept (or enforced).
    Invalid,
}

/// Parses an `allow-from` value: ECS service names separated by spaces or commas.
pub fn parse_allow_from(value: &str) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = Vec::new();
    for name in value.split([' ', ',']).filter(|n| !n.is_empty()) {
        let ok = name.len() <= 255
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(format!(
                "`{name}` is not an ECS service name (letters, digits, '-' and '_')"
            ));
        }
        names.push(name.to_owned());
    }
    if names.is_empty() {
        return Err("no service named (to allow no caller, leave the tag out and set [authz] default = \"deny\")".into());
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Parses an `authz` value.
pub fn parse_authz(value: &str) -> Result<AuthzMode, String> {
    match value.to_ascii_lowercase().as_str() {
        "enforce" => Ok(AuthzMode::Enforce),
        "shadow" => Ok(AuthzMode::Shadow),
        _ => Err("not one of enforce, shadow".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_arn_gives_account_region_and_cluster() {
        let w = Workload::of_task_arn("arn:aws:ecs:eu-west-1:111122223333:task/prod/abc123");
        assert_eq!(
            w,
            Some(Workload {
                account: "111122223333".into(),
                region: "eu-west-1".into(),
                ecs_cluster: "prod".into(),
            })
        );
        for bad in [
            "arn:aws:ecs:eu-west-1:111122223333:task/abc123",
            "arn:aws:ecs:eu-west-1:111122223333:service/prod/web",
            "arn:aws:iam::111122223333:task/prod/abc",
            "abc123",
        ] {
            assert_eq!(Workload::of_task_arn(bad), None, "{bad}");
        }
    }

    #[test]
    fn allow_from_takes_spaces_or_commas_and_refuses_anything_else() {
        assert_eq!(parse_allow_from("web api,web").unwrap(), ["api", "web"]);
        assert!(parse_allow_from("web *").is_err());
        assert!(parse_allow_from("spiffe://x/y").is_err());
        assert!(parse_allow_from("  ").is_err());
    }

    #[test]
    fn modes_parse_in_any_case() {
        assert_eq!("Strict".parse::<MtlsMode>(), Ok(MtlsMode::Strict));
        assert!("on".parse::<MtlsMode>().is_err());
        assert_eq!(parse_authz("SHADOW"), Ok(AuthzMode::Shadow));
        assert!(parse_authz("audit").is_err());
    }
}
