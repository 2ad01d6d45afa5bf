//! The clients of one `[[ecs.sources]]` scope: another region, another account through an
//! assumed role, or both. The role is assumed by the SDK's own provider; the SDK's identity
//! cache keeps its session and refreshes it before it expires, so nothing here handles
//! credentials.

use aws_config::sts::AssumeRoleProvider;
use aws_config::Region;
use aws_credential_types::provider::SharedCredentialsProvider;

use super::{Aws, AwsError};
use crate::settings::Scope;

/// The session name the reader role's CloudTrail entries carry.
const SESSION_NAME: &str = "ecs-xds";

impl Aws {
    /// The clients for `scope`: these, unchanged but for the label, for the default scope;
    /// else made from the same SDK settings with the scope's region and, with a role, its
    /// assumed credentials (nothing is called until the first request). Counts into the same
    /// counter under the scope's label.
    pub async fn for_scope(&self, scope: &Scope) -> Result<Aws, AwsError> {
        let label = scope.label();
        let mut aws = match (&scope.region, &scope.role_arn) {
            (None, None) => self.clone(),
            _ => self.scoped_clients(scope).await?,
        };
        aws.account = scope.account.clone().or_else(|| self.account.clone());
        aws.calls = self.calls.for_source(&label);
        aws.retry = self.retry;
        Ok(aws)
    }

    async fn scoped_clients(&self, scope: &Scope) -> Result<Aws, AwsError> {
        let base = self.sdk.as_ref().ok_or_else(|| AwsError::Call {
            operation: "AssumeRole",
            target: scope.label(),
            code: None,
            message: "these AWS clients were not made from SDK settings".into(),
        })?;
        let region = scope
            .region
            .clone()
            .map(Region::new)
            .or_else(|| base.region().cloned())
            .ok_or(AwsError::NoRegion)?;
        let mut config = base.to_builder().region(region.clone());
        if let Some(role) = &scope.role_arn {
            let mut provider = AssumeRoleProvider::builder(role)
                .session_name(SESSION_NAME)
                .region(region)
                .configure(base);
            if let Some(id) = &scope.external_id {
                provider = provider.external_id(id);
            }
            let provider = provider.build().await;
            config = config.credentials_provider(SharedCredentialsProvider::new(provider));
        }
        Aws::from_sdk_config(&config.build())
    }

    /// The account these clients' credentials are of, once known.
    pub fn account(&self) -> Option<&str> {
        self.account.as_deref()
    }

    /// Learns the account the credentials are of (STS GetCallerIdentity, once), unless known.
    pub(crate) async fn resolve_account(&mut self) -> Result<&str, AwsError> {
        if self.account.is_none() {
            let sts = self.sts_client()?;
            let out = self
                .call("GetCallerIdentity", "the credentials' own account", || {
                    sts.get_caller_identity().send()
                })
                .await?;
            let account = out.account().map(str::to_owned);
            let target = "the credentials' own account";
            let account =
                account.ok_or_else(|| AwsError::empty("GetCallerIdentity", target, "account"))?;
            self.account = Some(account);
        }
        Ok(self.account.as_deref().unwrap_or_default())
    }

    fn sts_client(&self) -> Result<aws_sdk_sts::Client, AwsError> {
        let config = self.sdk.as_ref().ok_or_else(|| AwsError::Call {
            operation: "GetCallerIdentity",
            target: "the credentials' own account".into(),
            code: None,
            message: "these AWS clients were not made from SDK settings".into(),
        })?;
        Ok(aws_sdk_sts::Client::new(config))
    }
}
