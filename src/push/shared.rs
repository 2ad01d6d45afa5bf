//! Pushes on S3, shared by every replica (`[push] store = { s3 = { bucket, prefix } }`): the
//! object `{prefix}{node_type}.json` holds the body exactly as it was PUT.
//!
//! - **Writes are conditional.** A replica writes with `If-Match` on the ETag it holds (or
//!   `If-None-Match: *` when it holds none), so it never overwrites a push it has not seen. When
//!   the condition fails, a plain PUT reads the object's new ETag and tries again (the operator
//!   asked to replace it, knowingly now); a PUT with the client's own `If-Match` answers 409.
//! - **Every replica refreshes.** A [`Refresher`] lists the prefix every
//!   `push.refresh_interval` (one ListObjectsV2; a GetObject only for an ETag this replica has
//!   not handled) and hands what changed to the synthesis loop, which republishes.
//! - **Fail static.** With S3 unreachable nothing held is dropped; a PUT or DELETE is refused
//!   (503) since it could not be persisted. Until the first listing succeeds nothing is held,
//!   and the daemon publishes nothing and is not ready.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::objects::{Condition, Object, ObjectStore, Written};
use super::store::{StoreError, Stored};
use super::{check_node_type, parse, PushCommand};

/// Conditional writes tried before a PUT or DELETE racing other replicas gives up (409).
const WRITE_ATTEMPTS: usize = 3;

/// The shared pushes, as this replica holds them.
#[derive(Debug)]
pub struct S3Store {
    objects: Arc<dyn ObjectStore>,
    entries: BTreeMap<String, Entry>,
    /// When this replica last wrote each name: a listing begun before that is older than what
    /// it holds, and must not undo the write.
    written: BTreeMap<String, Instant>,
    /// The ETag of each object this replica has handled (applied, written, or refused as
    /// invalid): the refresher fetches only the others.
    handled: Arc<Mutex<BTreeMap<String, String>>>,
    loaded: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    stored: Stored,
    etag: String,
}

/// Why a shared write did not happen.
#[derive(Debug)]
pub enum WriteRefused {
    /// The object changed since the version the client named, or kept changing.
    Changed,
    /// S3 could not be reached or refused the request.
    Unavailable(StoreError),
}

/// One listing of the prefix: the names present and the objects fetched.
#[derive(Debug)]
pub struct Refresh {
    listed_at: Instant,
    names: BTreeSet<String>,
    fetched: Vec<(String, Object)>,
}

impl S3Store {
    pub fn new(objects: Arc<dyn ObjectStore>) -> S3Store {
        S3Store {
            objects,
            entries: BTreeMap::new(),
            written: BTreeMap::new(),
            handled: Arc::default(),
            loaded: false,
        }
    }

    /// Whether a listing has succeeded (before it, nothing is known).
    pub fn loaded(&self) -> bool {
        self.loaded
    }

    pub fn get(&self, node_type: &str) -> Option<&Stored> {
        self.entries.get(node_type).map(|e| &e.stored)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Stored)> {
        self.entries.iter().map(|(k, e)| (k.as_str(), &e.stored))
    }

    /// Where the pushes are, for logs.
    pub fn location(&self) -> String {
        self.objects.location("{node_type}")
    }

    /// The task that lists the store every `interval` and sends what changed.
    pub fn refresher(&self, interval: Duration) -> Refresher {
        Refresher {
            objects: self.objects.clone(),
            handled: self.handled.clone(),
            interval,
        }
    }

    /// Writes `stored` as `node_type`'s push. `client_match`: the client's `If-Match`, already
    /// checked against what is held; a concurrent change then answers [`WriteRefused::Changed`].
    pub async fn put(
        &mut self,
        node_type: &str,
        stored: Stored,
        client_match: bool,
    ) -> Result<(), WriteRefused> {
        let mut etag = self.entries.get(node_type).map(|e| e.etag.clone());
        for _ in 0..WRITE_ATTEMPTS {
            let condition = etag
                .as_deref()
                .map_or(Condition::Absent, Condition::Matches);
            match self
                .objects
                .put(node_type, stored.body.clone(), condition)
                .await
            {
                Ok(Written::Done(new)) => {
                    self.wrote(node_type, Some(Entry { stored, etag: new }));
                    return Ok(());
                }
                Ok(Written::Conflict) if client_match => return Err(WriteRefused::Changed),
                Ok(Written::Conflict) => etag = self.current_etag(node_type).await?,
                Err(e) => return Err(WriteRefused::Unavailable(StoreError::Shared(e))),
            }
        }
        Err(WriteRefused::Changed)
    }

    /// Deletes `node_type`'s push; false when this replica holds none.
    pub async fn delete(&mut self, node_type: &str) -> Result<bool, WriteRefused> {
        let Some(mut etag) = self.entries.get(node_type).map(|e| e.etag.clone()) else {
            return Ok(false);
        };
        for _ in 0..WRITE_ATTEMPTS {
            match self.objects.delete(node_type, &etag).await {
                Ok(Written::Done(_)) => {
                    self.wrote(node_type, None);
                    return Ok(true);
                }
                Ok(Written::Conflict) => match self.current_etag(node_type).await? {
                    Some(current) => etag = current,
                    // Another replica deleted it meanwhile: gone either way.
                    None => {
                        self.wrote(node_type, None);
                        return Ok(true);
                    }
                },
                Err(e) => return Err(WriteRefused::Unavailable(StoreError::Shared(e))),
            }
        }
        Err(WriteRefused::Changed)
    }

    async fn current_etag(&self, node_type: &str) -> Result<Option<String>, WriteRefused> {
        match self.objects.get(node_type).await {
            Ok(object) => Ok(object.map(|o| o.etag)),
            Err(e) => Err(WriteRefused::Unavailable(StoreError::Shared(e))),
        }
    }

    fn wrote(&mut self, node_type: &str, entry: Option<Entry>) {
        self.written.insert(node_type.to_owned(), Instant::now());
        let mut handled = self.handled.lock().unwrap_or_else(|p| p.into_inner());
        match entry {
            Some(entry) => {
                handled.insert(node_type.to_owned(), entry.etag.clone());
                self.entries.insert(node_type.to_owned(), entry);
            }
            None => {
                handled.remove(node_type);
                self.entries.remove(node_type);
            }
        }
    }

    /// Takes in a listing: returns each node type whose push changed (`None`: deleted). An
    /// object that is not a valid push is logged, naming it, and the push held stays.
    pub fn apply(&mut self, refresh: Refresh) -> Vec<(String, Option<Stored>)> {
        self.loaded = true;
        let newer_here = |written: &BTreeMap<String, Instant>, name: &str| {
            written.get(name).is_some_and(|at| *at > refresh.listed_at)
        };
        let mut changes = Vec::new();
        let mut handled = self.handled.lock().unwrap_or_else(|p| p.into_inner());
        for (name, object) in refresh.fetched {
            if newer_here(&self.written, &name)
                || self
                    .entries
                    .get(&name)
                    .is_some_and(|e| e.etag == object.etag)
            {
                continue;
            }
            handled.insert(name.clone(), object.etag.clone());
            let parsed = check_node_type(&name).and_then(|()| {
                parse(&object.body).map_err(|e| format!("not a valid push (fix or delete it): {e}"))
            });
            match parsed {
                Ok(resources) => {
                    let stored = Stored {
                        body: object.body,
                        resources: Arc::new(resources),
                    };
                    changes.push((name.clone(), Some(stored.clone())));
                    let etag = object.etag;
                    self.entries.insert(name, Entry { stored, etag });
                }
                Err(error) => {
                    let location = self.objects.location(&name);
                    tracing::error!(%location, %error, "shared push refused; keeping what is held");
                }
            }
        }
        let gone: Vec<String> = (self.entries.keys())
            .filter(|name| !refresh.names.contains(*name) && !newer_here(&self.written, name))
            .cloned()
            .collect();
        for name in gone {
            self.entries.remove(&name);
            changes.push((name, None));
        }
        handled.retain(|name, _| refresh.names.contains(name) || newer_here(&self.written, name));
        changes
    }
}

/// Lists the shared store and sends the synthesis loop what changed.
#[derive(Debug)]
pub struct Refresher {
    objects: Arc<dyn ObjectStore>,
    handled: Arc<Mutex<BTreeMap<String, String>>>,
    interval: Duration,
}

impl Refresher {
    /// Runs until `stop`. A failed listing is logged once (and its recovery), and retried at
    /// the next interval; what is held stays.
    pub async fn run(self, commands: mpsc::Sender<PushCommand>, stop: CancellationToken) {
        let (mut first, mut failing) = (true, false);
        loop {
            // A listing against an unreachable S3 can take its timeouts: never hold up a stop.
            let listed = tokio::select! {
                listed = self.list() => listed,
                _ = stop.cancelled() => return,
            };
            match listed {
                Ok(refresh) => {
                    if failing {
                        tracing::info!(store = %self.objects.location("*"), "shared push store reachable again");
                        failing = false;
                    }
                    if first || refresh.changes_anything(&self.handled) {
                        first = false;
                        if commands.send(PushCommand::Refresh(refresh)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "cannot list the shared push store; serving the pushes held");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.cancelled() => return,
            }
        }
    }

    async fn list(&self) -> Result<Refresh, StoreError> {
        let listed_at = Instant::now();
        let listed = self.objects.list().await.map_err(StoreError::Shared)?;
        let wanted: Vec<String> = {
            let handled = self.handled.lock().unwrap_or_else(|p| p.into_inner());
            (listed.iter())
                .filter(|(name, etag)| handled.get(*name) != Some(etag))
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut fetched = Vec::new();
        for name in wanted {
            // Deleted since the listing: the next one says so.
            if let Some(object) = self.objects.get(&name).await.map_err(StoreError::Shared)? {
                fetched.push((name, object));
            }
        }
        Ok(Refresh {
            listed_at,
            names: listed.into_keys().collect(),
            fetched,
        })
    }
}

impl Refresh {
    /// Whether this listing holds anything the store has not handled: a fetched object, or a
    /// handled name that is gone.
    fn changes_anything(&self, handled: &Mutex<BTreeMap<String, String>>) -> bool {
        let handled = handled.lock().unwrap_or_else(|p| p.into_inner());
        !self.fetched.is_empty() || handled.keys().any(|name| !self.names.contains(name))
    }
}
