//! The one error type of this crate.

use std::fmt;

/// A position in the job text: 1-based line and 1-based column (in characters).
///
/// For YAML every node has one. For JSON input the positions are recovered on a best-effort
/// basis (see [`crate::JobSpec::from_json`]); syntax errors always carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// Line, starting at 1.
    pub line: usize,
    /// Column, starting at 1, counted in characters.
    pub column: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// What went wrong, coarsely, so that callers can map errors to their own codes
/// (the Testflinger server answers 400 for [`ErrorKind::InvalidJobId`] and 422 for the rest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The YAML text is malformed (message and position from the parser).
    YamlSyntax,
    /// The JSON text is malformed (message and position from the parser).
    JsonSyntax,
    /// The same key appears twice in one mapping.
    DuplicateKey,
    /// A key that the schema does not define.
    UnknownField,
    /// A required field is absent.
    MissingField,
    /// A value has the wrong type (including `null` where it is not allowed).
    InvalidType,
    /// A value has the right type but is not acceptable.
    InvalidValue,
    /// A duration could not be parsed.
    InvalidDuration,
    /// `job_id` is present but is not a UUID (Testflinger answers 400 "Invalid job_id specified").
    InvalidJobId,
    /// A phase declares a secret that the job does not define.
    UnknownSecret,
    /// The document exceeds a structural limit (nesting depth, alias expansion).
    Limit,
}

/// An error found while reading a job: names the field path (e.g. `provision_data.url`) and,
/// when known, the line and column where the offending node starts.
///
/// `Display` renders `<path> at line L, column C: <message>`; syntax errors render
/// `YAML syntax error at line L, column C: <parser message>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render(.kind, .path, .location, .message))]
pub struct Error {
    kind: ErrorKind,
    path: String,
    location: Option<Location>,
    message: String,
}

fn render(kind: &ErrorKind, path: &str, location: &Option<Location>, message: &str) -> String {
    let subject = match kind {
        ErrorKind::YamlSyntax => "YAML syntax error".to_owned(),
        ErrorKind::JsonSyntax => "JSON syntax error".to_owned(),
        _ if path.is_empty() => "job".to_owned(),
        _ => path.to_owned(),
    };
    match location {
        Some(loc) => format!("{subject} at {loc}: {message}"),
        None => format!("{subject}: {message}"),
    }
}

impl Error {
    pub(crate) fn new(
        kind: ErrorKind,
        path: impl Into<String>,
        location: Option<Location>,
        message: impl Into<String>,
    ) -> Self {
        Error { kind, path: path.into(), location, message: message.into() }
    }

    /// The kind of error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The dotted field path, with `[i]` for list items (e.g. `test_data.attachments[1].agent`).
    /// Empty for the document itself and for syntax errors. A path longer than 512 bytes (only
    /// a hostile document has one) is cut and ends in `…`; the location stays exact.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Where the offending node starts, when known.
    pub fn location(&self) -> Option<Location> {
        self.location
    }

    /// The message without path and position.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }
}
