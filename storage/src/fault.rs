//! Fault injection for tests: makes storage I/O fail the way a full or broken disk does, at the
//! points where a real failure has to be survived (WAL append and fsync, block write, WAL
//! checkpoint). Not a public interface: reached through `Db::faults()`, hidden from the docs.
//!
//! Each fault is a flag that stays set until cleared, so a test can hold the "disk" broken
//! across several operations (a background sync retry, a whole persist cycle). Checking a flag
//! is one relaxed atomic load, which the WAL append path can afford.
//!
//! End-to-end tests reach a running binary through the environment: with
//! `TOOLWATCH_FAULT_DIR=<dir>` set, a fault is also on while `<dir>/<name>` exists (`wal_write`,
//! `wal_fsync`, `block_write`, `checkpoint_write`); then each check costs a `stat`. Whoever can
//! set the server's environment owns the process anyway, so this opens nothing new; the server
//! logs a warning when it is set.

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// Where an injected failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Writing a WAL samples record: half the record reaches the file, then ENOSPC.
    WalWrite,
    /// fsync of the open WAL segment: EIO.
    WalFsync,
    /// Finishing a block (cut or compaction) after its chunks were written: ENOSPC.
    BlockWrite,
    /// Writing a WAL checkpoint: half of it reaches the `.tmp` file, then ENOSPC.
    CheckpointWrite,
}

impl Fault {
    /// The file that turns the fault on under `TOOLWATCH_FAULT_DIR`.
    pub fn file_name(self) -> &'static str {
        match self {
            Fault::WalWrite => "wal_write",
            Fault::WalFsync => "wal_fsync",
            Fault::BlockWrite => "block_write",
            Fault::CheckpointWrite => "checkpoint_write",
        }
    }
}

#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Faults {
    wal_write: AtomicBool,
    wal_fsync: AtomicBool,
    block_write: AtomicBool,
    checkpoint_write: AtomicBool,
    /// `TOOLWATCH_FAULT_DIR`, for end-to-end tests of the binary.
    dir: Option<PathBuf>,
}

impl Faults {
    /// No fault set; faults switched by files when `TOOLWATCH_FAULT_DIR` is set.
    pub(crate) fn from_env() -> Faults {
        let dir = std::env::var_os("TOOLWATCH_FAULT_DIR").filter(|d| !d.is_empty()).map(PathBuf::from);
        if let Some(d) = &dir {
            tracing::warn!(dir = %d.display(), "TOOLWATCH_FAULT_DIR is set: storage faults are injected for testing");
        }
        Faults { dir, ..Faults::default() }
    }

    fn flag(&self, f: Fault) -> &AtomicBool {
        match f {
            Fault::WalWrite => &self.wal_write,
            Fault::WalFsync => &self.wal_fsync,
            Fault::BlockWrite => &self.block_write,
            Fault::CheckpointWrite => &self.checkpoint_write,
        }
    }

    /// Makes every later operation at `f` fail (`on`) or work again.
    pub fn set(&self, f: Fault, on: bool) {
        self.flag(f).store(on, Ordering::SeqCst);
    }

    /// Whether `f` is set to fail.
    #[inline]
    pub(crate) fn hit(&self, f: Fault) -> bool {
        self.flag(f).load(Ordering::Relaxed) || self.dir.as_ref().is_some_and(|d| d.join(f.file_name()).exists())
    }

    /// `Err` with the OS error a real failure at `f` gives, when `f` is set.
    #[inline]
    pub(crate) fn check(&self, f: Fault) -> io::Result<()> {
        if self.hit(f) {
            return Err(error(f));
        }
        Ok(())
    }
}

/// The error a real failure at `f` gives: EIO for an fsync, ENOSPC for a write.
pub(crate) fn error(f: Fault) -> io::Error {
    match f {
        Fault::WalFsync => io::Error::from_raw_os_error(libc::EIO),
        _ => io::Error::from_raw_os_error(libc::ENOSPC),
    }
}
