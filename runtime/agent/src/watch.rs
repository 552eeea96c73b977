//! Noticing a cancel on a phasebox server from the job's event stream.

use std::time::Duration;

use phasebox_client::{Backoff, Client};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Follows the job's event stream (`GET /phasebox/v1/job/<id>/events`) and cancels `cancel`
/// when a `state` event says `cancelled` — even one that a later state post overwrote. A
/// broken stream is resumed after the last event seen (with backoff while the server is
/// away). Returns `false` at once when the server has no event stream (a Testflinger server:
/// the caller polls instead), `true` when the stream ended with the job.
pub(crate) async fn event_stream(client: &Client, job_id: &str, cancel: &CancellationToken) -> bool {
    let mut after = None;
    let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(8));
    loop {
        // Only `state` events (and the final `end`): the job's own output is not sent back.
        let mut stream = match client.job_events(job_id, after, &["state"]).await {
            Ok(s) => s,
            Err(e) if e.is_not_found() && after.is_none() => return false,
            Err(e) => {
                tracing::debug!(job_id, error = %e, "cannot follow the job's event stream; retrying");
                tokio::time::sleep(retry.next_delay()).await;
                continue;
            }
        };
        loop {
            match stream.next().await {
                Ok(Some(event)) => {
                    retry.reset();
                    if event.id.is_some() {
                        after = event.id;
                    }
                    let state = serde_json::from_str::<Value>(&event.data)
                        .ok()
                        .and_then(|d| d.get("job_state").and_then(Value::as_str).map(str::to_owned));
                    if matches!(event.kind.as_str(), "state" | "end") && state.as_deref() == Some("cancelled") {
                        tracing::info!(job_id, "job cancelled on the server");
                        cancel.cancel();
                        return true;
                    }
                    if event.kind == "end" {
                        return true;
                    }
                }
                Ok(None) => return true,
                Err(e) => {
                    tracing::debug!(job_id, error = %e, "the job's event stream broke; resuming");
                    break;
                }
            }
        }
    }
}
