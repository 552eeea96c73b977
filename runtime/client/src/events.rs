//! phasebox's job event stream, `GET /phasebox/v1/job/<id>/events` (server-sent events): a
//! job's lifecycle, results, log fragments and agent events as they happen, resumable from a
//! sequence number. The agent follows it to notice a cancel at once. A phasebox addition: a
//! Testflinger server answers 404.

use std::time::Duration;

use reqwest::Method;
use reqwest::header::ACCEPT;

use crate::client::{Client, endpoint, expect_ok, seg};
use crate::error::Result;

/// How long one event stream may stay open; the caller stops following it earlier.
const STREAM_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// One server-sent event of a job's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStreamEvent {
    /// The event's sequence number (`id:`), to resume after; `None` for the closing `end`.
    pub id: Option<i64>,
    /// Its kind (`event:`): `submitted`, `claimed`, `state`, `result`, `log`, `attachments`,
    /// `artifact`, `agent`, and `end` when the job is over.
    pub kind: String,
    /// Its data (`data:`), JSON text.
    pub data: String,
}

/// An open job event stream; read it with [`JobEventStream::next`].
#[derive(Debug)]
pub struct JobEventStream {
    response: reqwest::Response,
    client: Client,
    endpoint: String,
    buffer: Vec<u8>,
    done: bool,
}

impl Client {
    /// `GET /phasebox/v1/job/<id>/events[?after=N][&kind=K]`: opens the job's event stream,
    /// from the event after `after` (from the start when `None`), with only the event kinds
    /// in `kinds` (all when empty; the final `end` always comes). [`crate::ClientError::NotFound`]
    /// for an unknown job or a server without the stream (a Testflinger server).
    pub async fn job_events(&self, job_id: &str, after: Option<i64>, kinds: &[&str]) -> Result<JobEventStream> {
        let mut query: Vec<String> = after.map(|n| format!("after={n}")).into_iter().collect();
        query.extend(kinds.iter().map(|k| format!("kind={}", seg(k))));
        let mut path = format!("/phasebox/v1/job/{}/events", seg(job_id));
        if !query.is_empty() {
            path = format!("{path}?{}", query.join("&"));
        }
        let ep = endpoint(&Method::GET, &path);
        let r = self.send(Method::GET, &path, STREAM_LIMIT, &|r| Ok(r.header(ACCEPT, "text/event-stream"))).await?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(crate::ClientError::NotFound {
                endpoint: ep,
                message: format!("no event stream for job {job_id} (unknown job, or not a phasebox server)"),
            });
        }
        let response = expect_ok(r, &ep).await?;
        Ok(JobEventStream { response, client: self.clone(), endpoint: ep, buffer: Vec::new(), done: false })
    }
}

impl JobEventStream {
    /// The next event; `None` once the server has closed the stream (after `end`).
    pub async fn next(&mut self) -> Result<Option<JobStreamEvent>> {
        loop {
            if let Some(event) = self.take_event() {
                return Ok(Some(event));
            }
            if self.done {
                return Ok(None);
            }
            match self.response.chunk().await {
                // Line ends may be CRLF; JSON data never holds a raw CR.
                Ok(Some(bytes)) => self.buffer.extend(bytes.iter().filter(|b| **b != b'\r')),
                Ok(None) => {
                    self.done = true;
                    // A last event without its blank line still counts.
                    if !self.buffer.is_empty() {
                        self.buffer.extend_from_slice(b"\n\n");
                    }
                }
                Err(e) => return Err(self.client.transport_error(e, &self.endpoint, STREAM_LIMIT)),
            }
        }
    }

    fn take_event(&mut self) -> Option<JobStreamEvent> {
        take_event(&mut self.buffer)
    }
}

/// Parses one complete event (ended by a blank line) off `buffer`, skipping comments (the
/// server's keep-alives) and events without data.
fn take_event(buffer: &mut Vec<u8>) -> Option<JobStreamEvent> {
    loop {
        let end = buffer.windows(2).position(|w| w == b"\n\n")?;
        let rest = buffer.split_off(end + 2);
        let block = String::from_utf8_lossy(&buffer[..end]).into_owned();
        *buffer = rest;
        let mut event = JobStreamEvent { id: None, kind: "message".into(), data: String::new() };
        let mut has_data = false;
        for line in block.lines() {
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "id" => event.id = value.trim().parse().ok(),
                "event" => event.kind = value.to_owned(),
                "data" => {
                    if has_data {
                        event.data.push('\n');
                    }
                    event.data.push_str(value);
                    has_data = true;
                }
                _ => {}
            }
        }
        if has_data {
            return Some(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_across_chunks_and_skip_keep_alives() {
        let mut buffer = b": keep-alive\n\nid: 7\nevent: state\ndata: {\"job_state\":".to_vec();
        assert_eq!(take_event(&mut buffer), None);
        buffer.extend_from_slice(b"\"cancelled\"}\n\nevent: end\ndata: a\ndata: b\n\n");
        let first = take_event(&mut buffer).unwrap();
        assert_eq!(
            first,
            JobStreamEvent { id: Some(7), kind: "state".into(), data: r#"{"job_state":"cancelled"}"#.into() }
        );
        let second = take_event(&mut buffer).unwrap();
        assert_eq!((second.id, second.kind.as_str(), second.data.as_str()), (None, "end", "a\nb"));
        assert_eq!(take_event(&mut buffer), None);
        assert!(buffer.is_empty());
    }
}
