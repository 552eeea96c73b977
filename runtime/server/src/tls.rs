//! HTTPS: the certificate and key from the configuration ([`load`]) and a listener that hands
//! axum only connections whose TLS handshake completed ([`TlsListener`]).
//!
//! rustls with the *ring* provider, TLS 1.2 and 1.3, ALPN `http/1.1`. Handshakes run in their
//! own tasks with a time limit, so a client that connects and then stalls holds up nobody.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use crate::config::{ConfigError, ServerConfig};

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 512;

/// The rustls server configuration for `config`'s `tls_cert_file` and `tls_key_file`; `None`
/// when TLS is not configured. Unreadable or invalid files, and a key that does not belong to
/// the certificate, are [`ConfigError`]s naming the file (never its contents).
pub fn load(config: &ServerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, ConfigError> {
    match (&config.tls_cert_file, &config.tls_key_file) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => server_config(cert, key).map(Some),
        _ => Err(ConfigError::Invalid("tls_cert_file and tls_key_file must be set together".into())),
    }
}

fn read(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, ConfigError> {
    std::fs::read(path).map(zeroize::Zeroizing::new).map_err(|source| ConfigError::Read { path: path.into(), source })
}

fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let cert_pem = read(cert_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ConfigError::Key { what: "TLS certificate", message: format!("{}: {e}", cert_path.display()) })?;
    if certs.is_empty() {
        return Err(ConfigError::Key {
            what: "TLS certificate",
            message: format!("{}: no PEM CERTIFICATE block", cert_path.display()),
        });
    }
    let key_pem = phasebox_config::secret_file::read(key_path, "TLS private key file")?;
    let key_pem = key_pem.as_bytes();
    // The parser's message may quote what it could not parse: only say what kind of failure.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| ConfigError::Key {
        what: "TLS private key",
        message: format!(
            "{}: {}",
            key_path.display(),
            match e {
                rustls::pki_types::pem::Error::NoItemsFound => "no PEM PRIVATE KEY block (PKCS#8, PKCS#1 or SEC1)",
                _ => "not a valid PEM private key",
            }
        ),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError::Key {
            what: "TLS certificate or key",
            message: format!("{} with {}: {e}", cert_path.display(), key_path.display()),
        })?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// A listener yielding established TLS connections, for [`axum::serve()`]. Accepting and
/// handshaking happen in a background task, which ends when the listener is dropped.
#[derive(Debug)]
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    task: JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `config`.
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(listener, TlsAcceptor::from(config), tx));
        Ok(TlsListener { ready, local, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let permits = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accept task never ends on its own; if it did, accept nothing more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
