//! Leaving the process cleanly, whichever way it ends: the paths it created (its socket, pid
//! file, forwarded UNIX sockets, smbd's directory) are registered here as they are made, and
//! removed on a normal return, an error, or SIGTERM/SIGINT.
//!
//! The signals are blocked in every thread ([`block_termination_signals`], before the first
//! thread starts) and taken by one thread of ours ([`exit_on_termination_signal`]), which
//! removes the registered paths and exits: no handler runs in the middle of other code.
//!
//! Started as root, the backend drops to the `--runas` user, who may be unable to remove them
//! (a socket in a directory only root may write: libvirt's and libguestfs's). So before the
//! drop, [`crate::sandbox::Sandbox::enter`] forks a janitor: a process that stays root, holds
//! the read end of a pipe whose write end only the backend holds, waits in `read` for the end
//! of file that the backend's exit (any exit, `SIGKILL` included) brings, then removes the
//! registered paths ([`janitor`]) and exits. Each path is removed only while it is still what
//! was registered (same device and inode, never through a symbolic link), so a path that a
//! newer process has taken since stays.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags};

use crate::sys;

/// A path removed at exit, and what it was when registered.
#[derive(Debug, Clone)]
struct Registered {
    path: PathBuf,
    /// A directory of ours, removed with everything in it.
    tree: bool,
    /// Its device, inode and type at registration (`lstat`); `None` if it was not there then.
    id: Option<(u64, u64, u32)>,
}

/// Paths removed when the process ends, whichever way it ends.
static CLEANUP: Mutex<Vec<Registered>> = Mutex::new(Vec::new());

/// Whether a janitor was forked: then the backend's own failures to remove are expected.
static JANITOR: AtomicBool = AtomicBool::new(false);

/// Whether the janitor's standard error goes to /dev/null: set by passt mode, whose process
/// points its own there once in the background (the caller waits for the end of that pipe).
static JANITOR_QUIET: AtomicBool = AtomicBool::new(false);

/// Registers a path (a file, or an empty directory) for removal at exit.
pub fn remove_at_exit(path: &Path) {
    register_cleanup(path, false);
}

/// Registers a directory we made for removal at exit with all it holds (smbd's).
pub fn remove_tree_at_exit(path: &Path) {
    register_cleanup(path, true);
}

fn register_cleanup(path: &Path, tree: bool) {
    let id = lstat(path).ok().map(|st| identity(&st));
    CLEANUP
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Registered {
            path: path.to_owned(),
            tree,
            id,
        });
}

/// The paths registered for removal at exit, so far.
pub fn removed_at_exit() -> Vec<PathBuf> {
    let paths = CLEANUP.lock().unwrap_or_else(|p| p.into_inner());
    paths.iter().map(|r| r.path.clone()).collect()
}

/// Removes everything registered with [`remove_at_exit`] and [`remove_tree_at_exit`]; logs
/// each path it could not remove (at debug level when the janitor removes it instead).
pub fn cleanup() {
    let paths = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()));
    let janitor = JANITOR.load(Ordering::Relaxed);
    for entry in paths.iter().rev() {
        if let Err(e) = remove(entry) {
            let path = entry.path.display();
            if janitor {
                log::debug!("removing {path}: {e} (left to the janitor)");
            } else {
                log::warn!("removing {path}: {e}");
            }
        }
    }
}

/// Has the janitor's standard error point at /dev/null (see [`JANITOR_QUIET`]).
pub fn janitor_without_stderr() {
    JANITOR_QUIET.store(true, Ordering::Relaxed);
}

/// Whether the janitor's standard error goes to /dev/null.
pub(crate) fn janitor_quiet() -> bool {
    JANITOR_QUIET.load(Ordering::Relaxed)
}

/// Whether there is anything for a janitor to remove.
pub(crate) fn anything_registered() -> bool {
    !CLEANUP.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
}

/// Notes that a janitor was forked.
pub(crate) fn janitor_started() {
    JANITOR.store(true, Ordering::Relaxed);
}

/// The janitor's work, in its own process (confined by then): waits until `pipe` reads end of
/// file (the backend, which holds the only write end, has exited), removes the registered
/// paths, and returns the exit status. Writes only to standard error, one line per path it
/// could not remove; never through `log` (the logger's descriptors are closed here).
pub(crate) fn janitor(pipe: OwnedFd) -> i32 {
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::read(&pipe, &mut byte) {
            Ok(0) => break,
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                sys::write_stderr(format!("vhost-net-user janitor: waiting: {e}\n").as_bytes());
                return 1;
            }
        }
    }
    drop(pipe);
    let paths = std::mem::take(&mut *CLEANUP.lock().unwrap_or_else(|p| p.into_inner()));
    let mut status = 0;
    for entry in paths.iter().rev() {
        if let Err(e) = remove(entry) {
            let line = format!(
                "vhost-net-user janitor: removing {}: {e}\n",
                entry.path.display()
            );
            sys::write_stderr(line.as_bytes());
            status = 1;
        }
    }
    status
}

/// Removes `entry` if it is still what was registered; a path already gone is no error, one
/// that is something else now is left alone (and said).
fn remove(entry: &Registered) -> io::Result<()> {
    let st = match lstat(&entry.path) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let Some(id) = entry.id else {
        return Ok(());
    };
    if identity(&st) != id {
        return Err(io::Error::other("not the one made here any more: left"));
    }
    let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
    let done = if !is_dir {
        rustix::fs::unlinkat(CWD, &entry.path, AtFlags::empty())
    } else {
        if entry.tree {
            let dir = rustix::fs::openat(
                CWD,
                &entry.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let st = rustix::fs::fstat(&dir)?;
            if identity(&st) != id {
                return Err(io::Error::other("not the one made here any more: left"));
            }
            empty_directory(dir, 0)?;
        }
        rustix::fs::unlinkat(CWD, &entry.path, AtFlags::REMOVEDIR)
    };
    match done {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `lstat`, as `newfstatat` (the janitor's filter has no other way to it).
fn lstat(path: &Path) -> rustix::io::Result<rustix::fs::Stat> {
    rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW)
}

/// A file's device, inode and type: a number freed and reused by a file of another type is
/// not ours either.
// Each is u64 on some targets only.
#[allow(clippy::unnecessary_cast)]
fn identity(st: &rustix::fs::Stat) -> (u64, u64, u32) {
    (
        st.st_dev as u64,
        st.st_ino as u64,
        (st.st_mode as u32) & (libc::S_IFMT as u32),
    )
}

/// How deep [`empty_directory`] goes: smbd's directory is two levels deep.
const MAX_DEPTH: usize = 16;

/// Removes everything in `dir`, by names relative to it: no symbolic link is followed.
fn empty_directory(dir: OwnedFd, depth: usize) -> io::Result<()> {
    if depth >= MAX_DEPTH {
        return Err(io::Error::other("directories nested too deep"));
    }
    let borrowed = dir.try_clone()?;
    let mut entries = rustix::fs::Dir::new(dir)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        match rustix::fs::unlinkat(borrowed.as_fd(), name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => {}
            Err(rustix::io::Errno::ISDIR) => {
                let sub = rustix::fs::openat(
                    borrowed.as_fd(),
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                empty_directory(sub, depth + 1)?;
                rustix::fs::unlinkat(borrowed.as_fd(), name, AtFlags::REMOVEDIR)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vnu-exit-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn registered(path: &Path, tree: bool) -> Registered {
        Registered {
            path: path.to_owned(),
            tree,
            id: lstat(path).ok().map(|st| identity(&st)),
        }
    }

    #[test]
    fn a_tree_goes_with_what_it_holds_but_not_what_its_links_point_at() {
        let dir = scratch("tree");
        let outside = dir.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "x").unwrap();
        let tree = dir.join("tree");
        std::fs::create_dir_all(tree.join("a/b")).unwrap();
        std::fs::write(tree.join("a/b/file"), "x").unwrap();
        std::fs::write(tree.join("file"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, tree.join("a/link")).unwrap();
        let entry = registered(&tree, true);
        remove(&entry).unwrap();
        assert!(!tree.exists());
        assert!(outside.join("keep").exists());
        // Gone already: nothing to do, no error.
        remove(&entry).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_path_that_is_something_else_now_stays() {
        let dir = scratch("replaced");
        let file = dir.join("sock");
        std::fs::write(&file, "ours").unwrap();
        let entry = registered(&file, false);
        // Another file at the path (a newer process's); the old one kept under another name
        // so that the new one cannot reuse its inode.
        std::fs::rename(&file, dir.join("old")).unwrap();
        std::fs::write(&file, "theirs").unwrap();
        assert!(remove(&entry).is_err());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "theirs");

        // A directory replaced by a link to another: neither is touched.
        let tree = dir.join("tree");
        std::fs::create_dir(&tree).unwrap();
        let entry = registered(&tree, true);
        let target = dir.join("target");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("keep"), "x").unwrap();
        std::fs::rename(&tree, dir.join("old-tree")).unwrap();
        std::os::unix::fs::symlink(&target, &tree).unwrap();
        assert!(remove(&entry).is_err());
        assert!(target.join("keep").exists());
        assert!(std::fs::symlink_metadata(&tree).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
