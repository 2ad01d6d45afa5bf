//! What the agent writes for Envoy, the way Envoy's file-based SDS reads it without ever seeing
//! half a renewal:
//!
//! ```text
//! DIR/..<stamp>/{cert.pem,key.pem,bundle.pem}   one directory per renewal
//! DIR/..data -> ..<stamp>                        swapped by one rename
//! DIR/cert.pem -> ..data/cert.pem                stable names Envoy is given
//! DIR/key.pem, DIR/bundle.pem                    likewise
//! DIR/tls_certificate.yaml                       SDS: secret "workload" (chain and key)
//! DIR/validation_context.yaml                    SDS: secret "trust_bundle" (the roots)
//! ```
//!
//! Both SDS files name `DIR` as their `watched_directory`: the rename of `..data` is a move into
//! it, on which Envoy reads the certificate and key together. DIR must be the same path in the
//! agent's and Envoy's containers (mount the shared volume at one path in both).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use x509_parser::prelude::{FromDer, X509Certificate};

pub const CERT: &str = "cert.pem";
pub const KEY: &str = "key.pem";
pub const BUNDLE: &str = "bundle.pem";
pub const SDS_CERTIFICATE: &str = "tls_certificate.yaml";
pub const SDS_BUNDLE: &str = "validation_context.yaml";
/// The SDS secret names, as an Envoy configuration refers to them.
pub const CERTIFICATE_SECRET: &str = "workload";
pub const BUNDLE_SECRET: &str = "trust_bundle";

const DATA: &str = "..data";

/// One renewal's files.
pub struct Written<'a> {
    pub chain_pem: &'a str,
    pub key_pem: &'a str,
    pub bundle_pem: &'a str,
}

/// Writes a renewal: a new directory, then one rename makes it current; the older ones go.
pub fn write(dir: &Path, written: &Written, key_mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stamp = format!(
        "..{}",
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh)?;
    std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o755))?;
    write_file(&fresh.join(CERT), written.chain_pem, 0o644)?;
    write_file(&fresh.join(KEY), written.key_pem, key_mode)?;
    write_file(&fresh.join(BUNDLE), written.bundle_pem, 0o644)?;
    let link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&stamp, &link)?;
    std::fs::rename(&link, dir.join(DATA))?;
    for name in [CERT, KEY, BUNDLE] {
        let stable = dir.join(name);
        if std::fs::symlink_metadata(&stable).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &stable)?;
        }
    }
    remove_older(dir, &stamp)
}

fn write_file(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn remove_older(dir: &Path, current: &str) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        let renewal = name.starts_with("..") && name != DATA && name != "..data_tmp";
        if renewal && name != current {
            std::fs::remove_dir_all(dir.join(name.as_ref()))?;
        }
    }
    Ok(())
}

/// Writes the two SDS files (once: their content names only stable paths).
pub fn write_sds_files(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    let at = |name: &str| dir.join(name).display().to_string();
    let certificate = format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: {CERTIFICATE_SECRET}\n  tls_certificate:\n    certificate_chain: {{ filename: {} }}\n    private_key: {{ filename: {} }}\n    watched_directory: {{ path: {} }}\n",
        at(CERT),
        at(KEY),
        dir.display()
    );
    let bundle = format!(
        "resources:\n- \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n  name: {BUNDLE_SECRET}\n  validation_context:\n    trusted_ca: {{ filename: {} }}\n    watched_directory: {{ path: {} }}\n",
        at(BUNDLE),
        dir.display()
    );
    replace_if_changed(&dir.join(SDS_CERTIFICATE), &certificate)?;
    replace_if_changed(&dir.join(SDS_BUNDLE), &bundle)
}

/// Writes `text` to `path` by rename, unless it already holds it.
fn replace_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(());
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    let _ = std::fs::remove_file(&tmp);
    write_file(&tmp, text, 0o644)?;
    std::fs::rename(&tmp, path)
}

/// The certificate's (not before, not after) in `dir`.
pub fn validity(dir: &Path) -> Result<(SystemTime, SystemTime), String> {
    let path = dir.join(CERT);
    let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let first = crate::identity::tls::certificates(&pem, "certificate")
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let (_, cert) =
        X509Certificate::from_der(&first[0]).map_err(|e| format!("{}: {e}", path.display()))?;
    let at = |t: i64| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
    let validity = cert.validity();
    Ok((
        at(validity.not_before.timestamp()),
        at(validity.not_after.timestamp()),
    ))
}

/// The expiry of the certificate `dir` holds, if any (an agent restarted keeps counting on it).
pub fn current_expiry(dir: &Path) -> Option<SystemTime> {
    validity(dir).ok().map(|(_, not_after)| not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written<'a>(chain: &'a str) -> Written<'a> {
        Written {
            chain_pem: chain,
            key_pem: "KEY",
            bundle_pem: "BUNDLE",
        }
    }

    #[test]
    fn a_renewal_swaps_the_data_link_and_leaves_one_directory() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &written("ONE"), 0o600).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        write(dir.path(), &written("TWO"), 0o600).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join(CERT)).unwrap(),
            "TWO"
        );
        let renewals: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA)
            .collect();
        assert_eq!(renewals.len(), 1, "{renewals:?}");
        let key = std::fs::metadata(dir.path().join(KEY)).unwrap();
        assert_eq!(key.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn the_sds_files_name_the_stable_paths_and_the_watched_directory() {
        let dir = tempfile::tempdir().unwrap();
        write_sds_files(dir.path()).unwrap();
        let real = std::fs::canonicalize(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SDS_CERTIFICATE)).unwrap();
        assert!(
            text.contains(&format!("filename: {}", real.join(KEY).display())),
            "{text}"
        );
        assert!(text.contains(&format!(
            "watched_directory: {{ path: {} }}",
            real.display()
        )));
        let bundle = std::fs::read_to_string(dir.path().join(SDS_BUNDLE)).unwrap();
        assert!(bundle.contains("name: trust_bundle"), "{bundle}");
    }
}
