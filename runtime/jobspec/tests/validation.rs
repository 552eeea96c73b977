//! Every validation rule has a failing case here. Each asserts the field path, the error kind,
//! and (for YAML) the line and column where the offending node starts.

use phasebox_jobspec::{Error, ErrorKind, JobSpec, Location, Phase};

/// Parses YAML that must fail, and checks path, kind and position (also in the Display text).
#[track_caller]
fn yaml_err(text: &str, path: &str, kind: ErrorKind, line: usize, column: usize) -> Error {
    let err = JobSpec::from_yaml(text).expect_err("the job should be rejected");
    let shown = err.to_string();
    assert_eq!(err.path(), path, "{shown}");
    assert_eq!(err.kind(), kind, "{shown}");
    assert_eq!(err.location(), Some(Location { line, column }), "{shown}");
    assert!(shown.contains(&format!("at line {line}, column {column}:")), "{shown}");
    if !path.is_empty() {
        assert!(shown.starts_with(&format!("{path} at ")), "{shown}");
    }
    err
}

/// A job with a valid queue on line 1, followed by `rest` (which starts on line 2).
fn q(rest: &str) -> String {
    format!("job_queue: q\n{rest}")
}

#[track_caller]
fn message_contains(err: &Error, needle: &str) {
    assert!(err.message().contains(needle), "{err}");
}

// ---------------------------------------------------------------- top level

#[test]
fn unknown_top_level_key_is_named() {
    let e = yaml_err(&q("job_queu: x\n"), "job_queu", ErrorKind::UnknownField, 2, 1);
    message_contains(&e, "did you mean `job_queue`?");
    yaml_err(&q("setup_data: {}\n"), "setup_data", ErrorKind::UnknownField, 2, 1);
    // Server-added fields are not accepted in a submission.
    yaml_err(&q("client_id: me\n"), "client_id", ErrorKind::UnknownField, 2, 1);
}

#[test]
fn job_queue_is_required_non_empty_string() {
    let e = yaml_err("name: x\n", "job_queue", ErrorKind::MissingField, 1, 1);
    message_contains(&e, "Missing data for required field");
    yaml_err("job_queue: ''\n", "job_queue", ErrorKind::InvalidValue, 1, 12);
    let e = yaml_err("job_queue: 2204\n", "job_queue", ErrorKind::InvalidType, 1, 12);
    message_contains(&e, "quote it");
    let e = yaml_err("name: x\njob_queue:\n", "job_queue", ErrorKind::InvalidType, 2, 1);
    message_contains(&e, "may not be null");
}

#[test]
fn document_must_be_a_mapping() {
    yaml_err("- a\n- b\n", "", ErrorKind::InvalidType, 1, 1);
    yaml_err("just text\n", "", ErrorKind::InvalidType, 1, 1);
    let e = JobSpec::from_yaml("").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidType);
    assert!(e.to_string().starts_with("job at line 1, column 1:"), "{e}");
}

#[test]
fn job_id_must_be_a_uuid() {
    let e = yaml_err(&q("job_id: abc\n"), "job_id", ErrorKind::InvalidJobId, 2, 9);
    message_contains(&e, "Invalid job_id specified");
    yaml_err(&q("job_id: 5\n"), "job_id", ErrorKind::InvalidType, 2, 9);
    // Empty means "generate one".
    assert_eq!(JobSpec::from_yaml(&q("job_id: ''\n")).unwrap().job_id, None);
}

#[test]
fn string_fields_reject_other_types() {
    yaml_err(&q("name: [a]\n"), "name", ErrorKind::InvalidType, 2, 7);
    yaml_err(&q("parent_job_id: 12\n"), "parent_job_id", ErrorKind::InvalidType, 2, 16);
    let e = yaml_err(&q("job_status_webhook: yes\n"), "job_status_webhook", ErrorKind::InvalidType, 2, 21);
    message_contains(&e, "YAML reads the unquoted `yes` as a boolean");
}

#[test]
fn lists_of_strings() {
    yaml_err(&q("tags: nightly\n"), "tags", ErrorKind::InvalidType, 2, 7);
    yaml_err(&q("tags:\n  - a\n  - 5\n"), "tags[1]", ErrorKind::InvalidType, 4, 5);
    yaml_err(&q("exclude_agents: [a, {b: c}]\n"), "exclude_agents[1]", ErrorKind::InvalidType, 2, 21);
}

#[test]
fn integer_fields() {
    // Testflinger's integer fields take no duration strings...
    let e = yaml_err(&q("global_timeout: 2h\n"), "global_timeout", ErrorKind::InvalidValue, 2, 17);
    message_contains(&e, "Not a valid integer");
    // ...nor booleans or null.
    yaml_err(&q("output_timeout: true\n"), "output_timeout", ErrorKind::InvalidType, 2, 17);
    yaml_err(&q("output_timeout: ~\n"), "output_timeout", ErrorKind::InvalidType, 2, 17);
    yaml_err(&q("allocation_timeout: [1]\n"), "allocation_timeout", ErrorKind::InvalidType, 2, 21);
    yaml_err(&q("job_priority: high\n"), "job_priority", ErrorKind::InvalidValue, 2, 15);
    let e = yaml_err(&q("job_priority: 99999999999999999999999\n"), "job_priority", ErrorKind::InvalidValue, 2, 15);
    message_contains(&e, "too large");
    // Loose like marshmallow: numeric strings, truncated floats, negative priorities.
    let job = JobSpec::from_yaml(&q("global_timeout: '7200'\noutput_timeout: 60.9\njob_priority: -5\n")).unwrap();
    assert_eq!(job.global_timeout, Some(7200));
    assert_eq!(job.output_timeout, Some(60));
    assert_eq!(job.job_priority, Some(-5));
}

#[test]
fn debug_is_a_boolean() {
    yaml_err(&q("debug: maybe\n"), "debug", ErrorKind::InvalidType, 2, 8);
    assert_eq!(JobSpec::from_yaml(&q("debug: 'on'\n")).unwrap().debug, Some(true));
}

// ---------------------------------------------------------------- test_data

#[test]
fn test_cmds_must_be_a_string() {
    let e = yaml_err(
        &q("test_data:\n  test_cmds:\n    - echo a\n    - echo b\n"),
        "test_data.test_cmds",
        ErrorKind::InvalidType,
        4,
        5,
    );
    message_contains(&e, "must be one string");
    yaml_err(&q("test_data:\n  test_cmds: 42\n"), "test_data.test_cmds", ErrorKind::InvalidType, 3, 14);
}

#[test]
fn test_data_shape() {
    yaml_err(&q("test_data:\n"), "test_data", ErrorKind::InvalidType, 2, 1);
    yaml_err(&q("test_data: echo\n"), "test_data", ErrorKind::InvalidType, 2, 12);
    let e = yaml_err(&q("test_data:\n  test_cmd: echo\n"), "test_data.test_cmd", ErrorKind::UnknownField, 3, 3);
    message_contains(&e, "did you mean `test_cmds`?");
    yaml_err(&q("test_data:\n  test_password: 1234\n"), "test_data.test_password", ErrorKind::InvalidType, 3, 18);
}

#[test]
fn secrets_names_and_paths() {
    yaml_err(&q("test_data:\n  secrets:\n    1BAD: a/b\n"), "test_data.secrets.1BAD", ErrorKind::InvalidValue, 4, 5);
    yaml_err(
        &q("test_data:\n  secrets:\n    TOKEN: 'a b'\n"),
        "test_data.secrets.TOKEN",
        ErrorKind::InvalidValue,
        4,
        12,
    );
    yaml_err(&q("test_data:\n  secrets:\n    TOKEN: [a]\n"), "test_data.secrets.TOKEN", ErrorKind::InvalidType, 4, 12);
    yaml_err(&q("test_data:\n  secrets: [TOKEN]\n"), "test_data.secrets", ErrorKind::InvalidType, 3, 12);
}

#[test]
fn attachments() {
    yaml_err(&q("test_data:\n  attachments: file.txt\n"), "test_data.attachments", ErrorKind::InvalidType, 3, 16);
    yaml_err(
        &q("test_data:\n  attachments:\n    - device: /x\n"),
        "test_data.attachments[0].agent",
        ErrorKind::MissingField,
        4,
        7,
    );
    yaml_err(
        &q("test_data:\n  attachments:\n    - local: a\n    - {local: b, remote: c}\n"),
        "test_data.attachments[1].remote",
        ErrorKind::UnknownField,
        5,
        18,
    );
    yaml_err(
        &q("firmware_update_data:\n  attachments: [{local: 5}]\n"),
        "firmware_update_data.attachments[0].local",
        ErrorKind::InvalidType,
        3,
        25,
    );
}

// ---------------------------------------------------------------- reserve_data

#[test]
fn ssh_keys_are_imports_or_well_formed_public_keys() {
    // A real ed25519 public key line (phasebox addition): accepted, with or without a comment.
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDmzMZkCALj10zQFPgqtRgWnEyYiWLxSJJN6rFF0k18S";
    for entry in [key.to_owned(), format!("{key} alice@host")] {
        let job = phasebox_jobspec::JobSpec::parse(&q(&format!("reserve_data:\n  ssh_keys:\n    - '{entry}'\n")))
            .unwrap_or_else(|e| panic!("{entry}: {e}"));
        assert_eq!(job.reserve_data.unwrap().ssh_keys.unwrap(), [entry]);
    }
    // The type must match the blob's, the blob must decode, and one line only.
    for bad in [
        key.replacen("ssh-ed25519", "ssh-rsa", 1),
        key.replacen("AAAAC3", "AAAA!3", 1),
        format!("{key}\nssh-ed25519 AAAA"),
        "ssh-dss AAAAB3NzaC1kc3M=".to_owned(),
    ] {
        assert!(!phasebox_jobspec::is_ssh_key_entry(&bad), "{bad:?} accepted");
    }

    let e = yaml_err(
        &q("reserve_data:\n  ssh_keys:\n    - lp:alice\n    - ssh-ed25519 AAAA alice@host\n"),
        "reserve_data.ssh_keys[1]",
        ErrorKind::InvalidValue,
        5,
        7,
    );
    message_contains(&e, "lp:<launchpad user>");
    yaml_err(&q("reserve_data:\n  ssh_keys: lp:alice\n"), "reserve_data.ssh_keys", ErrorKind::InvalidType, 3, 13);
    yaml_err(&q("reserve_data:\n  ssh_keys: ['gh:']\n"), "reserve_data.ssh_keys[0]", ErrorKind::InvalidValue, 3, 14);
}

#[test]
fn reserve_timeout() {
    let e = yaml_err(
        &q("reserve_data:\n  timeout: 2 hours and a bit\n"),
        "reserve_data.timeout",
        ErrorKind::InvalidDuration,
        3,
        12,
    );
    message_contains(&e, "Invalid duration format");
    yaml_err(&q("reserve_data:\n  timeout: -30\n"), "reserve_data.timeout", ErrorKind::InvalidDuration, 3, 12);
    yaml_err(&q("reserve_data:\n  timeout: '-30m'\n"), "reserve_data.timeout", ErrorKind::InvalidDuration, 3, 12);
    yaml_err(&q("reserve_data:\n  timeout: 1.5\n"), "reserve_data.timeout", ErrorKind::InvalidType, 3, 12);
    yaml_err(&q("reserve_data:\n  time_out: 5\n"), "reserve_data.time_out", ErrorKind::UnknownField, 3, 3);
    // Accepted like Testflinger: null, numeric strings, a long reservation (the server's
    // permission check, not the schema, limits it), and `true` as 1 second.
    for (text, want) in [
        ("timeout: null", None),
        ("timeout: '600'", Some(600)),
        ("timeout: 1d", Some(86400)),
        ("timeout: true", Some(1)),
    ] {
        let job = JobSpec::from_yaml(&q(&format!("reserve_data:\n  {text}\n"))).unwrap();
        assert_eq!(job.reserve_data.unwrap().timeout, Some(want), "{text}");
    }
    let job = JobSpec::from_yaml(&q("reserve_data: {timeout: 7h}\n")).unwrap();
    assert!(job.reserve_data.unwrap().needs_authorization());
}

// ---------------------------------------------------------------- provision_data

#[test]
fn provision_url_must_be_a_url() {
    let e = yaml_err(&q("provision_data:\n  url: not a url\n"), "provision_data.url", ErrorKind::InvalidValue, 3, 8);
    message_contains(&e, "closest: cm3");
    // marshmallow requires a domain with a TLD, localhost or an IP.
    yaml_err(&q("provision_data:\n  url: http://x/img\n"), "provision_data.url", ErrorKind::InvalidValue, 3, 8);
    yaml_err(
        &q("provision_data:\n  url: s3://bucket.example.com/img\n"),
        "provision_data.url",
        ErrorKind::InvalidValue,
        3,
        8,
    );
}

#[test]
fn provision_type_rules() {
    // muxpi needs url or use_attachment.
    let e = yaml_err(&q("provision_data:\n  media: sd\n"), "provision_data", ErrorKind::InvalidValue, 3, 3);
    message_contains(&e, "Either 'url' or 'use_attachment'");
    yaml_err(
        &q("provision_data:\n  use_attachment: x.img\n  media: floppy\n"),
        "provision_data.media",
        ErrorKind::InvalidValue,
        4,
        10,
    );
    // multi needs at least one job.
    yaml_err(&q("provision_data:\n  jobs: []\n"), "provision_data.jobs", ErrorKind::InvalidValue, 3, 9);
    // kvm_generic needs wait_until_ssh.
    let e = yaml_err(
        &q("provision_data:\n  url: https://e.com/a.iso\n  robot_tasks: [a]\n  live_image: true\n"),
        "provision_data.wait_until_ssh",
        ErrorKind::MissingField,
        3,
        3,
    );
    message_contains(&e, "closest: control_host_kvm_generic");
    // IoT: exactly one boot image source.
    let e = yaml_err(
        &q("provision_data:\n  preset: p\n  url: https://e.com/a\n  urls: [https://e.com/b]\n"),
        "provision_data",
        ErrorKind::InvalidValue,
        3,
        3,
    );
    message_contains(&e, "only one boot image source");
    yaml_err(&q("provision_data:\n  preset: p\n  urls: []\n"), "provision_data.urls", ErrorKind::InvalidValue, 4, 9);
    yaml_err(
        &q("provision_data:\n  provision_plan: {}\n  url: https://e.com/a\n  ubuntu_sso_email: nobody\n"),
        "provision_data.ubuntu_sso_email",
        ErrorKind::InvalidValue,
        5,
        21,
    );
    yaml_err(
        &q("provision_data:\n  distro: noble\n  ephemeral: sometimes\n"),
        "provision_data.ephemeral",
        ErrorKind::InvalidType,
        4,
        14,
    );
    yaml_err(&q("provision_data: https://e.com/a.img\n"), "provision_data", ErrorKind::InvalidType, 2, 17);
}

#[test]
fn provision_conflicting_keys() {
    let e = yaml_err(
        &q("provision_data:\n  url: https://e.com/a.img\n  distro: noble\n"),
        "provision_data.distro",
        ErrorKind::UnknownField,
        4,
        3,
    );
    message_contains(&e, "no provisioner type accepts all of these keys together: url, distro");
    yaml_err(
        &q("provision_data:\n  skip: true\n  url: https://e.com/a.img\n"),
        "provision_data.skip",
        ErrorKind::UnknownField,
        3,
        3,
    );
}

#[test]
fn free_form_sections_must_be_mappings() {
    yaml_err(&q("firmware_update_data: latest\n"), "firmware_update_data", ErrorKind::InvalidType, 2, 23);
    yaml_err(&q("allocate_data: ~\n"), "allocate_data", ErrorKind::InvalidType, 2, 16);
}

// ---------------------------------------------------------------- phasebox blocks

#[test]
fn unknown_key_inside_phasebox() {
    let e = yaml_err(
        &q("test_data:\n  test_cmds: x\n  phasebox:\n    grant: {}\n"),
        "test_data.phasebox.grant",
        ErrorKind::UnknownField,
        5,
        5,
    );
    message_contains(&e, "did you mean `grants`?");
    yaml_err(
        &q("provision_data:\n  url: https://e.com/a\n  phasebox: {plugins: flash}\n"),
        "provision_data.phasebox.plugins",
        ErrorKind::UnknownField,
        4,
        14,
    );
    yaml_err(
        &q("allocate_data:\n  phasebox:\n    grants:\n      file: []\n"),
        "allocate_data.phasebox.grants.file",
        ErrorKind::UnknownField,
        5,
        7,
    );
    yaml_err(
        &q("reserve_data:\n  phasebox:\n    grants:\n      network: {connect: [], tcp: true}\n"),
        "reserve_data.phasebox.grants.network.tcp",
        ErrorKind::UnknownField,
        5,
        30,
    );
    yaml_err(
        &q("firmware_update_data:\n  phasebox:\n    grants:\n      files: [{path: /a, source: b, mode: ro}]\n"),
        "firmware_update_data.phasebox.grants.files[0].mode",
        ErrorKind::UnknownField,
        5,
        37,
    );
    yaml_err(&q("test_data:\n  phasebox: shell\n"), "test_data.phasebox", ErrorKind::InvalidType, 3, 13);
}

#[test]
fn plugin_reference_format() {
    for (plugin, col) in [
        ("Shell", 13),
        ("-shell", 13),
        ("my.plugin", 13),
        ("sha256:abc", 13),
        ("sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08", 13),
        ("''", 13),
    ] {
        yaml_err(
            &q(&format!("test_data:\n  phasebox:\n    plugin: {plugin}\n")),
            "test_data.phasebox.plugin",
            ErrorKind::InvalidValue,
            4,
            col,
        );
    }
    yaml_err(
        &q("test_data:\n  phasebox:\n    plugin: 7\n"),
        "test_data.phasebox.plugin",
        ErrorKind::InvalidType,
        4,
        13,
    );
}

#[test]
fn phase_secrets_must_be_declared() {
    let e = yaml_err(
        &q(
            "provision_data:\n  url: https://e.com/a\n  phasebox:\n    secrets: [TOKEN]\ntest_data:\n  secrets: {OTHER: a/b}\n",
        ),
        "provision_data.phasebox.secrets[0]",
        ErrorKind::UnknownSecret,
        5,
        15,
    );
    message_contains(&e, "declare it in test_data.secrets");
    yaml_err(
        &q("test_data:\n  secrets: {TOKEN: a/b}\n  phasebox:\n    secrets: [TOKEN, TOKEN]\n"),
        "test_data.phasebox.secrets[1]",
        ErrorKind::InvalidValue,
        5,
        22,
    );
    // Declared ones are fine, in any phase and in any key order.
    let job =
        JobSpec::from_yaml(&q("reserve_data:\n  phasebox: {secrets: [TOKEN]}\ntest_data:\n  secrets: {TOKEN: a/b}\n"))
            .unwrap();
    assert_eq!(job.reserve_data.unwrap().phasebox.unwrap().secrets.unwrap(), ["TOKEN"]);
}

#[test]
fn phase_durations() {
    for (value, kind) in [
        ("2x", ErrorKind::InvalidDuration),
        ("0", ErrorKind::InvalidDuration),
        ("0s", ErrorKind::InvalidDuration),
        ("-5", ErrorKind::InvalidDuration),
        ("''", ErrorKind::InvalidDuration),
        ("true", ErrorKind::InvalidType),
        ("1.5", ErrorKind::InvalidType),
    ] {
        let e = yaml_err(
            &q(&format!("test_data:\n  phasebox:\n    timeout: {value}\n")),
            "test_data.phasebox.timeout",
            kind,
            4,
            14,
        );
        assert!(e.to_string().contains("test_data.phasebox.timeout"));
    }
    yaml_err(
        &q("test_data:\n  phasebox:\n    output_timeout: 15 minutes\n"),
        "test_data.phasebox.output_timeout",
        ErrorKind::InvalidDuration,
        4,
        21,
    );
}

#[test]
fn file_grants() {
    let grant = |file: &str| q(&format!("test_data:\n  phasebox:\n    grants:\n      files:\n        - {file}\n"));
    yaml_err(
        &grant("{path: scratch, source: scratch}"),
        "test_data.phasebox.grants.files[0].path",
        ErrorKind::InvalidValue,
        6,
        18,
    );
    yaml_err(
        &grant("{path: /s, source: ../etc}"),
        "test_data.phasebox.grants.files[0].source",
        ErrorKind::InvalidValue,
        6,
        30,
    );
    let e = yaml_err(
        &grant("{path: /s, source: s, access: rwx}"),
        "test_data.phasebox.grants.files[0].access",
        ErrorKind::InvalidValue,
        6,
        41,
    );
    message_contains(&e, "`ro` or `rw`");
    yaml_err(&grant("{path: /s}"), "test_data.phasebox.grants.files[0].source", ErrorKind::MissingField, 6, 11);
    yaml_err(
        &q(
            "test_data:\n  phasebox:\n    grants:\n      files:\n        - {path: /s, source: a}\n        - {path: /s, source: b}\n",
        ),
        "test_data.phasebox.grants.files[1]",
        ErrorKind::InvalidValue,
        7,
        11,
    );
}

#[test]
fn network_grants() {
    let connect =
        |ep: &str| q(&format!("test_data:\n  phasebox:\n    grants:\n      network:\n        connect: [\"{ep}\"]\n"));
    for bad in [
        "example.com",
        "example.com:0",
        "example.com:https",
        "2001:db8::1:443",
        "10.0.0.0/33:22",
        "*.example.com:443",
        "*",
    ] {
        let e = yaml_err(&connect(bad), "test_data.phasebox.grants.network.connect[0]", ErrorKind::InvalidValue, 6, 19);
        assert!(e.message().contains('`'), "{e}");
    }
    // An address alone, like a network alone, means any port; lab host names may hold `_`.
    for good in [
        "example.com:443",
        "10.1.0.0/16:22",
        "10.1.0.0/16",
        "[::1]:8080",
        "[fd00::/8]",
        "dut:*",
        "dut:1000-2000",
        "[2001:db8::1]",
        "under_score.lab:80",
    ] {
        assert!(JobSpec::from_yaml(&connect(good)).is_ok(), "{good}");
    }
    yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      network: {bind: 'yes'}\n"),
        "test_data.phasebox.grants.network.bind",
        ErrorKind::InvalidType,
        5,
        23,
    );
    yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      network: [example.com:443]\n"),
        "test_data.phasebox.grants.network",
        ErrorKind::InvalidType,
        5,
        16,
    );
}

#[test]
fn http_dns_env_grants() {
    // An origin without a port has its scheme's, as in a URL.
    let job =
        JobSpec::from_yaml(&q("test_data:\n  phasebox:\n    grants:\n      http: [https://example.com]\n")).unwrap();
    let http = &job.phasebox(Phase::Test).unwrap().grants.as_ref().unwrap().http;
    assert_eq!(http[0].to_string(), "https://example.com:443");
    let e = yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      http: ['https://*:443']\n"),
        "test_data.phasebox.grants.http[0]",
        ErrorKind::InvalidValue,
        5,
        14,
    );
    message_contains(&e, "manifests and policies");
    yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      http: ['https://example.com:443/path']\n"),
        "test_data.phasebox.grants.http[0]",
        ErrorKind::InvalidValue,
        5,
        14,
    );
    yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      http: ['gopher://example.com:70']\n"),
        "test_data.phasebox.grants.http[0]",
        ErrorKind::InvalidValue,
        5,
        14,
    );
    yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      dns: [example.com, 'bad host']\n"),
        "test_data.phasebox.grants.dns[1]",
        ErrorKind::InvalidValue,
        5,
        26,
    );
    yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      env: {BAD-NAME: x}\n"),
        "test_data.phasebox.grants.env.BAD-NAME",
        ErrorKind::InvalidValue,
        5,
        13,
    );
    yaml_err(
        &q("test_data:\n  phasebox:\n    grants:\n      env: {PORT: 8080}\n"),
        "test_data.phasebox.grants.env.PORT",
        ErrorKind::InvalidType,
        5,
        19,
    );
}

// ---------------------------------------------------------------- YAML itself

#[test]
fn duplicate_yaml_keys() {
    let e = yaml_err("job_queue: a\nname: x\njob_queue: b\n", "job_queue", ErrorKind::DuplicateKey, 3, 1);
    message_contains(&e, "first defined at line 1, column 1");
    yaml_err(&q("test_data:\n  test_cmds: a\n  test_cmds: b\n"), "test_data.test_cmds", ErrorKind::DuplicateKey, 4, 3);
    yaml_err(&q("tags: [a]\nallocate_data: {x: 1, x: 2}\n"), "allocate_data.x", ErrorKind::DuplicateKey, 3, 23);
    // Keys that json.dumps would make equal collide too.
    yaml_err(&q("allocate_data:\n  1: a\n  '1': b\n"), "allocate_data.1", ErrorKind::DuplicateKey, 4, 3);
}

#[test]
fn malformed_yaml() {
    let e = yaml_err("job_queue: q\ntest_data:\n  test_cmds: a\n    b: c\n", "", ErrorKind::YamlSyntax, 4, 6);
    assert!(e.to_string().starts_with("YAML syntax error at line 4, column 6: mapping values"), "{e}");
    yaml_err("job_queue: [a, b\n", "", ErrorKind::YamlSyntax, 2, 1);
    yaml_err("job_queue: 'q\n", "", ErrorKind::YamlSyntax, 1, 12);
    yaml_err("job_queue: q\n---\njob_queue: r\n", "", ErrorKind::YamlSyntax, 2, 1);
    yaml_err("job_queue: *nowhere\n", "", ErrorKind::YamlSyntax, 1, 12);
}

#[test]
fn yaml_limits_and_tags() {
    yaml_err(&q("name: !custom x\n"), "name", ErrorKind::InvalidType, 2, 7);
    yaml_err(&q("name: !!binary aGk=\n"), "name", ErrorKind::InvalidType, 2, 7);
    // "Billion laughs" stops at the expansion limit.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let p = i - 1;
        bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
    }
    let e = JobSpec::from_yaml(&bomb).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
    assert!(e.location().is_some());
    // Few nodes, many bytes: aliases of one long scalar are bounded by the bytes they expand to.
    let long = "x".repeat(1 << 20);
    let mut wide = format!("job_queue: q\nallocate_data:\n  a: &a {long}\n  b: [");
    wide.push_str(&vec!["*a"; 64].join(", "));
    wide.push_str("]\n");
    let e = JobSpec::from_yaml(&wide).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
    assert!(e.to_string().contains(&format!("{} bytes", phasebox_jobspec::MAX_EXPANDED_BYTES)), "{e}");
    assert!(e.location().is_some());
    // Deep nesting.
    let deep = format!("job_queue: q\nallocate_data: {{x: {}1{}}}\n", "[".repeat(200), "]".repeat(200));
    let e = JobSpec::from_yaml(&deep).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Limit, "{e}");
}

#[test]
fn more_provision_rules() {
    // IoT custom with no boot image source.
    let e = yaml_err(&q("provision_data:\n  provision_plan: {}\n"), "provision_data", ErrorKind::InvalidValue, 3, 3);
    message_contains(&e, "One of 'url', 'urls', or a provision attachment");
    // IoT takes at most one attachment.
    yaml_err(
        &q("provision_data:\n  preset: p\n  attachments: [{agent: a}, {agent: b}]\n"),
        "provision_data.attachments",
        ErrorKind::InvalidValue,
        4,
        16,
    );
    // Dict and list-of-dict fields.
    yaml_err(
        &q("provision_data:\n  provision_plan: x\n  url: https://e.com/a\n"),
        "provision_data.provision_plan",
        ErrorKind::InvalidType,
        3,
        19,
    );
    yaml_err(&q("provision_data:\n  jobs: [a]\n"), "provision_data.jobs[0]", ErrorKind::InvalidType, 3, 10);
}

#[test]
fn server_form_rules() {
    let err = JobSpec::from_server_json(r#"{"job_queue": "q", "attachments_status": "done"}"#).unwrap_err();
    assert_eq!(err.path(), "attachments_status");
    assert_eq!(err.kind(), ErrorKind::InvalidValue);
    assert_eq!(err.location(), Some(Location { line: 1, column: 42 }));
    // Secret names are still checked when values are resolved secrets.
    let err =
        JobSpec::from_server_json(r#"{"job_queue": "q", "test_data": {"secrets": {"BAD NAME": "v"}}}"#).unwrap_err();
    assert_eq!(err.path(), "test_data.secrets.BAD NAME");
}
