//! [`Timeline`]: how long each phase of a scenario (one machine) took, printed as the phases
//! end and side by side in a table at the end of a run.

use std::time::{Duration, Instant};

use anyhow::Context;

/// Durations of the phases of one scenario (one machine), printed as they end.
#[derive(Debug, Clone)]
pub struct Timeline {
    pub label: String,
    pub phases: Vec<(String, Duration)>,
}

impl Timeline {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            phases: Vec::new(),
        }
    }

    /// Runs `f` as phase `name` and records its duration (also when it fails).
    pub fn phase<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let t = Instant::now();
        let r = f().with_context(|| format!("{}: phase {name}", self.label));
        let took = t.elapsed();
        println!(
            "[{}] {name}: {:.1} s{}",
            self.label,
            took.as_secs_f64(),
            if r.is_err() { " (failed)" } else { "" }
        );
        self.phases.push((name.to_owned(), took));
        r
    }

    /// The duration of phase `name`, if it ran.
    pub fn get(&self, name: &str) -> Option<Duration> {
        self.phases.iter().find(|(n, _)| n == name).map(|(_, d)| *d)
    }

    /// A table with one row per phase and one column per timeline.
    pub fn table(timelines: &[Timeline]) -> String {
        let mut names: Vec<&str> = Vec::new();
        for t in timelines {
            for (n, _) in &t.phases {
                if !names.contains(&n.as_str()) {
                    names.push(n);
                }
            }
        }
        let mut out = String::from("| phase |");
        for t in timelines {
            out.push_str(&format!(" {} |", t.label));
        }
        out.push_str("\n|---|");
        out.push_str(&"---:|".repeat(timelines.len()));
        for n in names {
            out.push_str(&format!("\n| {n} |"));
            for t in timelines {
                match t.get(n) {
                    Some(d) => out.push_str(&format!(" {:.1} s |", d.as_secs_f64())),
                    None => out.push_str(" - |"),
                }
            }
        }
        out
    }
}
