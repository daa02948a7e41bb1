//! Claims on a run's steps and folds, and on a shared cache, so that several processes (on one
//! machine, or on several sharing a file system) can work on one run without racing.
//!
//! A claim is an exclusive advisory lock (`flock`) on a small file that also holds who took it
//! (process, host, time, what for). The operating system releases it when the process ends,
//! however it ends, so a claim left by a killed process is recovered by the next one without
//! any clean-up. The files themselves stay: removing a lock file while another process waits
//! on it would let two processes hold "the same" lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Result, TrainError, io};

/// A held claim; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Claim {
    file: File,
    path: PathBuf,
}

impl Claim {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        // Unlocking also happens when the file is closed; this only makes it explicit. The
        // holder's note is cleared so that a reader never names a process that has let go.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

fn open(path: &Path) -> Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io(path))
}

fn note(what: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map_or_else(|| "this host".into(), |h| h.trim().to_string());
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "process {} on {host}, since {since} (Unix time), {what}",
        std::process::id()
    )
}

fn took(mut file: File, path: &Path, what: &str) -> Result<Claim> {
    let text = note(what);
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| file.write_all(text.as_bytes()))
        .and_then(|()| file.flush())
        .map_err(io(path))?;
    Ok(Claim {
        file,
        path: path.to_path_buf(),
    })
}

/// Who holds the claim at `path`, as its holder wrote it.
pub fn holder(path: &Path) -> String {
    let mut text = String::new();
    let _ = File::open(path).and_then(|mut f| f.read_to_string(&mut text));
    if text.trim().is_empty() {
        "another process".into()
    } else {
        text.trim().to_string()
    }
}

/// Takes the claim at `path` for `what` if no other process holds it; `None` if one does.
///
/// # Errors
/// The lock file cannot be created or locked for another reason.
pub fn try_claim(path: &Path, what: &str) -> Result<Option<Claim>> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => took(file, path, what).map(Some),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Takes the claim at `path`, waiting (and saying for whom) while another process holds it.
///
/// # Errors
/// The lock file cannot be created or locked.
pub fn claim(path: &Path, what: &str) -> Result<Claim> {
    if let Some(c) = try_claim(path, what)? {
        return Ok(c);
    }
    tracing::info!("waiting for {} ({})", holder(path), path.display());
    let file = open(path)?;
    file.lock().map_err(io(path))?;
    took(file, path, what)
}

/// Takes the claim at `path` or fails with an error naming the holder.
///
/// # Errors
/// Another process holds the claim, or the lock file cannot be created.
pub fn claim_or_refuse(path: &Path, what: &str) -> Result<Claim> {
    try_claim(path, what)?.ok_or_else(|| TrainError::Busy {
        what: what.to_string(),
        holder: holder(path),
        path: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_claim_names_its_holder_and_is_free_again_once_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("locks/fold0.lock");
        let first = try_claim(&path, "training fold 0")
            .expect("io")
            .expect("free");
        assert!(try_claim(&path, "x").expect("io").is_none());
        let err = claim_or_refuse(&path, "training fold 0")
            .expect_err("held")
            .to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        assert!(err.contains("training fold 0"), "{err}");
        drop(first);
        assert!(try_claim(&path, "x").expect("io").is_some());
    }

    #[test]
    fn a_waiting_claim_is_granted_when_the_holder_lets_go() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("crop.lock");
        let held = claim(&path, "crop").expect("free");
        let (tx, rx) = std::sync::mpsc::channel();
        let p = path.clone();
        let waiter = std::thread::spawn(move || {
            let c = claim(&p, "crop").expect("granted");
            tx.send(()).expect("send");
            drop(c);
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "granted while held");
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("granted after release");
        waiter.join().expect("thread");
    }
}
