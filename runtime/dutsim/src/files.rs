//! A static HTTP file server for the simulated lab: the image server and key server that real
//! labs have beside their devices. `GET <path>` answers the file's bytes, anything else 404;
//! every connection is closed after one response. For demos and tests only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::DutSimError;

/// Largest request head read before answering.
const MAX_HEAD: usize = 16 * 1024;

/// A running file server; stops when dropped.
#[derive(Debug)]
pub struct FileServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FileServer {
    /// Serves `files` (path → bytes, paths starting with `/`) on 127.0.0.1, an ephemeral port.
    pub async fn start(files: BTreeMap<String, Vec<u8>>) -> Result<FileServer, DutSimError> {
        let listener =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(crate::io_error("bind the file server"))?;
        let addr = listener.local_addr().map_err(crate::io_error("file server address"))?;
        let files = Arc::new(files);
        let task = tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(answer(conn, files.clone()));
            }
        });
        Ok(FileServer { addr, task })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut conn: tokio::net::TcpStream, files: Arc<BTreeMap<String, Vec<u8>>>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf).await {
            Ok(n) if n > 0 && head.len() < MAX_HEAD => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&head).lines().next().unwrap_or_default().to_owned();
    let mut parts = line.split(' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or("/"));
    let (status, body): (&str, &[u8]) = match (method, files.get(path)) {
        ("GET", Some(body)) => ("200 OK", body),
        ("GET", None) => ("404 Not Found", b"not found\n"),
        _ => ("405 Method Not Allowed", b"GET only\n"),
    };
    let head = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    let _ = conn.write_all(head.as_bytes()).await;
    let _ = conn.write_all(body).await;
    let _ = conn.shutdown().await;
}
