//! Progress drawn as bars on the terminal: the binary's [`Progress`]; the libraries draw
//! nothing.

use agc::data::{Progress, Task};

/// Progress drawn as bars on the terminal (stderr), one per running task.
#[derive(Debug)]
pub(crate) struct Bars;

struct Bar(indicatif::ProgressBar);

impl Task for Bar {
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bars {
    fn start(&self, message: &str, len: u64) -> Box<dyn Task> {
        let bar = indicatif::ProgressBar::new(len);
        let style = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}",
        )
        .map_or_else(
            |_| indicatif::ProgressStyle::default_bar(),
            |s| s.progress_chars("=> "),
        );
        bar.set_style(style);
        bar.set_message(message.to_string());
        Box::new(Bar(bar))
    }
}
