//! The console handle: a session on the DUT's serial console, served over TCP.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::TcpConsole;
use crate::error::{DeviceError, ErrorKind};
use crate::record::{Handle, Shared, Started};

/// How much unread console output a session keeps. Past this, the oldest bytes are dropped
/// (a console is a stream: nobody reading it is allowed to stall the DUT).
const BUFFER_LIMIT: usize = 1 << 20;
/// Time limit for one write to the console server.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What [`ConsoleSession::expect`] waits for.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// A plain substring (`&str` and `String` convert to this).
    Substring(String),
    /// A regular expression, matched against the raw bytes (see [`Pattern::regex`]).
    Regex(regex::bytes::Regex),
}

impl Pattern {
    /// A regular expression pattern (`regex` crate syntax).
    pub fn regex(pattern: &str) -> Result<Pattern, regex::Error> {
        Ok(Pattern::Regex(regex::bytes::Regex::new(pattern)?))
    }

    /// The end of the first match in `haystack`.
    fn find_end(&self, haystack: &[u8]) -> Option<usize> {
        match self {
            Pattern::Substring(s) => memchr::memmem::find(haystack, s.as_bytes()).map(|i| i + s.len()),
            Pattern::Regex(r) => r.find(haystack).map(|m| m.end()),
        }
    }

    /// How many trailing bytes must be kept when older output is dropped, so a match that
    /// straddles the cut is still found.
    fn overlap(&self) -> usize {
        match self {
            Pattern::Substring(s) => s.len(),
            Pattern::Regex(_) => 64 << 10,
        }
    }
}

impl From<&str> for Pattern {
    fn from(s: &str) -> Self {
        Pattern::Substring(s.to_owned())
    }
}

impl From<String> for Pattern {
    fn from(s: String) -> Self {
        Pattern::Substring(s)
    }
}

impl From<regex::bytes::Regex> for Pattern {
    fn from(r: regex::bytes::Regex) -> Self {
        Pattern::Regex(r)
    }
}

impl From<regex::Regex> for Pattern {
    fn from(r: regex::Regex) -> Self {
        Pattern::Regex(regex::bytes::Regex::new(r.as_str()).expect("a valid regex is a valid bytes regex"))
    }
}

/// A session on a DUT's serial console: what the DUT prints, and a way to type into it.
///
/// Output that arrives is buffered until [`read`](Self::read) or [`expect`](Self::expect)
/// consumes it (at most 1 MiB; older output is dropped past that). Dropping the session closes
/// the connection to the console server.
pub struct ConsoleSession {
    shared: Arc<Shared>,
    stream: TcpStream,
    buffer: BytesMut,
    closed: bool,
}

impl std::fmt::Debug for ConsoleSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSession")
            .field("device", &self.shared.name)
            .field("buffered", &self.buffer.len())
            .field("closed", &self.closed)
            .finish()
    }
}

impl ConsoleSession {
    pub(crate) async fn open(shared: Arc<Shared>, config: &TcpConsole) -> Result<Self, DeviceError> {
        let started = Started::now();
        let result = match tokio::time::timeout(config.connect_timeout, TcpStream::connect(&config.address)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Ok(Err(e)) => {
                tracing::warn!(device = %shared.name, address = %config.address, error = %e, "console server unreachable");
                Err(shared.error(
                    Handle::Console,
                    "open",
                    ErrorKind::Unreachable,
                    format!("could not connect to the console server: {e}"),
                ))
            }
            Err(_) => Err(shared.error(
                Handle::Console,
                "open",
                ErrorKind::Timeout,
                format!("the console server did not accept a connection within {:?}", config.connect_timeout),
            )),
        };
        let stream = shared.finish(Handle::Console, "open", started, result, |_| "connected".into())?;
        Ok(ConsoleSession { shared, stream, buffer: BytesMut::new(), closed: false })
    }

    /// Reads up to `max` bytes of console output: what is buffered, or else what arrives
    /// within `timeout`. An empty result means nothing arrived in time. Fails with
    /// [`ErrorKind::Closed`] when the console server closed the connection and nothing is left.
    pub async fn read(&mut self, max: usize, timeout: Duration) -> Result<Bytes, DeviceError> {
        let started = Started::now();
        let result = self.read_inner(max, timeout).await;
        self.shared.finish(Handle::Console, "read", started, result, |b| format!("{} bytes", b.len()))
    }

    async fn read_inner(&mut self, max: usize, timeout: Duration) -> Result<Bytes, DeviceError> {
        if self.buffer.is_empty() && !self.closed {
            match tokio::time::timeout(timeout, self.fill()).await {
                Ok(result) => result.map_err(|e| self.io_error("read", e))?,
                Err(_) => return Ok(Bytes::new()),
            }
        }
        if self.buffer.is_empty() && self.closed {
            return Err(self.closed_error("read"));
        }
        let n = max.min(self.buffer.len());
        Ok(self.buffer.split_to(n).freeze())
    }

    /// Sends `data` to the console, as if typed.
    pub async fn write(&mut self, data: &[u8]) -> Result<(), DeviceError> {
        let started = Started::now();
        let result = match tokio::time::timeout(WRITE_TIMEOUT, self.stream.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.io_error("write", e)),
            Err(_) => Err(self.shared.error(
                Handle::Console,
                "write",
                ErrorKind::Timeout,
                format!("the console server did not take the input within {WRITE_TIMEOUT:?}"),
            )),
        };
        self.shared.finish(Handle::Console, "write", started, result, |_| format!("{} bytes", data.len()))
    }

    /// Waits until `pattern` appears in the console output, at most `timeout`, and returns the
    /// output up to and including the match (as text, invalid UTF-8 replaced). What follows the
    /// match stays buffered for the next read or expect.
    ///
    /// `pattern` is a plain substring (`"login:"`) or a [`Pattern::regex`]. On timeout the error
    /// ends with the last output seen, and that output stays buffered.
    pub async fn expect(&mut self, pattern: impl Into<Pattern>, timeout: Duration) -> Result<String, DeviceError> {
        let pattern = pattern.into();
        let started = Started::now();
        let result = self.expect_inner(&pattern, timeout).await;
        self.shared
            .finish(Handle::Console, "expect", started, result, |text| format!("matched after {} bytes", text.len()))
    }

    async fn expect_inner(&mut self, pattern: &Pattern, timeout: Duration) -> Result<String, DeviceError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Where to resume searching: everything before this was searched without a match.
        let mut searched = 0usize;
        loop {
            let from = searched.saturating_sub(pattern.overlap());
            if let Some(end) = pattern.find_end(&self.buffer[from..]) {
                let matched = self.buffer.split_to(from + end);
                return Ok(String::from_utf8_lossy(&matched).into_owned());
            }
            searched = self.buffer.len();
            if self.closed {
                return Err(self.closed_error("expect"));
            }
            match tokio::time::timeout_at(deadline, self.fill()).await {
                Ok(result) => result.map_err(|e| self.io_error("expect", e))?,
                Err(_) => {
                    let tail = &self.buffer[self.buffer.len().saturating_sub(200)..];
                    return Err(self.shared.error(
                        Handle::Console,
                        "expect",
                        ErrorKind::Timeout,
                        format!(
                            "pattern not seen within {timeout:?}; last output: {:?}",
                            String::from_utf8_lossy(tail)
                        ),
                    ));
                }
            }
            if self.buffer.len() > BUFFER_LIMIT {
                let drop = self.buffer.len() - BUFFER_LIMIT;
                let _ = self.buffer.split_to(drop);
                searched = searched.saturating_sub(drop);
            }
        }
    }

    /// Reads whatever arrives next into the buffer (cancel-safe: a read that completes has
    /// already appended its bytes). Only called with an empty buffer, or from `expect`, which
    /// keeps the buffer within `BUFFER_LIMIT`.
    async fn fill(&mut self) -> std::io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            self.closed = true;
        } else {
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    fn io_error(&self, operation: &'static str, e: std::io::Error) -> DeviceError {
        self.shared.error(Handle::Console, operation, ErrorKind::Io, format!("console connection: {e}"))
    }

    fn closed_error(&self, operation: &'static str) -> DeviceError {
        self.shared.error(Handle::Console, operation, ErrorKind::Closed, "the console server closed the connection")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_find_the_end_of_the_first_match() {
        assert_eq!(Pattern::from("login:").find_end(b"boot\r\ndut login: "), Some(16));
        assert_eq!(Pattern::from("x").find_end(b"abc"), None);
        let re = Pattern::regex(r"sha256 [0-9a-f]{12}").unwrap();
        assert_eq!(re.find_end(b"Booting img (sha256 0123456789ab)"), Some(32));
    }
}
