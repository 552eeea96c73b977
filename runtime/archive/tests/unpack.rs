//! Unpacking: every rejection leaves nothing behind; good archives land intact.

mod common;

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::{Ar, MTIME, Scratch, mode_of, raw_header};
use phasebox_archive::{ArchiveError, Limits, make_read_only, make_writable};
use tar::EntryType;

fn small_limits() -> Limits {
    Limits { max_total_bytes: 1 << 20, max_entry_bytes: 1 << 20, max_entries: 64, ..Limits::default() }
}

/// A benign file first, so a rejection can't leave it behind either.
fn with_benign() -> Ar {
    Ar::new().dir("test").file("test/ok.txt", b"fine\n")
}

// ---------------------------------------------------------------- path escapes

#[test]
fn rejects_dotdot_component() {
    let s = Scratch::new();
    let header = raw_header(b"test/../../etc/cron.d/evil", EntryType::Regular, 4, None);
    let archive = with_benign().raw(&header, &b"boom"[..]).gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(&err, ArchiveError::PathEscapes { entry } if entry == "test/../../etc/cron.d/evil"), "{err:?}");
    assert!(err.to_string().contains("test/../../etc/cron.d/evil"));
    assert!(!s.parent.parent().unwrap().join("etc").exists());
}

#[test]
fn rejects_absolute_path() {
    let s = Scratch::new();
    let evil = s.parent.join("escaped");
    let header = raw_header(evil.as_os_str().as_encoded_bytes(), EntryType::Regular, 4, None);
    let archive = with_benign().raw(&header, &b"boom"[..]).gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::AbsolutePath { .. }), "{err:?}");
    assert!(!evil.exists());
}

// ---------------------------------------------------------------- links

#[test]
fn rejects_symlink_with_absolute_target() {
    let s = Scratch::new();
    let archive = with_benign().symlink("test/passwd", "/etc/passwd").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(
        matches!(&err, ArchiveError::LinkEscapes { entry, target }
            if entry == "test/passwd" && target == "/etc/passwd"),
        "{err:?}"
    );
}

#[test]
fn rejects_symlink_with_relative_escape() {
    let s = Scratch::new();
    let archive = with_benign().symlink("test/passwd", "../../etc/passwd").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::LinkEscapes { .. }), "{err:?}");
}

#[test]
fn rejects_symlink_chain_that_escapes() {
    // `test/up -> ..` is fine on its own (it is the archive root), but `test/z -> up/..`
    // would then resolve to the root's parent: `..` after a name is refused.
    let s = Scratch::new();
    let archive = with_benign().symlink("test/up", "..").symlink("test/z", "up/..").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(&err, ArchiveError::LinkEscapes { entry, .. } if entry == "test/z"), "{err:?}");
}

#[test]
fn rejects_hardlink_with_absolute_target() {
    let s = Scratch::new();
    let archive = with_benign().hardlink("test/shadow", "/etc/shadow").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(
        matches!(&err, ArchiveError::LinkEscapes { entry, target }
            if entry == "test/shadow" && target == "/etc/shadow"),
        "{err:?}"
    );
}

#[test]
fn rejects_hardlink_with_relative_escape() {
    let s = Scratch::new();
    let archive = with_benign().hardlink("test/shadow", "../../etc/shadow").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::LinkEscapes { .. }), "{err:?}");
}

#[test]
fn rejects_hardlink_to_anything_but_an_earlier_regular_file() {
    // Not (yet) extracted.
    let s = Scratch::new();
    let archive = with_benign().hardlink("test/h", "test/later").file("test/later", b"x").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(&err, ArchiveError::HardLinkTarget { target, .. } if target == "test/later"), "{err:?}");

    // A symlink (hard-linking it could alias whatever it points at).
    let s = Scratch::new();
    let archive = with_benign().symlink("test/s", "ok.txt").hardlink("test/h", "test/s").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::HardLinkTarget { .. }), "{err:?}");

    // A directory.
    let s = Scratch::new();
    let archive = with_benign().hardlink("test/h", "test").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::HardLinkTarget { .. }), "{err:?}");

    // A path through a symlink to a real file.
    let s = Scratch::new();
    let archive = with_benign().symlink("test/d", ".").hardlink("test/h", "test/d/ok.txt").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::HardLinkTarget { .. }), "{err:?}");
}

// ---------------------------------------------------------------- special files

fn assert_unsupported(kind: EntryType, expected: &str) {
    let s = Scratch::new();
    let archive = with_benign().special("test/dev", kind).gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(
        matches!(&err, ArchiveError::UnsupportedEntryType { entry, kind }
            if entry == "test/dev" && kind == expected),
        "{err:?}"
    );
}

#[test]
fn rejects_character_device() {
    assert_unsupported(EntryType::Char, "character device");
}

#[test]
fn rejects_block_device() {
    assert_unsupported(EntryType::Block, "block device");
}

#[test]
fn rejects_fifo() {
    assert_unsupported(EntryType::Fifo, "FIFO (named pipe)");
}

#[test]
fn rejects_unknown_entry_type() {
    // GNU volume header; tar has no socket type, anything unknown goes the same way.
    assert_unsupported(EntryType::new(b'V'), "tar entry of unsupported type `V`");
}

// ---------------------------------------------------------------- size bombs

#[test]
fn rejects_header_lying_about_size_followed_by_zeros() {
    // The header says 10 bytes, then 64 MiB of zeros follow. The tar parser sees the zeros
    // as the end-of-archive marker; the stream must still be drained (to check the gzip
    // trailer) and that is where the bound on the decompressed stream bites.
    let s = Scratch::new();
    let header = raw_header(b"test/small", EntryType::Regular, 10, None);
    let archive = with_benign().raw(&header, io::repeat(0).take_bytes(64 << 20)).gz();
    assert!(archive.len() < 1 << 20, "test archive should stay small");
    let limits = small_limits();
    let err = s.reject(&archive, &limits);
    assert!(matches!(err, ArchiveError::StreamTooLarge { limit } if limit == limits.max_stream_bytes()), "{err:?}");
}

#[test]
fn rejects_header_lying_about_size_followed_by_data() {
    // Same lie, but the surplus is non-zero: it is then parsed as a header and fails.
    let s = Scratch::new();
    let header = raw_header(b"test/small", EntryType::Regular, 10, None);
    let archive = with_benign().raw(&header, io::repeat(b'A').take_bytes(4 << 20)).gz();
    let err = s.reject(&archive, &small_limits());
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");
}

#[test]
fn rejects_entry_over_the_per_file_limit() {
    let s = Scratch::new();
    let archive = with_benign().zeros("test/big.img", 2 << 20).gz();
    let err = s.reject(&archive, &small_limits());
    assert!(
        matches!(&err, ArchiveError::TooLarge { entry, limit }
            if entry == "test/big.img" && *limit == 1 << 20),
        "{err:?}"
    );
}

#[test]
fn rejects_header_declaring_a_huge_size_without_reading_it() {
    let s = Scratch::new();
    let header = raw_header(b"test/huge", EntryType::Regular, 100 << 30, None);
    let archive = with_benign().raw(&header, io::empty()).gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::TooLarge { .. }), "{err:?}");
}

#[test]
fn rejects_entries_over_the_total_limit() {
    let s = Scratch::new();
    let archive = with_benign().zeros("test/a", 600 << 10).zeros("test/b", 600 << 10).gz();
    let err = s.reject(&archive, &small_limits());
    assert!(matches!(&err, ArchiveError::TotalTooLarge { entry, .. } if entry == "test/b"), "{err:?}");
}

#[test]
fn rejects_entry_count_bomb() {
    let s = Scratch::new();
    let mut ar = Ar::new().dir("test");
    for i in 0..200 {
        ar = ar.file(&format!("test/f{i}"), b"");
    }
    let archive = ar.gz();
    let err = s.reject(&archive, &small_limits());
    assert!(matches!(err, ArchiveError::TooManyEntries { limit: 64 }), "{err:?}");

    // Directories implied by paths count too: one member, 20 new directories.
    let s = Scratch::new();
    let archive = Ar::new().file(&format!("test/{}f", "d/".repeat(19)), b"x").gz();
    let limits = Limits { max_entries: 10, ..Limits::default() };
    let err = s.reject(&archive, &limits);
    assert!(matches!(err, ArchiveError::TooManyEntries { limit: 10 }), "{err:?}");
}

#[test]
fn rejects_too_deep_nesting() {
    let s = Scratch::new();
    let name = format!("test/{}f", "d/".repeat(40));
    let archive = with_benign().file(&name, b"deep").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::TooDeep { depth: 42, limit: 32, .. }), "{err:?}");
}

#[test]
fn rejects_over_long_path() {
    let s = Scratch::new();
    let name = format!("test/{}", "x".repeat(300));
    let archive = with_benign().long_file(&name, b"long").gz();
    let err = s.reject(&archive, &Limits::default());
    // 300 > NAME_MAX for one component.
    assert!(matches!(err, ArchiveError::PathTooLong { len: 300, limit: 255, .. }), "{err:?}");

    let s = Scratch::new();
    let name = format!("test/{}", "abcdefghi/".repeat(20));
    let archive = with_benign().long_file(&format!("{name}f"), b"long").gz();
    let limits = Limits { max_path_bytes: 128, ..Limits::default() };
    let err = s.reject(&archive, &limits);
    assert!(matches!(err, ArchiveError::PathTooLong { limit: 128, .. }), "{err:?}");
}

// ---------------------------------------------------------------- writing through links

#[test]
fn symlink_to_outside_is_refused_before_anything_is_written_through_it() {
    let s = Scratch::new();
    let outside = s.parent.parent().unwrap().join("x");
    let target = outside.to_str().unwrap();
    let archive = with_benign().symlink("test/a", target).file("test/a/payload", b"evil").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::LinkEscapes { .. }), "{err:?}");
    assert!(!outside.exists());
}

#[test]
fn inner_symlink_cannot_be_used_to_climb_out() {
    let s = Scratch::new();
    let header = raw_header(b"test/a/../../x", EntryType::Regular, 4, None);
    let archive = with_benign().dir("test/b").symlink("test/a", "b").raw(&header, &b"evil"[..]).gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::PathEscapes { .. }), "{err:?}");
    assert!(!s.parent.join("x").exists());
}

#[test]
fn never_writes_through_an_inner_symlink() {
    // Even a link that stays inside is never written through.
    let s = Scratch::new();
    let archive = with_benign().dir("test/b").symlink("test/a", "b").file("test/a/file", b"through the link").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(
        matches!(&err, ArchiveError::WritesThroughLink { entry, link }
            if entry == "test/a/file" && link == "test/a"),
        "{err:?}"
    );

    // A link to the archive root, then a member that would go through it into another
    // phase's tree.
    let s = Scratch::new();
    let archive = with_benign().symlink("test/root", "..").file("test/root/provision/x", b"x").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::WritesThroughLink { .. }), "{err:?}");
}

#[test]
fn never_replaces_a_symlink() {
    let s = Scratch::new();
    let archive = with_benign().symlink("test/a", "ok.txt").file("test/a", b"overwrite the target?").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::PathConflict { .. }), "{err:?}");
}

#[test]
fn rejects_file_where_a_directory_is_and_below_a_file() {
    let s = Scratch::new();
    let archive = with_benign().dir("test/d").file("test/d", b"x").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::PathConflict { .. }), "{err:?}");

    let s = Scratch::new();
    let archive = with_benign().file("test/ok.txt/below", b"x").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::PathConflict { .. }), "{err:?}");
}

// ---------------------------------------------------------------- layout policy

#[test]
fn rejects_members_outside_testflinger_phases() {
    let s = Scratch::new();
    let archive = with_benign().file("secrets/x", b"x").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(&err, ArchiveError::UnknownPhase { phase, .. } if phase == "secrets"), "{err:?}");
    assert!(err.to_string().contains("provision, firmware_update, test"));

    let s = Scratch::new();
    let archive = with_benign().file("test2", b"x").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::UnknownPhase { .. }), "{err:?}");

    // A phase name used for a file rather than a directory.
    let s = Scratch::new();
    let archive = Ar::new().file("test", b"top-level file").gz();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::InvalidPath { .. }), "{err:?}");
}

#[test]
fn any_layout_when_phases_are_not_restricted() {
    let s = Scratch::new();
    let archive = Ar::new().file("README", b"top").file("anything/x", b"x").gz();
    let limits = Limits { allowed_phases: None, ..Limits::default() };
    let unpacked = s.unpack(&archive, &limits).unwrap();
    assert_eq!(unpacked.files, 2);
    assert_eq!(unpacked.phases.len(), 1);
    assert_eq!(unpacked.phases[0].name, "anything");
    assert_eq!(fs::read(s.dest.join("README")).unwrap(), b"top");
}

// ---------------------------------------------------------------- corrupt input

#[test]
fn corrupt_gzip_is_reported_as_corrupt() {
    let s = Scratch::new();
    let err = s.reject(b"this is not gzip at all", &Limits::default());
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");

    // A valid archive cut short.
    let s = Scratch::new();
    let full = with_benign().file("test/more", &[7u8; 4096]).gz();
    let err = s.reject(&full[..full.len() - 20], &Limits::default());
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");

    // A flipped byte in the compressed data (or the CRC) is caught.
    let s = Scratch::new();
    let mut bad = full.clone();
    let at = bad.len() - 6;
    bad[at] ^= 0xff;
    let err = s.reject(&bad, &Limits::default());
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");

    // Nothing at all.
    let s = Scratch::new();
    let err = s.reject(b"", &Limits::default());
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");
}

#[test]
fn gzip_of_something_that_is_not_tar_is_corrupt() {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&[b'x'; 2048]).unwrap();
    let archive = enc.finish().unwrap();
    let s = Scratch::new();
    let err = s.reject(&archive, &Limits::default());
    assert!(matches!(err, ArchiveError::Corrupt(_)), "{err:?}");
}

// ---------------------------------------------------------------- destination

#[test]
fn refuses_a_non_empty_destination_and_leaves_it_alone() {
    let s = Scratch::new();
    fs::create_dir(&s.dest).unwrap();
    fs::write(s.dest.join("keep"), b"mine").unwrap();
    let err = s.unpack(&with_benign().gz(), &Limits::default()).unwrap_err();
    assert!(matches!(err, ArchiveError::DestinationNotEmpty { .. }), "{err:?}");
    assert_eq!(fs::read(s.dest.join("keep")).unwrap(), b"mine");
    assert_eq!(fs::read_dir(&s.dest).unwrap().count(), 1);
    assert_eq!(fs::read_dir(&s.parent).unwrap().count(), 1);
}

#[test]
fn accepts_an_existing_empty_destination() {
    let s = Scratch::new();
    fs::create_dir(&s.dest).unwrap();
    let unpacked = s.unpack(&with_benign().gz(), &Limits::default()).unwrap();
    assert_eq!(unpacked.files, 1);
    assert_eq!(fs::read(s.dest.join("test/ok.txt")).unwrap(), b"fine\n");
}

// ---------------------------------------------------------------- good archives

#[test]
fn good_archive_unpacks_with_phases_reported() {
    let s = Scratch::new();
    let archive = Ar::new()
        .dir("./")
        .dir("./provision/")
        .dir("provision/img")
        .file("provision/img/disk.img", &[0xAB; 3000])
        // No directory entries for these: parents are implied.
        .file_mode("test/scripts/run.sh", b"#!/bin/sh\necho hi\n", 0o6777)
        .file_mode("test/data/nested/deep/file.txt", b"nested\n", 0o600)
        .symlink("test/run", "scripts/run.sh")
        .symlink("test/scripts/up", "../data")
        .symlink("test/img", "../provision/img/disk.img")
        .hardlink("test/hard.txt", "test/data/nested/deep/file.txt")
        // A duplicate: the later copy wins, as with tar.
        .file("test/dup", b"first")
        .file("test/dup", b"second")
        .file("firmware_update/fw.bin", b"fw")
        .gz();
    let unpacked = s.unpack(&archive, &Limits::default()).unwrap();

    let names: Vec<_> = unpacked.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["firmware_update", "provision", "test"]);
    let test = unpacked.phase("test").unwrap();
    assert_eq!(test.path, s.dest.join("test"));
    assert_eq!(test.files, 4); // run.sh, file.txt, hard.txt, dup
    assert_eq!(test.bytes, 18 + 7 + 6);
    assert_eq!(unpacked.phase("provision").unwrap().bytes, 3000);
    assert_eq!(unpacked.files, 6);
    assert_eq!(unpacked.bytes, 3000 + 18 + 7 + 6 + 2);
    assert_eq!(unpacked.symlinks, 3);
    assert_eq!(unpacked.root, s.dest);

    let d = &s.dest;
    assert_eq!(fs::read(d.join("provision/img/disk.img")).unwrap(), vec![0xAB; 3000]);
    assert_eq!(fs::read(d.join("test/data/nested/deep/file.txt")).unwrap(), b"nested\n");
    assert_eq!(fs::read(d.join("test/dup")).unwrap(), b"second");
    assert_eq!(fs::read_link(d.join("test/run")).unwrap(), Path::new("scripts/run.sh"));
    assert_eq!(fs::read(d.join("test/run")).unwrap(), b"#!/bin/sh\necho hi\n");
    assert_eq!(fs::read(d.join("test/img")).unwrap(), vec![0xAB; 3000]);
    assert_eq!(fs::read(d.join("test/scripts/up/nested/deep/file.txt")).unwrap(), b"nested\n");
    let a = fs::metadata(d.join("test/hard.txt")).unwrap();
    let b = fs::metadata(d.join("test/data/nested/deep/file.txt")).unwrap();
    assert_eq!(a.ino(), b.ino());

    // Modes: setuid/setgid/exec/group-other-write stripped, owner rw kept; dirs 0755.
    assert_eq!(mode_of(&d.join("test/scripts/run.sh")), 0o644);
    assert_eq!(mode_of(&d.join("test/data/nested/deep/file.txt")), 0o600);
    assert_eq!(mode_of(d), 0o755);
    assert_eq!(mode_of(&d.join("test/data/nested")), 0o755);
    assert_eq!(mode_of(&d.join("provision")), 0o755);
    assert_eq!(fs::metadata(d.join("provision/img/disk.img")).unwrap().mtime(), MTIME as i64);
    // No staging directory left beside it.
    assert_eq!(fs::read_dir(&s.parent).unwrap().count(), 1);
}

#[test]
fn read_only_and_back() {
    let s = Scratch::new();
    let archive = Ar::new().file("test/a/b/c.txt", b"c").file("test/x", b"x").symlink("test/l", "x").gz();
    s.unpack(&archive, &Limits::default()).unwrap();
    make_read_only(&s.dest).unwrap();
    let d = &s.dest;
    assert_eq!(mode_of(d), 0o555);
    assert_eq!(mode_of(&d.join("test")), 0o555);
    assert_eq!(mode_of(&d.join("test/a/b")), 0o555);
    assert_eq!(mode_of(&d.join("test/a/b/c.txt")), 0o444);
    assert_eq!(mode_of(&d.join("test/x")), 0o444);
    assert!(fs::symlink_metadata(d.join("test/l")).unwrap().is_symlink());

    make_writable(&s.dest).unwrap();
    assert_eq!(mode_of(d), 0o755);
    assert_eq!(mode_of(&d.join("test/a/b/c.txt")), 0o644);

    // A symlink as the root is refused rather than followed.
    let link = s.parent.join("link");
    std::os::unix::fs::symlink(&s.dest, &link).unwrap();
    assert!(matches!(make_read_only(&link), Err(ArchiveError::Io { .. })));
    assert_eq!(mode_of(d), 0o755);
}

#[test]
fn pax_and_gnu_long_names_are_understood() {
    let long = format!("test/{}/file.txt", "sub".repeat(50));
    // GNU long name via the tar crate's builder.
    let s = Scratch::new();
    let archive = Ar::new().long_file(&long, b"gnu").gz();
    s.unpack(&archive, &Limits::default()).unwrap();
    assert_eq!(fs::read(s.dest.join(&long)).unwrap(), b"gnu");

    // PAX `path` overrides the header name, and is checked like any name.
    let pax_archive = |path: &str| {
        let record = format!("path={path}\n");
        let mut len = record.len() + 3;
        if format!("{len} {record}").len() != len {
            len += 1;
        }
        let pax = format!("{len} {record}");
        let mut pax_header = raw_header(b"PaxHeader", EntryType::XHeader, pax.len() as u64, None);
        pax_header.set_cksum();
        let member = raw_header(b"test/short", EntryType::Regular, 3, None);
        Ar::new().raw(&pax_header, pax.as_bytes()).raw(&member, &b"pax"[..]).gz()
    };
    let s = Scratch::new();
    s.unpack(&pax_archive("test/from-pax"), &Limits::default()).unwrap();
    assert_eq!(fs::read(s.dest.join("test/from-pax")).unwrap(), b"pax");
    assert!(!s.dest.join("test/short").exists());

    let s = Scratch::new();
    let err = s.reject(&pax_archive("test/../../evil"), &Limits::default());
    assert!(matches!(err, ArchiveError::PathEscapes { .. }), "{err:?}");
}

/// Archives made by GNU tar (`./`-prefixed names, directory entries, record padding) unpack.
#[test]
fn archive_from_system_tar_unpacks() {
    let Ok(status) = std::process::Command::new("tar").arg("--version").output() else {
        eprintln!("no tar binary; skipping");
        return;
    };
    assert!(status.status.success());
    let src = tempfile::tempdir().unwrap();
    fs::create_dir_all(src.path().join("test/scripts")).unwrap();
    fs::create_dir_all(src.path().join("provision")).unwrap();
    fs::write(src.path().join("test/scripts/run.sh"), b"#!/bin/sh\n").unwrap();
    fs::write(src.path().join("provision/image.url"), b"http://x\n").unwrap();
    std::os::unix::fs::symlink("scripts/run.sh", src.path().join("test/run")).unwrap();
    let out = src.path().join("a.tar.gz");
    let ok = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&out)
        .arg("-C")
        .arg(src.path())
        .args(["./test", "./provision"])
        .status()
        .unwrap();
    assert!(ok.success());
    let s = Scratch::new();
    let unpacked = s.unpack(&fs::read(&out).unwrap(), &Limits::default()).unwrap();
    assert_eq!(unpacked.files, 2);
    assert_eq!(unpacked.symlinks, 1);
    assert_eq!(fs::read(s.dest.join("test/run")).unwrap(), b"#!/bin/sh\n");
}

trait TakeBytes: io::Read + Sized {
    fn take_bytes(self, n: u64) -> io::Take<Self> {
        io::Read::take(self, n)
    }
}
impl<R: io::Read> TakeBytes for R {}
