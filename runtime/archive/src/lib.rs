//! Hardened handling of the two archives a phasebox job exchanges with a Testflinger server:
//! the **attachments** archive it downloads (`GET /v1/job/<id>/attachments`) and the
//! **artifacts** archive it uploads (`POST /v1/result/<id>/artifact`).
//!
//! * [`unpack_attachments`] extracts `attachments.tar.gz` into a destination directory,
//!   all-or-nothing, refusing anything dangerous.
//! * [`make_read_only`] (and its inverse [`make_writable`]) prepare an unpacked tree to be
//!   mounted read-only into a phase.
//! * [`pack_artifacts`] turns a job's `artifacts/` directory into the tar.gz Testflinger expects.
//!
//! # Wire layout
//!
//! Testflinger's CLI packs each attachment as `<phase>/<agent path>` (phases `provision`,
//! `firmware_update`, `test`), and the agent extracts the archive into `<rundir>/attachments/`,
//! giving `attachments/<phase>/...`. So callers pass `dest = <rundir>/attachments`, and the
//! archive's top-level directories are reported as phases in [`Unpacked::phases`]. By default
//! ([`Limits::allowed_phases`]) only Testflinger's three phase directories are accepted, as the
//! Python agent does. Artifacts go the other way: the archive's single top-level directory is
//! `artifacts/` ([`ARTIFACTS_DIR`]), as `shutil.make_archive(..., base_dir="artifacts")` makes.
//!
//! # Threat model
//!
//! The attachments archive comes from whoever submitted the job: anyone allowed to submit to
//! the queue, through a server we do not control. It is treated as hostile. The agent host
//! unpacks it with the agent's privileges (often root, next to credentials, device access and
//! the agent's own configuration), so the unpacker must guarantee that:
//!
//! 1. **Nothing is written outside `dest`.** Member names that are absolute or contain a `..`
//!    component are refused ([`ArchiveError::AbsolutePath`], [`ArchiveError::PathEscapes`]).
//!    Nothing is ever created through a symlink: the unpacker keeps an exact map of what it
//!    has created (in a fresh private staging directory), refuses a member whose path passes
//!    through a symlink it extracted ([`ArchiveError::WritesThroughLink`]), creates files with
//!    `O_CREAT|O_EXCL` and `O_NOFOLLOW`, and performs every filesystem call through a
//!    [`cap_std::fs::Dir`] handle on the staging directory, which cannot resolve a path outside
//!    it even if the map were wrong.
//! 2. **No link leads outside `dest`.** Symlinks must be relative and may only *start* with
//!    `..` components, no more of them than the link has directories above it inside the
//!    archive; `..` after a name (`a/../b`) is refused because where it leads depends on
//!    whether `a` is another link, which is how chains of individually harmless links escape.
//!    Under this rule no chain of links can leave the tree, whatever order they are created
//!    in ([`ArchiveError::LinkEscapes`]). Hard links may only point at a regular file already
//!    extracted from the same archive ([`ArchiveError::HardLinkTarget`]), so they can never
//!    alias a file outside, such as `/etc/shadow`.
//! 3. **No special files.** Character and block devices, FIFOs, sockets, sparse files and any
//!    other entry type are refused ([`ArchiveError::UnsupportedEntryType`]): a device node
//!    would hand a job raw access to hardware or memory, a FIFO could block whatever opens it.
//! 4. **No dangerous modes.** Files get at most `0644` and directories `0755`: no setuid,
//!    setgid or sticky bit, no group/other write, no execute bit on files. Ownership in the
//!    archive is ignored (files belong to the unpacking user). [`make_read_only`] then takes
//!    write permission away entirely.
//! 5. **Bounded resources.** A gzip stream can expand a thousandfold, and tar headers can lie.
//!    Content is counted as bytes actually read from the decompressor, per member
//!    ([`Limits::max_entry_bytes`], also checked against the declared size up front) and in
//!    total ([`Limits::max_total_bytes`]); the whole decompressed stream, including headers,
//!    padding, data of non-file members and anything after the end-of-archive marker, is
//!    bounded too ([`Limits::max_stream_bytes`], [`ArchiveError::StreamTooLarge`]), so a
//!    header declaring 10 bytes followed by gigabytes of zeros is caught. The number of
//!    members, nesting depth and path lengths are bounded ([`Limits::max_entries`],
//!    [`Limits::max_depth`], [`Limits::max_path_bytes`]); GNU long names and PAX headers are
//!    parsed here with their size checked *before* they are buffered.
//! 6. **All or nothing.** Extraction happens in a staging directory beside `dest`; it is
//!    renamed into place only after the last member passed, and removed on any error. A job
//!    whose archive is refused never sees a partial tree.
//! 7. **Unambiguous parsing.** Inconsistent extension headers (two long names for one member,
//!    a PAX `size` contradicting the header, a dangling extension header) are refused as
//!    [`ArchiveError::Corrupt`] rather than guessed at, and the gzip stream is read to its end
//!    so its checksum is verified.
//!
//! Out of scope: the *contents* of attachments (they are the job's own inputs and run with the
//! job's privileges, inside whatever sandbox the engine provides); another process of the same
//! user racing the unpacker inside its private staging directory; and the filesystem's own
//! limits (inodes, quotas).
//!
//! For artifacts the threat is reversed: the directory is filled by the job, which may have
//! planted symlinks to host files, FIFOs, or swapped files while the agent packs them.
//! [`pack_artifacts`] never follows a symlink, stores only links that stay inside, opens files
//! with `O_NOFOLLOW | O_NONBLOCK` relative to a directory handle, and records what it left out
//! in [`PackStats::skipped`]. The artifacts may also hold the job's secrets (a log a test
//! wrote, a file named after a token): [`pack_artifacts_redacted`] masks every secret form in
//! file contents, entry names and symlink targets, and in what it reports and logs.
#![deny(missing_docs)]

mod error;
mod pack;
mod paths;
mod perms;
mod unpack;

pub use error::ArchiveError;
pub use pack::{ARTIFACTS_DIR, PackStats, Skipped, pack_artifacts, pack_artifacts_redacted};
pub use perms::{make_read_only, make_writable};
pub use unpack::{Limits, PhaseDir, TESTFLINGER_PHASES, Unpacked, unpack_attachments};
