//! JSON text → [`Node`] tree.
//!
//! Values come from `serde_json` (the authority on JSON syntax), read through a visitor that
//! rejects duplicate keys. Positions are then grafted on from a YAML parse of the same text
//! (JSON is YAML flow syntax), when that parse succeeds and has the same shape; otherwise the
//! nodes simply carry no position.

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::error::{Error, ErrorKind, Location};
use crate::node::{Entry, Node, Value};
use crate::yaml;

/// Parses JSON text into a node tree (values exact, positions best-effort).
pub(crate) fn parse(text: &str) -> Result<Node, Error> {
    let mut node = match parse_values(text) {
        Ok(node) => node,
        Err(e) if e.kind() == ErrorKind::DuplicateKey => {
            // The YAML reader pinpoints the repeated key (path and position) better.
            return Err(match yaml::parse(text) {
                Err(y) if y.kind() == ErrorKind::DuplicateKey => y,
                _ => e,
            });
        }
        Err(e) => return Err(e),
    };
    if let Ok(positioned) = yaml::parse(text) {
        graft(&mut node, &positioned);
    }
    Ok(node)
}

/// Parses JSON without positions; syntax errors carry serde_json's line and column.
pub(crate) fn parse_values(text: &str) -> Result<Node, Error> {
    serde_json::from_str::<Node>(text).map_err(|e| {
        let location = (e.line() > 0).then(|| Location { line: e.line(), column: e.column().max(1) });
        let full = e.to_string();
        let suffix = format!(" at line {} column {}", e.line(), e.column());
        let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
        let kind = if message.starts_with("duplicate key") {
            ErrorKind::DuplicateKey
        } else if message.starts_with("recursion limit") {
            ErrorKind::Limit
        } else {
            ErrorKind::JsonSyntax
        };
        Error::new(kind, "", location, message)
    })
}

/// Copies positions from `from` onto `to` where both trees have the same shape.
fn graft(to: &mut Node, from: &Node) {
    to.loc = from.loc;
    match (&mut to.value, &from.value) {
        (Value::Seq(a), Value::Seq(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                graft(x, y);
            }
        }
        (Value::Map(a), Value::Map(b)) if a.len() == b.len() => {
            for (x, y) in a.iter_mut().zip(b) {
                if x.key != y.key {
                    return;
                }
                x.key_loc = y.key_loc;
                graft(&mut x.value, &y.value);
            }
        }
        _ => {}
    }
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

fn leaf(value: Value) -> Node {
    Node::new(value, None)
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(leaf(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(leaf(Value::Int(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(leaf(Value::Int(v.into())))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Node, E> {
        Ok(leaf(Value::Int(v)))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Node, E> {
        i128::try_from(v).map(|v| leaf(Value::Int(v))).map_err(|_| E::custom("integer too large"))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(leaf(Value::Float(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(leaf(Value::Str(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(leaf(Value::Str(v)))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(leaf(Value::Null))
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(leaf(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        Node::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Node>()? {
            items.push(item);
        }
        Ok(leaf(Value::Seq(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!("duplicate key `{key}` in one object")));
            }
            let value = map.next_value::<Node>()?;
            entries.push(Entry { key, key_loc: None, value });
        }
        Ok(leaf(Value::Map(entries)))
    }
}
