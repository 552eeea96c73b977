//! The error type shared by unpacking, packing and permission changes.

use std::io;
use std::path::PathBuf;

/// Why an archive was refused or an operation failed.
///
/// Every variant that concerns one archive member names it in `entry` (the member name as
/// stored in the archive, lossily decoded and shortened if absurdly long), so the message can
/// be shown to whoever built the archive. When [`crate::unpack_attachments`] returns any of
/// these, nothing has been left in the destination directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// A member name is absolute (starts with `/`).
    #[error(
        "attachment archive entry `{entry}` has an absolute path; archive paths must be relative \
         (`<phase>/<path>`, e.g. `test/run.sh`)"
    )]
    AbsolutePath {
        /// The offending member name.
        entry: String,
    },

    /// A member name contains a `..` component, so it could land outside the destination.
    #[error(
        "attachment archive entry `{entry}` contains a `..` component; paths that climb out of \
         their directory are refused"
    )]
    PathEscapes {
        /// The offending member name.
        entry: String,
    },

    /// A member name is unusable for another reason (empty, contains NUL, names the archive
    /// root as a non-directory, a top-level non-directory where phase directories are expected).
    #[error("attachment archive entry `{entry}` has an invalid path: {reason}")]
    InvalidPath {
        /// The offending member name.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A symlink or hard link points outside the archive root (absolute target, or too many
    /// `..`, or `..` after a directory name, which could be redirected by another symlink).
    #[error(
        "attachment archive entry `{entry}` is a link to `{target}`, which is absolute or \
         resolves outside the archive; only relative links that stay inside are allowed \
         (a symlink target may only start with `..` components, never contain them later)"
    )]
    LinkEscapes {
        /// The link member.
        entry: String,
        /// The link target as stored in the archive.
        target: String,
    },

    /// A hard link names something that is not a regular file extracted earlier from the same
    /// archive.
    #[error(
        "attachment archive entry `{entry}` is a hard link to `{target}`, which is not a regular \
         file extracted earlier from the same archive"
    )]
    HardLinkTarget {
        /// The link member.
        entry: String,
        /// The link target as stored in the archive.
        target: String,
    },

    /// A member would be created underneath a symlink extracted earlier, i.e. written through
    /// that link.
    #[error(
        "attachment archive entry `{entry}` would be written through the symlink `{link}` \
         extracted earlier; writing through links is refused"
    )]
    WritesThroughLink {
        /// The offending member name.
        entry: String,
        /// The symlink (relative to the archive root) on the member's path.
        link: String,
    },

    /// A member clashes with something extracted earlier (e.g. a file where a directory is, or
    /// a directory below a file).
    #[error("attachment archive entry `{entry}` conflicts with an earlier entry: {reason}")]
    PathConflict {
        /// The offending member name.
        entry: String,
        /// What it clashes with.
        reason: String,
    },

    /// A member is neither a regular file, a directory, nor an allowed link (devices, FIFOs,
    /// sockets, sparse files, unknown types).
    #[error(
        "attachment archive entry `{entry}` is a {kind}; only regular files, directories and \
         links are allowed"
    )]
    UnsupportedEntryType {
        /// The offending member name.
        entry: String,
        /// Human-readable kind, e.g. `character device`.
        kind: String,
    },

    /// A single member is larger than [`crate::Limits::max_entry_bytes`].
    #[error("attachment archive entry `{entry}` is larger than the per-file limit of {limit} bytes")]
    TooLarge {
        /// The offending member name.
        entry: String,
        /// The limit in force.
        limit: u64,
    },

    /// The members' contents together exceed [`crate::Limits::max_total_bytes`].
    #[error(
        "attachment archive contents exceed the total limit of {limit} bytes (reached while \
         extracting `{entry}`)"
    )]
    TotalTooLarge {
        /// The member being extracted when the limit was crossed.
        entry: String,
        /// The limit in force.
        limit: u64,
    },

    /// The decompressed stream as a whole (headers, padding, data of skipped members, trailing
    /// data after the end of the tar archive) is larger than the contents limit allows for.
    #[error(
        "attachment archive decompresses to more than {limit} bytes in total (tar headers, \
         padding and trailing data included); refusing a possible decompression bomb"
    )]
    StreamTooLarge {
        /// The limit in force on the decompressed stream.
        limit: u64,
    },

    /// The archive has more members than [`crate::Limits::max_entries`].
    #[error(
        "attachment archive has more than {limit} entries (directories implied by paths \
         included)"
    )]
    TooManyEntries {
        /// The limit in force.
        limit: u64,
    },

    /// A member is nested deeper than [`crate::Limits::max_depth`] path components.
    #[error("attachment archive entry `{entry}` is nested {depth} levels deep; the limit is {limit}")]
    TooDeep {
        /// The offending member name.
        entry: String,
        /// Number of path components it has.
        depth: usize,
        /// The limit in force.
        limit: usize,
    },

    /// A member name (or link target) is longer than [`crate::Limits::max_path_bytes`], or one
    /// of its components is longer than 255 bytes.
    #[error(
        "attachment archive entry `{entry}` has a path (or path component) of {len} bytes; the \
         limit is {limit}"
    )]
    PathTooLong {
        /// The offending member name.
        entry: String,
        /// Its length in bytes.
        len: usize,
        /// The limit in force.
        limit: usize,
    },

    /// A member sits under a top-level directory that is not an allowed phase.
    #[error(
        "attachment archive entry `{entry}` is under `{phase}/`, which is not an attachment \
         phase; allowed: {allowed}"
    )]
    UnknownPhase {
        /// The offending member name.
        entry: String,
        /// Its first path component.
        phase: String,
        /// The allowed phase directories, comma separated.
        allowed: String,
    },

    /// The destination directory already exists and is not empty.
    #[error(
        "destination `{}` already exists and is not an empty directory; refusing to merge \
         attachments into it",
        path.display()
    )]
    DestinationNotEmpty {
        /// The destination given by the caller.
        path: PathBuf,
    },

    /// A filesystem operation failed.
    #[error("I/O error on `{}`: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },

    /// Writing the packed archive to the caller's writer failed.
    #[error("writing the artifact archive failed: {source}")]
    Output {
        /// The underlying error.
        source: io::Error,
    },

    /// The input is not a valid gzip-compressed tar archive (bad gzip header or checksum,
    /// truncated stream, bad tar header checksum, inconsistent extension headers, ...).
    #[error("attachment archive is corrupt or not a tar.gz: {0}")]
    Corrupt(String),
}

impl ArchiveError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ArchiveError {
        let path = path.into();
        move |source| ArchiveError::Io { path, source }
    }
}
