//! HTTPS: a server with a self-signed certificate answers a client that trusts it; bad
//! certificate or key files are configuration errors naming the file.

use std::path::Path;

use phasebox_server::{ConfigError, ServerConfig, ServerError};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{Db, config_in};

/// A self-signed certificate for 127.0.0.1 and localhost: `(cert PEM, key PEM)`.
fn self_signed() -> (String, String) {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

async fn tls_config(dir: &Path, cert: &str, key: &str) -> ServerConfig {
    let mut config = config_in(dir, Db::Sqlite, false).await;
    std::fs::write(dir.join("cert.pem"), cert).unwrap();
    phasebox_testkit::write_secret(&dir.join("key.pem"), key);
    config.tls_cert_file = Some(dir.join("cert.pem"));
    config.tls_key_file = Some(dir.join("key.pem"));
    config
}

#[tokio::test]
async fn https_with_a_self_signed_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    let config = tls_config(dir.path(), &cert, &key).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(phasebox_server::launch(listener, config, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.as_bytes()).unwrap())
        .build()
        .unwrap();
    let base = format!("https://{addr}");
    let r = http.get(format!("{base}/v1/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().starts_with("Testflinger Server v"));
    let r = http.post(format!("{base}/v1/job")).json(&json!({"job_queue": "q"})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let id = r.json::<Value>().await.unwrap()["job_id"].as_str().unwrap().to_owned();
    let r = http.get(format!("{base}/v1/job/{id}")).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["job_queue"], "q");

    // A client that does not trust the certificate gets no answer, nor does plain HTTP.
    let untrusting = reqwest::Client::builder().use_rustls_tls().tls_built_in_root_certs(false).build().unwrap();
    assert!(untrusting.get(format!("{base}/v1/")).send().await.is_err());
    let plain = reqwest::Client::new().get(format!("http://{addr}/v1/")).send().await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());
    // The server still serves after those failed handshakes.
    assert_eq!(http.get(format!("{base}/v1/")).send().await.unwrap().status(), StatusCode::OK);

    stop.send(()).unwrap();
    server.await.unwrap().expect("server stopped cleanly");
}

async fn launch_error(config: ServerConfig) -> ConfigError {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match phasebox_server::launch(listener, config, async {}).await {
        Err(ServerError::Config(e)) => e,
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_certificate_or_key_files_are_config_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed();
    let good = tls_config(dir.path(), &cert, &key).await;

    let missing = ServerConfig { tls_key_file: Some(dir.path().join("absent.pem")), ..good.clone() };
    let e = launch_error(missing).await;
    assert!(matches!(e, ConfigError::SecretFile(_)), "{e:?}");
    assert!(e.to_string().contains("absent.pem"), "{e}");

    // A private key other users can read is refused, naming the fix, never used.
    let shared = dir.path().join("shared.pem");
    std::fs::write(&shared, &key).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let e = launch_error(ServerConfig { tls_key_file: Some(shared), ..good.clone() }).await;
    assert!(e.to_string().contains("TLS private key file") && e.to_string().contains("chmod 600"), "{e}");

    phasebox_testkit::write_secret(&dir.path().join("garbage.pem"), "-----BEGIN PRIVATE KEY-----\nnot base64!\n");
    let garbage = ServerConfig { tls_key_file: Some(dir.path().join("garbage.pem")), ..good.clone() };
    let e = launch_error(garbage).await;
    assert!(e.to_string().contains("invalid TLS private key") && e.to_string().contains("garbage.pem"), "{e}");

    // The certificate where the key should be: no private key in it.
    phasebox_testkit::write_secret(&dir.path().join("cert-as-key.pem"), &cert);
    let swapped = ServerConfig { tls_key_file: Some(dir.path().join("cert-as-key.pem")), ..good.clone() };
    let e = launch_error(swapped).await;
    assert!(e.to_string().contains("no PEM PRIVATE KEY block"), "{e}");

    // A key that does not belong to the certificate.
    let (_, other_key) = self_signed();
    phasebox_testkit::write_secret(&dir.path().join("other.pem"), &other_key);
    let mismatched = ServerConfig { tls_key_file: Some(dir.path().join("other.pem")), ..good.clone() };
    let e = launch_error(mismatched).await;
    assert!(e.to_string().contains("TLS certificate or key"), "{e}");
    assert!(!e.to_string().contains("PRIVATE KEY-----"), "key material in {e}");

    let half = ServerConfig { tls_key_file: None, ..good };
    let e = launch_error(half).await;
    assert!(e.to_string().contains("must be set together"), "{e}");
}
