//! Packing artifacts: round trip, link policy, determinism, header hygiene.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use common::Scratch;
use flate2::read::GzDecoder;
use phasebox_archive::{ARTIFACTS_DIR, Limits, pack_artifacts};
use tar::EntryType;

const FILE_MTIME: u64 = 1_600_000_000;

/// A job's artifacts directory with a bit of everything.
fn artifacts_tree() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("artifacts");
    fs::create_dir_all(src.join("logs/nested/deeper")).unwrap();
    fs::create_dir_all(src.join("empty")).unwrap();
    fs::write(src.join("summary.json"), br#"{"ok":true}"#).unwrap();
    fs::write(src.join("logs/dmesg.txt"), vec![b'k'; 100_000]).unwrap();
    fs::write(src.join("logs/nested/deeper/z.bin"), [0u8, 1, 2, 3]).unwrap();
    fs::write(src.join("run.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(src.join("run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o4775)).unwrap();
    let f = fs::File::options().write(true).open(src.join("summary.json")).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_secs(FILE_MTIME)).unwrap();
    // Links that stay inside.
    symlink("summary.json", src.join("latest")).unwrap();
    symlink("../dmesg.txt", src.join("logs/nested/dmesg")).unwrap();
    tmp
}

fn read_tree(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path.strip_prefix(root).unwrap().to_path_buf();
            let ft = entry.file_type().unwrap();
            if ft.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                out.insert(rel, format!("link:{}", target.display()));
            } else if ft.is_dir() {
                out.insert(rel, "dir".into());
                walk(root, &path, out);
            } else {
                let data = fs::read(&path).unwrap();
                out.insert(rel, format!("file:{}:{:x}", data.len(), checksum(&data)));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100000001b3))
}

fn no_phase_limits() -> Limits {
    Limits { allowed_phases: None, ..Limits::default() }
}

#[test]
fn round_trip_gives_the_same_tree_under_artifacts() {
    let tmp = artifacts_tree();
    let src = tmp.path().join("artifacts");
    let mut packed = Vec::new();
    let stats = pack_artifacts(&src, &mut packed).unwrap();
    assert_eq!(stats.files, 4);
    assert_eq!(stats.symlinks, 2);
    assert_eq!(stats.dirs, 4); // empty, logs, logs/nested, logs/nested/deeper
    assert_eq!(stats.bytes, 11 + 100_000 + 4 + 10);
    assert!(stats.skipped.is_empty(), "{:?}", stats.skipped);

    let s = Scratch::new();
    let unpacked = s.unpack(&packed, &no_phase_limits()).unwrap();
    assert_eq!(unpacked.phases.len(), 1);
    assert_eq!(unpacked.phases[0].name, ARTIFACTS_DIR);
    assert_eq!(unpacked.files, 4);
    assert_eq!(unpacked.symlinks, 2);
    assert_eq!(read_tree(&s.dest.join(ARTIFACTS_DIR)), read_tree(&src));
    assert_eq!(fs::read(s.dest.join("artifacts/logs/nested/dmesg")).unwrap(), vec![b'k'; 100_000]);
    let mtime = fs::metadata(s.dest.join("artifacts/summary.json")).unwrap().modified().unwrap();
    assert_eq!(mtime, UNIX_EPOCH + Duration::from_secs(FILE_MTIME));
}

#[test]
fn headers_are_sorted_anonymous_and_keep_mtime() {
    let tmp = artifacts_tree();
    let src = tmp.path().join("artifacts");
    let mut packed = Vec::new();
    pack_artifacts(&src, &mut packed).unwrap();

    let mut archive = tar::Archive::new(GzDecoder::new(&packed[..]));
    let mut names = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let name = entry.path().unwrap().into_owned();
        assert_eq!(h.uid().unwrap(), 0, "{name:?}");
        assert_eq!(h.gid().unwrap(), 0, "{name:?}");
        assert!(h.username_bytes().is_none_or(|u| u.is_empty()), "{name:?}");
        assert!(h.groupname_bytes().is_none_or(|g| g.is_empty()), "{name:?}");
        let mode = h.mode().unwrap();
        if h.entry_type() == EntryType::Symlink {
            assert_eq!(mode, 0o777, "{name:?}: links carry the conventional 0777");
        } else {
            assert_eq!(mode & 0o7022, 0, "{name:?} has mode {mode:o}");
        }
        if name == Path::new("artifacts/summary.json") {
            assert_eq!(h.mtime().unwrap(), FILE_MTIME);
            assert_eq!(mode, 0o644);
        }
        if name == Path::new("artifacts/run.sh") {
            assert_eq!(mode, 0o755, "owner-executable files keep x, lose setuid");
        }
        names.push((name, h.entry_type()));
    }
    let expected: Vec<(PathBuf, EntryType)> = [
        ("artifacts", EntryType::Directory),
        ("artifacts/empty", EntryType::Directory),
        ("artifacts/latest", EntryType::Symlink),
        ("artifacts/logs", EntryType::Directory),
        ("artifacts/logs/dmesg.txt", EntryType::Regular),
        ("artifacts/logs/nested", EntryType::Directory),
        ("artifacts/logs/nested/deeper", EntryType::Directory),
        ("artifacts/logs/nested/deeper/z.bin", EntryType::Regular),
        ("artifacts/logs/nested/dmesg", EntryType::Symlink),
        ("artifacts/run.sh", EntryType::Regular),
        ("artifacts/summary.json", EntryType::Regular),
    ]
    .into_iter()
    .map(|(n, t)| (PathBuf::from(n), t))
    .collect();
    assert_eq!(names, expected);
}

#[test]
fn packing_is_deterministic() {
    let tmp = artifacts_tree();
    let src = tmp.path().join("artifacts");
    let mut a = Vec::new();
    let mut b = Vec::new();
    pack_artifacts(&src, &mut a).unwrap();
    pack_artifacts(&src, &mut b).unwrap();
    assert_eq!(a, b);
}

#[test]
fn symlinks_out_and_special_files_are_skipped() {
    let tmp = artifacts_tree();
    let src = tmp.path().join("artifacts");
    let secret = tmp.path().join("secret.txt");
    fs::write(&secret, b"agent credentials").unwrap();
    symlink(&secret, src.join("abs-out")).unwrap();
    symlink("../secret.txt", src.join("rel-out")).unwrap();
    symlink("../../../secret.txt", src.join("logs/nested/deep-out")).unwrap();
    symlink("x/../../secret.txt", src.join("logs/dotdot-after-name")).unwrap();
    symlink("/etc", src.join("logs/etc")).unwrap();
    // A directory symlink to outside must not be descended into either.
    symlink(tmp.path(), src.join("parent-dir")).unwrap();
    let _socket = std::os::unix::net::UnixListener::bind(src.join("agent.sock")).unwrap();
    let have_fifo = std::process::Command::new("mkfifo").arg(src.join("pipe")).status().is_ok_and(|s| s.success());

    let mut packed = Vec::new();
    let stats = pack_artifacts(&src, &mut packed).unwrap();
    let mut skipped: Vec<_> = stats.skipped.iter().map(|s| s.path.to_str().unwrap().to_owned()).collect();
    skipped.sort();
    let mut expected = vec![
        "abs-out",
        "agent.sock",
        "logs/dotdot-after-name",
        "logs/etc",
        "logs/nested/deep-out",
        "parent-dir",
        "rel-out",
    ];
    if have_fifo {
        expected.push("pipe");
        expected.sort();
    }
    assert_eq!(skipped, expected);
    let abs = stats.skipped.iter().find(|s| s.path == Path::new("abs-out")).unwrap();
    assert!(abs.reason.contains("absolute"), "{}", abs.reason);
    assert_eq!(stats.symlinks, 2, "the inside links are still stored");

    // The secret appears nowhere in the archive.
    let mut raw = Vec::new();
    GzDecoder::new(&packed[..]).read_to_end(&mut raw).unwrap();
    assert!(!raw.windows(17).any(|w| w == b"agent credentials"));

    // And it unpacks cleanly with only the kept entries.
    let s = Scratch::new();
    let unpacked = s.unpack(&packed, &no_phase_limits()).unwrap();
    assert_eq!(unpacked.symlinks, 2);
    assert!(!s.dest.join("artifacts/abs-out").exists());
    assert!(!s.dest.join("artifacts/parent-dir").exists());
}

#[test]
fn long_names_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("artifacts");
    let deep = src.join("a".repeat(120)).join("b".repeat(120));
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("c".repeat(120)), b"long").unwrap();
    symlink("c".repeat(120), deep.join("l".repeat(120))).unwrap();
    let mut packed = Vec::new();
    pack_artifacts(&src, &mut packed).unwrap();
    let s = Scratch::new();
    s.unpack(&packed, &no_phase_limits()).unwrap();
    let out = s.dest.join("artifacts").join("a".repeat(120)).join("b".repeat(120));
    assert_eq!(fs::read(out.join("c".repeat(120))).unwrap(), b"long");
    assert_eq!(fs::read(out.join("l".repeat(120))).unwrap(), b"long");
}

#[test]
fn system_tar_reads_the_output() {
    if std::process::Command::new("tar").arg("--version").output().is_err() {
        eprintln!("no tar binary; skipping");
        return;
    }
    let tmp = artifacts_tree();
    let src = tmp.path().join("artifacts");
    let out = tmp.path().join("artifact.tar.gz");
    pack_artifacts(&src, fs::File::create(&out).unwrap()).unwrap();
    let listing = std::process::Command::new("tar").arg("-tzvf").arg(&out).output().unwrap();
    assert!(listing.status.success(), "{listing:?}");
    let text = String::from_utf8(listing.stdout).unwrap();
    assert!(text.contains("artifacts/logs/nested/deeper/z.bin"), "{text}");
    assert!(text.contains("artifacts/latest -> summary.json"), "{text}");
    for line in text.lines() {
        assert!(line.contains(" 0/0 "), "owner must be 0/0: {line}");
    }
}

#[test]
fn missing_source_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = pack_artifacts(&tmp.path().join("nope"), Vec::new()).unwrap_err();
    assert!(matches!(&err, phasebox_archive::ArchiveError::Io { path, .. } if path.ends_with("nope")), "{err:?}");
}

#[test]
fn a_source_directory_replaced_by_a_link_is_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let canary = tmp.path().join("canary");
    fs::create_dir(&canary).unwrap();
    fs::write(canary.join("host-secret.txt"), b"canary").unwrap();
    let job = tmp.path().join("job");
    fs::create_dir(&job).unwrap();
    symlink("../canary", job.join("artifacts")).unwrap();
    let mut out = Vec::new();
    let err = pack_artifacts(&job.join("artifacts"), &mut out).unwrap_err();
    assert!(matches!(&err, phasebox_archive::ArchiveError::Io { path, .. } if path.ends_with("artifacts")), "{err:?}");
    assert!(out.is_empty(), "nothing is written for a refused source");
    assert_eq!(fs::read(canary.join("host-secret.txt")).unwrap(), b"canary");
}

#[test]
fn secrets_are_masked_in_contents_names_link_targets_and_reasons() {
    use phasebox_redact::{Redactor, Secret, mask_token};
    const SECRET: &str = "artifact-secret-7c1e";
    let redactor = Redactor::new([("S", Secret::new(SECRET))]).unwrap();
    let token = mask_token(&Secret::new(SECRET));
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("artifacts");
    fs::create_dir_all(src.join("logs")).unwrap();
    fs::write(src.join(format!("{SECRET}.txt")), format!("token={SECRET}\n")).unwrap();
    // Split across the packer's 64 KiB reads.
    let mut big = vec![b'.'; 64 * 1024 - 7];
    big.extend_from_slice(SECRET.as_bytes());
    fs::write(src.join("logs/big.log"), &big).unwrap();
    symlink(format!("../{SECRET}.txt"), src.join("logs/link")).unwrap();
    symlink(format!("/etc/{SECRET}"), src.join("outside")).unwrap();

    let mut out = Vec::new();
    let stats = phasebox_archive::pack_artifacts_redacted(&src, &mut out, Some(&redactor)).unwrap();
    let mut seen = String::new();
    let mut archive = tar::Archive::new(GzDecoder::new(out.as_slice()));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        seen.push_str(&format!("{}\n", String::from_utf8_lossy(&entry.path_bytes())));
        if let Some(target) = entry.link_name_bytes() {
            seen.push_str(&format!("-> {}\n", String::from_utf8_lossy(&target)));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        assert_eq!(entry.header().size().unwrap(), data.len() as u64, "the header has the redacted size");
        seen.push_str(&String::from_utf8_lossy(&data));
        seen.push('\n');
    }
    let skipped = format!("{:?}", stats.skipped);
    for text in [&seen, &skipped] {
        assert!(!text.contains(SECRET) && !text.contains("artifact-secret"), "{text}");
    }
    assert!(seen.contains(&format!("artifacts/{token}.txt\n")), "{seen}");
    assert!(seen.contains(&format!("token={token}\n")), "{seen}");
    assert!(seen.contains(&format!("-> ../{token}.txt\n")), "{seen}");
    assert!(seen.contains(&format!(".{token}\n")), "{seen}");
    assert!(skipped.contains(&format!("/etc/{token}")), "{skipped}");

    // Without a redactor, nothing changes.
    let mut plain = Vec::new();
    phasebox_archive::pack_artifacts(&src, &mut plain).unwrap();
    let mut names = Vec::new();
    for entry in tar::Archive::new(GzDecoder::new(plain.as_slice())).entries().unwrap() {
        names.push(String::from_utf8_lossy(&entry.unwrap().path_bytes()).into_owned());
    }
    assert!(names.contains(&format!("artifacts/{SECRET}.txt")), "{names:?}");
}
