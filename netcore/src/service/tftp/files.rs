//! The served directory: which names a guest may ask for, and opening them without leaving
//! the root or following a link. Kept apart from the protocol because it is the part that
//! touches the host's files, and the part a review of the server's safety reads first.

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// slirp's checks on a requested name (no `../`, no trailing `/`, not empty), and ours: no
/// `..` component at all.
pub(super) fn name_is_allowed(name: &[u8]) -> bool {
    !name.is_empty()
        && name.last() != Some(&b'/')
        && !name.windows(3).any(|w| w == b"../")
        && !name.split(|&b| b == b'/').any(|part| part == b"..")
}

/// Opens `name` beneath `root` for reading if it is a regular file reached without following
/// a symbolic link, and without blocking (a FIFO would). The root itself is the operator's
/// and may be reached through links; nothing the guest names below it may be a link, so a
/// link in the served tree cannot lead out of it (openat2's RESOLVE_BENEATH and
/// RESOLVE_NO_SYMLINKS, or a walk of `openat`s with O_NOFOLLOW where openat2 is missing).
pub(super) fn open_beneath(root: &Path, name: &[u8]) -> Option<File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let root = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let file_flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    // slirp joins the root and the name with '/': a leading '/' stays under the root.
    let relative = name.strip_prefix(b"/").unwrap_or(name);
    let relative = std::ffi::OsStr::from_bytes(relative);
    let file = match rustix::fs::openat2(
        &root,
        relative,
        file_flags,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS) => walk_beneath(root, name, file_flags)?,
        other => other.ok()?,
    };
    let file = File::from(file);
    file.metadata().ok()?.is_file().then_some(file)
}

/// openat2's resolution by hand: one `openat` per component, none of them followed if it is a
/// link. Names with `..` components never get here ([`name_is_allowed`]).
pub(super) fn walk_beneath(
    root: std::os::fd::OwnedFd,
    name: &[u8],
    file_flags: rustix::fs::OFlags,
) -> Option<std::os::fd::OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let mut parts = name
        .split(|&b| b == b'/')
        .filter(|part| !part.is_empty() && *part != b".")
        .peekable();
    let mut dir = root;
    while let Some(part) = parts.next() {
        let part = std::ffi::OsStr::from_bytes(part);
        if parts.peek().is_none() {
            return rustix::fs::openat(&dir, part, file_flags, Mode::empty()).ok();
        }
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        dir = rustix::fs::openat(&dir, part, flags, Mode::empty()).ok()?;
    }
    None
}

/// Reads up to `buf.len()` bytes at `offset`; `None` on an error.
pub(super) fn read_fully(file: &File, buf: &mut [u8], offset: u64) -> Option<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(done)
}
