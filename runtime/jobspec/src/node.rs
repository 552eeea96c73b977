//! The positioned document tree that both the YAML and the JSON reader produce, and from
//! which the typed spec is built. Keys are already strings (converted the way Testflinger's
//! CLI converts them: `json.dumps` of the PyYAML value).

use crate::error::Location;

/// What each node counts for in [`Node::text_bytes`] besides its text: its share of the
/// tree's own memory, so that many tiny scalars count too.
pub(crate) const NODE_OVERHEAD_BYTES: usize = 16;

/// One node of the document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub value: Value,
    pub loc: Option<Location>,
    /// For a YAML plain (unquoted) scalar that resolved to something other than a string: the
    /// text as written, so that type errors can suggest quoting it.
    pub plain: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<Entry>),
}

/// One key/value pair of a mapping, in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_loc: Option<Location>,
    pub value: Node,
}

impl Node {
    pub fn new(value: Value, loc: Option<Location>) -> Self {
        Node { value, loc, plain: None }
    }

    /// Number of nodes in this subtree (used to bound alias expansion).
    pub fn size(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|e| e.value.size()).sum(),
            _ => 0,
        }
    }

    /// Bytes of text in this subtree: scalar text (as written for non-strings) and mapping
    /// keys, plus [`NODE_OVERHEAD_BYTES`] per node (used to bound alias expansion by size).
    pub fn text_bytes(&self) -> usize {
        let own = match &self.value {
            Value::Str(s) => s.len(),
            Value::Seq(items) => items.iter().map(Node::text_bytes).sum(),
            Value::Map(entries) => entries.iter().map(|e| e.key.len() + e.value.text_bytes()).sum(),
            _ => self.plain.as_ref().map_or(0, String::len),
        };
        NODE_OVERHEAD_BYTES + own
    }

    pub fn is_null(&self) -> bool {
        matches!(self.value, Value::Null)
    }

    /// A short description for messages: "a list", "an integer (5)", ...
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Null => "null".to_owned(),
            Value::Bool(b) => format!("a boolean ({b})"),
            Value::Int(i) => format!("an integer ({i})"),
            Value::Float(f) => format!("a number ({f})"),
            Value::Str(s) => format!("a string ({s:?})"),
            Value::Seq(_) => "a list".to_owned(),
            Value::Map(_) => "a mapping".to_owned(),
        }
    }

    /// Extra advice when a YAML plain scalar was read as a non-string.
    pub fn quote_hint(&self) -> String {
        match &self.plain {
            Some(text) if !matches!(self.value, Value::Str(_)) => {
                let what = match self.value {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Int(_) => "an integer",
                    Value::Float(_) => "a number",
                    _ => "a non-string",
                };
                format!(" (YAML reads the unquoted `{text}` as {what}; quote it to make it a string)")
            }
            _ => String::new(),
        }
    }
}

/// Longest field path kept whole, in bytes. A path is built for every node of a document as it
/// is read, so the length of paths multiplies the work of reading one: uncut, a long key above
/// a long list made reading quadratic in the size of the document. Only a hostile document
/// has a longer path (no field name is that long or nested that deep); it is cut, ending in
/// `…`, and deeper nodes share the cut path. Errors still carry the exact line and column.
pub(crate) const MAX_PATH_BYTES: usize = 512;

/// Joins a field path and a key.
pub(crate) fn join(path: &str, key: &str) -> String {
    extend(path, if path.is_empty() { "" } else { "." }, key)
}

/// Joins a field path and a list index.
pub(crate) fn index(path: &str, i: usize) -> String {
    extend(path, "", &format!("[{i}]"))
}

/// `path + separator + segment`, cut to [`MAX_PATH_BYTES`]; the work is bounded by that
/// length, whatever the length of `segment`.
fn extend(path: &str, separator: &str, segment: &str) -> String {
    if path.len() >= MAX_PATH_BYTES {
        return path.to_owned();
    }
    let mut out = String::with_capacity(MAX_PATH_BYTES + '…'.len_utf8());
    out.push_str(path);
    out.push_str(separator);
    let room = MAX_PATH_BYTES - out.len().min(MAX_PATH_BYTES);
    if segment.len() <= room {
        out.push_str(segment);
    } else {
        out.push_str(&segment[..segment.floor_char_boundary(room)]);
        out.push('…');
    }
    out
}

/// Python's `repr(float)`, approximately, for keys that are floats.
pub(crate) fn python_float_key(f: f64) -> String {
    if f.is_nan() {
        "NaN".to_owned()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
    } else if f.fract() == 0.0 && f.abs() < 1e16 {
        format!("{f:.1}")
    } else {
        format!("{f}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_joined_and_cut_at_the_limit() {
        assert_eq!(join("", "test_data"), "test_data");
        assert_eq!(index(&join("test_data", "secrets"), 3), "test_data.secrets[3]");

        let long = join("provision_data", &"é".repeat(MAX_PATH_BYTES));
        assert!(long.starts_with("provision_data.éé"), "{long}");
        assert!(long.ends_with('…'), "{long}");
        assert!((MAX_PATH_BYTES..MAX_PATH_BYTES + 3).contains(&long.len()), "{}", long.len());
        // Deeper nodes share the cut path.
        assert_eq!(index(&join(&long, "url"), 7), long);
    }
}
