//! Progress bars on stderr while a run goes on: one bar per architecture, showing the
//! phase (starting, load, verifying), live request and error counts, and each fault as
//! it happens. Hidden when progress is off or stderr is not a terminal, so logs and CI
//! output stay clean; phases and faults are also logged with `tracing`.

use crate::load::Live;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

/// The progress display of one lab run.
pub struct Progress {
    multi: MultiProgress,
}

impl Progress {
    /// A display on stderr, hidden unless `enabled` and stderr is a terminal.
    pub fn new(enabled: bool) -> Progress {
        let target = if enabled && std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        Progress {
            multi: MultiProgress::with_draw_target(target),
        }
    }

    /// A bar for architecture `name`, whose load lasts `duration`.
    pub fn bar(&self, name: &str, duration: Duration) -> Bar {
        let bar = self
            .multi
            .add(ProgressBar::new(duration.as_millis() as u64));
        let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {msg}")
            .expect("the template is valid")
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(name.to_string());
        Bar {
            bar,
            name: name.to_string(),
        }
    }
}

/// One architecture's bar.
pub struct Bar {
    bar: ProgressBar,
    name: String,
}

impl Bar {
    /// Shows a phase (`starting the cluster`, `verifying`).
    pub fn phase(&self, what: &str) {
        tracing::info!(arch = %self.name, "{what}");
        self.bar.set_message(what.to_string());
    }

    /// Shows the load's progress.
    pub fn load(&self, elapsed: Duration, live: &Live) {
        let (requests, errors, paid) = live.snapshot();
        self.bar.set_position(elapsed.as_millis() as u64);
        self.bar.set_message(format!(
            "{:.0} s  {requests} requests, {errors} errors, {paid} orders paid",
            elapsed.as_secs_f64()
        ));
    }

    /// Prints an event (a fault) above the bars.
    pub fn event(&self, line: &str) {
        tracing::info!(arch = %self.name, "{line}");
        self.bar.println(format!("{:>12}  {line}", self.name));
    }

    /// Leaves the bar with a final message.
    pub fn finish(&self, msg: &str) {
        self.bar.finish_with_message(msg.to_string());
    }
}
