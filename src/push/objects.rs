//! What the shared store needs of an object store: the objects `{prefix}{name}.json`, listed,
//! read and written with conditions, so that replicas never overwrite what they have not seen.
//! The daemon hands it S3's (`aws::Objects`); `push` knows nothing of AWS.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

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

/// Why the object store could not do a request (it names the request and the object).
pub type ObjectError = Box<dyn std::error::Error + Send + Sync>;

/// A request to the object store, in flight.
pub type Pending<'a, T> = Pin<Box<dyn Future<Output = Result<T, ObjectError>> + Send + 'a>>;

/// The objects of one store, by name.
pub trait ObjectStore: std::fmt::Debug + Send + Sync {
    /// Where the object `name` is (`s3://bucket/prefix{name}.json`), for errors and logs.
    fn location(&self, name: &str) -> String;
    /// Every object's name with its ETag.
    fn list(&self) -> Pending<'_, BTreeMap<String, String>>;
    /// The object `name`, or `None` when there is none.
    fn get<'a>(&'a self, name: &'a str) -> Pending<'a, Option<Object>>;
    /// Writes `name` if `condition` still holds.
    fn put<'a>(
        &'a self,
        name: &'a str,
        body: Bytes,
        condition: Condition<'a>,
    ) -> Pending<'a, Written>;
    /// Deletes `name` if it is still the object with `etag` (one already gone is a conflict).
    fn delete<'a>(&'a self, name: &'a str, etag: &'a str) -> Pending<'a, Written>;
}
