//! Content hashes: the one place versions are computed.
//!
//! SHA-256 rather than a std `Hasher`, because versions must be equal across processes,
//! replicas and releases, and std's hashers promise none of that.

use sha2::{Digest, Sha256};

/// Hash of one encoded resource of the given type, over its canonical form (map entries
/// sorted), so equal content hashes equally however prost ordered its maps.
pub fn resource_hash(type_url: &str, encoded: &[u8]) -> u64 {
    let mut hasher = Sha256::new();
    hasher.update(type_url.as_bytes());
    hasher.update([0]);
    hasher.update(super::canonical::canonical(type_url, encoded));
    first_u64(&hasher.finalize())
}

/// Version of a resource type: a hash over every (name, resource hash), in name order.
///
/// The caller iterates in name order (a `BTreeMap`), which makes the version independent of the
/// order resources were added in.
pub fn type_version<'a>(resources: impl Iterator<Item = (&'a str, u64)>) -> String {
    let mut hasher = Sha256::new();
    for (name, hash) in resources {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update(hash.to_be_bytes());
    }
    format_version(first_u64(&hasher.finalize()))
}

/// Formats a hash as the 16-hex-digit version string sent to Envoy.
pub fn format_version(hash: u64) -> String {
    format!("{hash:016x}")
}

/// Parses a version string back into a hash; `None` for versions we did not produce.
pub fn parse_version(version: &str) -> Option<u64> {
    if version.len() != 16 {
        return None;
    }
    u64::from_str_radix(version, 16).ok()
}

fn first_u64(digest: &[u8]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_version_depends_on_names_and_content() {
        let a = type_version([("a", 1), ("b", 2)].into_iter());
        assert_eq!(a, type_version([("a", 1), ("b", 2)].into_iter()));
        assert_ne!(a, type_version([("a", 1), ("b", 3)].into_iter()));
        assert_ne!(a, type_version([("a", 1), ("c", 2)].into_iter()));
        // Length-prefixed names: "ab"+"c" is not "a"+"bc".
        assert_ne!(
            type_version([("ab", 1), ("c", 1)].into_iter()),
            type_version([("a", 1), ("bc", 1)].into_iter())
        );
    }

    #[test]
    fn versions_round_trip_and_reject_foreign_strings() {
        assert_eq!(
            parse_version(&format_version(0xdead_beef)),
            Some(0xdead_beef)
        );
        assert_eq!(parse_version("v1"), None);
        assert_eq!(parse_version("zzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn resource_hash_includes_the_type() {
        assert_ne!(resource_hash("t1", b"x"), resource_hash("t2", b"x"));
    }
}
