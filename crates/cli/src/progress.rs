//! What a long `apply` is doing. On a terminal: a spinner on stderr while it reads and plans, then a bar with
//! the count of changes applied out of the plan's total, the last one done and the time so far, and the
//! per-change lines above it. Piped: the same per-change lines on stdout
//! as plain text, one a line, so scripts can read them. `--output json` prints no line on stdout; the spinner
//! (stderr, terminal only) never mixes with the JSON.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use meshtrust_core::plan::Change;
use meshtrust_engine::AppliedChange;

use crate::args::OutputFormat;

pub struct Progress {
    bar: Option<ProgressBar>,
    /// Per-change lines on stdout (text output only).
    lines: bool,
}

impl Progress {
    /// `start` says what happens before the first change (observing and planning).
    pub fn new(output: OutputFormat, start: String) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} [{elapsed}] {pos} applied · {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_message(start);
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Progress {
            bar,
            lines: output == OutputFormat::Text,
        }
    }

    /// The plan is known: the spinner becomes a bar with its total. A re-plan after a lost race adds its
    /// changes to what is already done.
    pub fn planned(&self, changes: usize) {
        let Some(bar) = &self.bar else { return };
        bar.set_length(bar.position() + changes as u64);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed}] {bar:24} {pos}/{len} applied · {msg}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(if changes == 0 {
            "nothing to change"
        } else {
            "applying"
        });
    }

    pub fn applied(&self, change: &Change, applied: &AppliedChange) {
        let line = done_line(change, applied);
        match &self.bar {
            Some(bar) => {
                bar.inc(1);
                bar.set_message(format!("{} {}", change.target, change.resource));
                if self.lines {
                    bar.suspend(|| println!("{line}"));
                }
            }
            None if self.lines => println!("{line}"),
            None => {}
        }
    }
}

impl Drop for Progress {
    /// The spinner leaves no trace, whether apply finished or failed.
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `  done cluster-a cacerts: ...`: the line apply prints per change (kept stable for scripts).
fn done_line(change: &Change, applied: &AppliedChange) -> String {
    format!(
        "  done {} {}: {}",
        change.target, change.resource, applied.detail
    )
}
