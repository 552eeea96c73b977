//! YAML text → positioned [`Node`] tree, on top of `saphyr-parser`'s event stream.
//!
//! Testflinger's CLI reads job files with PyYAML's `safe_load` (YAML 1.1) and sends the
//! result as JSON, so plain scalars are resolved the way PyYAML's `SafeLoader` resolves them:
//! `yes`/`no`/`on`/`off` are booleans, `0o17`-style octal is `017`, `1:30` is sexagesimal 90,
//! `1e3` (no dot) stays a string, and so on. Merge keys (`<<`) and aliases are expanded.
//! Unlike PyYAML, a key repeated in one mapping is an error, not "last one wins".

use std::collections::HashMap;
use std::sync::LazyLock;

use regex::Regex;
use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span, Tag};

use crate::error::{Error, ErrorKind, Location};
use crate::node::{Entry, Node, Value, index, join, python_float_key};

/// Deepest nesting accepted (the same limit serde_json applies).
pub(crate) const MAX_DEPTH: usize = 128;
/// Most nodes a document may expand to, counting alias copies (stops "billion laughs").
pub(crate) const MAX_NODES: usize = 250_000;
/// Most bytes of text (scalars and keys, plus a small allowance per node) a YAML job may expand
/// to, counting alias copies: a few aliases of one long scalar are few nodes but many bytes.
/// Twice the server's default body limit (16 MiB): a document without aliases stays below it.
pub const MAX_EXPANDED_BYTES: usize = 32 << 20;

/// Parses YAML text into a node tree. Exactly one document is accepted.
pub(crate) fn parse(text: &str) -> Result<Node, Error> {
    let mut b = Builder { parser: Parser::new_from_str(text), anchors: HashMap::new(), nodes: 0, bytes: 0 };
    let (ev, span) = b.next()?;
    if ev != Event::StreamStart {
        return Err(b.unexpected(&ev, span, ""));
    }
    let (ev, span) = b.next()?;
    match ev {
        Event::DocumentStart(_) => {}
        Event::StreamEnd => {
            return Err(Error::new(
                ErrorKind::InvalidType,
                "",
                Some(loc(span.start)),
                "the document is empty; a job is a mapping with at least `job_queue`",
            ));
        }
        other => return Err(b.unexpected(&other, span, "")),
    }
    let (ev, span) = b.next()?;
    let root = b.node(ev, span, "", 0)?;
    let (ev, span) = b.next()?;
    if ev != Event::DocumentEnd {
        return Err(b.unexpected(&ev, span, ""));
    }
    let (ev, span) = b.next()?;
    match ev {
        Event::StreamEnd => Ok(root),
        _ => Err(Error::new(
            ErrorKind::YamlSyntax,
            "",
            Some(loc(span.start)),
            "expected a single document in the stream, found another document",
        )),
    }
}

fn loc(m: Marker) -> Location {
    Location { line: m.line(), column: m.col() + 1 }
}

fn syntax(e: &ScanError) -> Error {
    Error::new(ErrorKind::YamlSyntax, "", Some(loc(*e.marker())), e.info().to_owned())
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    bytes: usize,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Span), Error> {
        match self.parser.next_event() {
            Some(Ok(pair)) => Ok(pair),
            Some(Err(e)) => Err(syntax(&e)),
            None => Err(Error::new(ErrorKind::YamlSyntax, "", None, "unexpected end of the event stream")),
        }
    }

    fn unexpected(&self, ev: &Event<'_>, span: Span, path: &str) -> Error {
        Error::new(ErrorKind::YamlSyntax, path, Some(loc(span.start)), format!("unexpected YAML event {ev:?}"))
    }

    /// Counts `n` more nodes holding `bytes` more bytes of text, failing past either bound.
    fn count(&mut self, n: usize, bytes: usize, at: Span, path: &str) -> Result<(), Error> {
        self.nodes = self.nodes.saturating_add(n);
        self.bytes = self.bytes.saturating_add(bytes);
        if self.bytes > MAX_EXPANDED_BYTES {
            return Err(Error::new(
                ErrorKind::Limit,
                path,
                Some(loc(at.start)),
                format!(
                    "the document expands to more than {} MiB ({MAX_EXPANDED_BYTES} bytes) of text (alias expansion?)",
                    MAX_EXPANDED_BYTES >> 20
                ),
            ));
        }
        if self.nodes > MAX_NODES {
            return Err(Error::new(
                ErrorKind::Limit,
                path,
                Some(loc(at.start)),
                format!("the document expands to more than {MAX_NODES} nodes (alias expansion?)"),
            ));
        }
        Ok(())
    }

    fn register(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn node(&mut self, ev: Event<'a>, span: Span, path: &str, depth: usize) -> Result<Node, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::new(
                ErrorKind::Limit,
                path,
                Some(loc(span.start)),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let here = Some(loc(span.start));
        match ev {
            Event::Scalar(text, style, anchor, tag) => {
                self.count(1, crate::node::NODE_OVERHEAD_BYTES + text.len(), span, path)?;
                let node = scalar(text.as_ref(), style, tag.as_deref(), here, path)?;
                self.register(anchor, &node);
                Ok(node)
            }
            Event::Alias(id) => match self.anchors.get(&id) {
                Some(node) => {
                    // Counted before it is copied: an over-limit copy is never made.
                    let (size, bytes) = (node.size(), node.text_bytes());
                    self.count(size, bytes, span, path)?;
                    Ok(self.anchors[&id].clone())
                }
                None => Err(Error::new(
                    ErrorKind::YamlSyntax,
                    path,
                    here,
                    "alias refers to an anchor that is not (yet) complete",
                )),
            },
            Event::SequenceStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "seq", here, path)?;
                self.count(1, crate::node::NODE_OVERHEAD_BYTES, span, path)?;
                let mut items = Vec::new();
                loop {
                    let (ev, span) = self.next()?;
                    if ev == Event::SequenceEnd {
                        break;
                    }
                    let item_path = index(path, items.len());
                    items.push(self.node(ev, span, &item_path, depth + 1)?);
                }
                let node = Node::new(Value::Seq(items), here);
                self.register(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(anchor, tag) => {
                check_collection_tag(tag.as_deref(), "map", here, path)?;
                self.count(1, crate::node::NODE_OVERHEAD_BYTES, span, path)?;
                let node = self.mapping(here, path, depth)?;
                self.register(anchor, &node);
                Ok(node)
            }
            other => Err(self.unexpected(&other, span, path)),
        }
    }

    fn mapping(&mut self, here: Option<Location>, path: &str, depth: usize) -> Result<Node, Error> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut seen: HashMap<String, Option<Location>> = HashMap::new();
        let mut merges: Vec<(Node, String)> = Vec::new();
        loop {
            let (ev, kspan) = self.next()?;
            if ev == Event::MappingEnd {
                break;
            }
            let is_merge = matches!(&ev, Event::Scalar(t, ScalarStyle::Plain, _, None) if t.as_ref() == "<<");
            let key_node = self.node(ev, kspan, path, depth + 1)?;
            let key_loc = key_node.loc;
            let (vev, vspan) = self.next()?;
            if is_merge {
                let merge_path = join(path, "<<");
                let value = self.node(vev, vspan, &merge_path, depth + 1)?;
                merges.push((value, merge_path));
                continue;
            }
            let key = key_string(&key_node, path)?;
            let key_path = join(path, &key);
            let empty_value = matches!(&vev, Event::Scalar(t, ScalarStyle::Plain, 0, None) if t.is_empty());
            let mut value = self.node(vev, vspan, &key_path, depth + 1)?;
            if empty_value {
                // `key:` with nothing after it: point at the key, not at the void after it.
                value.loc = key_loc;
            }
            if let Some(first) = seen.get(&key) {
                let first = first.map(|l| format!(" (first defined at {l})")).unwrap_or_default();
                return Err(Error::new(
                    ErrorKind::DuplicateKey,
                    key_path,
                    key_loc,
                    format!("duplicate key `{key}` in one mapping{first}"),
                ));
            }
            seen.insert(key.clone(), key_loc);
            entries.push(Entry { key, key_loc, value });
        }
        // PyYAML merge semantics: explicit keys win; among merged mappings the first listed wins.
        for (source, merge_path) in merges {
            let sources: Vec<Node> = match source.value {
                Value::Map(_) => vec![source],
                Value::Seq(items) => items,
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidType,
                        merge_path,
                        source.loc,
                        "a merge key (`<<`) needs a mapping or a list of mappings",
                    ));
                }
            };
            for src in sources {
                let Value::Map(src_entries) = src.value else {
                    return Err(Error::new(
                        ErrorKind::InvalidType,
                        merge_path,
                        src.loc,
                        "a merge key (`<<`) needs a mapping or a list of mappings",
                    ));
                };
                for entry in src_entries {
                    if !seen.contains_key(&entry.key) {
                        seen.insert(entry.key.clone(), entry.key_loc);
                        entries.push(entry);
                    }
                }
            }
        }
        Ok(Node::new(Value::Map(entries), here))
    }
}

/// Converts a key node to the string that `json.dumps` would produce for the PyYAML value.
fn key_string(key: &Node, path: &str) -> Result<String, Error> {
    Ok(match &key.value {
        Value::Str(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => python_float_key(*f),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_owned(),
        Value::Seq(_) | Value::Map(_) => {
            return Err(Error::new(
                ErrorKind::InvalidType,
                path,
                key.loc,
                "a mapping key must be a scalar (found an unhashable list or mapping key)",
            ));
        }
    })
}

fn check_collection_tag(tag: Option<&Tag>, expected: &str, here: Option<Location>, path: &str) -> Result<(), Error> {
    match tag {
        None => Ok(()),
        Some(t) if t.is_yaml_core_schema() && t.suffix == expected => Ok(()),
        Some(t) if t.handle == "!" && t.suffix.is_empty() => Ok(()),
        Some(t) => Err(Error::new(
            ErrorKind::InvalidType,
            path,
            here,
            format!("unsupported YAML tag `{t}` (only the standard tags are understood)"),
        )),
    }
}

fn scalar(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    here: Option<Location>,
    path: &str,
) -> Result<Node, Error> {
    let bad = |what: &str| Error::new(ErrorKind::InvalidValue, path, here, format!("`{text}` is not a valid {what}"));
    let value = match tag {
        Some(t) if t.is_yaml_core_schema() => match t.suffix.as_str() {
            "str" => Value::Str(text.to_owned()),
            "int" => construct_int(text).ok_or_else(|| bad("!!int"))?,
            "float" => construct_float(text).ok_or_else(|| bad("!!float"))?,
            "bool" => construct_bool(text).ok_or_else(|| bad("!!bool"))?,
            "null" => Value::Null,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidType,
                    path,
                    here,
                    format!("unsupported YAML tag `!!{other}`"),
                ));
            }
        },
        // The non-specific tag `!` forces a string.
        Some(t) if t.handle == "!" && t.suffix.is_empty() => Value::Str(text.to_owned()),
        Some(t) => {
            return Err(Error::new(
                ErrorKind::InvalidType,
                path,
                here,
                format!("unsupported YAML tag `{t}` (only the standard tags are understood)"),
            ));
        }
        None if style == ScalarStyle::Plain => {
            let value = resolve_plain(text).ok_or_else(|| bad("number"))?;
            if !matches!(value, Value::Str(_)) {
                return Ok(Node { value, loc: here, plain: Some(text.to_owned()) });
            }
            value
        }
        None => Value::Str(text.to_owned()),
    };
    Ok(Node::new(value, here))
}

static BOOL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")
        .expect("static regex")
});
static INT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?0b[0-1_]+",
        r"|[-+]?0[0-7_]+",
        r"|[-+]?(?:0|[1-9][0-9_]*)",
        r"|[-+]?0x[0-9a-fA-F_]+",
        r"|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"
    ))
    .expect("static regex")
});
static FLOAT_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?",
        r"|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?",
        r"|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*",
        r"|[-+]?\.(?:inf|Inf|INF)",
        r"|\.(?:nan|NaN|NAN))$"
    ))
    .expect("static regex")
});
static NULL_RE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"^(?:~|null|Null|NULL|)$").expect("static regex"));

/// PyYAML `SafeLoader` implicit resolution of a plain scalar. Timestamps are kept as strings
/// (PyYAML would build a `datetime`, which the Testflinger CLI then fails to send as JSON).
/// `None` only when a number-looking scalar does not convert (e.g. `0x_`).
pub(crate) fn resolve_plain(text: &str) -> Option<Value> {
    if NULL_RE.is_match(text) {
        return Some(Value::Null);
    }
    if BOOL_RE.is_match(text) {
        return construct_bool(text);
    }
    if INT_RE.is_match(text) {
        return construct_int(text);
    }
    if FLOAT_RE.is_match(text) {
        return construct_float(text);
    }
    Some(Value::Str(text.to_owned()))
}

fn construct_bool(text: &str) -> Option<Value> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Some(Value::Bool(true)),
        "no" | "false" | "off" => Some(Value::Bool(false)),
        _ => None,
    }
}

fn split_sign(text: &str) -> (i128, &str) {
    match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => (1, text),
    }
}

/// PyYAML `construct_yaml_int`.
fn construct_int(text: &str) -> Option<Value> {
    let cleaned: String = text.chars().filter(|&c| c != '_').collect();
    let (sign, digits) = split_sign(&cleaned);
    let magnitude = if digits == "0" {
        0
    } else if let Some(bin) = digits.strip_prefix("0b") {
        i128::from_str_radix(bin, 2).ok()?
    } else if let Some(hex) = digits.strip_prefix("0x") {
        i128::from_str_radix(hex, 16).ok()?
    } else if digits.starts_with('0') {
        i128::from_str_radix(digits, 8).ok()?
    } else if digits.contains(':') {
        let mut value: i128 = 0;
        for part in digits.split(':') {
            value = value.checked_mul(60)?.checked_add(part.parse::<i128>().ok()?)?;
        }
        value
    } else {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse::<i128>().ok()?
    };
    Some(Value::Int(sign * magnitude))
}

/// PyYAML `construct_yaml_float`.
fn construct_float(text: &str) -> Option<Value> {
    let cleaned: String = text.chars().filter(|&c| c != '_').collect::<String>().to_ascii_lowercase();
    let (sign, rest) = split_sign(&cleaned);
    let sign = sign as f64;
    let value = if rest == ".inf" {
        f64::INFINITY
    } else if rest == ".nan" {
        return Some(Value::Float(f64::NAN));
    } else if rest.contains(':') {
        let mut value = 0.0;
        for part in rest.split(':') {
            value = value * 60.0 + part.parse::<f64>().ok()?;
        }
        value
    } else {
        rest.parse::<f64>().ok()?
    };
    Some(Value::Float(sign * value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain(s: &str) -> Value {
        resolve_plain(s).expect("resolves")
    }

    #[test]
    fn pyyaml_resolution() {
        assert_eq!(plain("yes"), Value::Bool(true));
        assert_eq!(plain("Off"), Value::Bool(false));
        assert_eq!(plain("y"), Value::Str("y".into()));
        assert_eq!(plain("~"), Value::Null);
        assert_eq!(plain(""), Value::Null);
        assert_eq!(plain("0777"), Value::Int(0o777));
        assert_eq!(plain("0x1F"), Value::Int(31));
        assert_eq!(plain("0b101"), Value::Int(5));
        assert_eq!(plain("-1_000"), Value::Int(-1000));
        assert_eq!(plain("1:30"), Value::Int(90));
        assert_eq!(plain("09"), Value::Str("09".into()));
        assert_eq!(plain("1.5"), Value::Float(1.5));
        assert_eq!(plain("1."), Value::Float(1.0));
        assert_eq!(plain("1e3"), Value::Str("1e3".into()));
        assert_eq!(plain("1.0e+3"), Value::Float(1000.0));
        assert_eq!(plain("-.inf"), Value::Float(f64::NEG_INFINITY));
        assert_eq!(plain("2024-01-01"), Value::Str("2024-01-01".into()));
        assert_eq!(plain("2h30m"), Value::Str("2h30m".into()));
    }
}
