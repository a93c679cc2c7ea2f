//! A minimal QMP client: one connection, capabilities negotiated, events kept.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::BootDevice;

/// A QMP connection (capabilities negotiated); events are kept for [`Qmp::wait_event`].
pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<String>,
}

impl Qmp {
    pub(crate) fn connect(path: &Path) -> anyhow::Result<Qmp> {
        let stream =
            UnixStream::connect(path).with_context(|| format!("connecting {}", path.display()))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: Vec::new(),
        };
        q.read()?; // greeting
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    fn read(&mut self) -> anyhow::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP socket closed");
        }
        serde_json::from_str(&line).context("parsing QMP")
    }

    pub(crate) fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut msg = json!({"execute": command});
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(self.writer, "{msg}")?;
        loop {
            let v = self.read()?;
            if let Some(e) = v.get("event").and_then(Value::as_str) {
                self.events.push(e.to_owned());
                continue;
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {command}: {e}");
            }
            return Ok(v.get("return").cloned().unwrap_or(Value::Null));
        }
    }

    pub(crate) fn wait_event(&mut self, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        while !self.events.iter().any(|e| e == name) {
            if Instant::now() >= deadline {
                bail!("no QMP {name} event within {timeout:?}");
            }
            let v = self.read()?;
            if let Some(e) = v.get("event").and_then(Value::as_str) {
                self.events.push(e.to_owned());
            }
        }
        Ok(())
    }
}

/// Puts `first` at bootindex 1 and the other device at 2 (one is parked at 99 first: two
/// devices may not share an index).
pub(crate) fn set_bootindex(q: &mut Qmp, first: BootDevice) -> anyhow::Result<()> {
    let (a, b) = match first {
        BootDevice::Pxe => ("nic0", "disk0"),
        BootDevice::Disk => ("disk0", "nic0"),
    };
    for (dev, index) in [(b, 99), (a, 1), (b, 2)] {
        q.execute(
            "qom-set",
            Some(json!({
                "path": format!("/machine/peripheral/{dev}"),
                "property": "bootindex",
                "value": index,
            })),
        )
        .with_context(|| format!("setting bootindex of {dev}"))?;
    }
    Ok(())
}
