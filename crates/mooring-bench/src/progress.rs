//! A progress bar for timed runs, shown only when standard output is a terminal.

use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar over the planned length of a run, in milliseconds, with a message of live figures.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for a run of `total`; hidden unless `visible` and standard output is a terminal.
    pub fn new(total: Duration, prefix: &str, visible: bool) -> Self {
        let length = u64::try_from(total.as_millis()).unwrap_or(u64::MAX).max(1);
        let bar = if visible && std::io::stdout().is_terminal() {
            ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        let style = ProgressStyle::with_template(
            "{prefix:>16} [{elapsed_precise}] {wide_bar} {percent:>3}% {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(prefix.to_owned());
        Self { bar }
    }

    /// Moves the bar to `elapsed` and shows `message`.
    pub fn update(&self, elapsed: Duration, message: String) {
        let position = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        self.bar
            .set_position(position.min(self.bar.length().unwrap_or(position)));
        self.bar.set_message(message);
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
