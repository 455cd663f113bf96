//! The crate's only unsafe code: descriptors (closing inherited ones, marking ours
//! close-on-exec, a socket's send queue), guest memory as iovecs for the kernel and summed in
//! place for checksums, waiting for signals, and the process calls
//! confinement makes (user lookups, the privilege drop, `prctl`, `setrlimit`), and what
//! going to the background as passt needs (`fork`, standard streams, the local time offset),
//! and forking the janitor that removes the backend's files at exit.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

/// The most descriptors one vhost-user message may carry.
pub const MAX_FDS: usize = 32;

/// Receives into `buf` with any attached descriptors, which the caller then owns. They arrive
/// close-on-exec (`MSG_CMSG_CLOEXEC`): a child process must never get guest RAM.
pub fn recv_with_fds(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [io::IoSliceMut::new(buf)];
    let got = loop {
        match rustix::net::recvmsg(sock, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC) {
            Err(rustix::io::Errno::INTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    Ok((got.bytes, fds))
}

/// Bytes written to `sock` that its peer has not read yet (`SIOCOUTQ`, which is `TIOCOUTQ`'s
/// number).
pub fn unread_by_peer(sock: &UnixStream) -> io::Result<usize> {
    let mut queued: libc::c_int = 0;
    // SAFETY: SIOCOUTQ writes one c_int through the pointer, which refers to a live local;
    // `sock` is an open socket for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(usize::try_from(queued).unwrap_or(0))
}

/// Marks every descriptor from 3 up close-on-exec, whoever opened it. The vhost crate receives
/// QEMU's descriptors (guest RAM, kick and call eventfds) without `MSG_CMSG_CLOEXEC`; this is
/// how they get the flag. Closes nothing, so it is safe whatever owns them.
pub fn mark_all_close_on_exec() -> io::Result<()> {
    close_range(3, libc::c_uint::MAX, libc::CLOSE_RANGE_CLOEXEC)
}

/// The descriptor `--fd` named, which [`close_inherited`] kept: owned here from then on, so
/// that [`listener_from_fd`] adopts it without a contract of its own.
static INHERITED: std::sync::Mutex<Option<OwnedFd>> = std::sync::Mutex::new(None);

/// Closes every descriptor from 3 up but `keep` (`--fd`): whatever the parent left open is not
/// ours to hand on to children, nor to hold. `keep`, if open, is owned from now on (see
/// `listener_from_fd`).
///
/// # Safety
/// Call before anything in the process owns a descriptor above 2 other than `keep` (first
/// thing in `main`), and with a `keep` nothing else owns: an owner would go on using a closed
/// number, or one reused by another.
pub unsafe fn close_inherited(keep: Option<RawFd>) -> io::Result<()> {
    if let Some(fd) = keep.filter(|&fd| fd >= 0) {
        // SAFETY: F_GETFD only reads the descriptor's flags, and fails on a closed one.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            // SAFETY: `fd` is open, and by the caller's contract nothing else owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            *INHERITED.lock().unwrap_or_else(|p| p.into_inner()) = Some(owned);
        }
    }
    let keep = keep
        .and_then(|fd| libc::c_uint::try_from(fd).ok())
        .filter(|&fd| fd >= 3);
    match keep {
        Some(fd) => {
            if fd > 3 {
                close_range(3, fd - 1, 0)?;
            }
            close_range(fd + 1, libc::c_uint::MAX, 0)
        }
        None => close_range(3, libc::c_uint::MAX, 0),
    }
}

fn close_range(first: libc::c_uint, last: libc::c_uint, flags: libc::c_uint) -> io::Result<()> {
    if first > last {
        return Ok(());
    }
    // SAFETY: close_range takes plain integers. Closing descriptors that Rust objects own is
    // what the callers' contracts exclude: `close_inherited` is an unsafe fn, `fork_janitor`'s
    // child never uses or drops those objects, and with CLOSE_RANGE_CLOEXEC nothing is closed.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks SIGTERM and SIGINT in the calling thread and every thread it spawns afterwards, so
/// that [`wait_for_termination`] alone receives them.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: `set` is an initialised signal set; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// Waits until SIGTERM or SIGINT arrives; returns the signal number.
pub fn wait_for_termination() -> i32 {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: both pointers refer to live locals of the right types.
        if unsafe { libc::sigwait(&set, &mut sig) } == 0 {
            return sig;
        }
    }
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it before sigaddset uses it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

/// The inherited listening socket (`--fd N`): the descriptor [`close_inherited`] kept, if
/// its number is `fd` and it is a socket that is listening; anything else is refused rather
/// than adopted (and stays where it was).
pub fn listener_from_fd(fd: RawFd) -> io::Result<std::os::unix::net::UnixListener> {
    let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    let kept = match inherited.take() {
        Some(kept) if kept.as_raw_fd() == fd => kept,
        other => {
            *inherited = other;
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
    };
    match rustix::net::sockopt::socket_acceptconn(&kept) {
        Ok(true) => {}
        Ok(false) => {
            *inherited = Some(kept);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a listening socket",
            ));
        }
        Err(e) => {
            *inherited = Some(kept);
            return Err(e.into());
        }
    }
    // Inherited without the flag, as descriptors passed to a child are.
    rustix::io::fcntl_setfd(&kept, rustix::io::FdFlags::CLOEXEC)?;
    Ok(std::os::unix::net::UnixListener::from(kept))
}

/// The inherited connected socket (passt's `--fd N`): the descriptor [`close_inherited`]
/// kept, if its number is `fd` and it is a stream socket that is not listening (QEMU's end of
/// a socket pair); anything else is refused rather than adopted (and stays where it was).
pub fn stream_from_fd(fd: RawFd) -> io::Result<UnixStream> {
    let mut inherited = INHERITED.lock().unwrap_or_else(|p| p.into_inner());
    let kept = match inherited.take() {
        Some(kept) if kept.as_raw_fd() == fd => kept,
        other => {
            *inherited = other;
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
    };
    let check = || -> io::Result<()> {
        if rustix::net::sockopt::socket_type(&kept)? != rustix::net::SocketType::STREAM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a stream socket",
            ));
        }
        if rustix::net::sockopt::socket_acceptconn(&kept)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a listening socket, not a connected one",
            ));
        }
        Ok(())
    };
    if let Err(e) = check() {
        *inherited = Some(kept);
        return Err(e);
    }
    rustix::io::fcntl_setfd(&kept, rustix::io::FdFlags::CLOEXEC)?;
    Ok(UnixStream::from(kept))
}

/// Which side of a [`fork_single_threaded`] the caller is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forked {
    /// The original process; the child's process ID.
    Parent(u32),
    Child,
}

/// `fork()`, refused unless this process has one thread: then the child is a whole copy,
/// with no lock held by a thread that does not exist in it, and may run any code.
pub fn fork_single_threaded() -> io::Result<Forked> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "fork refused: the process has {threads} threads"
        )));
    }
    // SAFETY: the process has a single thread (checked just above, and nothing of ours
    // starts one concurrently: this thread is the only one), so the child gets a consistent
    // copy of every lock and allocator state.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

/// Names the calling thread (`PR_SET_NAME`; the process's name in `ps` when it has one
/// thread): the janitor's `vnu-janitor`, so that it is not taken for the backend.
pub fn set_thread_name(name: &std::ffi::CStr) -> io::Result<()> {
    // SAFETY: the kernel reads a NUL-terminated string (at most 16 bytes) from the live `name`.
    check(unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) })
}

/// Writes `bytes` to standard error with one `write` (the janitor's only output: no lock, no
/// buffer). Errors are dropped: there is nowhere else to say them.
pub fn write_stderr(bytes: &[u8]) {
    // SAFETY: the kernel reads `bytes.len()` bytes from a live slice; descriptor 2 is the
    // standard error stream, which no Rust object owns.
    let _ = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
}

/// Forks the janitor (see `exit`'s module comment) and returns its process ID. The child
/// has SIGTERM, SIGINT and SIGHUP blocked (a signal to the process group must not end it
/// before it cleans up), standard input and output on `devnull` (and standard error too when
/// `quiet`), no descriptor open but those three and `keep`; it runs `body(keep)` and exits
/// with the status returned (101 on a panic), never returning into the caller's frames, whose
/// objects are neither used nor dropped there. Refused unless the process has one thread.
///
/// The body is fixed, [`crate::sandbox::janitor_main`], not a parameter: it uses no descriptor
/// but the standard streams and the one it is given, none found in a static (not the `log`
/// macros: the logger's descriptors are closed), which is what makes closing every other
/// number sound.
pub fn fork_janitor(
    keep: OwnedFd,
    devnull: std::os::fd::BorrowedFd<'_>,
    quiet: bool,
) -> io::Result<u32> {
    let mut set = termination_set();
    // SAFETY: `set` was initialised by termination_set; sigaddset adds one signal to it.
    unsafe { libc::sigaddset(&mut set, libc::SIGHUP) };
    // SAFETY: an all-zero sigset_t is a valid value for pthread_sigmask to overwrite.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both sets are live locals; `old` receives the mask to restore in the parent.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let restore = || {
        // SAFETY: `old` is the mask pthread_sigmask returned above.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    };
    match fork_single_threaded() {
        Err(e) => {
            restore();
            Err(e)
        }
        Ok(Forked::Parent(pid)) => {
            restore();
            drop(keep);
            Ok(pid)
        }
        Ok(Forked::Child) => {
            let streams: &[RawFd] = if quiet { &[0, 1, 2] } else { &[0, 1] };
            for &target in streams {
                // SAFETY: `devnull` is open (borrowed); the standard streams are owned by no
                // Rust object, and dup3 replaces them atomically.
                unsafe { libc::dup3(devnull.as_raw_fd(), target, 0) };
            }
            // Closes what the objects of the parent's frames own (the pipe's write end among
            // them, which would keep the janitor waiting forever); none of them is used or
            // dropped here (the child ends in _exit below).
            let keep_fd = keep.as_raw_fd();
            let fd = keep_fd.max(3) as libc::c_uint;
            let closed =
                close_range(3, fd - 1, 0).and_then(|()| close_range(fd + 1, libc::c_uint::MAX, 0));
            if closed.is_err() {
                // Kernels before 5.9: whatever /proc/self/fd lists (its own descriptor closed
                // with the listing, before the loop).
                let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
                    .map(|dir| {
                        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                            .collect()
                    })
                    .unwrap_or_default();
                for other in open.into_iter().filter(|&n| n > 2 && n != keep_fd) {
                    // SAFETY: as close_range above: nothing here uses or drops their owners.
                    unsafe { libc::close(other) };
                }
            }
            let status =
                std::panic::catch_unwind(move || crate::sandbox::janitor_main(keep)).unwrap_or(101);
            // SAFETY: _exit ends the child at once, without unwinding into the parent's
            // frames or running their destructors (descriptors closed above).
            unsafe { libc::_exit(status) }
        }
    }
}

/// Points standard input, output and error at `to` (/dev/null, when going to the
/// background).
pub fn redirect_stdio(to: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    for target in 0..3 {
        if to.as_raw_fd() == target {
            continue;
        }
        // SAFETY: `to` is open for the duration of the call (borrowed); descriptors 0-2 are
        // the standard streams, which no Rust object owns, and dup3 replaces them atomically.
        if unsafe { libc::dup3(to.as_raw_fd(), target, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The local time zone's offset from UTC now, in seconds east (for syslog's timestamps,
/// taken once before confinement hides the zone files).
pub fn utc_offset_now() -> i64 {
    // SAFETY: time accepts a null pointer; localtime_r writes one tm into the live local and
    // reads the live `now`. An all-zero tm is a valid value to overwrite.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return 0;
        }
        tm.tm_gmtoff
    }
}

/// Closes `fd`, a descriptor its owner gave up without closing (see
/// `NetBackend::take_handed_out`).
///
/// # Safety
/// `fd` must be open and owned by nothing any more: leaked with `into_raw_fd` by an owner
/// that has stopped using it (its threads gone), and not closed since.
pub unsafe fn close_abandoned(fd: RawFd) {
    // SAFETY: by the caller's contract nothing owns or uses `fd`; taking ownership once and
    // dropping it closes it.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A user of the password database: ID, primary group and login name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub name: String,
}

/// Retries a `get*_r` lookup with a larger buffer while it answers ERANGE.
fn with_buffer<T>(mut lookup: impl FnMut(&mut [libc::c_char]) -> io::Result<T>) -> io::Result<T> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        match lookup(&mut buf) {
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) && buf.len() < 1 << 20 => {
                let len = buf.len() * 2;
                buf.resize(len, 0);
            }
            other => return other,
        }
    }
}

/// The user called `name`, or with ID `uid` (`getpwnam_r`, `getpwuid_r`); `None` if unknown.
pub fn find_user(name: Option<&str>, uid: u32) -> io::Result<Option<User>> {
    let c_name = match name {
        Some(name) => Some(
            std::ffi::CString::new(name)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a user name"))?,
        ),
        None => None,
    };
    with_buffer(|buf| {
        // SAFETY: an all-zero passwd (null pointers, zero IDs) is a valid value to overwrite.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `entry`, `buf` (with its true length), `found` and the NUL-terminated name
        // live across the call; the strings written into `entry` point into `buf`.
        let rc = unsafe {
            match &c_name {
                Some(n) => libc::getpwnam_r(
                    n.as_ptr(),
                    &mut entry,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                ),
                None => libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found),
            }
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if found.is_null() || entry.pw_name.is_null() {
            return Ok(None);
        }
        // SAFETY: the lookup succeeded, so pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        Ok(Some(User {
            uid: entry.pw_uid,
            gid: entry.pw_gid,
            name: name.to_string_lossy().into_owned(),
        }))
    })
}

/// The ID of the group called `name` (`getgrnam_r`); `None` if unknown.
pub fn find_group(name: &str) -> io::Result<Option<u32>> {
    let c_name = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a group name"))?;
    with_buffer(|buf| {
        // SAFETY: an all-zero group (null pointers, zero ID) is a valid value to overwrite.
        let mut entry: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: as in find_user: every pointer refers to a live local or to `buf`.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut entry,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok((!found.is_null()).then_some(entry.gr_gid))
    })
}

/// This process's effective user ID.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Becomes user `uid` of group `gid` for good (real, effective and saved IDs), with no
/// supplementary groups; checks that root cannot be regained.
pub fn switch_user(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: an empty list (null pointer, length 0) clears the supplementary groups.
    check(unsafe { libc::setgroups(0, std::ptr::null()) })?;
    // SAFETY: plain ID arguments; glibc applies them to every thread of the process.
    check(unsafe { libc::setresgid(gid, gid, gid) })?;
    // SAFETY: as above.
    check(unsafe { libc::setresuid(uid, uid, uid) })?;
    if uid != 0 {
        // SAFETY: plain ID argument; must fail now that the saved user ID is not root.
        if unsafe { libc::setuid(0) } == 0 {
            return Err(io::Error::other("root could be regained after the switch"));
        }
    }
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`: no exec of this process or its children may gain privileges.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
}

/// No core dumps (a core would hold guest RAM) and no ptrace by other processes of the user:
/// `RLIMIT_CORE` 0 and `PR_SET_DUMPABLE` 0.
pub fn forbid_core_dumps() -> io::Result<()> {
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: the kernel reads one rlimit from the live local.
    check(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) })?;
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
}

use virtio_bindings::bindings::virtio_net::virtio_net_hdr_v1;

// The header's fields (u8, u8, then five u16) leave no padding: every byte is a field's.
const _: () = assert!(std::mem::size_of::<virtio_net_hdr_v1>() == 12);

/// A virtio-net header as the bytes it occupies on the ring (fields already little-endian).
pub fn vnet_header_bytes(hdr: &virtio_net_hdr_v1) -> [u8; 12] {
    // SAFETY: `virtio_net_hdr_v1` is `repr(C)` plain data of 12 bytes (asserted above) with
    // no padding, so each of its bytes is initialised and any of them is a valid u8.
    unsafe { std::mem::transmute::<virtio_net_hdr_v1, [u8; 12]>(*hdr) }
}

/// A virtio-net header read from the ring's bytes (fields still little-endian).
pub fn vnet_header_from_bytes(bytes: [u8; 12]) -> virtio_net_hdr_v1 {
    // SAFETY: as above, same size; every field is an integer (the union's variants too), so
    // any 12 bytes are a valid header.
    unsafe { std::mem::transmute::<[u8; 12], virtio_net_hdr_v1>(bytes) }
}

/// `csum_start` and `csum_offset` (little-endian), the union's checksum view.
pub fn vnet_header_csum(hdr: &virtio_net_hdr_v1) -> (u16, u16) {
    // SAFETY: every variant of the union is two u16s over the same 4 bytes, so reading the
    // checksum view is valid whichever was written.
    let csum = unsafe { hdr.__bindgen_anon_1.csum };
    (csum.start, csum.offset)
}

/// Where each region of guest memory is mapped in this process: storage reused from batch to
/// batch, read only through a [`Mapped`] view that [`HostMap::map`] loads afresh from the
/// memory snapshot it borrows.
///
/// Descriptor addresses become iovec bases through it with one bounds check, instead of
/// vm-memory building (and dropping) a checked slice per 4 KiB buffer.
#[derive(Debug, Default)]
pub struct HostMap {
    /// (guest start, length, host address of the start) per region.
    regions: Vec<(u64, u64, usize)>,
}

impl HostMap {
    /// Loads where `mem`'s regions are mapped. The view's addresses are valid while `mem` is
    /// borrowed: a snapshot keeps its regions mapped for as long as it lives.
    pub fn map<'m>(&'m mut self, mem: &'m crate::virtq::GuestMem) -> Mapped<'m> {
        use vm_memory::{Address, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
        self.regions.clear();
        for region in mem.iter() {
            if let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) {
                let start = region.start_addr().raw_value();
                self.regions.push((start, region.len(), host as usize));
            }
        }
        Mapped {
            regions: &self.regions,
            _mem: std::marker::PhantomData,
        }
    }
}

/// A guest-memory snapshot's regions as mapped in this process, for as long as `'m` borrows
/// the snapshot. Guest memory is never made a Rust reference: the guest may change it at any
/// moment, so only the kernel (through iovecs), vm-memory's volatile accessors and the
/// checksum's volatile loads ([`Mapped::ones_sum`]) touch it.
#[derive(Debug, Clone, Copy)]
pub struct Mapped<'m> {
    regions: &'m [(u64, u64, usize)],
    _mem: std::marker::PhantomData<&'m crate::virtq::GuestMem>,
}

/// Where a range lies in guest memory: a region of a [`Mapped`] and the offset into it. A
/// place, not a pointer: every use checks it against the mapping again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostRange {
    region: usize,
    offset: u64,
}

impl<'m> Mapped<'m> {
    /// Where `addr..addr + len` lies, if inside one region.
    pub fn locate(&self, addr: vm_memory::GuestAddress, len: usize) -> Option<HostRange> {
        self.regions
            .iter()
            .enumerate()
            .find_map(|(region, &(start, size, _))| {
                let offset = addr.0.checked_sub(start)?;
                let room = size.checked_sub(offset)?;
                (offset < size && len as u64 <= room).then_some(HostRange { region, offset })
            })
    }

    /// The host address of `range` (a number, for comparisons).
    #[cfg(test)]
    pub fn address(&self, range: HostRange) -> Option<usize> {
        let &(_, size, host) = self.regions.get(range.region)?;
        (range.offset < size).then(|| host + range.offset as usize)
    }

    /// Appends `len` bytes from `at` past `range` to `out` (joined to the last entry when
    /// adjacent), if they lie inside the range's region; a stale or overlong range adds
    /// nothing.
    pub fn push_iovec<'o, A>(
        &self,
        range: HostRange,
        at: usize,
        len: usize,
        out: &mut netcore::link::IovList<'_, 'o, A>,
    ) where
        'm: 'o,
    {
        let Some(&(_, size, host)) = self.regions.get(range.region) else {
            return;
        };
        let Some(end) = range
            .offset
            .checked_add(at as u64)
            .and_then(|start| start.checked_add(len as u64))
        else {
            return;
        };
        if end > size {
            return;
        }
        let base = (host + range.offset as usize + at) as *mut u8;
        // SAFETY: `base..base + len` lies inside a region of the snapshot `'m` borrows (checked
        // just above), mapped readable and writable for as long as the snapshot lives, which
        // outlasts the list ('m: 'o). Guest memory is never referenced by Rust (see `Mapped`),
        // so the kernel's access aliases no reference.
        unsafe { out.push_raw(base, len) };
    }

    /// Asks the CPU to start loading the cache lines of `len` bytes at `at` into `range`,
    /// which the guest wrote from another CPU: a batch's frame headers arrive while earlier
    /// frames are handled instead of stalling each header read in turn. A hint only; nothing
    /// is read.
    pub fn prefetch(&self, range: HostRange, at: usize, len: usize) {
        let Some(&(_, size, host)) = self.regions.get(range.region) else {
            return;
        };
        let start = range.offset.saturating_add(at as u64);
        let end = start.saturating_add(len as u64).min(size);
        // From the start of its cache line, so that the last line is not left out.
        let mut at = start & !63;
        while at < end {
            let line = (host + at as usize) as *const i8;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: a prefetch never faults and reads nothing into Rust; `line` lies inside a
            // region of the mapped snapshot all the same (`at < end <= size`, and rounding
            // down to a cache line stays within the region's page-aligned mapping).
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line)
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = line;
            at += 64;
        }
    }

    /// The RFC 1071 sum (folded, not complemented, as `smoltcp::wire::checksum::data`) of
    /// `len` bytes from `at` past `range`, read where they lie: the TCP checksum over 64 KiB
    /// the kernel just wrote costs one pass over it, not a copy and a pass. `None` if the bytes
    /// are not inside the range's region.
    pub fn ones_sum(&self, range: HostRange, at: usize, len: usize) -> Option<u16> {
        let &(_, size, host) = self.regions.get(range.region)?;
        let end = range
            .offset
            .checked_add(at as u64)?
            .checked_add(len as u64)?;
        if end > size {
            return None;
        }
        let base = (host + range.offset as usize + at) as *const u8;
        // SAFETY: `base..base + len` lies inside a region of the snapshot `'m` borrows (checked
        // just above), mapped readable while the snapshot lives, which `&self` outlasts.
        Some(unsafe { volatile_ones_sum(base, len) })
    }
}

/// Adds with end-around carry: 64-bit words summed so fold ([`ones_fold`]) to the 16-bit one's
/// complement sum of their 16-bit words in the same (native) byte order (RFC 1071, 2.(B), (C)).
fn ones_add(sum: u64, word: u64) -> u64 {
    let (sum, carry) = sum.overflowing_add(word);
    sum + u64::from(carry)
}

/// The 16-bit one's complement sum an end-around-carry sum of 64-bit words stands for.
fn ones_fold(sum: u64) -> u16 {
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// The end-around-carry sum of `words` 64-bit words from `at`, read with volatile loads: 32
/// bytes a load where the CPU has AVX2, else 8. On frames of 64 KiB the kernel just wrote,
/// AVX2 took about half the time.
///
/// # Safety
/// `at` must be 8-byte aligned and `at..at + words` mapped readable for the whole call.
unsafe fn volatile_word_sum(at: *const u64, words: usize) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if words >= 16 && std::arch::is_x86_feature_detected!("avx2") {
        // Words up to the first 32-byte boundary, whole 32-byte blocks, then the rest.
        let lead = at.align_offset(32).min(words);
        let blocks = (words - lead) / 4;
        let rest = words - lead - 4 * blocks;
        // SAFETY: the three pieces split the caller's range; the blocks start 32-byte aligned
        // and AVX2 is present (checked just above).
        return unsafe {
            let sum = scalar_word_sum(at, lead);
            let sum = ones_add(sum, avx2_block_sum(at.add(lead).cast(), blocks));
            ones_add(sum, scalar_word_sum(at.add(lead + 4 * blocks), rest))
        };
    }
    // SAFETY: as the caller vouches.
    unsafe { scalar_word_sum(at, words) }
}

/// [`volatile_word_sum`] a word at a time.
///
/// # Safety
/// As for [`volatile_word_sum`].
unsafe fn scalar_word_sum(at: *const u64, words: usize) -> u64 {
    // SAFETY: every `i` is below `words`, inside the range the caller vouches for, aligned.
    let word = |i: usize| unsafe { at.add(i).read_volatile() };
    // Four independent carry chains, so that the adds overlap.
    let (mut a, mut b, mut c, mut d) = (0, 0, 0, 0);
    let mut i = 0;
    while i + 4 <= words {
        a = ones_add(a, word(i));
        b = ones_add(b, word(i + 1));
        c = ones_add(c, word(i + 2));
        d = ones_add(d, word(i + 3));
        i += 4;
    }
    while i < words {
        a = ones_add(a, word(i));
        i += 1;
    }
    ones_add(ones_add(a, b), ones_add(c, d))
}

/// The end-around-carry sum of `blocks` 32-byte blocks from `at`. Each 64-bit lane adds the
/// low and the high 32-bit halves of its words apart, so no carry is lost while a lane stays
/// below 2^64, which holds for up to 2^31 blocks (64 GiB), far more than one frame.
///
/// # Safety
/// `at` must be 32-byte aligned, `at..at + blocks` mapped readable for the whole call, and the
/// CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn avx2_block_sum(at: *const std::arch::x86_64::__m256i, blocks: usize) -> u64 {
    use std::arch::x86_64::*;
    let low_halves = _mm256_set1_epi64x(0xffff_ffff);
    let (mut low, mut high) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for i in 0..blocks {
        // SAFETY: block `i` lies inside the range the caller vouches for, aligned.
        let block = unsafe { at.add(i).read_volatile() };
        low = _mm256_add_epi64(low, _mm256_and_si256(block, low_halves));
        high = _mm256_add_epi64(high, _mm256_srli_epi64::<32>(block));
    }
    let mut lanes = [0u64; 4];
    // SAFETY: `lanes` is 32 bytes, written unaligned.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), _mm256_add_epi64(low, high)) };
    lanes.into_iter().fold(0, ones_add)
}

/// The RFC 1071 sum of `len` bytes at `base`, read with volatile loads, a byte at a time up to
/// the first 8-byte boundary and then by aligned words ([`volatile_word_sum`]): the guest may
/// rewrite the bytes while we read (it then gets a wrong checksum), so they are never viewed as
/// a slice.
///
/// # Safety
/// `base..base + len` must be mapped readable for the whole call.
unsafe fn volatile_ones_sum(base: *const u8, len: usize) -> u16 {
    // Bytes before the first aligned word, and after the last, as one word each with the
    // missing bytes zero: their places within the word keep each byte's parity.
    let partial = |from: usize, count: usize| {
        let mut bytes = [0u8; 8];
        for (i, byte) in bytes.iter_mut().enumerate().take(count) {
            // SAFETY: `from + i < len`, inside the range the caller vouches for.
            *byte = unsafe { base.add(from + i).read_volatile() };
        }
        u64::from_ne_bytes(bytes)
    };
    let head = base.align_offset(8).min(len);
    let words = (len - head) / 8;
    let tail = len - head - words * 8;
    let aligned = base.wrapping_add(head).cast::<u64>();
    // SAFETY: `aligned` is 8-byte aligned, and its `words` words lie inside the range the
    // caller vouches for (head + 8 * words <= len).
    let body = unsafe { volatile_word_sum(aligned, words) };
    let body = ones_add(body, partial(head + words * 8, tail));
    // Two pieces of the range: the head at 0 and the body from `head`, which straddles the
    // range's 16-bit words when the head is odd.
    let mut sums = netcore::link::PieceSums::default();
    sums.add(0, u16::from_be(ones_fold(partial(0, head))));
    sums.add(head, u16::from_be(ones_fold(body)));
    sums.total()
}
