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
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;

use bytes::Buf;
use prost::encoding::{decode_varint, encode_varint};
use prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

const ANY: &str = "google.protobuf.Any";

/// The messages a walk may descend into, as dense ids: every message with a map or an `Any`
/// at some depth, and the entries of their maps. Looked up once here, so a walk reads a table
/// instead of the descriptor pool at every field.
struct Canon {
    shapes: Vec<Shape>,
    /// Ids by full message name (what an `Any`'s type URL names).
    ids: HashMap<String, usize>,
}

/// What a walk needs of one message.
struct Shape {
    any: bool,
    /// By tag (sorted): the length-delimited fields worth descending into.
    fields: Vec<(u32, Field)>,
}

#[derive(Clone, Copy)]
enum Field {
    /// A map field, by its entry message's id.
    Map(usize),
    /// A message field with a map or an `Any` below it.
    Nested(usize),
}

impl Shape {
    fn field(&self, tag: u32) -> Option<Field> {
        let found = self.fields.binary_search_by_key(&tag, |(t, _)| *t);
        found.ok().map(|i| self.fields[i].1)
    }
}

fn canon() -> &'static Canon {
    static CANON: OnceLock<Canon> = OnceLock::new();
    CANON.get_or_init(|| Canon::new(crate::descriptors::pool()))
}

impl Canon {
    fn new(pool: &DescriptorPool) -> Canon {
        let unordered = unordered_messages(pool);
        let entries = (pool.all_messages())
            .filter(|m| unordered.contains(m.full_name()))
            .flat_map(|m| m.fields().filter(|f| f.is_map()).collect::<Vec<_>>())
            .filter_map(|f| match f.kind() {
                Kind::Message(entry) => Some(entry),
                _ => None,
            });
        let walked: Vec<MessageDescriptor> = (pool.all_messages())
            .filter(|m| unordered.contains(m.full_name()))
            .chain(entries)
            .collect();
        let mut ids = HashMap::new();
        for m in &walked {
            let next = ids.len();
            ids.entry(m.full_name().to_owned()).or_insert(next);
        }
        let mut shapes: Vec<Option<Shape>> = (0..ids.len()).map(|_| None).collect();
        for m in &walked {
            shapes[ids[m.full_name()]].get_or_insert_with(|| shape(m, &unordered, &ids));
        }
        let shapes = shapes.into_iter().map(Option::unwrap).collect();
        Canon { shapes, ids }
    }
}

fn shape(
    m: &MessageDescriptor,
    unordered: &HashSet<String>,
    ids: &HashMap<String, usize>,
) -> Shape {
    let mut fields: Vec<(u32, Field)> = (m.fields())
        .filter_map(|f| {
            let Kind::Message(inner) = f.kind() else {
                return None;
            };
            let id = *ids.get(inner.full_name())?;
            match f.is_map() {
                true => Some((f.number(), Field::Map(id))),
                false => (unordered.contains(inner.full_name()))
                    .then_some((f.number(), Field::Nested(id))),
            }
        })
        .collect();
    fields.sort_unstable_by_key(|(tag, _)| *tag);
    Shape {
        any: m.full_name() == ANY,
        fields,
    }
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
    match canon.ids.get(name) {
        // Most encodings already are canonical (no map with two entries out of order), and
        // checking costs a walk with no allocation; rewriting allocates at every level.
        Some(&id) => match canon.is_canonical(id, encoded) {
            true => Cow::Borrowed(encoded),
            false => (canon.rewrite(id, encoded)).map_or(Cow::Borrowed(encoded), Cow::Owned),
        },
        None => Cow::Borrowed(encoded),
    }
}

impl Canon {
    fn rewrite(&self, id: usize, mut buf: &[u8]) -> Option<Vec<u8>> {
        let shape = &self.shapes[id];
        if shape.any {
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
            match shape.field(tag) {
                Some(Field::Map(entry)) => {
                    let rewritten = self.rewrite(entry, payload)?;
                    maps.entry(tag).or_default().push(field(tag, &rewritten));
                }
                Some(Field::Nested(inner)) => {
                    out.extend_from_slice(&field(tag, &self.rewrite(inner, payload)?));
                }
                None => out.extend_from_slice(&start[..start.len() - buf.len()]),
            }
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
    fn is_canonical(&self, id: usize, mut buf: &[u8]) -> bool {
        let shape = &self.shapes[id];
        if shape.any {
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
            match shape.field(tag) {
                Some(Field::Map(entry)) => {
                    let in_order =
                        last_map.is_none_or(|(t, prev)| t < tag || (t == tag && prev <= whole));
                    if !in_order || !self.is_canonical(entry, payload) {
                        return false;
                    }
                    last_map = Some((tag, whole));
                }
                // A plain field after a map: the rewrite would move the map after it.
                _ if last_map.is_some() => return false,
                Some(Field::Nested(inner)) if !self.is_canonical(inner, payload) => return false,
                _ => {}
            }
        }
        true
    }

    fn any_is_canonical(&self, buf: &[u8]) -> bool {
        let Some((type_url, value)) = any_fields(buf, true) else {
            return false;
        };
        let Ok(url) = std::str::from_utf8(type_url) else {
            return false;
        };
        let name = url.rsplit('/').next().unwrap_or_default();
        match self.ids.get(name) {
            Some(&id) => self.is_canonical(id, value),
            None => true,
        }
    }

    /// An `Any`: its payload is canonicalized as the type its URL names.
    fn rewrite_any(&self, buf: &[u8]) -> Option<Vec<u8>> {
        let (type_url, value) = any_fields(buf, false)?;
        let url = std::str::from_utf8(type_url).ok()?;
        let value = canonical(url, value);
        // As prost writes it: an empty field (a `Router {}` payload) is left out.
        let mut out = Vec::new();
        for (tag, payload) in [(1, type_url), (2, &value[..])] {
            if !payload.is_empty() {
                out.extend_from_slice(&field(tag, payload));
            }
        }
        Some(out)
    }
}

/// An `Any`'s type URL and value (empty when absent). With `canonical_only`, `None` unless
/// they are as [`Canon::rewrite_any`] writes them: in tag order, once each, none empty.
fn any_fields(mut buf: &[u8], canonical_only: bool) -> Option<(&[u8], &[u8])> {
    let (mut type_url, mut value, mut last) = (&b""[..], &b""[..], 0);
    while buf.has_remaining() {
        let key = decode_varint(&mut buf).ok()?;
        if key & 7 != 2 {
            return None;
        }
        let payload = length_delimited(&mut buf)?;
        let tag = key >> 3;
        if canonical_only && (tag <= last || payload.is_empty()) {
            return None;
        }
        last = tag;
        match tag {
            1 => type_url = payload,
            2 => value = payload,
            _ => return None,
        }
    }
    Some((type_url, value))
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
            let id = canon.ids[url.rsplit('/').next().unwrap()];
            let rewritten = canon.rewrite(id, bytes).unwrap();
            let passes = canon.is_canonical(id, bytes);
            assert_eq!(passes, rewritten == *bytes, "{url}");
            passed += usize::from(passes);
        }
        assert!((1..samples.len()).contains(&passed), "{passed}");
    }

    /// A `Router {}` payload is empty, and prost leaves an empty field out: that is canonical
    /// as it is (no rewrite for every HTTP connection manager), and an explicit empty value
    /// is the same content with the same canonical bytes.
    #[test]
    fn an_any_with_an_empty_payload_is_canonical_as_prost_writes_it() {
        let url = Any::type_url();
        let router = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router";
        let written = Any {
            type_url: router.into(),
            value: Vec::new(),
        }
        .encode_to_vec();
        let canon = canon();
        assert!(canon.is_canonical(canon.ids[ANY], &written));
        assert!(matches!(canonical(&url, &written), Cow::Borrowed(_)));
        let explicit = [written.clone(), vec![0x12, 0x00]].concat();
        assert!(!canon.is_canonical(canon.ids[ANY], &explicit));
        assert_eq!(canonical(&url, &explicit), canonical(&url, &written));
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
