//! Directories of the job a phase may have mounted.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::ParseError;

/// Read-only or read-write access to a directory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Read only (`ro`), the default.
    #[default]
    Ro,
    /// Read and write (`rw`).
    Rw,
}

/// One directory a job asks to have mounted: a subtree of its job directory, seen by the guest
/// at an absolute path. Both paths are normalised (see [`validate_guest_path`] and
/// [`validate_source`]); the sandbox checks the source again, against the disk, when it mounts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawFileRequest")]
pub struct FileRequest {
    /// Where the guest sees it, e.g. `/scratch`.
    pub path: String,
    /// The subtree of the job directory, e.g. `scratch` or `attachments/test`.
    pub source: String,
    /// Read-only or read-write.
    #[serde(default)]
    pub access: Access,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileRequest {
    path: String,
    source: String,
    #[serde(default)]
    access: Access,
}

impl TryFrom<RawFileRequest> for FileRequest {
    type Error = ParseError;
    fn try_from(raw: RawFileRequest) -> Result<Self, ParseError> {
        Self::new(&raw.path, &raw.source, raw.access)
    }
}

impl FileRequest {
    /// A request, its paths checked.
    pub fn new(path: &str, source: &str, access: Access) -> Result<Self, ParseError> {
        validate_guest_path(path)?;
        validate_source(source)?;
        Ok(Self { path: path.to_owned(), source: source.to_owned(), access })
    }
}

/// Which directories a manifest or policy allows: a guest path or `*`, a subtree of the job
/// directory (`None`: any), and the most access.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRule {
    /// The guest path, e.g. `/attachments`, or `*` for any.
    #[serde(default = "any_path")]
    pub path: String,
    /// The subtree the source must lie in, e.g. `attachments`; `None` for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// At most this access.
    #[serde(default)]
    pub access: Access,
}

fn any_path() -> String {
    "*".into()
}

impl FileRule {
    /// Every directory, read-write.
    pub fn any() -> Self {
        Self { path: any_path(), source: None, access: Access::Rw }
    }

    /// Whether this rule covers `ask`: the same guest path (or `*`), a source inside this
    /// rule's (or any), and no more access than this rule gives.
    pub fn covers(&self, ask: &FileRequest) -> bool {
        let path_ok = self.path == "*" || self.path == ask.path;
        let source_ok = self.source.as_deref().is_none_or(|s| Path::new(&ask.source).starts_with(s));
        path_ok && source_ok && self.access >= ask.access
    }
}

/// Checks a guest path: absolute, not `/` itself, no empty, `.` or `..` components, no NUL.
pub fn validate_guest_path(path: &str) -> Result<(), ParseError> {
    let rest = path.strip_prefix('/').ok_or_else(|| ParseError::new(path, "the guest path must be absolute"))?;
    if rest.is_empty() {
        return Err(ParseError::new(path, "the guest path cannot be `/` itself"));
    }
    check_components(path, rest)
}

/// Checks a job-directory subtree: relative, plain names only (no empty, `.` or `..`
/// components, so never the whole job directory), no NUL.
pub fn validate_source(source: &str) -> Result<(), ParseError> {
    if source.is_empty() {
        return Err(ParseError::new(source, "the source cannot be empty"));
    }
    if source.starts_with('/') {
        return Err(ParseError::new(source, "the source must be relative to the job directory, e.g. `scratch`"));
    }
    check_components(source, source)
}

fn check_components(whole: &str, rest: &str) -> Result<(), ParseError> {
    if whole.contains('\0') {
        return Err(ParseError::new(whole, "a path cannot contain NUL"));
    }
    // Split by hand: `Path::components` drops `.` and empty components, so `./` or `a/./b` would
    // pass for something they are not written as.
    if rest.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(ParseError::new(
            whole,
            "must be a normalised path of plain names (no empty, `.` or `..` components)",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert!(validate_guest_path("/scratch").is_ok() && validate_guest_path("/a/b").is_ok());
        for bad in ["scratch", "/", "/a/../b", "/a//b", "/a/", "/a\0"] {
            assert!(validate_guest_path(bad).is_err(), "{bad}");
        }
        assert!(validate_source("attachments/test").is_ok());
        for bad in ["", "/scratch", "../x", "a/./b", ".", "./", "a/..", "a//b", "a/b/"] {
            assert!(validate_source(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_cover_requests() {
        let ask = FileRequest::new("/attachments", "attachments/test", Access::Ro).unwrap();
        let rule = |path: &str, source: Option<&str>, access| FileRule {
            path: path.into(),
            source: source.map(Into::into),
            access,
        };
        assert!(FileRule::any().covers(&ask));
        assert!(rule("/attachments", Some("attachments"), Access::Ro).covers(&ask));
        assert!(!rule("/other", None, Access::Rw).covers(&ask));
        assert!(!rule("*", Some("artifacts"), Access::Rw).covers(&ask));
        assert!(!rule("*", Some("attach"), Access::Rw).covers(&ask), "a source prefix is whole names");
        let rw = FileRequest { access: Access::Rw, ..ask };
        assert!(!rule("*", None, Access::Ro).covers(&rw));
    }

    #[test]
    fn requests_are_checked_when_read() {
        let ok: FileRequest = serde_json::from_str(r#"{"path": "/s", "source": "scratch", "access": "rw"}"#).unwrap();
        assert_eq!(ok.access, Access::Rw);
        for bad in [r#"{"path": "s", "source": "scratch"}"#, r#"{"path": "/s", "source": "../x"}"#] {
            assert!(serde_json::from_str::<FileRequest>(bad).is_err(), "{bad}");
        }
    }
}
