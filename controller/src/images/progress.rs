//! How an import reports its progress: the phase, how far it is, and when it started.
//!
//! The image store calls a [`ProgressSink`] (nothing by default); `ingot image import` draws
//! what it gets (`cli::image`). The conversion's percentage comes from `qemu-img convert -p`,
//! whose output [`qemu_img_percent`] reads.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// One report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ImportProgress {
    /// `qemu-img convert` of a `format` image to raw, `percent` done (as it says).
    Convert {
        format: &'static str,
        percent: f64,
        started: Instant,
    },
    /// Compressing the raw disk: `done` of `total` raw bytes read.
    Compress {
        done: u64,
        total: u64,
        started: Instant,
    },
}

/// What a [`ProgressSink`] calls.
type ReportFn = dyn Fn(&ImportProgress) + Send + Sync;

/// Receives an import's reports; cheap to clone.
#[derive(Clone, Default)]
pub struct ProgressSink(Option<Arc<ReportFn>>);

impl ProgressSink {
    /// A sink that calls `f` with every report.
    pub fn new(f: impl Fn(&ImportProgress) + Send + Sync + 'static) -> Self {
        ProgressSink(Some(Arc::new(f)))
    }

    /// Hands `p` to the receiver, if any.
    pub fn report(&self, p: &ImportProgress) {
        if let Some(f) = &self.0 {
            f(p);
        }
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "ProgressSink(set)"
        } else {
            "ProgressSink(none)"
        })
    }
}

/// PURE: the percentage in one progress update of `qemu-img convert -p`, which prints
/// `    (12.34/100%)` and a carriage return each time it advances.
pub fn qemu_img_percent(chunk: &str) -> Option<f64> {
    let inner = chunk.trim().strip_prefix('(')?.strip_suffix("/100%)")?;
    let v: f64 = inner.parse().ok()?;
    (0.0..=100.0).contains(&v).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_qemu_img_progress() {
        let cases = [
            ("    (0.00/100%)", Some(0.0)),
            ("    (45.50/100%)", Some(45.5)),
            ("(100.00/100%)\n", Some(100.0)),
            ("", None),
            ("(abc/100%)", None),
            ("(150.00/100%)", None),
            ("qemu-img: error", None),
        ];
        for (text, want) in cases {
            assert_eq!(qemu_img_percent(text), want, "{text:?}");
        }
    }

    #[test]
    fn sink_reports_only_when_set() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let p = ImportProgress::Compress {
            done: 1,
            total: 2,
            started: Instant::now(),
        };
        ProgressSink::default().report(&p);
        let seen = Arc::new(AtomicU64::new(0));
        let s = Arc::clone(&seen);
        let sink = ProgressSink::new(move |_| {
            s.fetch_add(1, Ordering::SeqCst);
        });
        sink.clone().report(&p);
        sink.report(&p);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert_eq!(format!("{sink:?}"), "ProgressSink(set)");
    }
}
