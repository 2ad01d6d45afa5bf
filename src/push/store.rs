//! Pushed resources on disk: `<state_dir>/<node_type>.json`, holding the body exactly as it was
//! PUT (so GET returns it unchanged), reloaded and re-validated at start.
//!
//! Each write is atomic: the body goes to a temporary file in the same directory, which is
//! fsynced, renamed over the old file, and the directory is fsynced, so a crash leaves either
//! the old push or the new one, never half of one. Files are created mode 0600: a push may
//! carry TLS keys inline.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::{check_node_type, parse, PushedResources};
use crate::problem::Problems;

/// The persisted pushes, by node type.
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    entries: BTreeMap<String, Stored>,
}

/// One node type's push: the body as PUT, and what it parsed to.
#[derive(Debug, Clone)]
pub struct Stored {
    pub body: Bytes,
    pub resources: Arc<PushedResources>,
}

impl Stored {
    /// The push's version for `ETag` and `If-Match`: a hash of the body, so every replica
    /// holding the same push gives the same one.
    pub fn etag(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(&self.body);
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether an `If-Match` value (quotes optional; `*` for any) names this push.
    pub fn matches(&self, if_match: &str) -> bool {
        let wanted = if_match.trim().trim_matches('"');
        wanted == "*" || wanted == self.etag()
    }
}

/// Why the state directory could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("push state directory {dir}: {source}")]
    Dir {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("push state file {file}: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("push state file {file} is not a valid push (fix or remove it): {source}")]
    Corrupt {
        file: PathBuf,
        #[source]
        source: Problems,
    },
    #[error("push state file {file}: {message}")]
    BadName { file: PathBuf, message: String },
    #[error("cannot write push state file {file}: {source}")]
    Write {
        file: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The shared store on S3 could not be read or written.
    #[error("shared push store: {0}")]
    Shared(#[source] super::ObjectError),
}

impl DirStore {
    /// Opens `dir` (created if missing) and loads every `<node_type>.json` in it. A file that
    /// does not parse is an error naming it: starting without a push the operator made would
    /// serve Envoy something else silently. Dot files (interrupted writes) are ignored.
    pub fn open(dir: &Path) -> Result<DirStore, StoreError> {
        let dir_error = |source| StoreError::Dir {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_error)?;
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(dir_error)? {
            let path = entry.map_err(dir_error)?.path();
            let hidden = path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'));
            if !hidden && path.extension().is_some_and(|e| e == "json") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut entries = BTreeMap::new();
        for file in files {
            let node_type = file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            if let Err(message) = check_node_type(&node_type) {
                return Err(StoreError::BadName { file, message });
            }
            let body = match std::fs::read(&file) {
                Ok(body) => Bytes::from(body),
                Err(source) => return Err(StoreError::Read { file, source }),
            };
            let resources = match parse(&body) {
                Ok(resources) => Arc::new(resources),
                Err(source) => return Err(StoreError::Corrupt { file, source }),
            };
            entries.insert(node_type, Stored { body, resources });
        }
        Ok(DirStore {
            dir: dir.to_owned(),
            entries,
        })
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One node type's push.
    pub fn get(&self, node_type: &str) -> Option<&Stored> {
        self.entries.get(node_type)
    }

    /// Every (node type, push), in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Stored)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Replaces a node type's push, on disk first (atomically), then here.
    pub fn put(&mut self, node_type: &str, stored: Stored) -> Result<(), StoreError> {
        let file = self.file(node_type);
        let write_error = |source| StoreError::Write {
            file: file.clone(),
            source,
        };
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(write_error)?;
        tmp.write_all(&stored.body).map_err(write_error)?;
        tmp.as_file().sync_all().map_err(write_error)?;
        tmp.persist(&file).map_err(|e| write_error(e.error))?;
        sync_dir(&self.dir).map_err(write_error)?;
        self.entries.insert(node_type.to_owned(), stored);
        Ok(())
    }

    /// Removes a node type's push; false when there was none.
    pub fn delete(&mut self, node_type: &str) -> Result<bool, StoreError> {
        if !self.entries.contains_key(node_type) {
            return Ok(false);
        }
        let file = self.file(node_type);
        let write_error = |source| StoreError::Write {
            file: file.clone(),
            source,
        };
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(write_error(e)),
            _ => {}
        }
        sync_dir(&self.dir).map_err(write_error)?;
        self.entries.remove(node_type);
        Ok(true)
    }

    fn file(&self, node_type: &str) -> PathBuf {
        debug_assert_eq!(check_node_type(node_type), Ok(()));
        self.dir.join(format!("{node_type}.json"))
    }
}

/// Makes a rename or removal in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}
