//! The guest's stdout and stderr: every write becomes a [`PhaseEvent::Output`] on the phase's
//! event channel as it happens (never buffered whole), counted against the output limit.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use tokio_util::sync::PollSender;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use crate::events::{EventSender, PhaseEvent, Stream};
use crate::limits::Monitor;

/// One of the guest's output streams.
pub(crate) struct GuestOutput {
    pub(crate) stream: Stream,
    pub(crate) events: EventSender,
    pub(crate) monitor: Arc<Monitor>,
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(OutputWriter {
            stream: self.stream,
            sender: PollSender::new(self.events.clone()),
            monitor: self.monitor.clone(),
        })
    }
}

struct OutputWriter {
    stream: Stream,
    sender: PollSender<PhaseEvent>,
    monitor: Arc<Monitor>,
}

impl AsyncWrite for OutputWriter {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if let Some(stop) = self.monitor.stopped_because() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, format!("phase {stop}"))));
        }
        // Wait for room in the channel first: a slow consumer slows the guest down.
        match self.sender.poll_reserve(cx) {
            Poll::Pending => return Poll::Pending,
            // Nobody listens any more: the output has nowhere to go, but the guest may go on.
            Poll::Ready(Err(_)) => return Poll::Ready(Ok(buf.len())),
            Poll::Ready(Ok(())) => {}
        }
        let n = self.monitor.output(buf.len());
        if n == 0 {
            self.sender.abort_send();
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "phase wrote more than its output limit",
            )));
        }
        if self.stream == Stream::Stderr {
            self.monitor.keep_stderr(&buf[..n]);
        }
        let event =
            PhaseEvent::Output { stream: self.stream, data: Bytes::copy_from_slice(&buf[..n]), at: SystemTime::now() };
        // The slot was reserved above, so this cannot fail for lack of room.
        let _ = self.sender.send_item(event);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
