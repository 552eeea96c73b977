//! A hostile plugin that tries every way around the redactor (`probe`'s `leak-secret`: the
//! secret split across stdout, stderr and a log line, with escapes and invisible characters
//! inside it, in an artifact's name, content and symlink target). No output of the job may
//! hold any form of it.

use std::io::Read;

use phasebox_job::*;
use phasebox_redact::{Secret, encoded_forms, mask_token};

use crate::common::*;

/// No `/` (it names a file), long enough to split in two halves of 6+ characters.
const SECRET: &str = "Sp1it-s3cret-Value+42";

fn leak_job() -> String {
    "job_queue: q\ntest_data:\n  test_cmds: 'true'\n  secrets: {TOKEN: lab/token}\n\
     allocate_data:\n  attack: leak-secret\n  name: TOKEN\n  artifacts: /artifacts\n  \
     phasebox: {plugin: probe, secrets: [TOKEN]}\n"
        .to_owned()
}

/// Names, link targets and contents of every member of a `.tar.gz`, as one text.
fn archive_text(bytes: &[u8]) -> String {
    let mut text = String::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        text.push_str(&String::from_utf8_lossy(&entry.path_bytes()));
        text.push('\n');
        if let Some(target) = entry.link_name_bytes() {
            text.push_str(&String::from_utf8_lossy(&target));
            text.push('\n');
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        text.push_str(&String::from_utf8_lossy(&data));
        text.push('\n');
    }
    text
}

#[tokio::test]
async fn a_secret_split_across_streams_escaped_or_in_artifacts_never_leaves_the_engine() {
    let screen = Buffer::default();
    let mut terminal =
        TerminalRenderer::new(screen.clone(), RenderOptions { color: false, spinner: false, verbose: true });
    let mut jsonl = JsonlSink::new(Vec::new());
    let mut sinks = Tee(&mut terminal, &mut jsonl);
    let inputs = JobInputs { secrets: [("TOKEN".to_owned(), Secret::new(SECRET))].into(), attachments: None };
    let ran = run_with(&leak_job(), &probe_runner(), inputs, &mut sinks, CancellationToken::new()).await.unwrap();
    terminal.finish();
    let live_jsonl = String::from_utf8(jsonl.finish().unwrap()).unwrap();
    let o = &ran.outcome;
    let allocate = o.phase(Phase::Allocate);
    assert_eq!(allocate.status, Some(0), "{allocate:?}");
    assert!(allocate.reason.contains("in 7 ways"), "the plugin did all it tried: {allocate:?}");

    let out = ran.dir.path().join("out");
    let written = write_outputs(o, &out).unwrap();
    let archive = std::fs::read(written.artifacts.as_ref().expect("artifacts packed")).unwrap();
    let texts = [
        ("live terminal", screen.text()),
        ("live events", live_jsonl),
        ("events.jsonl", std::fs::read_to_string(&written.events).unwrap()),
        ("results.json", std::fs::read_to_string(&written.results).unwrap()),
        ("junit.xml", std::fs::read_to_string(&written.junit).unwrap()),
        ("artifacts.tar.gz", archive_text(&archive)),
    ];
    let secret = Secret::new(SECRET);
    let token = mask_token(&secret);
    let forms = encoded_forms(&secret);
    for (name, text) in &texts {
        for form in &forms {
            let form = String::from_utf8_lossy(form.bytes());
            assert!(!text.contains(form.as_ref()), "{name} leaks the secret as {form:?}:\n{text}");
        }
        assert!(!text.contains('\x1b'), "{name} carries a terminal escape:\n{text:?}");
    }
    // Each attempt was masked, not dropped: stdout says where the secret was.
    let events = o.transcript.events().unwrap();
    let stdout: String = events
        .iter()
        .filter_map(|r| match &r.event {
            JobEvent::Output { phase: Phase::Allocate, stream: OutputStream::Stdout, data } => Some(data.as_str()),
            _ => None,
        })
        .collect();
    for label in ["split-streams: ", "split-log: ", "split-stdout: ", "coloured: "] {
        assert!(stdout.contains(&format!("{label}{token}")), "{label}: {stdout}");
    }
    let archive = &texts[5].1;
    assert!(archive.contains(&format!("artifacts/{token}.txt")), "{archive}");
    assert!(archive.contains(&format!("token={token}")), "{archive}");
    assert!(archive.contains(&format!("{token}\nend")), "{archive}");
}
