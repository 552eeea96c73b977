//! Fuzzing attachment unpacking with property tests. The attachments archive comes from
//! whoever submitted the job and is unpacked on the agent host with the agent's privileges.
//!
//! Inputs: arbitrary bytes (as the archive, and gzip-compressed); tar headers of arbitrary
//! bytes with a valid checksum; and generated archives of hostile members — names with `..`,
//! absolute and empty names, NUL bytes, over-long components, GNU long names and PAX `path`s;
//! symlinks and hard links aimed everywhere (above the root, absolute, at earlier members,
//! through earlier links); every entry type byte; modes with setuid and world-write; declared
//! sizes that lie; a missing end-of-archive marker; gzip streams cut short, followed by garbage,
//! corrupted or split into several members.
//!
//! Invariants, for every input, under small limits so that they are reached:
//! - no panic;
//! - nothing outside the destination changes: its parent holds only the destination (or
//!   nothing, after a refusal), and a directory beside it keeps exactly its one file;
//! - a refused archive leaves no destination and no staging directory;
//! - an accepted archive holds only directories (0755), regular files (at most 0644) and
//!   symlinks that resolve inside the destination; file contents stay within the limits.
//!
//! CI runs a bounded number of cases per property; `PROPTEST_CASES=N` sets the number for a
//! long run (SECURITY.md). Failing inputs are written to `fuzz.proptest-regressions` beside
//! this file and replayed first on every run: commit them.

mod common;

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::Scratch;
use flate2::Compression;
use flate2::write::GzEncoder;
use phasebox_archive::{Limits, Unpacked};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use tar::{EntryType, Header};

/// Cases per property when `PROPTEST_CASES` is not set: a few seconds per property in CI.
const CI_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = CI_CASES;
    }
    config
}

/// Small enough that generated archives reach every limit.
fn limits(testflinger_layout: bool) -> Limits {
    Limits {
        max_total_bytes: 16 * 1024,
        max_entry_bytes: 4 * 1024,
        max_entries: 24,
        max_depth: 6,
        max_path_bytes: 300,
        allowed_phases: if testflinger_layout { Limits::default().allowed_phases } else { None },
    }
}

/// Unpacks `archive` and checks every invariant (see the module docs).
fn check(archive: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let scratch = Scratch::new();
    let outside = scratch.parent.parent().expect("the scratch directory").join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("canary"), b"untouched").unwrap();

    let result = scratch.unpack(archive, limits);

    let beside: Vec<_> = fs::read_dir(&outside).unwrap().map(|e| e.unwrap().file_name()).collect();
    prop_assert_eq!(beside, vec![std::ffi::OsString::from("canary")]);
    prop_assert_eq!(fs::read(outside.join("canary")).unwrap(), b"untouched");
    match result {
        Err(_) => scratch.assert_clean(),
        Ok(unpacked) => {
            let in_parent: Vec<_> = fs::read_dir(&scratch.parent).unwrap().map(|e| e.unwrap().file_name()).collect();
            prop_assert_eq!(in_parent, vec![std::ffi::OsString::from("attachments")]);
            check_tree(&scratch.dest, &unpacked, limits)?;
        }
    }
    Ok(())
}

/// What an accepted archive left in `dest`.
fn check_tree(dest: &Path, unpacked: &Unpacked, limits: &Limits) -> Result<(), TestCaseError> {
    let root = fs::canonicalize(dest).unwrap();
    let mut content = 0;
    let mut pending = vec![dest.to_path_buf()];
    while let Some(dir) = pending.pop() {
        prop_assert_eq!(fs::symlink_metadata(&dir).unwrap().permissions().mode() & 0o7777, 0o755, "{:?}", dir);
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let kind = meta.file_type();
            if kind.is_dir() {
                pending.push(path);
            } else if kind.is_file() {
                let mode = meta.permissions().mode() & 0o7777;
                prop_assert_eq!(mode & !0o644, 0, "{:?} has mode {:o}", path, mode);
                content += meta.len();
            } else if kind.is_symlink() {
                // Wherever the link leads (if anywhere), it is inside the destination.
                if let Ok(target) = fs::canonicalize(&path) {
                    prop_assert!(target.starts_with(&root), "{:?} leads to {:?}", path, target);
                }
            } else {
                prop_assert!(false, "{:?} is a special file ({:?})", path, kind);
            }
        }
    }
    // Hard links count twice here, once in `unpacked`.
    prop_assert!(unpacked.bytes <= limits.max_total_bytes);
    prop_assert!(content <= limits.max_total_bytes * limits.max_entries);
    Ok(())
}

// ---------------------------------------------------------------- generated archives

/// Name components: mostly a few names that repeat, so that members collide with and pass
/// through each other; sometimes hostile ones.
fn component() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        30 => prop::sample::select(vec!["a", "b", "link", "f", "sub"]).prop_map(|c| c.as_bytes().to_vec()),
        3 => prop::sample::select(vec!["..", ".", ""]).prop_map(|c| c.as_bytes().to_vec()),
        1 => Just(vec![b'x'; 256]),
        1 => Just(b"nul\0byte".to_vec()),
        2 => prop::collection::vec(any::<u8>(), 1..8).prop_map(|c| c.into_iter().filter(|b| *b != b'/').collect()),
    ]
}

/// A member name: mostly under a phase directory; sometimes absolute, `./`-prefixed or with a
/// trailing `/`.
fn path() -> impl Strategy<Value = Vec<u8>> {
    let top = prop_oneof![
        12 => prop::sample::select(vec!["test", "provision", "firmware_update"]).prop_map(|c| c.as_bytes().to_vec()),
        1 => component(),
    ];
    (top, prop::collection::vec(component(), 0..4), 0u8..24).prop_map(|(top, rest, form)| {
        let mut name = [vec![top], rest].concat().join(&b'/');
        match form {
            0 => name.insert(0, b'/'),
            1 | 2 => name.push(b'/'),
            3 | 4 => name.splice(0..0, b"./".iter().copied()).for_each(drop),
            _ => {}
        }
        name
    })
}

/// A name below `test/`.
fn in_test() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(component(), 1..4).prop_map(|c| [b"test".to_vec(), c.join(&b'/')].join(&b'/'))
}

/// A link target: mostly some `..` then names (what the rules judge), sometimes anything.
fn link_target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => (0usize..4, prop::collection::vec(component(), 0..3))
            .prop_map(|(ups, names)| [vec![b"..".to_vec(); ups], names].concat().join(&b'/')),
        2 => path(),
        1 => Just(Vec::new()),
    ]
}

fn entry_type() -> impl Strategy<Value = u8> {
    prop_oneof![
        16 => prop::sample::select(b"0 5521".to_vec()).prop_map(|b| if b == b' ' { 0 } else { b }),
        2 => prop::sample::select(b"3467LKxgSVMND".to_vec()),
        1 => any::<u8>(),
    ]
}

/// How a member's name (and link target) is carried.
#[derive(Clone, Debug)]
enum NameForm {
    Header,
    GnuLong,
    Pax,
    /// A PAX record whose `size` disagrees with the header.
    PaxLyingSize,
}

#[derive(Clone, Debug)]
struct Member {
    name: Vec<u8>,
    kind: u8,
    link: Vec<u8>,
    form: NameForm,
    data: usize,
    /// `None`: the header declares the real size.
    declared: Option<u64>,
    mode: u32,
}

fn member() -> impl Strategy<Value = Member> {
    let form = prop_oneof![
        24 => Just(NameForm::Header),
        2 => Just(NameForm::GnuLong),
        2 => Just(NameForm::Pax),
        1 => Just(NameForm::PaxLyingSize),
    ];
    let data = prop_oneof![20 => 0usize..1500, 1 => 3000usize..6000];
    let declared = prop_oneof![
        20 => Just(None),
        1 => prop::sample::select(vec![0, 1, 511, 513, 5000, u64::MAX >> 1, u64::MAX]).prop_map(Some),
    ];
    (path(), entry_type(), link_target(), form, data, declared, any::<u32>()).prop_map(
        |(name, kind, link, form, data, declared, mode)| Member { name, kind, link, form, data, declared, mode },
    )
}

fn header(name: &[u8], kind: u8, size: u64, link: &[u8], mode: u32) -> Header {
    let mut header = Header::new_gnu();
    {
        let old = header.as_old_mut();
        let n = name.len().min(old.name.len());
        old.name[..n].copy_from_slice(&name[..n]);
        let l = link.len().min(old.linkname.len());
        old.linkname[..l].copy_from_slice(&link[..l]);
    }
    header.set_entry_type(EntryType::new(kind));
    header.set_size(size);
    header.set_mode(mode & 0o7777);
    header.set_mtime(common::MTIME);
    header.set_cksum();
    header
}

/// One PAX record, `"<len> key=value\n"` with `len` counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = body.len() + 2;
    while format!("{len} ").len() + body.len() != len {
        len += 1;
    }
    [format!("{len} ").into_bytes(), body].concat()
}

fn tar_of(members: &[Member], end_marker: bool) -> Vec<u8> {
    let mut out = tar::Builder::new(Vec::new());
    for m in members {
        let size = m.declared.unwrap_or(m.data as u64);
        match m.form {
            NameForm::Header => {}
            NameForm::GnuLong => {
                let long = [m.name.as_slice(), b"\0"].concat();
                let h = header(b"././@LongLink", b'L', long.len() as u64, b"", 0o644);
                out.append(&h, long.as_slice()).unwrap();
                if !m.link.is_empty() {
                    let long = [m.link.as_slice(), b"\0"].concat();
                    let h = header(b"././@LongLink", b'K', long.len() as u64, b"", 0o644);
                    out.append(&h, long.as_slice()).unwrap();
                }
            }
            NameForm::Pax | NameForm::PaxLyingSize => {
                let mut pax = [pax_record("path", &m.name), pax_record("linkpath", &m.link)].concat();
                if matches!(m.form, NameForm::PaxLyingSize) {
                    pax.extend(pax_record("size", (size ^ 1).to_string().as_bytes()));
                }
                let h = header(b"PaxHeader", b'x', pax.len() as u64, b"", 0o644);
                out.append(&h, pax.as_slice()).unwrap();
            }
        }
        let h = header(&m.name, m.kind, size, &m.link, m.mode);
        out.append(&h, std::io::repeat(b'd').take(m.data as u64)).unwrap();
    }
    if end_marker { out.into_inner().unwrap() } else { out.get_ref().clone() }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// What happens to the compressed stream.
#[derive(Clone, Debug)]
enum Wrapping {
    Gzip,
    Raw,
    Truncated(Index),
    Garbage(Vec<u8>),
    Flipped(Index, u8),
    /// The tar split across several gzip members.
    Members(Index),
}

fn wrapping() -> impl Strategy<Value = Wrapping> {
    prop_oneof![
        16 => Just(Wrapping::Gzip),
        1 => Just(Wrapping::Raw),
        1 => any::<Index>().prop_map(Wrapping::Truncated),
        1 => prop::collection::vec(any::<u8>(), 1..64).prop_map(Wrapping::Garbage),
        1 => (any::<Index>(), 1u8..=255).prop_map(|(i, x)| Wrapping::Flipped(i, x)),
        1 => any::<Index>().prop_map(Wrapping::Members),
    ]
}

fn wrap(tar: &[u8], how: &Wrapping) -> Vec<u8> {
    match how {
        Wrapping::Gzip => gzip(tar),
        Wrapping::Raw => tar.to_vec(),
        Wrapping::Truncated(at) => {
            let gz = gzip(tar);
            gz[..at.index(gz.len())].to_vec()
        }
        Wrapping::Garbage(tail) => [gzip(tar), tail.clone()].concat(),
        Wrapping::Flipped(at, x) => {
            let mut gz = gzip(tar);
            let i = at.index(gz.len());
            gz[i] ^= x;
            gz
        }
        Wrapping::Members(at) => {
            let (a, b) = tar.split_at(at.index(tar.len() + 1));
            [gzip(a), gzip(b)].concat()
        }
    }
}

/// A benign start, so that a refusal must also take back what was already written.
fn benign() -> Vec<Member> {
    let dir = |name: &str| Member {
        name: name.as_bytes().to_vec(),
        kind: b'5',
        link: Vec::new(),
        form: NameForm::Header,
        data: 0,
        declared: None,
        mode: 0o755,
    };
    vec![dir("test"), Member { name: b"test/ok".to_vec(), kind: b'0', data: 5, mode: 0o644, ..dir("") }]
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_unpack_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096), compress in any::<bool>()) {
        let archive = if compress { gzip(&bytes) } else { bytes };
        check(&archive, &limits(true))?;
    }

    #[test]
    fn fuzz_unpack_arbitrary_headers(
        headers in prop::collection::vec((prop::collection::vec(any::<u8>(), 512), 0usize..1024), 1..6),
        layout in any::<bool>(),
    ) {
        let mut tar = Vec::new();
        for (bytes, data) in &headers {
            let mut header = Header::new_old();
            header.as_mut_bytes().copy_from_slice(bytes);
            header.set_cksum();
            tar.extend_from_slice(header.as_bytes());
            tar.resize(tar.len() + data.div_ceil(512) * 512, b'd');
        }
        tar.resize(tar.len() + 1024, 0);
        check(&gzip(&tar), &limits(layout))?;
    }

    #[test]
    fn fuzz_unpack_hostile_members(
        members in prop::collection::vec(member(), 1..12),
        benign_first in any::<bool>(),
        end_marker in any::<bool>(),
        how in wrapping(),
        layout in any::<bool>(),
    ) {
        let all: Vec<Member> = if benign_first { benign().into_iter().chain(members).collect() } else { members };
        let archive = wrap(&tar_of(&all, end_marker), &how);
        check(&archive, &limits(layout))?;
    }

    #[test]
    fn fuzz_unpack_link_chains(
        links in prop::collection::vec((in_test(), link_target(), prop::bool::weighted(0.25)), 1..10),
        writes in prop::collection::vec(in_test(), 0..4),
    ) {
        // Symlinks and hard links among a few names, then files written through them: the
        // shapes that escape when a check looks at one link at a time.
        let mut members = benign();
        for (name, target, hard) in links {
            members.push(Member {
                name,
                kind: if hard { b'1' } else { b'2' },
                link: target,
                form: NameForm::Header,
                data: 0,
                declared: None,
                mode: 0o777,
            });
        }
        for name in writes {
            members.push(Member {
                name,
                kind: b'0',
                link: Vec::new(),
                form: NameForm::Header,
                data: 3,
                declared: None,
                mode: 0o4777,
            });
        }
        check(&gzip(&tar_of(&members, true)), &limits(true))?;
    }
}
