//! A minimal QMP client over a unix socket: greeting, `qmp_capabilities`, then one JSON
//! command per line; asynchronous events are skipped.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Nobody listens on the socket (the VM is off).
    #[error("no QEMU listens on {0}")]
    NotRunning(String),
    #[error("QMP on {socket}: {detail}")]
    Io { socket: String, detail: String },
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
}

/// An open QMP connection in command mode.
#[derive(Debug)]
pub struct Qmp {
    socket: String,
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
}

impl Qmp {
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let socket = path.display().to_string();
        let stream = match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
            Err(_) => {
                return Err(QmpError::Io {
                    socket,
                    detail: "connect timed out".to_owned(),
                });
            }
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Err(QmpError::NotRunning(socket));
            }
            Ok(Err(e)) => {
                return Err(QmpError::Io {
                    socket,
                    detail: e.to_string(),
                });
            }
            Ok(Ok(s)) => s,
        };
        let (r, w) = stream.into_split();
        let mut qmp = Self {
            socket,
            reader: BufReader::new(r),
            writer: w,
            timeout,
        };
        let greeting = qmp.read().await?;
        if greeting.get("QMP").is_none() {
            return Err(qmp.io(format!("unexpected greeting {greeting}")));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    fn io(&self, detail: impl Into<String>) -> QmpError {
        QmpError::Io {
            socket: self.socket.clone(),
            detail: detail.into(),
        }
    }

    async fn read(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        let n = tokio::time::timeout(self.timeout, self.reader.read_line(&mut line))
            .await
            .map_err(|_| self.io("no answer in time"))?
            .map_err(|e| self.io(e.to_string()))?;
        if n == 0 {
            return Err(self.io("connection closed"));
        }
        serde_json::from_str(&line).map_err(|e| self.io(format!("invalid JSON: {e}")))
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(&mut self, command: &str, args: Option<Value>) -> Result<Value, QmpError> {
        let mut msg = json!({"execute": command});
        if let Some(a) = args {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| self.io(e.to_string()))?;
        loop {
            let reply = self.read().await?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(err) = reply.get("error") {
                return Err(QmpError::Command {
                    command: command.to_owned(),
                    class: err["class"].as_str().unwrap_or_default().to_owned(),
                    desc: err["desc"].as_str().unwrap_or_default().to_owned(),
                });
            }
            return Ok(reply.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    /// Sends `quit`; QEMU may close the socket before or after answering.
    pub async fn quit(mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) => Ok(()),
            Err(QmpError::Io { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
