//! JSON input follows the same rules as YAML, with positions recovered where possible.

use phasebox_jobspec::{ErrorKind, JobSpec, Location};

#[track_caller]
fn json_err(text: &str, path: &str, kind: ErrorKind, at: Option<(usize, usize)>) {
    let err = JobSpec::from_json(text).expect_err("the job should be rejected");
    assert_eq!(err.path(), path, "{err}");
    assert_eq!(err.kind(), kind, "{err}");
    let want = at.map(|(line, column)| Location { line, column });
    assert_eq!(err.location(), want, "{err}");
    if let Some((line, column)) = at {
        assert!(err.to_string().contains(&format!("line {line}, column {column}")), "{err}");
    }
}

#[test]
fn json_jobs_parse() {
    let job = JobSpec::from_json(
        r#"{"job_queue": "q", "global_timeout": 3600.0, "provision_data": {"distro": "noble"},
            "reserve_data": {"ssh_keys": ["lp:alice"], "timeout": "2h30m"},
            "test_data": {"test_cmds": "echo hi", "phasebox": {"timeout": "1h", "plugin": "shell"}}}"#,
    )
    .unwrap();
    assert_eq!(job.global_timeout, Some(3600));
    assert_eq!(job.reserve_data.as_ref().unwrap().timeout, Some(Some(9000)));
    assert_eq!(job.test_data.unwrap().phasebox.unwrap().timeout.unwrap().as_secs(), 3600);
}

#[test]
fn json_same_rules_with_positions() {
    json_err(r#"{"job_queue": "q", "bogus": 1}"#, "bogus", ErrorKind::UnknownField, Some((1, 20)));
    json_err(r#"{"name": "x"}"#, "job_queue", ErrorKind::MissingField, Some((1, 1)));
    json_err(
        "{\"job_queue\": \"q\",\n \"test_data\": {\"test_cmds\": [\"a\", \"b\"]}}",
        "test_data.test_cmds",
        ErrorKind::InvalidType,
        Some((2, 29)),
    );
    json_err(
        "{\"job_queue\": \"q\",\n \"test_data\": {\"phasebox\": {\"grant\": {}}}}",
        "test_data.phasebox.grant",
        ErrorKind::UnknownField,
        Some((2, 29)),
    );
    json_err(
        r#"{"job_queue": "q", "provision_data": {"url": "nope"}}"#,
        "provision_data.url",
        ErrorKind::InvalidValue,
        Some((1, 46)),
    );
    json_err(
        r#"{"job_queue": "q", "reserve_data": {"timeout": "2 weeks"}}"#,
        "reserve_data.timeout",
        ErrorKind::InvalidDuration,
        Some((1, 48)),
    );
    json_err(
        r#"{"job_queue": "q", "reserve_data": {"ssh_keys": ["ssh-rsa AAAA"]}}"#,
        "reserve_data.ssh_keys[0]",
        ErrorKind::InvalidValue,
        Some((1, 50)),
    );
    json_err(r#"{"job_queue": "q", "job_id": "nope"}"#, "job_id", ErrorKind::InvalidJobId, Some((1, 30)));
    json_err(r#"["job_queue"]"#, "", ErrorKind::InvalidType, Some((1, 1)));
    // JSON has no YAML 1.1 booleans: "yes" stays a string, and is not a valid queue type error.
    let job = JobSpec::from_json(r#"{"job_queue": "yes", "debug": "yes"}"#).unwrap();
    assert_eq!(job.job_queue, "yes");
    assert_eq!(job.debug, Some(true));
}

#[test]
fn json_duplicate_keys() {
    json_err("{\"job_queue\": \"q\",\n \"job_queue\": \"r\"}", "job_queue", ErrorKind::DuplicateKey, Some((2, 2)));
    json_err(
        r#"{"job_queue": "q", "test_data": {"test_cmds": "a", "test_cmds": "b"}}"#,
        "test_data.test_cmds",
        ErrorKind::DuplicateKey,
        Some((1, 52)),
    );
}

#[test]
fn malformed_json() {
    let err = JobSpec::from_json("{\"job_queue\": \"q\",\n  \"name\" \"x\"}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JsonSyntax);
    assert_eq!(err.location(), Some(Location { line: 2, column: 10 }), "{err}");
    assert!(err.to_string().starts_with("JSON syntax error at line 2, column 10: expected `:`"), "{err}");
    let err = JobSpec::from_json("").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JsonSyntax);
    // parse() reports the JSON error when the text is neither valid JSON nor valid YAML.
    let err = JobSpec::parse("{\"job_queue\": \"q\" \"x\"}").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::JsonSyntax, "{err}");
}

#[test]
fn format_detection() {
    // Valid JSON is read as JSON; a YAML flow mapping is still YAML.
    assert_eq!(JobSpec::parse(r#"{"job_queue": "q"}"#).unwrap().job_queue, "q");
    assert_eq!(JobSpec::parse("{job_queue: q, debug: on}").unwrap().debug, Some(true));
    assert_eq!(JobSpec::parse("job_queue: q").unwrap().job_queue, "q");
    // Errors from YAML text detected by parse() carry YAML positions.
    let err = JobSpec::parse("job_queue: q\nbogus: 1\n").unwrap_err();
    assert_eq!(err.location(), Some(Location { line: 2, column: 1 }));
}

#[test]
fn json_without_yaml_positions_still_names_the_field() {
    // A key longer than YAML's 1024-character implicit-key limit defeats the position
    // recovery; the error still names the field.
    let long = "k".repeat(1500);
    let text = format!(r#"{{"job_queue": "q", "allocate_data": {{"{long}": 1}}, "bogus": 2}}"#);
    let err = JobSpec::from_json(&text).unwrap_err();
    assert_eq!(err.path(), "bogus", "{err}");
    assert_eq!(err.kind(), ErrorKind::UnknownField);
}
