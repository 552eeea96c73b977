//! Realistic Testflinger jobs parse, normalise as the server would, round-trip through JSON,
//! and report the right phases.

use phasebox_jobspec::grants::Access;
use phasebox_jobspec::{Duration, JobSpec, Phase, PluginRef, ProvisionType, SkipReason};
use serde_json::json;

fn fixture(name: &str) -> JobSpec {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    JobSpec::from_yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn running(job: &JobSpec) -> Vec<Phase> {
    job.phases().iter().filter(|p| p.runs()).map(|p| p.phase).collect()
}

fn round_trip(job: &JobSpec) {
    let text = job.to_json_string();
    let again = JobSpec::from_json(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(&again, job, "JSON round trip changed the job:\n{text}");
    // And parse() detects JSON.
    assert_eq!(&JobSpec::parse(&text).unwrap(), job);
}

#[test]
fn plain_test_job() {
    let job = fixture("plain_test.yaml");
    assert_eq!(job.job_queue, "rpi4b");
    assert_eq!(job.name.as_deref(), Some("smoke test"));
    assert_eq!(job.global_timeout, Some(3600));
    assert_eq!(job.output_timeout, Some(600));
    let test = job.test_data.as_ref().unwrap();
    assert!(test.test_cmds.as_ref().unwrap().starts_with("set -e\n"));
    assert_eq!(running(&job), [Phase::Setup, Phase::Test, Phase::Cleanup]);
    assert_eq!(job.phases()[1].skip, Some(SkipReason::Absent));
    assert_eq!(job.exclude_agents, Vec::<String>::new());
    assert_eq!(job.to_json()["exclude_agents"], json!([]));
    round_trip(&job);
}

#[test]
fn provision_with_url() {
    let job = fixture("provision_url.yaml");
    let p = job.provision_data.clone().unwrap().unwrap();
    assert_eq!(p.kind, ProvisionType::Cm3);
    assert!(p.url().unwrap().ends_with("raspi.img.xz"));
    assert_eq!(job.priority(), 10);
    assert_eq!(job.exclude_agents, ["cm3-02"]);
    assert_eq!(running(&job), [Phase::Setup, Phase::Provision, Phase::Test, Phase::Cleanup]);
    round_trip(&job);
}

#[test]
fn reserve_job() {
    let job = fixture("reserve.yaml");
    let p = job.provision_data.clone().unwrap().unwrap();
    assert_eq!(p.kind, ProvisionType::Maas);
    assert_eq!(p.fields["ephemeral"], json!(true));
    let r = job.reserve_data.as_ref().unwrap();
    assert_eq!(r.ssh_keys.as_deref().unwrap(), ["lp:alice", "gh:bob"]);
    assert_eq!(r.timeout, Some(Some(9000)));
    assert_eq!(r.effective_timeout(), 9000);
    assert!(!r.needs_authorization());
    // Stored as seconds, like Testflinger.
    assert_eq!(job.to_json()["reserve_data"]["timeout"], json!(9000));
    assert_eq!(running(&job), [Phase::Setup, Phase::Provision, Phase::Reserve, Phase::Cleanup]);
    round_trip(&job);
}

#[test]
fn attachments_and_secrets() {
    let job = fixture("attachments_secrets.yaml");
    assert!(job.has_attachments());
    let p = job.provision_data.clone().unwrap().unwrap();
    assert_eq!(p.kind, ProvisionType::Muxpi);
    assert_eq!(p.attachments()[0].local.as_deref(), Some("./build/image.img"));
    let fw = job.firmware_update_data.as_ref().unwrap();
    assert_eq!(fw.fields["version"], json!("latest"));
    assert_eq!(fw.fields["attachments"], json!([{"local": "fw/blob.bin"}]));
    let test = job.test_data.as_ref().unwrap();
    let atts = test.attachments.as_ref().unwrap();
    assert_eq!(atts.len(), 2);
    assert_eq!(atts[0].device.as_deref(), Some("/home/ubuntu/run.sh"));
    let secrets = test.secrets.as_ref().unwrap();
    assert_eq!(secrets.get("API_TOKEN"), Some("lab/api-token"));
    assert_eq!(secrets.names().collect::<Vec<_>>(), ["API_TOKEN", "DB_PASSWORD"]);
    // Debug does not print secret values (in a dispatched job they are the secrets).
    assert!(!format!("{secrets:?}").contains("lab/api-token"));
    assert_eq!(running(&job), [Phase::Setup, Phase::Provision, Phase::FirmwareUpdate, Phase::Test, Phase::Cleanup]);
    round_trip(&job);
}

#[test]
fn phasebox_additions() {
    let job = fixture("phasebox.yaml");
    let test = job.phasebox(Phase::Test).unwrap();
    assert_eq!(test.plugin, Some(PluginRef::Name("shell".into())));
    assert_eq!(test.secrets.as_deref().unwrap(), ["API_TOKEN"]);
    assert_eq!(test.timeout, Some(Duration::from_secs(9000)));
    assert_eq!(test.output_timeout, Some(Duration::from_secs(900)));
    let grants = test.grants.as_ref().unwrap();
    assert_eq!(grants.files[0].path, "/scratch");
    assert_eq!(grants.files[0].access, Access::Rw);
    assert_eq!(grants.files[1].access, Access::Ro, "access defaults to ro");
    let net = &grants.network;
    assert_eq!(net.connect.len(), 4);
    assert!(!net.bind && !net.udp);
    assert_eq!(grants.http, ["https://example.com:443".parse().unwrap()]);
    assert_eq!(grants.env["LOG_LEVEL"], "debug");

    let provision = job.provision_data.clone().unwrap().unwrap();
    assert_eq!(provision.kind, ProvisionType::Cm3, "phasebox key does not affect inference");
    assert_eq!(job.phasebox(Phase::Provision).unwrap().timeout, Some(Duration::from_secs(2700)));
    let allocate = job.phasebox(Phase::Allocate).unwrap();
    assert!(matches!(&allocate.plugin, Some(PluginRef::Sha256(h)) if h.len() == 64));
    assert_eq!(job.phasebox(Phase::Reserve).unwrap().output_timeout, Some(Duration::from_secs(93600)));
    assert_eq!(
        running(&job),
        [Phase::Setup, Phase::Provision, Phase::Test, Phase::Allocate, Phase::Reserve, Phase::Cleanup]
    );
    // The phasebox blocks serialise with durations in seconds, plugin as written.
    let v = job.to_json();
    assert_eq!(v["test_data"]["phasebox"]["timeout"], json!(9000));
    assert_eq!(v["test_data"]["phasebox"]["plugin"], json!("shell"));
    round_trip(&job);

    // Stripped, the job is plain Testflinger.
    let plain = job.without_phasebox();
    assert!(plain.phases().iter().all(|p| p.phasebox.is_none()));
    assert!(!plain.to_json_string().contains("phasebox"));
}

#[test]
fn multi_job() {
    let job = fixture("multi.yaml");
    let p = job.provision_data.clone().unwrap().unwrap();
    assert_eq!(p.kind, ProvisionType::Multi);
    assert_eq!(p.fields["jobs"][1]["job_queue"], json!("rpi5"));
    assert_eq!(job.allocation_timeout, Some(7200));
    round_trip(&job);
}

#[test]
fn loose_marshmallow_values_are_normalised() {
    let job = fixture("kvm_generic.yaml");
    let p = job.provision_data.clone().unwrap().unwrap();
    assert_eq!(p.kind, ProvisionType::ControlHostKvmGeneric);
    assert_eq!(p.fields["live_image"], json!(true));
    assert_eq!(p.fields["provisioning_timeout"], json!(1800));
    round_trip(&job);
}

#[test]
fn noprovision_and_skip_rules() {
    let job = fixture("noprovision.yaml");
    let p = job.provision_data.clone().unwrap().unwrap();
    assert_eq!(p.kind, ProvisionType::NoProvision);
    assert!(!p.skip());
    assert_eq!(running(&job), [Phase::Setup, Phase::Provision, Phase::FirmwareUpdate, Phase::Test, Phase::Cleanup]);

    // `skip` defaults to true for noprovision and the phase is skipped (spec §1.2, §2.5).
    let job = JobSpec::from_yaml("job_queue: q\nprovision_data: {skip: yes}\n").unwrap();
    assert_eq!(job.phases()[1].skip, Some(SkipReason::SkipFlag));
    assert_eq!(job.to_json()["provision_data"], json!({"skip": true}));

    // null provision_data is stored as null and skipped.
    let job = JobSpec::from_yaml("job_queue: q\nprovision_data: null\n").unwrap();
    assert_eq!(job.provision_data, Some(None));
    assert_eq!(job.to_json()["provision_data"], json!(null));
    assert_eq!(job.phases()[1].skip, Some(SkipReason::Empty));
    round_trip(&job);

    // {} is maas with no fields, falsy, skipped.
    let job = JobSpec::from_yaml("job_queue: q\nprovision_data: {}\ntest_data: {}\n").unwrap();
    assert_eq!(job.provision_data.as_ref().unwrap().as_ref().unwrap().kind, ProvisionType::Maas);
    assert_eq!(job.phases()[1].skip, Some(SkipReason::Empty));
    assert_eq!(job.phases()[3].skip, Some(SkipReason::Empty));

    // A free-form section skipped by a truthy `skip` of any type (Python truthiness).
    let job = JobSpec::from_yaml("job_queue: q\nallocate_data: {skip: \"x\"}\n").unwrap();
    assert_eq!(job.phases()[4].skip, Some(SkipReason::SkipFlag));
    let job = JobSpec::from_yaml("job_queue: q\nallocate_data: {skip: 0, allocate: true}\n").unwrap();
    assert!(job.phases()[4].runs());

    // A section holding only attachments is emptied by the agent and skipped (spec §2.8).
    let job = JobSpec::from_yaml("job_queue: q\ntest_data:\n  attachments: [{local: a.txt}]\n").unwrap();
    assert_eq!(job.phases()[3].skip, Some(SkipReason::OnlyAttachments));

    // Setup and cleanup always run; phases are in Testflinger order.
    let job = JobSpec::from_yaml("job_queue: q").unwrap();
    let phases: Vec<_> = job.phases().iter().map(|p| p.phase).collect();
    assert_eq!(phases, Phase::ALL);
    assert_eq!(running(&job), [Phase::Setup, Phase::Cleanup]);
}

#[test]
fn server_forms() {
    // A job as dispatched by GET /v1/job: server-added fields and resolved secret values.
    let text = r#"{
        "job_id": "2b5cf5e4-9cc5-4a8e-9f6b-3b1b8a1f8c11",
        "job_queue": "q",
        "exclude_agents": [],
        "attachments_status": "complete",
        "client_id": "alice",
        "started_at": "2025-01-01T12:00:00+00:00Z",
        "test_data": {"test_cmds": "env", "secrets": {"TOKEN": "s3cr3t value!"}}
    }"#;
    let job = JobSpec::from_server_json(text).unwrap();
    assert_eq!(job.client_id.as_deref(), Some("alice"));
    assert_eq!(job.test_data.as_ref().unwrap().secrets.as_ref().unwrap().get("TOKEN"), Some("s3cr3t value!"));
    assert_eq!(JobSpec::from_server_json(&job.to_json_string()).unwrap(), job);
    // A submission may not carry server-added fields.
    let err = JobSpec::from_json(text).unwrap_err();
    assert_eq!(err.path(), "attachments_status");
    // serde Deserialize uses the submission rules.
    let job: JobSpec = serde_json::from_str(r#"{"job_queue": "q"}"#).unwrap();
    assert_eq!(job.job_queue, "q");
}

#[test]
fn yaml_features() {
    // Anchors, aliases and merge keys, as PyYAML expands them.
    let text = "\
defaults: &defaults
  test_cmds: echo base
";
    assert!(JobSpec::from_yaml(text).is_err(), "unknown top-level key");
    let text = "\
job_queue: q
provision_data: &p
  url: https://example.com/x.img
test_data:
  <<: {test_cmds: from merge, test_username: merged}
  test_username: explicit
";
    let job = JobSpec::from_yaml(text).unwrap();
    let t = job.test_data.unwrap();
    assert_eq!(t.test_cmds.as_deref(), Some("from merge"));
    assert_eq!(t.test_username.as_deref(), Some("explicit"));
    // `!!str` keeps a number a string; quoted scalars are strings.
    let job = JobSpec::from_yaml("job_queue: !!str 2204\nname: '123'\n").unwrap();
    assert_eq!(job.job_queue, "2204");
    assert_eq!(job.name.as_deref(), Some("123"));
    // Comments and an explicit document start are fine.
    assert!(JobSpec::from_yaml("---\n# hi\njob_queue: q # trailing\n...\n").is_ok());
}
