//! Origins a plugin derives from its phase's data, declared in its manifest's `[derive]` table,
//! so that the engine offers them without knowing any plugin's data shapes:
//!
//! ```toml
//! # the URL in `<phase>_data.url` is an origin the plugin fetches from
//! [[derive.http]]
//! from = "url"
//!
//! # each `lp:<user>` entry of `<phase>_data.ssh_keys` needs Launchpad, or the key server the
//! # device fact `ssh_import_lp` names
//! [[derive.http]]
//! from = "ssh_keys"
//! prefix = "lp:"
//! url = "https://launchpad.net/~{value}/+sshkeys"
//! fact = "ssh_import_lp"
//! ```
//!
//! A derived origin is only offered: the planner adds it to the job's request when the plugin's
//! `http` capability and the operator's policy both cover it, as it does for `/artifacts`.

use serde::{Deserialize, Serialize};

use crate::Origin;

/// The placeholder in a [`DerivedOrigin::url`] template for the datum (after its prefix).
pub const PLACEHOLDER: &str = "{value}";

/// The `[derive]` table of a manifest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Derive {
    /// HTTP origins derived from the phase's data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<DerivedOrigin>,
}

impl Derive {
    /// True when nothing is derived.
    pub fn is_empty(&self) -> bool {
        self.http.is_empty()
    }
}

/// One `[[derive.http]]` rule: each string at [`from`](Self::from) in the phase's data (an
/// array's strings each) that starts with [`prefix`](Self::prefix) yields the origin of
/// [`url`](Self::url) with [`PLACEHOLDER`] replaced by the rest of the string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawDerivedOrigin", into = "RawDerivedOrigin")]
pub struct DerivedOrigin {
    /// Dot-separated keys into the phase's data, e.g. `ssh_keys` or `image.url`.
    pub from: Vec<String>,
    /// Only strings with this prefix count; it is removed before substitution.
    pub prefix: String,
    /// The URL template; `{value}` alone means the datum is itself the URL.
    pub url: String,
    /// A device fact whose value, when the device has it, replaces [`url`](Self::url).
    pub fact: Option<String>,
}

/// `DerivedOrigin` as written, before validation.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDerivedOrigin {
    from: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    prefix: String,
    #[serde(default = "whole_value")]
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fact: Option<String>,
}

fn whole_value() -> String {
    PLACEHOLDER.to_owned()
}

impl TryFrom<RawDerivedOrigin> for DerivedOrigin {
    type Error = String;

    fn try_from(raw: RawDerivedOrigin) -> Result<Self, String> {
        let from: Vec<String> = raw.from.split('.').map(str::to_owned).collect();
        if from.iter().any(String::is_empty) {
            return Err(format!("derive.http: `from = {:?}` must be dot-separated keys of the phase's data", raw.from));
        }
        if raw.url != PLACEHOLDER && origin_of_url(&raw.url.replace(PLACEHOLDER, "x")).is_none() {
            return Err(format!(
                "derive.http: `url = {:?}` must be an http:// or https:// URL (with `{PLACEHOLDER}` where the datum goes) \
                 or `{PLACEHOLDER}` alone",
                raw.url
            ));
        }
        if raw.fact.as_deref() == Some("") {
            return Err("derive.http: `fact` must name a device fact".into());
        }
        Ok(Self { from, prefix: raw.prefix, url: raw.url, fact: raw.fact })
    }
}

impl From<DerivedOrigin> for RawDerivedOrigin {
    fn from(d: DerivedOrigin) -> Self {
        Self { from: d.from.join("."), prefix: d.prefix, url: d.url, fact: d.fact }
    }
}

impl DerivedOrigin {
    /// The origin `datum` (one string found at [`from`](Self::from)) yields, given the device's
    /// `facts`; `None` when the datum lacks the prefix or the URL it makes is no http(s) URL.
    pub fn origin(&self, datum: &str, facts: &[(String, String)]) -> Option<Origin> {
        let value = datum.strip_prefix(self.prefix.as_str())?;
        let fact = self.fact.as_ref().and_then(|f| facts.iter().find(|(k, _)| k == f)).map(|(_, v)| v.as_str());
        origin_of_url(&fact.unwrap_or(&self.url).replace(PLACEHOLDER, value))
    }
}

/// The origin (`scheme://host:port`) of `url`, or `None` when it is no `http`/`https` URL.
pub fn origin_of_url(url: &str) -> Option<Origin> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    Origin::parse(&format!("{scheme}://{authority}")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(toml_like: serde_json::Value) -> Result<DerivedOrigin, String> {
        serde_json::from_value(toml_like).map_err(|e| e.to_string())
    }

    #[test]
    fn derives_origins_from_data_and_facts() {
        let lp = rule(serde_json::json!({
            "from": "ssh_keys", "prefix": "lp:", "url": "https://launchpad.net/~{value}/+sshkeys", "fact": "ssh_import_lp"
        }))
        .unwrap();
        let origin = |r: &DerivedOrigin, d, f: &[(String, String)]| r.origin(d, f).map(|o| o.to_string());
        assert_eq!(origin(&lp, "lp:al", &[]).as_deref(), Some("https://launchpad.net:443"));
        assert_eq!(origin(&lp, "gh:al", &[]), None);
        let facts = [("ssh_import_lp".to_owned(), "http://127.0.0.1:9/{user}.keys".to_owned())];
        assert_eq!(origin(&lp, "lp:al", &facts).as_deref(), Some("http://127.0.0.1:9"));
        let url = rule(serde_json::json!({"from": "image.url"})).unwrap();
        assert_eq!(url.from, ["image", "url"]);
        assert_eq!(origin(&url, "http://images.lab:8080/x.img", &[]).as_deref(), Some("http://images.lab:8080"));
        assert_eq!(origin(&url, "ftp://images.lab/x.img", &[]), None);
        assert_eq!(origin(&url, "/local/x.img", &[]), None);
    }

    #[test]
    fn refuses_bad_rules_saying_which_key() {
        let err = rule(serde_json::json!({"from": "a..b"})).unwrap_err();
        assert!(err.contains("from = \"a..b\""), "{err}");
        let err = rule(serde_json::json!({"from": "keys", "url": "ftp://keys.lab/{value}"})).unwrap_err();
        assert!(err.contains("http:// or https://"), "{err}");
        let err = rule(serde_json::json!({"from": "keys", "fact": ""})).unwrap_err();
        assert!(err.contains("fact"), "{err}");
        let err = rule(serde_json::json!({"from": "keys", "prefx": "lp:"})).unwrap_err();
        assert!(err.contains("prefx"), "{err}");
    }
}
