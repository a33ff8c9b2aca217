//! The data directory's lock: one toolwatch (one `Db`) per directory.
//!
//! A POSIX record lock (`fcntl(F_SETLK)`) on `<data-dir>/lock`, not `flock`: a `flock` belongs
//! to the open file description, which every child forked by any thread shares until it execs,
//! so a directory a process had just let go of still looked locked — to itself when reopening,
//! and to a server started on it — for as long as some unrelated spawn took (CI failed on it).
//! Record locks are not inherited across fork. They are per process, though, so the directories
//! this process holds are also kept in a table: a second `acquire` here fails as one from another
//! process would, and no second descriptor on the file is ever opened and closed (closing *any*
//! descriptor of the file drops the process's record lock).

use crate::error::{IoContext, Result, StorageError};
use parking_lot::Mutex;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Directories (canonical paths) locked by this process.
static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// The lock on one data directory, released when dropped or when the process dies.
pub struct DataDirLock {
    file: Option<File>,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates the directory if needed and locks it, or fails naming the holder
    /// (`pid N on HOST`, as the holder wrote it into the lock file).
    pub fn acquire(dir: &Path) -> Result<DataDirLock> {
        fs::create_dir_all(dir).ctx(|| format!("creating data directory {}", dir.display()))?;
        let canonical = fs::canonicalize(dir).ctx(|| format!("resolving {}", dir.display()))?;
        let path = canonical.join("lock");
        let me = format!("pid {} on {}", std::process::id(), hostname());
        let mut held = HELD.lock();
        if held.contains(&canonical) {
            return Err(StorageError::Locked { path: dir.to_path_buf(), holder: me });
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        if !try_write_lock(&f) {
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            let holder =
                if holder.trim().is_empty() { "unknown holder".to_string() } else { holder.trim().to_string() };
            return Err(StorageError::Locked { path: dir.to_path_buf(), holder });
        }
        f.set_len(0)
            .and_then(|_| f.rewind())
            .and_then(|_| f.write_all(me.as_bytes()))
            .ctx(|| format!("writing {}", path.display()))?;
        held.push(canonical.clone());
        Ok(DataDirLock { file: Some(f), dir: canonical })
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // Close before leaving the table, under its mutex: a new acquire of this directory in
        // this process must not open the file while our descriptor (and lock) is still live.
        let mut held = HELD.lock();
        drop(self.file.take());
        held.retain(|d| d != &self.dir);
    }
}

/// A non-blocking exclusive record lock over the whole file.
fn try_write_lock(f: &File) -> bool {
    // SAFETY: a zeroed flock struct is a valid "whole file from offset 0" request once the
    // type and whence are set; the fd is ours and open for writing.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETLK, &fl) == 0 }
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string()
}
