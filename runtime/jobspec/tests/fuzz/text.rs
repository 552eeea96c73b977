//! Writing generated documents as YAML or JSON text, and mangling that text.

use proptest::prelude::*;
use proptest::sample::Index;

use crate::documents::{Key, Style, Tree};

/// Tokens that make a whole JSON document invalid, inserted by [`Edit::Token`] (as leaves, too
/// few documents would be valid).
const BAD_TOKENS: &[&str] = &["1e400", "-1e400", "\"\\ud800\"", "01", "NaN", "'x'", "<<: *a0", "&a0 ", "!!int "];

pub fn pad(out: &mut String, indent: usize) {
    out.extend(std::iter::repeat_n(' ', indent));
}

fn yaml_key(key: &Key) -> String {
    let plain = !key.0.is_empty() && key.0.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'<');
    if plain { key.0.clone() } else { serde_json::to_string(&key.0).expect("a string") }
}

/// Writes `t` in flow style.
fn flow(t: &Tree, json: bool, out: &mut String) {
    match t {
        Tree::Scalar(s) => out.push_str(s),
        Tree::Literal(s) => out.push_str(&serde_json::to_string(s).expect("a string")),
        Tree::Alias(a) => out.push_str(&format!("*a{a}")),
        Tree::Anchored(a, t) => {
            out.push_str(&format!("&a{a} "));
            flow(t, json, out);
        }
        Tree::Seq(items, _) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow(item, json, out);
            }
            out.push(']');
        }
        Tree::Map(entries, _) => {
            out.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if json {
                    out.push_str(&serde_json::to_string(&k.0).expect("a string"));
                } else {
                    if k.1 {
                        out.push_str("? ");
                    }
                    out.push_str(&yaml_key(k));
                }
                out.push_str(": ");
                flow(v, json, out);
            }
            out.push('}');
        }
    }
}

/// Writes `t` as the value after `key:` or `-` (already written) in block context.
fn block_value(t: &Tree, indent: usize, out: &mut String) {
    match t {
        Tree::Literal(s) => {
            out.push_str(" |\n");
            for line in s.lines() {
                pad(out, indent);
                out.push_str(line);
                out.push('\n');
            }
        }
        Tree::Anchored(a, inner) if inner.is_block() => {
            out.push_str(&format!(" &a{a}"));
            block_value(inner, indent, out);
        }
        Tree::Seq(items, Style::Block) if !items.is_empty() => {
            out.push('\n');
            for item in items {
                pad(out, indent);
                out.push('-');
                block_value(item, indent + 2, out);
            }
        }
        Tree::Map(entries, Style::Block) if !entries.is_empty() => {
            out.push('\n');
            block_entries(entries, indent, out);
        }
        _ => {
            out.push(' ');
            flow(t, false, out);
            out.push('\n');
        }
    }
}

fn block_entries(entries: &[(Key, Tree)], indent: usize, out: &mut String) {
    for (k, v) in entries {
        pad(out, indent);
        if k.1 {
            out.push_str("? ");
            out.push_str(&yaml_key(k));
            out.push('\n');
            pad(out, indent);
        } else {
            out.push_str(&yaml_key(k));
        }
        out.push(':');
        block_value(v, indent + 2, out);
    }
}

pub fn render_yaml(t: &Tree) -> String {
    let mut out = String::new();
    match t {
        Tree::Map(entries, Style::Block) => block_entries(entries, 0, &mut out),
        other => flow(other, false, &mut out),
    }
    out
}

pub fn render_json(t: &Tree) -> String {
    let mut out = String::new();
    flow(t, true, &mut out);
    out
}

// ---------------------------------------------------------------- mangling

#[derive(Clone, Debug)]
pub enum Edit {
    Truncate(Index),
    Insert(Index, char),
    Token(Index, &'static str),
    Remove(Index, usize),
    /// Copies a piece of the text to another place (repeats keys, brackets, anchors).
    Splice(Index, Index, usize),
}

pub fn edits() -> impl Strategy<Value = Vec<Edit>> {
    let insert_char = prop_oneof![
        3 => prop::sample::select(vec!['\n', ' ', ':', '-', '[', ']', '{', '}', ',', '&', '*', '!', '"', '\'', '|', '>', '?', '#', '\t', '%', '@', '`', '\u{feff}', '\u{0}', '\u{85}']),
        1 => any::<char>(),
    ];
    let edit = prop_oneof![
        1 => any::<Index>().prop_map(Edit::Truncate),
        4 => (any::<Index>(), insert_char).prop_map(|(i, c)| Edit::Insert(i, c)),
        1 => (any::<Index>(), prop::sample::select(BAD_TOKENS)).prop_map(|(i, t)| Edit::Token(i, t)),
        2 => (any::<Index>(), 1usize..8).prop_map(|(i, n)| Edit::Remove(i, n)),
        2 => (any::<Index>(), any::<Index>(), 1usize..64).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ];
    prop_oneof![2 => Just(Vec::new()), 1 => prop::collection::vec(edit, 1..6)]
}

/// The character boundary at or before `index`'s position in `text`.
fn boundary(text: &str, index: &Index) -> usize {
    let mut at = index.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

pub fn mangle(mut text: String, edits: &[Edit]) -> String {
    for edit in edits {
        match edit {
            Edit::Truncate(i) => text.truncate(boundary(&text, i)),
            Edit::Insert(i, c) => text.insert(boundary(&text, i), *c),
            Edit::Token(i, t) => text.insert_str(boundary(&text, i), t),
            Edit::Remove(i, n) => {
                let start = boundary(&text, i);
                let end = text[start..].char_indices().nth(*n).map_or(text.len(), |(o, _)| start + o);
                text.replace_range(start..end, "");
            }
            Edit::Splice(from, to, n) => {
                let start = boundary(&text, from);
                let end = text[start..].char_indices().nth(*n).map_or(text.len(), |(o, _)| start + o);
                let piece = text[start..end].to_owned();
                text.insert_str(boundary(&text, to), &piece);
            }
        }
    }
    text
}
