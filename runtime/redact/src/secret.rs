//! The [`Secret`] value wrapper.

use std::fmt;

use zeroize::Zeroize;

/// A secret value: a string that never prints itself and is wiped from memory
/// when dropped.
///
/// `Debug` and `Display` both print `Secret(**redacted**)`, so a `Secret` that
/// ends up in a log line, a panic message or an error chain does not leak. The
/// value is only reachable through [`Secret::expose`], which makes every place
/// that reads it easy to find.
///
/// On drop the backing buffer (its whole capacity) is overwritten with zeroes
/// through the [`zeroize`] crate. Clones are independent copies and are wiped
/// independently.
#[derive(Clone)]
pub struct Secret {
    value: String,
}

impl Secret {
    /// Wraps `value`. The string is moved in, not copied, when a `String` is
    /// given.
    pub fn new(value: impl Into<String>) -> Self {
        Self { value: value.into() }
    }

    /// The secret value itself. Use it only to hand the value to the thing that
    /// needs it; never format it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The length of the value in characters (Unicode scalar values).
    pub fn char_len(&self) -> usize {
        self.value.chars().count()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(**redacted**)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(**redacted**)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.value.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_do_not_leak() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "Secret(**redacted**)");
        assert_eq!(format!("{s}"), "Secret(**redacted**)");
        assert_eq!(format!("{s:#?}"), "Secret(**redacted**)");
        let wrapped = Some(("name", s.clone()));
        assert!(!format!("{wrapped:?}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-very-secret");
    }

    #[test]
    fn char_len_counts_characters() {
        assert_eq!(Secret::from("héllo!").char_len(), 6);
        assert_eq!(Secret::from(String::from("abc")).char_len(), 3);
    }
}
