//! Leaving the process cleanly, whichever way it ends: the paths it created (its socket, pid
//! file, forwarded UNIX sockets, smbd's directory) are registered here as they are made, and
//! removed on a normal return, an error, or SIGTERM/SIGINT.
//!
//! The signals are blocked in every thread ([`block_termination_signals`], before the first
//! thread starts) and taken by one thread of ours ([`exit_on_termination_signal`]), which
//! removes the registered paths and exits: no handler runs in the middle of other code.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::sys;

/// Paths removed when the process ends, whichever way it ends; `true` marks a directory of
/// ours removed with everything in it.
static CLEANUP: Mutex<Vec<(PathBuf, bool)>> = Mutex::new(Vec::new());

/// Registers a path (a file, or an empty directory) for removal at exit.
pub fn remove_at_exit(path: &Path) {
    register_cleanup(path, false);
}

/// Registers a directory we made for removal at exit with all it holds (smbd's).
pub fn remove_tree_at_exit(path: &Path) {
    register_cleanup(path, true);
}

fn register_cleanup(path: &Path, tree: bool) {
    CLEANUP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((path.to_owned(), tree));
}

/// The paths registered for removal at exit, so far.
pub fn removed_at_exit() -> Vec<PathBuf> {
    let paths = CLEANUP.lock().unwrap_or_else(|p| p.into_inner());
    paths.iter().map(|(path, _)| path.clone()).collect()
}

/// Removes everything registered with [`remove_at_exit`] and [`remove_tree_at_exit`].
pub fn cleanup() {
    let paths = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()));
    for (path, tree) in paths.iter().rev() {
        let _ = if *tree {
            std::fs::remove_dir_all(path)
        } else {
            std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path))
        };
    }
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it spawns afterwards:
/// call before any thread exists, so that only [`exit_on_termination_signal`]'s thread sees
/// them.
pub fn block_termination_signals() -> std::io::Result<()> {
    sys::block_termination_signals()
}

/// Starts the thread that waits for SIGTERM or SIGINT, then cleans up and exits with 0.
pub fn exit_on_termination_signal() {
    std::thread::spawn(|| {
        let sig = sys::wait_for_termination();
        log::info!("signal {sig}: exiting");
        cleanup();
        std::process::exit(0);
    });
}
