//! phasebox-client against a real phasebox server in-process.

mod common;

use std::time::{Duration, Instant};

use common::{SECRET, TestServer};
use phasebox_client::{
    Client, ClientConfig, ClientError, Credentials, LogFragment, LogQuery, LogType, Secret, SecretExpiry,
};
use phasebox_server::auth::Role;
use serde_json::{Value, json};

#[tokio::test]
async fn credentials_log_in_lazily_and_a_401_is_replayed_once_after_refreshing() {
    let server = TestServer::start_with(|c| {
        c.access_token_ttl = std::time::Duration::from_secs(1);
        c.jwt_leeway = std::time::Duration::ZERO;
    })
    .await;
    let user = server.client("alice", Role::Contributor).await;
    // Nothing happens before the first request.
    assert_eq!(server.requests("/v1/oauth2/token", 200).await, 0);
    let id = user.submit_job(&json!({"job_queue": "q"})).await.unwrap();
    assert_eq!(server.requests("/v1/oauth2/token", 200).await, 1);
    assert_eq!(user.client_id().await.unwrap().as_deref(), Some("alice"));

    // The access token expires; the next call gets a 401, refreshes and is replayed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let job = user.get_job(&id).await.unwrap();
    assert_eq!(job["job_queue"], "q");
    assert_eq!(server.requests("/v1/job/{job_id}", 401).await, 1);
    assert_eq!(server.requests("/v1/oauth2/refresh", 200).await, 1);
    assert_eq!(server.requests("/v1/oauth2/token", 200).await, 1, "the refresh token is used, not the secret");

    // Clones share the token: concurrent calls after expiry refresh only once between them.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let calls: Vec<_> = (0..4)
        .map(|_| user.clone())
        .map(|c| {
            let id = id.clone();
            tokio::spawn(async move { c.get_results(&id).await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap()["job_state"], "waiting");
    }
    assert_eq!(server.requests("/v1/oauth2/refresh", 200).await, 2);
}

#[tokio::test]
async fn a_refresh_token_alone_authenticates_an_agent() {
    let server = TestServer::start().await;
    let with_secret = server.client("agent-1", Role::Agent).await;
    phasebox_server::auth::bind_agent(&server.state.store, "agent-1", vec!["agent-1".into()], vec!["q".into()])
        .await
        .unwrap();
    let login = with_secret.login().await.unwrap();
    assert_eq!(login.client_id.as_deref(), Some("agent-1"));
    assert_eq!(login.role, "agent");
    let refresh = login.refresh_token.expect("a refresh token");

    let mut config = ClientConfig::new(server.url());
    config.refresh_token = Some(refresh);
    let agent = Client::new(config).unwrap();
    agent.post_agent_data("agent-1", &json!({"state": "waiting", "queues": ["q"]})).await.unwrap();
    assert_eq!(agent.claim_job(&["q".into()], None).await.unwrap(), None);
    assert_eq!(agent.client_id().await.unwrap().as_deref(), Some("agent-1"));

    // A rejected refresh token is an authentication error that says to log in again.
    let mut config = ClientConfig::new(server.url());
    config.refresh_token = Some(Secret::new("not-a-refresh-token-at-all"));
    let err = Client::new(config).unwrap().list_agents().await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { status: 400, .. }), "{err:?}");
    assert!(err.to_string().contains("log in again"), "{err}");
}

#[tokio::test]
async fn bad_credentials_and_missing_authentication_are_auth_errors_without_secrets() {
    let server = TestServer::start_with(|c| c.anonymous_access = false).await;
    server.client("bob", Role::Contributor).await;
    let wrong = server.client_for("bob", "the-wrong-secret-value");
    let err = wrong.submit_job(&json!({"job_queue": "q"})).await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { status: 401, .. }), "{err:?}");
    let text = format!("{err} {err:?}");
    assert!(text.contains("bob") && text.contains("secret key"), "{text}");
    assert!(!text.contains("the-wrong-secret-value"), "{text}");

    let err = server.anon().submit_job(&json!({"job_queue": "q"})).await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { status: 401, .. }), "{err:?}");
    assert!(err.to_string().contains("TESTFLINGER_CLIENT_ID"), "{err}");

    // A role the endpoint does not allow is a 403 with the server's message.
    let agent = server.client("agent-x", Role::Agent).await;
    let err = agent.submit_job(&json!({"job_queue": "q"})).await.unwrap_err();
    assert!(matches!(err, ClientError::Auth { status: 403, .. }), "{err:?}");
    assert!(err.to_string().contains("requires role"), "{err}");
}

#[tokio::test]
async fn a_job_round_trip_submit_claim_logs_results_artifacts() {
    let server = TestServer::start().await;
    let user = server.anon();
    let agent = server.agent("dut-1", &["q"]).await;

    let id = user.submit_job(&json!({"job_queue": "q", "test_data": {"test_cmds": "echo hi"}})).await.unwrap();
    assert_eq!(user.job_position(&id).await.unwrap(), Some(0));
    assert_eq!(user.get_results(&id).await.unwrap()["job_state"], "waiting");
    assert_eq!(user.get_job(&id).await.unwrap()["test_data"]["test_cmds"], "echo hi");

    let job = agent.claim_job(&["q".into()], None).await.unwrap().expect("a job");
    assert_eq!((job.job_id.as_str(), job.job_queue.as_str()), (id.as_str(), "q"));
    assert_eq!(job.other["test_data"]["test_cmds"], "echo hi");
    assert_eq!(user.job_position(&id).await.unwrap(), None);
    assert_eq!(agent.claim_job(&["q".into()], None).await.unwrap(), None);

    agent.post_job_state(&id, "test").await.unwrap();
    assert_eq!(user.job_state(&id).await.unwrap(), "test");
    for (n, text) in ["one\n", "two\n", "three\n"].iter().enumerate() {
        agent.post_log_fragment(&id, LogType::Output, &LogFragment::now(n as u64, "test", *text)).await.unwrap();
    }
    agent.post_log_fragment(&id, LogType::Serial, &LogFragment::now(0, "setup", "console\n")).await.unwrap();
    let all = user.get_log(&id, LogType::Output, 0).await.unwrap();
    assert_eq!(all.text(), "one\ntwo\nthree\n");
    assert_eq!(all.last_fragment_number(), Some(2));
    assert_eq!(all.latest_phase(), Some("test"));
    assert_eq!(all.phases.len(), 7);
    let rest = user.get_log(&id, LogType::Output, 2).await.unwrap();
    assert_eq!(rest.text(), "three\n");
    let none = user.get_log(&id, LogType::Output, 3).await.unwrap();
    assert_eq!((none.text(), none.last_fragment_number()), (String::new(), None));
    let setup_only = user
        .get_log_query(&id, LogType::Serial, &LogQuery { phase: Some("setup".into()), ..LogQuery::default() })
        .await
        .unwrap();
    assert_eq!((setup_only.text().as_str(), setup_only.phases.len()), ("console\n", 1));

    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("artifacts.tar.gz");
    std::fs::write(&archive, b"not really a tarball, but bytes are bytes").unwrap();
    agent.post_artifact(&id, &archive).await.unwrap();
    agent.post_result(&id, &json!({"status": {"setup": 0, "test": 1}, "job_state": "complete"})).await.unwrap();

    let results = user.get_results(&id).await.unwrap();
    assert_eq!(results["job_state"], "complete");
    assert_eq!(results["test_status"], 1);
    assert_eq!(results["test_output"], "one\ntwo\nthree\n");
    let dest = dir.path().join("out.tgz");
    let size = user.download_artifacts(&id, &dest).await.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"not really a tarball, but bytes are bytes");
    assert_eq!(size, 41);
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file is left behind");

    let err = user.cancel_job(&id).await.unwrap_err();
    assert_eq!(err.status(), Some(400));
    assert!(err.to_string().contains(&id), "{err}");
}

#[tokio::test]
async fn cancel_unknown_jobs_and_missing_artifacts() {
    let server = TestServer::start().await;
    let user = server.anon();
    let id = user.submit_job(&json!({"job_queue": "q"})).await.unwrap();
    user.cancel_job(&id).await.unwrap();
    assert_eq!(user.job_state(&id).await.unwrap(), "cancelled");
    assert_eq!(user.job_position(&id).await.unwrap(), None);

    let unknown = "00000000-0000-4000-8000-000000000000";
    let err = user.get_job(unknown).await.unwrap_err();
    assert!(err.is_not_found() && err.to_string().contains(unknown), "{err}");
    assert!(user.get_results(unknown).await.unwrap_err().is_not_found());
    let err = user.download_artifacts(&id, &tempfile::tempdir().unwrap().path().join("a.tgz")).await.unwrap_err();
    assert!(err.is_not_found() && err.to_string().contains("no artifacts"), "{err}");
    let err = user.get_results("not-a-uuid").await.unwrap_err();
    assert_eq!(err.status(), Some(400), "{err}");

    let err = user.submit_job(&json!({"job_queue": "q", "bogus": 1})).await.unwrap_err();
    assert_eq!(err.status(), Some(422));
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[tokio::test]
async fn attachments_go_up_and_come_down_unchanged() {
    let server = TestServer::start().await;
    let user = server.anon();
    let agent = server.agent("dut-a", &["qa"]).await;
    let id = user
        .submit_job(&json!({"job_queue": "qa", "test_data": {"test_cmds": "ls", "attachments": [{"agent": "f.txt"}]}}))
        .await
        .unwrap();
    // Not dispatched before the archive arrives.
    assert_eq!(agent.claim_job(&["qa".into()], None).await.unwrap(), None);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    user.upload_attachments(&id, bytes.clone()).await.unwrap();
    let job = agent.claim_job(&["qa".into()], None).await.unwrap().expect("dispatched");
    assert_eq!(job.attachments_status.as_deref(), Some("complete"));
    assert_eq!(agent.get_attachments(&id).await.unwrap().as_ref(), bytes.as_slice());
    let dir = tempfile::tempdir().unwrap();
    let n = agent.download_attachments(&id, &dir.path().join("att.tgz")).await.unwrap();
    assert_eq!(n, bytes.len() as u64);
    assert_eq!(std::fs::read(dir.path().join("att.tgz")).unwrap(), bytes);

    // Only the agent that claimed a job reads its attachments.
    let plain = user.submit_job(&json!({"job_queue": "qa"})).await.unwrap();
    assert_eq!(agent.get_attachments(&plain).await.unwrap_err().status(), Some(403));
}

#[tokio::test]
async fn long_poll_claims_the_moment_a_job_arrives() {
    let server = TestServer::start().await;
    let agent = server.agent("dut-lp", &["lp"]).await;
    let user = server.anon();
    let start = Instant::now();
    let waiting = tokio::spawn({
        let agent = agent.clone();
        async move { agent.claim_job(&["lp".into()], Some(Duration::from_secs(20))).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = user.submit_job(&json!({"job_queue": "lp"})).await.unwrap();
    let job = waiting.await.unwrap().unwrap().expect("the job");
    assert_eq!(job.job_id, id);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());

    // With nothing to claim the server answers at the end of the wait.
    let start = Instant::now();
    assert_eq!(agent.claim_job(&["lp".into()], Some(Duration::from_millis(500))).await.unwrap(), None);
    assert!(start.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn one_client_claims_for_several_agent_names() {
    let server = TestServer::start().await;
    let agent = server.client("multi-agent", Role::Agent).await;
    let (names, queues) = (vec!["dut-a".into(), "dut-b".into()], vec!["qa".into(), "qb".into()]);
    phasebox_server::auth::bind_agent(&server.state.store, "multi-agent", names, queues).await.unwrap();
    agent.post_agent_data("dut-a", &json!({"state": "waiting", "queues": ["qa"]})).await.unwrap();
    agent.post_agent_data("dut-b", &json!({"state": "waiting", "queues": ["qb"]})).await.unwrap();
    let user = server.anon();
    let a = user.submit_job(&json!({"job_queue": "qa", "exclude_agents": ["dut-b"]})).await.unwrap();
    // The cookie jar holds dut-b (registered last), which this job excludes.
    assert_eq!(agent.claim_job(&["qa".into()], None).await.unwrap(), None);
    let job = agent.claim_job_as("dut-a", &["qa".into()], None).await.unwrap().expect("claimed as dut-a");
    assert_eq!(job.job_id, a);
}

#[tokio::test]
async fn queues_agents_and_provision_logs() {
    let server = TestServer::start().await;
    let agent = server.agent("dut-q", &["alpha", "beta"]).await;
    agent.post_queues(&json!({"alpha": "the alpha queue"})).await.unwrap();
    agent.post_images(&json!({"alpha": {"core22": "url: http://example.com/core22.img"}})).await.unwrap();
    let user = server.anon();
    let queues = user.list_queues().await.unwrap();
    assert_eq!(queues.get("alpha").map(String::as_str), Some("the alpha queue"));
    assert_eq!(user.queue_images("alpha").await.unwrap()["core22"], "url: http://example.com/core22.img");
    let agents = user.list_agents().await.unwrap();
    assert!(agents.iter().any(|a| a["name"] == "dut-q"), "{agents:?}");
    let data = user.agent_data("dut-q").await.unwrap();
    assert_eq!(data.state(), "waiting");
    assert_eq!(data.other["name"], "dut-q");
    let err = user.agent_data("nobody").await.unwrap_err();
    assert!(err.is_not_found() && err.to_string().contains("Agent 'nobody' does not exist."), "{err}");
    assert_eq!(user.queue_agents("beta").await.unwrap()[0]["name"], "dut-q");
    assert!(user.queue_agents("gamma").await.unwrap_err().is_not_found());
    assert!(user.queue_jobs("alpha").await.unwrap().is_empty());
    // Listings show the ids of jobs submitted with credentials (not of anonymous ones).
    let submitter = server.client("submitter", Role::Contributor).await;
    let id = submitter.submit_job(&json!({"job_queue": "alpha"})).await.unwrap();
    let jobs = user.queue_jobs("alpha").await.unwrap();
    assert_eq!((jobs.len(), jobs[0]["job_id"].as_str()), (1, Some(id.as_str())));
    agent.post_provision_log("dut-q", &json!({"job_id": id, "exit_code": 0, "detail": "ok"})).await.unwrap();
    assert!(user.server_version().await.unwrap().starts_with("Testflinger Server v"));
}

#[tokio::test]
async fn secrets_are_written_and_deleted_by_their_owner_only() {
    let server = TestServer::start().await;
    let carol = server.client("carol", Role::Contributor).await;
    server.client("dave", Role::Contributor).await;
    let value = Secret::new("value-that-must-not-leak");
    let expires = carol.put_secret("carol", "lab/token", &value).await.unwrap();
    assert!(expires.is_some());
    assert_eq!(carol.put_secret_with("carol", "lab/forever", &value, SecretExpiry::Never).await.unwrap(), None);
    assert_eq!(carol.put_secret_with("carol", "lab/once", &value, SecretExpiry::SingleUse).await.unwrap(), None);
    assert!(carol.put_secret_with("carol", "lab/soon", &value, SecretExpiry::After(60)).await.unwrap().is_some());
    carol.delete_secret("carol", "lab/token").await.unwrap();

    let err = carol.put_secret("dave", "lab/token", &value).await.unwrap_err();
    assert_eq!(err.status(), Some(403), "{err}");
    let err = carol.put_secret("carol", "bad path!", &value).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err}");
    assert!(!format!("{err} {err:?}").contains("value-that-must-not-leak"));
    let err = server.anon().put_secret("carol", "x", &value).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");

    // A job may use the secret; the agent gets the value.
    let id = carol
        .submit_job(&json!({"job_queue": "s", "test_data": {"test_cmds": "x", "secrets": {"TOKEN": "lab/forever"}}}))
        .await
        .unwrap();
    let agent = server.agent("dut-s", &["s"]).await;
    let job = agent.claim_job(&["s".into()], None).await.unwrap().unwrap();
    assert_eq!(
        (Some(job.job_id.as_str()), job.other["test_data"]["secrets"]["TOKEN"].as_str()),
        (Some(id.as_str()), Some("value-that-must-not-leak"))
    );
}

#[tokio::test]
async fn plain_http_to_other_hosts_is_refused_and_unreachable_servers_are_transient() {
    let err = Client::new(ClientConfig::new("http://192.0.2.10:5000")).unwrap_err();
    assert!(matches!(err, ClientError::PlainHttpRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("http://192.0.2.10:5000"), "{err}");
    let mut allowed = ClientConfig::new("http://192.0.2.10:5000");
    allowed.allow_plain_http = true;
    assert!(Client::new(allowed).is_ok());

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let mut config = ClientConfig::new(format!("http://{addr}"));
    config.credentials = Some(Credentials::new("someone", SECRET));
    let err = Client::new(config).unwrap().get_job("00000000-0000-4000-8000-000000000000").await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    let text = err.to_string();
    assert!(text.contains(&addr.to_string()) && text.contains("POST /v1/oauth2/token"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
}

#[tokio::test]
async fn a_bad_ca_file_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let mut config = ClientConfig::new("https://testflinger.example.com");
    config.ca_file = Some(missing.clone());
    let err = Client::new(config.clone()).unwrap_err();
    assert!(matches!(err, ClientError::CaFile { .. }), "{err:?}");
    assert!(err.to_string().contains("missing.pem") && err.to_string().contains("cannot read"), "{err}");

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    config.ca_file = Some(garbage);
    let err = Client::new(config.clone()).unwrap_err();
    assert!(matches!(err, ClientError::CaFile { .. }), "{err:?}");
    assert!(err.to_string().contains("garbage.pem"), "{err}");

    let broken = dir.path().join("broken.pem");
    std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n").unwrap();
    config.ca_file = Some(broken);
    let err = Client::new(config).unwrap_err();
    assert!(matches!(err, ClientError::CaFile { .. }), "{err:?}");
}

#[tokio::test]
async fn server_messages_name_the_endpoint() {
    let server = TestServer::start().await;
    let user = server.anon();
    let err = user.submit_job(&json!({"job_queue": ""})).await.unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("POST /v1/job: the server answered 422"), "{text}");
    assert!(text.contains("job_queue"), "{text}");
    let _: Value = user.get_results(&user.submit_job(&json!({"job_queue": "z"})).await.unwrap()).await.unwrap();
}

/// A one-answer HTTPS server with a certificate for `localhost` issued by a test CA; returns
/// its port and the CA's PEM.
async fn tls_server() -> (u16, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&leaf_key, &ca).unwrap();

    let key = rustls::pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).unwrap();
    let config =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "Testflinger Server vtls";
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, ca.pem())
}

#[tokio::test]
async fn https_verifies_the_server_against_the_webpki_roots_and_the_ca_file() {
    let (port, ca_pem) = tls_server().await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("lab-ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();

    let mut config = ClientConfig::new(format!("https://localhost:{port}"));
    config.ca_file = Some(ca_file);
    let trusted = Client::new(config.clone()).unwrap();
    assert_eq!(trusted.server_version().await.unwrap(), "Testflinger Server vtls");

    // Without the lab CA the certificate is not trusted.
    config.ca_file = None;
    let err = Client::new(config).unwrap().server_version().await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
}
