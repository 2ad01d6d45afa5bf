//! The EC2 request discovery makes: the private IPv4 of the hosts of bridge and host networked
//! tasks.

use super::{Aws, AwsError};

impl Aws {
    /// EC2 DescribeInstances for at most `INSTANCE_BATCH` ids: (instance id, private IPv4).
    pub(crate) async fn describe_instance_ips(
        &self,
        cluster: &str,
        ids: &[String],
    ) -> Result<Vec<(String, String)>, AwsError> {
        let out = self
            .call(
                "DescribeInstances",
                &format!("ECS cluster {cluster}"),
                || {
                    self.ec2
                        .describe_instances()
                        .set_instance_ids(Some(ids.to_vec()))
                        .send()
                },
            )
            .await?;
        Ok(out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .filter_map(|i| {
                Some((
                    i.instance_id()?.to_owned(),
                    i.private_ip_address()?.to_owned(),
                ))
            })
            .collect())
    }
}
