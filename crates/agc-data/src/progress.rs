//! Progress of long work (caching images, generating data, training epochs, predictions),
//! reported through a callback that the application draws. The libraries draw nothing: the
//! `agc` binary draws progress bars; a library user may log the calls, show them in a GUI, or
//! ignore them ([`Silent`]).

use std::fmt::Debug;
use std::sync::Arc;

/// Receives the start of each long task.
pub trait Progress: Send + Sync + Debug {
    /// A task of `len` steps (images, batches) starts; `message` says what it is. The task
    /// ends when the returned handle is dropped.
    fn start(&self, message: &str, len: u64) -> Box<dyn Task>;
}

/// A running task: its steps are reported as they are done.
pub trait Task: Send + Sync {
    /// `n` more steps are done.
    fn advance(&self, n: u64);
}

/// A shared [`Progress`], as the options and runs that outlive one call hold it.
pub type Reporter = Arc<dyn Progress>;

/// Reports nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

struct SilentTask;

impl Task for SilentTask {
    fn advance(&self, _n: u64) {}
}

impl Progress for Silent {
    fn start(&self, _message: &str, _len: u64) -> Box<dyn Task> {
        Box::new(SilentTask)
    }
}

/// A [`Reporter`] that reports nowhere.
pub fn silent() -> Reporter {
    Arc::new(Silent)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;

    use super::{Progress, Task};

    /// Records every task's message and how far it got, for tests.
    #[derive(Debug, Default)]
    pub(crate) struct Recorder(pub(crate) std::sync::Arc<Mutex<Vec<(String, u64, u64)>>>);

    struct Recording(std::sync::Arc<Mutex<Vec<(String, u64, u64)>>>, usize);

    impl Task for Recording {
        fn advance(&self, n: u64) {
            self.0.lock().expect("lock")[self.1].2 += n;
        }
    }

    impl Progress for Recorder {
        fn start(&self, message: &str, len: u64) -> Box<dyn Task> {
            let mut tasks = self.0.lock().expect("lock");
            tasks.push((message.to_string(), len, 0));
            Box::new(Recording(std::sync::Arc::clone(&self.0), tasks.len() - 1))
        }
    }
}
