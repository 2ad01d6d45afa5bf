//! The S3 requests of the shared push store (`[push] store = { s3 = ... }`): one object per
//! name under a prefix, read, listed and written with S3's conditional writes, through the same
//! [`Aws::call`] as every other request (backoff, every attempt counted in the daemon's one
//! counter). They are the [`ObjectStore`] of `push`, which decides what the objects mean.

use std::collections::BTreeMap;

use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output;
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::retry::Request;
use super::{Aws, AwsError, RetryPolicy};
use crate::push::{Condition, Object, ObjectError, ObjectStore, Pending, Written};

/// The objects `{prefix}{name}.json` of one bucket.
#[derive(Debug, Clone)]
pub struct Objects {
    aws: Aws,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// Error codes S3 answers a failed condition with: 412 PreconditionFailed, or 409
/// ConditionalRequestConflict when two conditional writes race on one key.
const CONFLICT_CODES: &[&str] = &["PreconditionFailed", "ConditionalRequestConflict"];

impl Aws {
    /// The objects under `prefix` in `bucket`. Writes sit in a request's path (a PUT answers
    /// once it is stored), so they are retried less than discovery's reads: two attempts.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Objects, AwsError> {
        let s3 = self.s3.clone().ok_or_else(|| AwsError::Call {
            operation: "PutObject",
            target: format!("s3://{bucket}/{prefix}"),
            code: None,
            message: "no S3 client configured".into(),
        })?;
        let retry = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        Ok(Objects {
            aws: self.clone().with_retry_policy(retry),
            s3,
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl Objects {
    /// `s3://bucket/prefix{name}.json`, for errors and logs.
    pub fn location(&self, name: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(name))
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}.json", self.prefix)
    }

    /// Every `{name}.json` directly under the prefix, with its ETag (ListObjectsV2, a page per
    /// 1,000 objects).
    pub async fn list(&self) -> Result<BTreeMap<String, String>, AwsError> {
        let target = format!("s3://{}/{}", self.bucket, self.prefix);
        let send = |token| {
            let list = self.s3.list_objects_v2().bucket(&self.bucket);
            list.prefix(&self.prefix)
                .set_continuation_token(token)
                .send()
        };
        let page = |out: ListObjectsV2Output| {
            let named = out.contents().iter().filter_map(|object| {
                let name = (object.key())
                    .and_then(|k| k.strip_prefix(self.prefix.as_str()))
                    .and_then(|k| k.strip_suffix(".json"))
                    .filter(|n| !n.contains('/'))?;
                Some((
                    name.to_owned(),
                    object.e_tag().unwrap_or_default().to_owned(),
                ))
            });
            let next = (out.next_continuation_token()).filter(|_| out.is_truncated() == Some(true));
            (named.collect(), next.map(str::to_owned))
        };
        let request = Request::new("ListObjectsV2");
        let names = self.aws.call_paged(request, &target, send, page).await?;
        Ok(names.into_iter().collect())
    }

    /// The object `name`, or `None` when there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Object>, AwsError> {
        let target = self.location(name);
        let key = self.key(name);
        let result = self
            .aws
            .call("GetObject", &target, || {
                self.s3.get_object().bucket(&self.bucket).key(&key).send()
            })
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e) if e.code() == Some("NoSuchKey") => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let body = out.body.collect().await.map_err(|e| AwsError::Call {
            operation: "GetObject",
            target: target.clone(),
            code: None,
            message: format!("reading the body: {e}"),
        })?;
        Ok(Some(Object {
            body: body.into_bytes(),
            etag,
        }))
    }

    /// PutObject `name` if `condition` still holds.
    pub async fn put(
        &self,
        name: &str,
        body: Bytes,
        condition: Condition<'_>,
    ) -> Result<Written, AwsError> {
        let target = self.location(name);
        let key = self.key(name);
        let result = self
            .aws
            .call("PutObject", &target, || {
                let request = self
                    .s3
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .content_type("application/json")
                    .body(ByteStream::from(body.clone()));
                match condition {
                    Condition::Absent => request.if_none_match("*"),
                    Condition::Matches(etag) => request.if_match(etag),
                }
                .send()
            })
            .await;
        match result {
            Ok(out) => Ok(Written::Done(out.e_tag().unwrap_or_default().to_owned())),
            Err(e) => conflict_or(e),
        }
    }

    /// DeleteObject `name` if it is still the object with `etag`. An object already gone is a
    /// conflict too: someone else deleted it.
    pub async fn delete(&self, name: &str, etag: &str) -> Result<Written, AwsError> {
        let target = self.location(name);
        let key = self.key(name);
        let result = self
            .aws
            .call("DeleteObject", &target, || {
                self.s3
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .if_match(etag)
                    .send()
            })
            .await;
        match result {
            Ok(_) => Ok(Written::Done(String::new())),
            Err(e) if e.code() == Some("NoSuchKey") => Ok(Written::Conflict),
            Err(e) => conflict_or(e),
        }
    }
}

fn conflict_or(e: AwsError) -> Result<Written, AwsError> {
    match e.code() {
        Some(code) if CONFLICT_CODES.contains(&code) => Ok(Written::Conflict),
        _ => Err(e),
    }
}

impl ObjectStore for Objects {
    fn location(&self, name: &str) -> String {
        Objects::location(self, name)
    }

    fn list(&self) -> Pending<'_, BTreeMap<String, String>> {
        Box::pin(async move { Objects::list(self).await.map_err(ObjectError::from) })
    }

    fn get<'a>(&'a self, name: &'a str) -> Pending<'a, Option<Object>> {
        Box::pin(async move { Objects::get(self, name).await.map_err(ObjectError::from) })
    }

    fn put<'a>(
        &'a self,
        name: &'a str,
        body: Bytes,
        condition: Condition<'a>,
    ) -> Pending<'a, Written> {
        let put = Objects::put(self, name, body, condition);
        Box::pin(async move { put.await.map_err(ObjectError::from) })
    }

    fn delete<'a>(&'a self, name: &'a str, etag: &'a str) -> Pending<'a, Written> {
        Box::pin(async move {
            Objects::delete(self, name, etag)
                .await
                .map_err(ObjectError::from)
        })
    }
}
