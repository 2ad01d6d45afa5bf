//! TOML text → a JSON value (what the proto3 JSON mapping reads), remembering where each value
//! was written so an error at a field path can name its line.

use std::collections::HashMap;

use serde_json::{Map, Number, Value};
use toml_edit::{ImDocument, Item};

use crate::envoy_json::FieldPath;

/// A parsed template file as JSON, with the byte offset of every field path.
pub struct Located {
    pub json: Value,
    /// Field path (as [`FieldPath`] prints it) → byte offset of the key or value in the file.
    offsets: HashMap<String, usize>,
    /// Byte offset of the start of each line.
    line_starts: Vec<usize>,
}

/// A TOML syntax error: its message and line.
pub struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

impl Located {
    pub fn parse(text: &str) -> Result<Located, SyntaxError> {
        let line_starts: Vec<usize> = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        let doc = ImDocument::parse(text).map_err(|e| SyntaxError {
            line: e.span().map(|s| line_of(&line_starts, s.start)),
            message: e.message().trim().to_owned(),
        })?;
        let mut offsets = HashMap::new();
        let json = item(doc.as_item(), &FieldPath::default(), 0, &mut offsets);
        Ok(Located {
            json,
            offsets,
            line_starts,
        })
    }

    /// The 1-based line where `path`, or the nearest enclosing field that was written, is.
    pub fn line(&self, path: &FieldPath) -> Option<usize> {
        let mut p = path.as_str();
        loop {
            if let Some(&offset) = self.offsets.get(p) {
                return Some(line_of(&self.line_starts, offset));
            }
            // Strip the last `.key` or `[i]`.
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

fn line_of(line_starts: &[usize], offset: usize) -> usize {
    line_starts.partition_point(|&start| start <= offset)
}

fn item(item: &Item, path: &FieldPath, at: usize, offsets: &mut HashMap<String, usize>) -> Value {
    let at = item.span().map_or(at, |s| s.start);
    match item {
        Item::None => Value::Null,
        Item::Value(v) => value(v, path, at, offsets),
        Item::Table(t) => table(t, path, at, offsets),
        Item::ArrayOfTables(tables) => Value::Array(
            tables
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let inner_path = path.index(i);
                    let t_at = t.span().map_or(at, |s| s.start);
                    offsets.insert(inner_path.as_str().to_owned(), t_at);
                    table(t, &inner_path, t_at, offsets)
                })
                .collect(),
        ),
    }
}

fn table(
    t: &toml_edit::Table,
    path: &FieldPath,
    at: usize,
    offsets: &mut HashMap<String, usize>,
) -> Value {
    let mut map = Map::new();
    for (key, inner) in t.iter() {
        let key_at = t.key(key).and_then(|k| k.span()).map_or(at, |s| s.start);
        let inner_path = path.key(key);
        offsets.insert(inner_path.as_str().to_owned(), key_at);
        map.insert(key.to_owned(), item(inner, &inner_path, key_at, offsets));
    }
    Value::Object(map)
}

fn value(
    v: &toml_edit::Value,
    path: &FieldPath,
    at: usize,
    offsets: &mut HashMap<String, usize>,
) -> Value {
    use toml_edit::Value as T;
    let at = v.span().map_or(at, |s| s.start);
    match v {
        T::String(s) => Value::String(s.value().clone()),
        T::Integer(i) => Value::Number((*i.value()).into()),
        T::Float(f) => Number::from_f64(*f.value()).map_or(Value::Null, Value::Number),
        T::Boolean(b) => Value::Bool(*b.value()),
        T::Datetime(d) => Value::String(d.value().to_string()),
        T::Array(a) => Value::Array(
            a.iter()
                .enumerate()
                .map(|(i, inner)| {
                    let inner_path = path.index(i);
                    let inner_at = inner.span().map_or(at, |s| s.start);
                    offsets.insert(inner_path.as_str().to_owned(), inner_at);
                    value(inner, &inner_path, inner_at, offsets)
                })
                .collect(),
        ),
        T::InlineTable(t) => {
            let mut map = Map::new();
            for (key, inner) in t.iter() {
                let key_at = t.key(key).and_then(|k| k.span()).map_or(at, |s| s.start);
                let inner_path = path.key(key);
                offsets.insert(inner_path.as_str().to_owned(), key_at);
                map.insert(key.to_owned(), value(inner, &inner_path, key_at, offsets));
            }
            Value::Object(map)
        }
    }
}
