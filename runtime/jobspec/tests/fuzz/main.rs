//! Fuzzing the job parser with property tests. A job's text comes from anyone allowed to submit
//! (anonymous by default), straight off the network, so every input gets an answer — a job or
//! an error — without a panic and after work bounded by its size.
//!
//! Inputs: arbitrary text; generated YAML documents (job-shaped mappings, anchors and aliases,
//! merge keys, tags, every scalar style, block and flow collections, explicit and very long
//! keys, very wide sequences); generated JSON documents; nesting past the depth limit; and all
//! of these mangled at random (truncated, spliced, characters inserted and dropped).
//!
//! Invariants checked on every input, for `parse`, `from_yaml`, `from_json` and
//! `from_server_json`:
//! - no panic;
//! - bounded work: the bytes allocated while parsing grow at most linearly with the input
//!   (measured by a counting allocator, so the check is deterministic and fails on quadratic
//!   behaviour long before it would show as time). Documents with aliases are left out of this
//!   bound: alias expansion has its own limit (`yaml.rs`), and generated documents hold at most
//!   a few aliases so that expansion stays small;
//! - an accepted job survives the round trip through the JSON the server stores and hands to
//!   the agent (`to_json_string` then `from_json` and `from_server_json`).
//!
//! CI runs a bounded number of cases per property; `PROPTEST_CASES=N` sets the number for a
//! long run (SECURITY.md). Failing inputs are written to `main.proptest-regressions` beside
//! this file and replayed first on every run: commit them.

mod documents;
mod metered;
mod text;

use documents::{Style, json_document, long_paths, nested, yaml_document};
use phasebox_jobspec::{Duration, ErrorKind, JobSpec, duration, grants};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use text::{edits, mangle, render_json, render_yaml};

/// Allowed allocation per input byte, and a constant for what any parse allocates. A node costs
/// a few hundred bytes (tree node, JSON value, field path); quadratic work exceeds this at once.
const WORK_PER_BYTE: u64 = 4096;
const WORK_BASE: u64 = 4 << 20;

/// `ci_cases` cases (a few seconds in CI) unless `PROPTEST_CASES` sets the number.
fn config(ci_cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = ci_cases;
    }
    config
}

/// Parses `text` every way a job arrives and checks the invariants (see the module docs).
fn check(text: &str, work_bounded: bool) -> Result<(), TestCaseError> {
    type Reader = fn(&str) -> Result<JobSpec, phasebox_jobspec::Error>;
    let readers: [(&str, Reader); 4] = [
        ("parse", JobSpec::parse),
        ("from_yaml", JobSpec::from_yaml),
        ("from_json", JobSpec::from_json),
        ("from_server_json", JobSpec::from_server_json),
    ];
    for (name, read) in readers {
        let (parsed, allocated) = metered::allocated_by(|| read(text));
        let budget = WORK_PER_BYTE * text.len() as u64 + WORK_BASE;
        prop_assert!(
            !work_bounded || allocated <= budget,
            "{name} allocated {allocated} bytes for {} bytes of input (budget {budget})",
            text.len()
        );
        match parsed {
            Ok(job) => {
                let json = job.to_json_string();
                let again = JobSpec::from_server_json(&json);
                prop_assert_eq!(again.as_ref(), Ok(&job), "{} result does not survive the server: {}", name, json);
                if name != "from_server_json" {
                    prop_assert_eq!(JobSpec::from_json(&json), Ok(job), "{} result does not round-trip", name);
                }
            }
            Err(e) => {
                let shown = e.to_string();
                prop_assert!(shown.len() <= 4 * text.len() + 8192, "{name}: error of {} bytes", shown.len());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config(1024))]

    #[test]
    fn fuzz_jobspec_arbitrary_text(text in any::<String>()) {
        check(&text, true)?;
    }

    #[test]
    fn fuzz_jobspec_arbitrary_bytes_as_text(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        check(&String::from_utf8_lossy(&bytes), true)?;
    }

    #[test]
    fn fuzz_jobspec_field_parsers(text in prop_oneof![any::<String>(), "[0-9a-zA-Z:/.*\\[\\] -]{0,40}"]) {
        // The parsers behind single fields: none may panic, whatever the text.
        let _ = Duration::parse(&text);
        let _ = duration::parse_duration(&text);
        let _ = grants::Endpoint::parse(&text);
        let _ = grants::EndpointPattern::parse(&text);
        let _ = grants::Origin::parse(&text);
        let _ = grants::OriginPattern::parse(&text);
        let _ = grants::DnsName::parse(&text);
        let _ = grants::validate_guest_path(&text);
        let _ = grants::validate_source(&text);
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn fuzz_jobspec_generated_yaml(doc in yaml_document(), edits in edits()) {
        let text = mangle(render_yaml(&doc), &edits);
        check(&text, !doc.has_alias())?;
    }

    #[test]
    fn fuzz_jobspec_generated_json(doc in json_document(), edits in edits()) {
        let text = mangle(render_json(&doc), &edits);
        check(&text, true)?;
    }

    #[test]
    fn fuzz_jobspec_deep_nesting(depth in 0usize..400, flow in any::<bool>()) {
        let style = if flow { Style::Flow } else { Style::Block };
        let text = nested(depth, style);
        check(&text, true)?;
        if depth > 130 {
            // Refused by our depth limit, or in flow style sometimes first by the YAML
            // scanner's own, which reports a syntax error.
            let err = JobSpec::from_yaml(&text).expect_err("nesting past the limit is refused");
            let by_scanner = err.kind() == ErrorKind::YamlSyntax && err.message().contains("recursion limit");
            prop_assert!(err.kind() == ErrorKind::Limit || by_scanner, "{}", err);
        }
    }
}

proptest! {
    // Large documents: fewer cases.
    #![proptest_config(config(16))]

    #[test]
    fn fuzz_jobspec_long_paths(
        key_len in 1usize..16_384,
        depth in 1usize..6,
        width in 1usize..5_000,
        mapping in any::<bool>(),
    ) {
        let doc = long_paths(key_len, depth, width, mapping);
        check(&render_yaml(&doc), true)?;
        check(&render_json(&doc), true)?;
    }
}

// ---------------------------------------------------------------- found by the fuzzers

/// An unknown key of 100 000 characters: looking for a similarly spelled field compared it
/// with every known field, allocating a row per character each time (~18 KB of allocation per
/// byte of key: a 2 MiB request body cost some 36 GB of allocations and seconds of CPU).
#[test]
fn a_long_unknown_key_costs_work_linear_in_its_length() {
    let key = "k".repeat(100_000);
    for text in [
        format!("job_queue: q\nprovision_data:\n  ? {key}\n  : [0]\n"),
        format!("{{\"job_queue\": \"q\", \"{key}\": 1}}"),
    ] {
        check(&text, true).unwrap();
    }
}

/// A key of 15 000 characters above 10 000 list items: every item's field path repeated the
/// key, so reading cost key length × items (~10 KB of allocation per byte of input; a 2 MiB
/// request body some 250 GB of copying).
#[test]
fn long_field_paths_cost_work_linear_in_the_input() {
    for mapping in [false, true] {
        let doc = long_paths(15_000, 2, 10_000, mapping);
        check(&render_yaml(&doc), true).unwrap();
        check(&render_json(&doc), true).unwrap();
    }
}

/// A float in free-form phase data that `serde_json`'s default parser (fast, but not always
/// correctly rounded) read back one unit in the last place off: the job the server stored was
/// not the job it handed to the agent.
#[test]
fn floats_survive_the_round_trip_through_the_server() {
    check("job_queue: q\nfirmware_update_data: {x: 1.1572727476073337e-303}\n", true).unwrap();
    check(r#"{"job_queue": "q", "firmware_update_data": {"x": 1.1572727476073337e-303}}"#, true).unwrap();
}
