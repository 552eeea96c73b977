//! The simulated DUT's serial console, served over raw TCP like ser2net does: every client
//! sees the DUT's output from the moment it connects, and what any client types goes to the
//! DUT. The console server itself stays up while the DUT is off.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::error::RecvError;

use crate::machine::Machine;

pub(crate) async fn serve(listener: TcpListener, machine: Arc<Machine>) {
    loop {
        let Some((socket, _)) = machine.accept(&listener, "console").await else { return };
        let machine = machine.clone();
        machine.tasks.clone().spawn(client(socket, machine));
    }
}

async fn client(socket: TcpStream, machine: Arc<Machine>) {
    let _ = socket.set_nodelay(true);
    let mut output = machine.subscribe_console();
    let (mut reader, mut writer) = socket.into_split();
    let to_client = async {
        loop {
            match output.recv().await {
                Ok(data) => {
                    if writer.write_all(&data).await.is_err() {
                        return;
                    }
                }
                // A client too slow to keep up misses output, as on a real serial line.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return,
            }
        }
    };
    let from_client = async {
        let mut buffer = [0u8; 1024];
        loop {
            match reader.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => machine.console_input(&buffer[..n]),
            }
        }
    };
    tokio::select! {
        () = to_client => {}
        () = from_client => {}
        () = machine.token.cancelled() => {}
    }
}

/// Shows on the console what commands append to the simulated `/dev/console` file, polling it
/// every 50 ms from where the last read ended.
pub(crate) async fn feed_system_console(machine: Arc<Machine>, token: tokio_util::sync::CancellationToken) {
    let path = machine.dirs.console_in.clone();
    let _ = tokio::fs::write(&path, b"").await;
    let mut seen = 0usize;
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let Ok(data) = tokio::fs::read(&path).await else { continue };
        if data.len() < seen {
            seen = 0; // truncated by someone: start over
        }
        if data.len() > seen {
            machine.system_console_write(&data[seen..]);
            seen = data.len();
        }
    }
}
