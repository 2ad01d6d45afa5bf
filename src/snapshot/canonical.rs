//! Canonical bytes of a resource, for hashing.
//!
//! prost writes protobuf map fields in `HashMap` order, which is random per process (and per
//! map), so two encodings of the same resource can differ whenever a map holds more than one
//! entry: typed filter configs, metadata `Struct`s, and so on. Hashing the encoding directly
//! would give the same content different versions on two replicas and re-push it to every
//! Envoy after a restart. Here the encoding is rewritten with map entries sorted, recursing
//! into nested messages and into `Any` payloads (by their type URL), guided by Envoy's own
//! descriptors ([`crate::descriptors`], the descriptor set envoy-types is built from).
//! Messages that cannot contain a map anywhere below them are copied as they are.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use bytes::Buf;
use prost::encoding::{decode_varint, encode_varint};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

const ANY: &str = "google.protobuf.Any";

struct Canon {
    pool: &'static DescriptorPool,
    /// Messages that contain, at some depth, a map field or an `Any`.
    unordered: HashSet<String>,
}

fn canon() -> &'static Canon {
    static CANON: OnceLock<Canon> = OnceLock::new();
    CANON.get_or_init(|| {
        let pool = crate::descriptors::pool();
        let unordered = unordered_messages(pool);
        Canon { pool, unordered }
    })
}

/// The fixpoint: messages with a map or `Any` field, then every message reaching one of those.
fn unordered_messages(pool: &DescriptorPool) -> HashSet<String> {
    let mut set: HashSet<String> = pool
        .all_messages()
        .filter(|m| m.full_name() == ANY || m.fields().any(|f| f.is_map()))
        .map(|m| m.full_name().to_owned())
        .collect();
    loop {
        let before = set.len();
        for m in pool.all_messages() {
            let reaches = m.fields().any(|f| match f.kind() {
                Kind::Message(inner) => set.contains(inner.full_name()),
                _ => false,
            });
            if reaches {
                set.insert(m.full_name().to_owned());
            }
        }
        if set.len() == before {
            return set;
        }
    }
}

/// The canonical form of `encoded`, a message of the type `type_url` names. Unknown types and
/// malformed input hash as they are.
pub fn canonical<'a>(type_url: &str, encoded: &'a [u8]) -> Cow<'a, [u8]> {
    let canon = canon();
    let name = type_url.rsplit('/').next().unwrap_or_default();
    match canon.pool.get_message_by_name(name) {
        // Most encodings already are canonical (no map with two entries out of order), and
        // checking costs a walk with no allocation; rewriting allocates at every level.
        Some(desc) if canon.unordered.contains(desc.full_name()) => {
            match canon.is_canonical(&desc, encoded) {
                true => Cow::Borrowed(encoded),
                false => canon
                    .rewrite(&desc, encoded)
                    .map_or(Cow::Borrowed(encoded), Cow::Owned),
            }
        }
        _ => Cow::Borrowed(encoded),
    }
}

impl Canon {
    fn rewrite(&self, desc: &MessageDescriptor, mut buf: &[u8]) -> Option<Vec<u8>> {
        if desc.full_name() == ANY {
            return self.rewrite_any(buf);
        }
        let mut out = Vec::with_capacity(buf.len());
        let mut maps: BTreeMap<u32, Vec<Vec<u8>>> = BTreeMap::new();
        while buf.has_remaining() {
            let start = buf;
            let key = decode_varint(&mut buf).ok()?;
            let (tag, wire_type) = (u32::try_from(key >> 3).ok()?, key & 7);
            if wire_type != 2 {
                skip(&mut buf, wire_type)?;
                out.extend_from_slice(&start[..start.len() - buf.len()]);
                continue;
            }
            let payload = length_delimited(&mut buf)?;
            let inner = match desc.get_field(tag).map(|f| (f.is_map(), f.kind())) {
                Some((is_map, Kind::Message(m)))
                    if is_map || self.unordered.contains(m.full_name()) =>
                {
                    let rewritten = self.rewrite(&m, payload)?;
                    if is_map {
                        maps.entry(tag).or_default().push(field(tag, &rewritten));
                        continue;
                    }
                    rewritten
                }
                _ => {
                    out.extend_from_slice(&start[..start.len() - buf.len()]);
                    continue;
                }
            };
            out.extend_from_slice(&field(tag, &inner));
        }
        for (_, mut entries) in maps {
            entries.sort_unstable();
            entries.into_iter().for_each(|e| out.extend_from_slice(&e));
        }
        Some(out)
    }

    /// Whether [`Canon::rewrite`] would return `buf` unchanged: map fields only after every
    /// other field, in tag order, each field's entries in byte order, and every nested message
    /// it would rewrite canonical itself. `false` for anything it cannot walk.
    fn is_canonical(&self, desc: &MessageDescriptor, mut buf: &[u8]) -> bool {
        if desc.full_name() == ANY {
            return self.any_is_canonical(buf);
        }
        // The last map entry seen: (tag, bytes of the whole field).
        let mut last_map: Option<(u32, &[u8])> = None;
        while buf.has_remaining() {
            let start = buf;
            let Ok(key) = decode_varint(&mut buf) else {
                return false;
            };
            let Ok(tag) = u32::try_from(key >> 3) else {
                return false;
            };
            let wire_type = key & 7;
            if wire_type != 2 {
                if last_map.is_some() || skip(&mut buf, wire_type).is_none() {
                    return false;
                }
                continue;
            }
            let Some(payload) = length_delimited(&mut buf) else {
                return false;
            };
            let whole = &start[..start.len() - buf.len()];
            match desc.get_field(tag).map(|f| (f.is_map(), f.kind())) {
                Some((true, Kind::Message(m))) => {
                    let in_order =
                        last_map.is_none_or(|(t, prev)| t < tag || (t == tag && prev <= whole));
                    if !in_order || !self.is_canonical(&m, payload) {
                        return false;
                    }
                    last_map = Some((tag, whole));
                }
                // A plain field after a map: the rewrite would move the map after it.
                _ if last_map.is_some() => return false,
                Some((false, Kind::Message(m)))
                    if self.unordered.contains(m.full_name())
                        && !self.is_canonical(&m, payload) =>
                {
                    return false
                }
                _ => {}
            }
        }
        true
    }

    fn any_is_canonical(&self, mut buf: &[u8]) -> bool {
        let (mut type_url, mut value, mut fields) = (&b""[..], &b""[..], Vec::new());
        while buf.has_remaining() {
            let Ok(key) = decode_varint(&mut buf) else {
                return false;
            };
            let Some(payload) = length_delimited(&mut buf) else {
                return false;
            };
            if key & 7 != 2 {
                return false;
            }
            fields.push(key >> 3);
            match key >> 3 {
                1 => type_url = payload,
                2 => value = payload,
                _ => return false,
            }
        }
        // The rewrite writes the type URL, then the value, both always.
        if fields != [1, 2] {
            return false;
        }
        let Ok(url) = std::str::from_utf8(type_url) else {
            return false;
        };
        let name = url.rsplit('/').next().unwrap_or_default();
        match self.pool.get_message_by_name(name) {
            Some(desc) if self.unordered.contains(desc.full_name()) => {
                self.is_canonical(&desc, value)
            }
            _ => true,
        }
    }

    /// An `Any`: its payload is canonicalized as the type its URL names.
    fn rewrite_any(&self, mut buf: &[u8]) -> Option<Vec<u8>> {
        let (mut type_url, mut value) = (&b""[..], &b""[..]);
        while buf.has_remaining() {
            let key = decode_varint(&mut buf).ok()?;
            if key & 7 != 2 {
                return None;
            }
            let payload = length_delimited(&mut buf)?;
            match key >> 3 {
                1 => type_url = payload,
                2 => value = payload,
                _ => return None,
            }
        }
        let url = std::str::from_utf8(type_url).ok()?;
        let value = canonical(url, value);
        let mut out = field(1, type_url);
        out.extend_from_slice(&field(2, &value));
        Some(out)
    }
}

fn field(tag: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 6);
    encode_varint(u64::from(tag) << 3 | 2, &mut out);
    encode_varint(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

/// The payload of a length-delimited field whose key was just read; `buf` moves past it.
fn length_delimited<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
    let payload = buf.get(..len)?;
    buf.advance(len);
    Some(payload)
}

fn skip(buf: &mut &[u8], wire_type: u64) -> Option<()> {
    let fixed = match wire_type {
        0 => return decode_varint(buf).ok().map(drop),
        1 => 8,
        5 => 4,
        _ => return None,
    };
    (buf.len() >= fixed).then(|| buf.advance(fixed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{value, Any, Struct, Value};
    use prost::{Message, Name};

    fn one_field_struct(key: &str, n: f64) -> Vec<u8> {
        Struct {
            fields: [(
                key.to_string(),
                Value {
                    kind: Some(value::Kind::NumberValue(n)),
                },
            )]
            .into(),
        }
        .encode_to_vec()
    }

    /// A cluster whose metadata map holds one `Any` wrapping `struct_bytes`.
    fn cluster_with_metadata(struct_bytes: Vec<u8>) -> Vec<u8> {
        let any = Any {
            type_url: Struct::type_url(),
            value: struct_bytes,
        };
        Cluster {
            name: "c".into(),
            metadata: Some(Metadata {
                typed_filter_metadata: [("k".to_string(), any)].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec()
    }

    #[test]
    fn map_entry_order_does_not_change_the_canonical_form() {
        // Concatenated single-entry encodings are a valid two-entry map, in either order: the
        // two orders prost's HashMap iteration can produce.
        let (a, b) = (one_field_struct("a", 1.0), one_field_struct("b", 2.0));
        let ab = [a.clone(), b.clone()].concat();
        let ba = [b, a].concat();
        assert_ne!(ab, ba);
        let url = Struct::type_url();
        assert_eq!(canonical(&url, &ab), canonical(&url, &ba));
        assert_eq!(
            Struct::decode(&*canonical(&url, &ab)).unwrap(),
            Struct::decode(&*ab).unwrap()
        );
    }

    #[test]
    fn maps_inside_any_payloads_are_canonical_too() {
        let (a, b) = (one_field_struct("a", 1.0), one_field_struct("b", 2.0));
        let first = cluster_with_metadata([a.clone(), b.clone()].concat());
        let second = cluster_with_metadata([b, a].concat());
        assert_ne!(first, second);
        let url = Cluster::type_url();
        assert_eq!(canonical(&url, &first), canonical(&url, &second));
        let different = cluster_with_metadata(one_field_struct("a", 3.0));
        assert_ne!(canonical(&url, &first), canonical(&url, &different));
    }

    /// The shortcut never skips a rewrite that would change something: for every resource
    /// the check passes, rewriting gives the same bytes; and out-of-order maps fail it.
    #[test]
    fn what_passes_the_check_is_what_the_rewrite_leaves_unchanged() {
        let canon = canon();
        let (a, b) = (one_field_struct("a", 1.0), one_field_struct("b", 2.0));
        let samples = [
            (Struct::type_url(), [a.clone(), b.clone()].concat()),
            (Struct::type_url(), [b.clone(), a.clone()].concat()),
            (Struct::type_url(), a.clone()),
            (
                Cluster::type_url(),
                cluster_with_metadata([a.clone(), b.clone()].concat()),
            ),
            (Cluster::type_url(), cluster_with_metadata([b, a].concat())),
            (
                Cluster::type_url(),
                crate::snapshot::tests::orders_egress()
                    .of(crate::snapshot::ResourceType::Cluster)
                    .get("orders")
                    .unwrap()
                    .decode::<Cluster>()
                    .unwrap()
                    .encode_to_vec(),
            ),
        ];
        let mut passed = 0;
        for (url, bytes) in &samples {
            let desc = canon
                .pool
                .get_message_by_name(url.rsplit('/').next().unwrap())
                .unwrap();
            let rewritten = canon.rewrite(&desc, bytes).unwrap();
            let passes = canon.is_canonical(&desc, bytes);
            assert_eq!(passes, rewritten == *bytes, "{url}");
            passed += usize::from(passes);
        }
        assert!((1..samples.len()).contains(&passed), "{passed}");
    }

    #[test]
    fn messages_without_maps_and_unknown_types_are_left_alone() {
        let bytes = b"\x0a\x01c";
        assert!(matches!(
            canonical("type.googleapis.com/no.such.Type", bytes),
            Cow::Borrowed(_)
        ));
        let cla = envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment {
            cluster_name: "x".into(),
            ..Default::default()
        };
        let encoded = cla.encode_to_vec();
        assert_eq!(
            &*canonical(
                &envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment::type_url(),
                &encoded
            ),
            &encoded[..]
        );
    }
}
