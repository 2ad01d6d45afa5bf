//! The S3 requests of the shared push store (`[push] store = { s3 = ... }`): one object per
//! name under a prefix, read, listed and written with S3's conditional writes. They live here,
//! beside every other AWS request, so they go through the same [`Aws::call`] (backoff, every
//! attempt counted) and no SDK type leaves `discover`; what the objects mean is `push`'s.

use std::collections::BTreeMap;

use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use super::aws::Aws;
use super::{DiscoverError, RetryPolicy};

/// The objects `{prefix}{name}.json` of one bucket.
#[derive(Debug, Clone)]
pub struct Objects {
    aws: Aws,
    s3: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
}

/// One object's body and ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub body: Bytes,
    pub etag: String,
}

/// What a write's condition is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition<'a> {
    /// Only if there is no such object yet (`If-None-Match: *`).
    Absent,
    /// Only if the object is still the one with this ETag (`If-Match`).
    Matches(&'a str),
}

/// How a conditional write ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    /// Written; the new object's ETag (empty after a delete).
    Done(String),
    /// The condition failed: another writer changed the object since it was read.
    Conflict,
}

/// Error codes S3 answers a failed condition with: 412 PreconditionFailed, or 409
/// ConditionalRequestConflict when two conditional writes race on one key.
const CONFLICT_CODES: &[&str] = &["PreconditionFailed", "ConditionalRequestConflict"];

impl Aws {
    /// The objects under `prefix` in `bucket`. Writes sit in a request's path (a PUT answers
    /// once it is stored), so they are retried less than discovery's reads: two attempts.
    pub fn objects(&self, bucket: &str, prefix: &str) -> Result<Objects, DiscoverError> {
        let s3 = self.s3.clone().ok_or_else(|| DiscoverError::Aws {
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
    pub async fn list(&self) -> Result<BTreeMap<String, String>, DiscoverError> {
        let target = format!("s3://{}/{}", self.bucket, self.prefix);
        let mut names = BTreeMap::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .aws
                .call("ListObjectsV2", &target, || {
                    self.s3
                        .list_objects_v2()
                        .bucket(&self.bucket)
                        .prefix(&self.prefix)
                        .set_continuation_token(token.clone())
                        .send()
                })
                .await?;
            for object in out.contents() {
                let name = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.prefix.as_str()))
                    .and_then(|k| k.strip_suffix(".json"))
                    .filter(|n| !n.contains('/'));
                if let Some(name) = name {
                    let etag = object.e_tag().unwrap_or_default().to_owned();
                    names.insert(name.to_owned(), etag);
                }
            }
            match out.next_continuation_token() {
                Some(next) if out.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(names),
            }
        }
    }

    /// The object `name`, or `None` when there is none.
    pub async fn get(&self, name: &str) -> Result<Option<Object>, DiscoverError> {
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
            Err(DiscoverError::Aws { code: Some(c), .. }) if c == "NoSuchKey" => return Ok(None),
            Err(e) => return Err(e),
        };
        let etag = out.e_tag().unwrap_or_default().to_owned();
        let body = out.body.collect().await.map_err(|e| DiscoverError::Aws {
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
    ) -> Result<Written, DiscoverError> {
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
    pub async fn delete(&self, name: &str, etag: &str) -> Result<Written, DiscoverError> {
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
            Err(DiscoverError::Aws { code: Some(c), .. }) if c == "NoSuchKey" => {
                Ok(Written::Conflict)
            }
            Err(e) => conflict_or(e),
        }
    }
}

fn conflict_or(e: DiscoverError) -> Result<Written, DiscoverError> {
    match &e {
        DiscoverError::Aws { code: Some(c), .. } if CONFLICT_CODES.contains(&c.as_str()) => {
            Ok(Written::Conflict)
        }
        _ => Err(e),
    }
}
