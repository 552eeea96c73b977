//! Field readers that mirror marshmallow's field types, as the Testflinger server applies them
//! (`server/src/testflinger/api/schemas.py`). Each reader takes the node and its field path and
//! returns the normalised value or an [`Error`] naming the path and position.

use std::sync::LazyLock;

use regex::Regex;
use serde_json::{Map, Number, Value as Json};

use crate::error::{Error, ErrorKind, Location};
use crate::node::{Entry, Node, Value, index, join};

pub(crate) type Result<T> = std::result::Result<T, Error>;

pub(crate) fn invalid_type(node: &Node, path: &str, expected: &str) -> Error {
    if node.is_null() {
        return Error::new(
            ErrorKind::InvalidType,
            path,
            node.loc,
            format!("Field may not be null (expected {expected}){}", node.quote_hint()),
        );
    }
    Error::new(
        ErrorKind::InvalidType,
        path,
        node.loc,
        format!("expected {expected}, found {}{}", node.describe(), node.quote_hint()),
    )
}

pub(crate) fn invalid_value(loc: Option<Location>, path: &str, message: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidValue, path, loc, message)
}

pub(crate) fn unknown_field(entry: &Entry, path: &str, known: &[&str]) -> Error {
    let suggestion = suggest(&entry.key, known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
    Error::new(
        ErrorKind::UnknownField,
        join(path, &entry.key),
        entry.key_loc,
        format!("Unknown field `{}`{suggestion}", entry.key),
    )
}

pub(crate) fn missing_field(map: &Node, path: &str, key: &str) -> Error {
    Error::new(ErrorKind::MissingField, join(path, key), map.loc, format!("Missing data for required field `{key}`"))
}

/// The closest known key, if it is close enough to be a plausible typo.
///
/// The edit distance is at least the difference in length, so a key whose length is far from
/// a known key's is not compared with it: the work stays bounded by the known keys' lengths,
/// however long the (untrusted) key is.
fn suggest<'a>(key: &str, known: &[&'a str]) -> Option<&'a str> {
    let key_chars = key.chars().count();
    known
        .iter()
        .filter(|k| key_chars.abs_diff(k.chars().count()) <= typo_allowance(k))
        .map(|k| (edit_distance(key, k), *k))
        .filter(|(d, k)| *d <= typo_allowance(k))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// How many edits still make a plausible typo of `known`.
fn typo_allowance(known: &str) -> usize {
    2.max(known.len() / 4)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The entries of a mapping node.
pub(crate) fn map<'a>(node: &'a Node, path: &str) -> Result<&'a [Entry]> {
    match &node.value {
        Value::Map(entries) => Ok(entries),
        _ => Err(invalid_type(node, path, "a mapping")),
    }
}

/// marshmallow `String`: strings only.
pub(crate) fn string(node: &Node, path: &str) -> Result<String> {
    match &node.value {
        Value::Str(s) => Ok(s.clone()),
        _ => Err(invalid_type(node, path, "a string")),
    }
}

/// A string with at least one character (marshmallow `Length(min=1)`).
pub(crate) fn non_empty_string(node: &Node, path: &str) -> Result<String> {
    let s = string(node, path)?;
    if s.is_empty() {
        return Err(invalid_value(node.loc, path, "Shorter than minimum length 1"));
    }
    Ok(s)
}

/// marshmallow `Integer` (non-strict): integers; numbers, truncated toward zero as Python's
/// `int()` does; strings that Python's `int()` accepts (`" 10 "`, `"+5"`, `"1_000"`).
/// Booleans are rejected. Values outside `i64` are rejected (MongoDB stores 64-bit integers).
pub(crate) fn integer(node: &Node, path: &str) -> Result<i64> {
    let too_large = || invalid_value(node.loc, path, "Number too large (must fit in 64 bits)");
    match &node.value {
        Value::Int(i) => i64::try_from(*i).map_err(|_| too_large()),
        Value::Float(f) if f.is_finite() => {
            let t = f.trunc();
            if (-9.223_372_036_854_776e18..9.223_372_036_854_776e18).contains(&t) {
                Ok(t as i64)
            } else {
                Err(too_large())
            }
        }
        Value::Str(s) => match python_int(s) {
            Some(i) => i64::try_from(i).map_err(|_| too_large()),
            None => Err(invalid_value(node.loc, path, format!("Not a valid integer: {s:?}"))),
        },
        _ => Err(invalid_type(node, path, "an integer")),
    }
}

/// Python's `int(str)` for base 10: surrounding whitespace, an optional sign, digits with
/// single underscores between them.
pub(crate) fn python_int(s: &str) -> Option<i128> {
    let t = s.trim();
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    let v: i128 = digits.replace('_', "").parse().ok()?;
    Some(if neg { -v } else { v })
}

/// marshmallow `Boolean`: `true`/`false`, the numbers 1 and 0, and the strings in its truthy and
/// falsy sets (`"yes"`, `"on"`, `"t"`, `"1"`, `"NO"`, ...).
pub(crate) fn boolean(node: &Node, path: &str) -> Result<bool> {
    let parsed = match &node.value {
        Value::Bool(b) => Some(*b),
        Value::Int(1) => Some(true),
        Value::Int(0) => Some(false),
        Value::Float(f) if *f == 1.0 => Some(true),
        Value::Float(f) if *f == 0.0 => Some(false),
        Value::Str(s) => match s.as_str() {
            "t" | "T" | "true" | "True" | "TRUE" | "on" | "On" | "ON" | "y" | "Y" | "yes" | "Yes" | "YES" | "1" => {
                Some(true)
            }
            "f" | "F" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" | "n" | "N" | "no" | "No" | "NO" | "0" => {
                Some(false)
            }
            _ => None,
        },
        _ => None,
    };
    parsed.ok_or_else(|| invalid_type(node, path, "a boolean"))
}

static URL_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^(?:[a-z0-9.+\-]*)://",
        r"(?:[^:@]+?(?::[^:@]*?)?@|)",
        r"(?:(?:[A-Z0-9](?:[A-Z0-9-]{0,61}[A-Z0-9])?\.)+(?:[A-Z]{2,6}\.?|[A-Z0-9-]{2,}\.?)",
        r"|localhost",
        r"|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}",
        r"|\[[A-F0-9]*:[A-F0-9:]+\])",
        r"(?::\d+)?",
        r"(?:/?|[/?]\S+)\z",
    ))
    .expect("static regex")
});

/// marshmallow `URL` with its defaults: absolute, scheme `http`/`https`/`ftp`/`ftps`, and a host
/// that is a dotted domain name with a TLD, `localhost`, an IPv4 address or a bracketed IPv6
/// address (so `http://x` is *not* a valid URL: marshmallow's `require_tld=True`).
pub(crate) fn url(node: &Node, path: &str) -> Result<String> {
    let s = string(node, path)?;
    if !is_marshmallow_url(&s) {
        return Err(invalid_value(
            node.loc,
            path,
            format!(
                "Not a valid URL: {s:?} (needs http, https, ftp or ftps, and a host with a domain, \
                 `localhost` or an IP address)"
            ),
        ));
    }
    Ok(s)
}

pub(crate) fn is_marshmallow_url(s: &str) -> bool {
    if s.is_empty() {
        return false;
    }
    if let Some((scheme, _)) = s.split_once("://") {
        let scheme = scheme.to_lowercase();
        if !["http", "https", "ftp", "ftps"].contains(&scheme.as_str()) {
            return false;
        }
    }
    URL_RE.is_match(s)
}

static EMAIL_USER_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r#"(?i)(?:^[-!#$%&'*+/=?^`{}|~\w]+(?:\.[-!#$%&'*+/=?^`{}|~\w]+)*\z"#,
        r#"|^"(?:[\x01-\x08\x0B\x0C\x0E-\x1F!#-\[\]-\x7F]|\\[\x01-\x09\x0B\x0C\x0E-\x7F])*"\z)"#,
    ))
    .expect("static regex")
});
static EMAIL_DOMAIN_RE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?i)^(?:(?:[A-Z0-9](?:[A-Z0-9-]{0,61}[A-Z0-9])?\.)+(?:[A-Z]{2,6}|[A-Z0-9-]{2,})\z",
        r"|\[(?:25[0-5]|2[0-4]\d|[0-1]?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|[0-1]?\d?\d)){3}\]\z)",
    ))
    .expect("static regex")
});

/// marshmallow `Email`. (Internationalised domain names, which marshmallow IDNA-encodes before
/// matching, are not supported.)
pub(crate) fn email(node: &Node, path: &str) -> Result<String> {
    let s = string(node, path)?;
    let ok = s.rsplit_once('@').is_some_and(|(user, domain)| {
        EMAIL_USER_RE.is_match(user) && (domain == "localhost" || EMAIL_DOMAIN_RE.is_match(domain))
    });
    if !ok {
        return Err(invalid_value(node.loc, path, format!("Not a valid email address: {s:?}")));
    }
    Ok(s)
}

/// Python's `uuid.UUID(text)`: optional `urn:`/`uuid:` prefixes and braces, hyphens anywhere,
/// 32 hex digits.
pub(crate) fn is_python_uuid(s: &str) -> bool {
    let hex = s.replace("urn:", "").replace("uuid:", "");
    let hex = hex.trim_matches(|c| c == '{' || c == '}').replace('-', "");
    hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// marshmallow `List(inner)`: a list, each item read by `item`.
pub(crate) fn list<T>(node: &Node, path: &str, mut item: impl FnMut(&Node, &str) -> Result<T>) -> Result<Vec<T>> {
    match &node.value {
        Value::Seq(items) => items.iter().enumerate().map(|(i, n)| item(n, &index(path, i))).collect(),
        _ => Err(invalid_type(node, path, "a list")),
    }
}

/// marshmallow `Dict()`: any mapping, kept as JSON.
pub(crate) fn dict(node: &Node, path: &str) -> Result<Map<String, Json>> {
    let entries = map(node, path)?;
    entries.iter().map(|e| Ok((e.key.clone(), to_json(&e.value, &join(path, &e.key))?))).collect()
}

/// Any node as JSON (for free-form data).
pub(crate) fn to_json(node: &Node, path: &str) -> Result<Json> {
    Ok(match &node.value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Int(i) => {
            if let Ok(v) = i64::try_from(*i) {
                Json::Number(v.into())
            } else if let Ok(v) = u64::try_from(*i) {
                Json::Number(v.into())
            } else {
                return Err(invalid_value(node.loc, path, "integer too large for JSON"));
            }
        }
        Value::Float(f) => match Number::from_f64(*f) {
            Some(n) => Json::Number(n),
            None => {
                return Err(invalid_value(node.loc, path, "NaN and infinite numbers cannot be represented in JSON"));
            }
        },
        Value::Str(s) => Json::String(s.clone()),
        Value::Seq(items) => {
            Json::Array(items.iter().enumerate().map(|(i, n)| to_json(n, &index(path, i))).collect::<Result<_>>()?)
        }
        Value::Map(_) => Json::Object(dict(node, path)?),
    })
}

/// Python truthiness of a JSON value (`bool(x)`).
pub(crate) fn truthy(v: &Json) -> bool {
    match v {
        Json::Null => false,
        Json::Bool(b) => *b,
        Json::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Json::String(s) => !s.is_empty(),
        Json::Array(a) => !a.is_empty(),
        Json::Object(o) => !o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marshmallow_urls() {
        for ok in [
            "http://example.com",
            "https://cdimage.ubuntu.com/releases/24.04/ubuntu.img.xz",
            "http://localhost:8000/x",
            "http://10.0.0.1/img",
            "http://[::1]:80/",
            "ftp://user:pw@files.example.org/a?b=c",
            "HTTP://EXAMPLE.COM",
        ] {
            assert!(is_marshmallow_url(ok), "{ok}");
        }
        for bad in [
            "",
            "example.com",
            "http://x",
            "file:///etc/passwd",
            "s3://bucket.example.com/x",
            "http://exa mple.com",
            "http://example.com/a b",
        ] {
            assert!(!is_marshmallow_url(bad), "{bad}");
        }
    }

    #[test]
    fn python_ints() {
        assert_eq!(python_int(" 10 "), Some(10));
        assert_eq!(python_int("+5"), Some(5));
        assert_eq!(python_int("-1_000"), Some(-1000));
        assert_eq!(python_int("1__0"), None);
        assert_eq!(python_int("3.0"), None);
        assert_eq!(python_int(""), None);
    }

    #[test]
    fn uuids() {
        assert!(is_python_uuid("2b5cf5e4-9cc5-4a8e-9f6b-3b1b8a1f8c11"));
        assert!(is_python_uuid("{2B5CF5E49CC54A8E9F6B3B1B8A1F8C11}"));
        assert!(is_python_uuid("urn:uuid:2b5cf5e4-9cc5-4a8e-9f6b-3b1b8a1f8c11"));
        assert!(!is_python_uuid("not-a-uuid"));
        assert!(!is_python_uuid("2b5cf5e4-9cc5-4a8e-9f6b-3b1b8a1f8c1"));
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("job_queu", &["job_queue", "name"]), Some("job_queue"));
        assert_eq!(suggest("zzz", &["job_queue"]), None);
    }
}
