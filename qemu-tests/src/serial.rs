//! A lab VM's serial console, as QEMU writes it to a file (`-serial file:PATH` or a file
//! chardev with `append=on`): the one reader of that log and the one wait on it, used by
//! every VM handle ([`crate::vm::Vm`], [`crate::power::Machine`], [`crate::rack::Machine`])
//! and by the direct-kernel boot tests.
//!
//! It knows nothing about QEMU processes or power: a handle that can tell a wait is hopeless
//! (QEMU exited, the machine is off) passes that check to [`SerialLog::wait_for`].

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

/// How often a wait looks at the log again.
const POLL: Duration = Duration::from_millis(100);

/// How many lines of the log an error shows.
const TAIL_LINES: usize = 40;

/// The serial log of one machine, named for error messages.
#[derive(Debug, Clone)]
pub struct SerialLog {
    name: String,
    path: PathBuf,
}

impl SerialLog {
    /// The log at `path` of the machine called `name` (the file need not exist yet).
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        SerialLog {
            name: name.into(),
            path: path.into(),
        }
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The console so far (lossy UTF-8; empty while there is no file).
    pub fn text(&self) -> String {
        self.since(0)
    }

    /// The console from byte offset `mark` on (a [`SerialLog::mark`] taken earlier).
    pub fn since(&self, mark: usize) -> String {
        std::fs::read(&self.path)
            .map(|b| String::from_utf8_lossy(b.get(mark..).unwrap_or_default()).into_owned())
            .unwrap_or_default()
    }

    /// The log's length now: output after it is what a later [`SerialLog::since`] or
    /// [`SerialLog::wait_for`] with this mark looks at.
    pub fn mark(&self) -> usize {
        std::fs::metadata(&self.path).map_or(0, |m| usize::try_from(m.len()).unwrap_or(0))
    }

    /// Waits until the output after `mark` contains `needle`; returns how long the wait
    /// took. After each look `give_up` may end the wait early with a reason (the machine
    /// stopped). The error names the machine, the needle and why, with the log's tail.
    pub fn wait_for(
        &self,
        mark: usize,
        needle: &str,
        timeout: Duration,
        mut give_up: impl FnMut() -> anyhow::Result<Option<String>>,
    ) -> anyhow::Result<Duration> {
        let t0 = Instant::now();
        loop {
            let text = self.since(mark);
            if text.contains(needle) {
                return Ok(t0.elapsed());
            }
            let why = match give_up()? {
                Some(why) => why,
                None if t0.elapsed() >= timeout => {
                    format!("not on the serial console after {timeout:?}")
                }
                None => {
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            bail!(
                "{}: {needle:?} {why}\n--- serial ---\n{}",
                self.name,
                tail(&text, TAIL_LINES)
            );
        }
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_output_after_the_mark() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = SerialLog::new("vm1", dir.path().join("serial.log"));
        assert_eq!((log.mark(), log.text()), (0, String::new()));
        std::fs::write(log.path(), "SeaBIOS\niPXE\n").expect("write");
        let mark = log.mark();
        assert_eq!(mark, 13);
        log.wait_for(0, "iPXE", Duration::from_secs(1), || Ok(None))
            .expect("seen from the start");
        let err = log
            .wait_for(mark, "iPXE", Duration::from_millis(50), || Ok(None))
            .expect_err("nothing after the mark");
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with("vm1: \"iPXE\" not on the serial console after"),
            "{msg}"
        );
        let path = log.path().to_owned();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            let mut t = std::fs::read_to_string(&path).expect("read");
            t.push_str("agent: up\n");
            std::fs::write(&path, t).expect("write");
        });
        log.wait_for(mark, "agent: up", Duration::from_secs(5), || Ok(None))
            .expect("appears later");
        writer.join().expect("join");
        assert_eq!(log.since(mark), "agent: up\n");
    }

    #[test]
    fn give_up_ends_the_wait_with_its_reason_and_the_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = SerialLog::new("vm2", dir.path().join("serial.log"));
        let lines: String = (0..50).map(|i| format!("line {i}\n")).collect();
        std::fs::write(log.path(), lines).expect("write");
        let t0 = Instant::now();
        let err = log
            .wait_for(0, "never", Duration::from_secs(60), || {
                Ok(Some("never appeared and the machine is off".into()))
            })
            .expect_err("gave up");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let msg = format!("{err:#}");
        assert!(
            msg.starts_with(
                "vm2: \"never\" never appeared and the machine is off\n--- serial ---\nline 10\n"
            ),
            "{msg}"
        );
        assert!(msg.ends_with("line 49"), "{msg}");
    }
}
