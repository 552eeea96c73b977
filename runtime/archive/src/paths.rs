//! Pure, filesystem-free checks on member names and link targets.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

/// Longest single path component Linux accepts (`NAME_MAX`).
pub(crate) const NAME_MAX: usize = 255;

/// Longest member name we put in an error message before shortening it.
const DISPLAY_MAX: usize = 300;

/// What is wrong with a member name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NameProblem {
    Empty,
    Nul,
    Absolute,
    DotDot,
}

/// Splits a tar member name into its normal components.
///
/// Empty components (`a//b`, trailing `/`) and `.` are dropped. Absolute names, any `..`
/// component, NUL bytes and the empty name are refused. An empty result means the name
/// designates the archive root itself (e.g. `./`).
pub(crate) fn split_member_name(raw: &[u8]) -> Result<Vec<&[u8]>, NameProblem> {
    if raw.is_empty() {
        return Err(NameProblem::Empty);
    }
    if raw.contains(&0) {
        return Err(NameProblem::Nul);
    }
    if raw[0] == b'/' {
        return Err(NameProblem::Absolute);
    }
    let mut out = Vec::new();
    for component in raw.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(NameProblem::DotDot),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// What is wrong with a symlink target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LinkProblem {
    Empty,
    Nul,
    Absolute,
    /// `..` after a normal component (`a/../b`): which directory that reaches depends on
    /// whether `a` is itself a symlink, so it cannot be judged by looking at the name.
    DotDotAfterName,
    /// More leading `..` than there are directories between the link and the root.
    AboveRoot,
}

impl LinkProblem {
    /// Short reason, used when packing skips a link.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            LinkProblem::Empty => "symlink has an empty target",
            LinkProblem::Nul => "symlink target contains a NUL byte",
            LinkProblem::Absolute => "symlink target is absolute",
            LinkProblem::DotDotAfterName => "symlink target has `..` after a directory name and could be redirected",
            LinkProblem::AboveRoot => "symlink target climbs above the archive root",
        }
    }
}

/// Checks that a symlink placed `parent_depth` directories below the archive root, pointing
/// at `target`, can only ever resolve inside the root.
///
/// The rule is deliberately stricter than "lexically inside": a target must be relative, may
/// start with up to `parent_depth` `..` components, and after that may contain only normal
/// names (`.` is ignored). Since every symlink in the tree obeys this rule, and the directories
/// a link lives in are real directories (the unpacker never creates anything through a link),
/// following any chain of such links from inside the root can never leave it, whatever order
/// the links were created in. A lexical check alone would accept `a -> b/..` next to
/// `b -> ..`, which together escape.
pub(crate) fn check_symlink_target(parent_depth: usize, target: &[u8]) -> Result<(), LinkProblem> {
    if target.is_empty() {
        return Err(LinkProblem::Empty);
    }
    if target.contains(&0) {
        return Err(LinkProblem::Nul);
    }
    if target[0] == b'/' {
        return Err(LinkProblem::Absolute);
    }
    let mut ups = 0usize;
    let mut seen_name = false;
    for component in target.split(|b| *b == b'/') {
        match component {
            b"" | b"." => {}
            b".." if seen_name => return Err(LinkProblem::DotDotAfterName),
            b".." => ups += 1,
            _ => seen_name = true,
        }
    }
    if ups > parent_depth {
        return Err(LinkProblem::AboveRoot);
    }
    Ok(())
}

/// Joins normal components into a relative path.
pub(crate) fn join(components: &[&[u8]]) -> PathBuf {
    let mut path = PathBuf::new();
    for c in components {
        path.push(OsStr::from_bytes(c));
    }
    path
}

/// Renders raw name bytes for messages: lossy UTF-8, shortened if very long.
pub(crate) fn display(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    if text.chars().count() <= DISPLAY_MAX {
        return text.into_owned();
    }
    let head: String = text.chars().take(DISPLAY_MAX).collect();
    format!("{head}… ({} bytes)", raw.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names() {
        assert_eq!(split_member_name(b"./test//a/./b/").unwrap(), vec![&b"test"[..], b"a", b"b"]);
        assert!(split_member_name(b"./").unwrap().is_empty());
        assert_eq!(split_member_name(b""), Err(NameProblem::Empty));
        assert_eq!(split_member_name(b"/etc"), Err(NameProblem::Absolute));
        assert_eq!(split_member_name(b"a/../b"), Err(NameProblem::DotDot));
        assert_eq!(split_member_name(b"a\0b"), Err(NameProblem::Nul));
    }

    #[test]
    fn symlink_targets() {
        assert_eq!(check_symlink_target(0, b"b"), Ok(()));
        assert_eq!(check_symlink_target(1, b"../x/y"), Ok(()));
        assert_eq!(check_symlink_target(1, b"./../x"), Ok(()));
        assert_eq!(check_symlink_target(1, b".."), Ok(()));
        assert_eq!(check_symlink_target(1, b"../.."), Err(LinkProblem::AboveRoot));
        assert_eq!(check_symlink_target(5, b"y/.."), Err(LinkProblem::DotDotAfterName));
        assert_eq!(check_symlink_target(5, b"/tmp"), Err(LinkProblem::Absolute));
        assert_eq!(check_symlink_target(5, b""), Err(LinkProblem::Empty));
    }

    #[test]
    fn display_shortens() {
        let long = vec![b'a'; 1000];
        let shown = display(&long);
        assert!(shown.len() < 400);
        assert!(shown.ends_with("(1000 bytes)"));
    }
}
