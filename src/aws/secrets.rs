//! Secrets Manager: the identity CA's secret, so that every replica signs with one CA.

use super::{Aws, AwsError};

impl Aws {
    /// GetSecretValue's string. The value is a CA key: it is never logged, and no error says
    /// more of it than AWS's own message.
    pub async fn secret_string(&self, secret_id: &str) -> Result<String, AwsError> {
        let Some(client) = &self.secrets else {
            return Err(AwsError::Call {
                operation: "GetSecretValue",
                target: format!("secret {secret_id}"),
                code: None,
                message: "no Secrets Manager client configured".into(),
            });
        };
        let target = format!("secret {secret_id}");
        let out = self
            .call("GetSecretValue", &target, || {
                client.get_secret_value().secret_id(secret_id).send()
            })
            .await?;
        out.secret_string()
            .map(str::to_owned)
            .ok_or_else(|| AwsError::empty("GetSecretValue", target, "SecretString"))
    }
}
