//! Helpers to build hostile and benign archives byte by byte.
#![allow(dead_code)]

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use phasebox_archive::{ArchiveError, Limits, Unpacked, unpack_attachments};
use tar::{Builder, EntryType, Header};
use tempfile::TempDir;

pub const MTIME: u64 = 1_700_000_000;

/// A raw GNU header with the name and link name bytes set directly (the `tar` crate's
/// safe setters refuse `..` and absolute names, which is exactly what we need to write).
pub fn raw_header(name: &[u8], kind: EntryType, size: u64, link: Option<&[u8]>) -> Header {
    let mut header = Header::new_gnu();
    {
        let old = header.as_old_mut();
        assert!(name.len() <= old.name.len(), "use Ar::long_file for long names");
        old.name[..name.len()].copy_from_slice(name);
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link);
        }
    }
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(if kind == EntryType::Directory { 0o755 } else { 0o644 });
    header.set_mtime(MTIME);
    header.set_cksum();
    header
}

/// Archive under construction, gzip-compressed as it is written.
pub struct Ar {
    builder: Builder<GzEncoder<Vec<u8>>>,
}

impl Default for Ar {
    fn default() -> Self {
        Ar::new()
    }
}

impl Ar {
    pub fn new() -> Self {
        Ar { builder: Builder::new(GzEncoder::new(Vec::new(), Compression::fast())) }
    }

    /// Appends `header` verbatim followed by everything `data` yields (whatever the header
    /// claims), padded to a 512-byte block.
    pub fn raw(mut self, header: &Header, data: impl Read) -> Self {
        self.builder.append(header, data).unwrap();
        self
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        let header = raw_header(name.as_bytes(), EntryType::Regular, data.len() as u64, None);
        self.raw(&header, data)
    }

    pub fn file_mode(self, name: &str, data: &[u8], mode: u32) -> Self {
        let mut header = raw_header(name.as_bytes(), EntryType::Regular, data.len() as u64, None);
        header.set_mode(mode);
        header.set_cksum();
        self.raw(&header, data)
    }

    /// A file whose name may exceed 100 bytes (written with a GNU long-name header).
    pub fn long_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut header = Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(EntryType::Regular);
        self.builder.append_data(&mut header, name, data).unwrap();
        self
    }

    /// A regular file of `size` zero bytes, streamed (never held in memory).
    pub fn zeros(self, name: &str, size: u64) -> Self {
        let header = raw_header(name.as_bytes(), EntryType::Regular, size, None);
        self.raw(&header, io::repeat(0).take(size))
    }

    pub fn dir(self, name: &str) -> Self {
        let header = raw_header(name.as_bytes(), EntryType::Directory, 0, None);
        self.raw(&header, io::empty())
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        let header = raw_header(name.as_bytes(), EntryType::Symlink, 0, Some(target.as_bytes()));
        self.raw(&header, io::empty())
    }

    pub fn hardlink(self, name: &str, target: &str) -> Self {
        let header = raw_header(name.as_bytes(), EntryType::Link, 0, Some(target.as_bytes()));
        self.raw(&header, io::empty())
    }

    pub fn special(self, name: &str, kind: EntryType) -> Self {
        let mut header = raw_header(name.as_bytes(), kind, 0, None);
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
        header.set_cksum();
        self.raw(&header, io::empty())
    }

    /// Finishes the tar (two zero blocks) and the gzip stream.
    pub fn gz(self) -> Vec<u8> {
        self.builder.into_inner().unwrap().finish().unwrap()
    }
}

/// A private parent directory with `dest = <parent>/attachments` not yet created.
pub struct Scratch {
    _tmp: TempDir,
    pub parent: PathBuf,
    pub dest: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let parent = tmp.path().join("rundir");
        fs::create_dir(&parent).unwrap();
        let dest = parent.join("attachments");
        Scratch { _tmp: tmp, parent, dest }
    }

    pub fn unpack(&self, archive: &[u8], limits: &Limits) -> Result<Unpacked, ArchiveError> {
        unpack_attachments(archive, &self.dest, limits)
    }

    /// Nothing was extracted: no `dest`, and no staging directory left beside it.
    pub fn assert_clean(&self) {
        assert!(fs::symlink_metadata(&self.dest).is_err(), "dest must not exist after a refused archive");
        let leftovers: Vec<_> = fs::read_dir(&self.parent).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    }

    /// Unpacks `archive` expecting an error, checks nothing was left, returns the error.
    pub fn reject(&self, archive: &[u8], limits: &Limits) -> ArchiveError {
        let err = self.unpack(archive, limits).expect_err("archive must be refused");
        self.assert_clean();
        err
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}
