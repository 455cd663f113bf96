//! The crate's only unsafe code: scatter/gather I/O on raw iovecs (which may point into guest
//! memory), the socket calls rustix does not offer (`SO_PEEK_OFF`, `IP_RECVERR` and its
//! error queue, `SO_BINDTODEVICE`, `SO_MEMINFO`, a discarding `recv`), the user name smb=
//! needs, and forking the guest forwards' launcher ([`crate::launcher`]). Everything else is
//! rustix's safe wrappers.
//!
//! # The iovec contract
//!
//! An [`IovList`] is the only way to hand memory to [`sendmsg`] and [`recvmsg`]. Its entries
//! are added from borrowed slices (`&'m [u8]` for sending, `&'m mut [u8]` or `&'m [Cell<u8>]`
//! for receiving), or through [`IovList::push_raw`], an `unsafe fn` whose contract is the
//! one the kernel needs: the memory stays valid for the kernel to read, and to write for a
//! receive list, for all of `'m`, and no Rust reference to it is used while the list lives.
//! The ring link keeps that contract for guest memory (which Rust never references: see the
//! daemon's `sys::Mapped`); so the lists, and the two calls, are safe to use.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn check_size(rc: libc::ssize_t) -> io::Result<usize> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// A non-blocking, close-on-exec socket (`family`, `ty` and `protocol` as `libc` numbers).
pub fn socket(family: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    let protocol = u32::try_from(protocol)
        .ok()
        .and_then(std::num::NonZeroU32::new)
        .map(Protocol::from_raw);
    Ok(rustix::net::socket_with(
        AddressFamily::from_raw(family as _),
        SocketType::from_raw(ty as _),
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        protocol,
    )?)
}

/// The address family of `addr`.
pub fn family(addr: &IpAddr) -> libc::c_int {
    match addr {
        IpAddr::V4(_) => libc::AF_INET,
        IpAddr::V6(_) => libc::AF_INET6,
    }
}

/// A `sockaddr_storage` for `addr` and its length.
fn sockaddr(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and suitably aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

/// Decodes a `sockaddr_storage` filled in by the kernel.
fn from_sockaddr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let sin: libc::sockaddr_in =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((
                sin.sin_addr.s_addr.to_ne_bytes(),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let sin6: libc::sockaddr_in6 =
                unsafe { std::ptr::read((storage as *const libc::sockaddr_storage).cast()) };
            Some(SocketAddr::from((
                sin6.sin6_addr.s6_addr,
                u16::from_be(sin6.sin6_port),
            )))
        }
        _ => None,
    }
}

/// Starts a connection; `Ok(false)` means it is in progress (non-blocking socket).
pub fn connect(fd: impl AsFd, addr: &SocketAddr) -> io::Result<bool> {
    match rustix::net::connect(fd, addr) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::INPROGRESS) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// The kernel reads the memory of these lists' entries (`sendmsg`).
#[derive(Debug)]
pub enum KernelReads {}

/// The kernel writes the memory of these lists' entries (`recvmsg`), and may read it.
#[derive(Debug)]
pub enum KernelWrites {}

/// Storage for iovec lists, kept by a table so that its system calls do not allocate. It only
/// lends itself as an [`IovList`], emptied first: no entry outlives the list it was added to.
#[derive(Debug, Default)]
pub struct IoVecs(Vec<libc::iovec>);

// SAFETY: the pointers a list leaves behind are never read again (every list starts by
// clearing the vector), nor dereferenced by Rust; moving or sharing the storage across threads
// moves only dead values.
unsafe impl Send for IoVecs {}
// SAFETY: as above; `&IoVecs` exposes nothing.
unsafe impl Sync for IoVecs {}

impl IoVecs {
    /// An empty list of memory for the kernel to read, alive for `'m`.
    pub fn for_send<'m>(&mut self) -> SendIovs<'_, 'm> {
        self.list()
    }

    /// An empty list of memory for the kernel to write, alive for `'m`.
    pub fn for_recv<'m>(&mut self) -> RecvIovs<'_, 'm> {
        self.list()
    }

    fn list<'m, A>(&mut self) -> IovList<'_, 'm, A> {
        self.0.clear();
        IovList {
            iov: &mut self.0,
            _memory: PhantomData,
        }
    }
}

/// Iovecs for one system call: every entry describes memory that stays valid for `'m` in the
/// way `A` says (see the module's iovec contract).
#[derive(Debug)]
pub struct IovList<'s, 'm, A> {
    iov: &'s mut Vec<libc::iovec>,
    _memory: PhantomData<(&'m [Cell<u8>], A)>,
}

/// A list for `sendmsg`.
pub type SendIovs<'s, 'm> = IovList<'s, 'm, KernelReads>;
/// A list for `recvmsg`.
pub type RecvIovs<'s, 'm> = IovList<'s, 'm, KernelWrites>;

impl<'m, A> IovList<'_, 'm, A> {
    /// How many entries the list holds.
    pub fn len(&self) -> usize {
        self.iov.len()
    }

    pub fn is_empty(&self) -> bool {
        self.iov.is_empty()
    }

    /// Drops the entries from `len` on.
    pub fn truncate(&mut self, len: usize) {
        self.iov.truncate(len);
    }

    /// Keeps only the first `bytes` bytes the entries describe (shortening the last one kept).
    pub fn truncate_to_bytes(&mut self, bytes: usize) {
        let mut left = bytes;
        let mut keep = 0;
        for entry in self.iov.iter_mut() {
            if left == 0 {
                break;
            }
            entry.iov_len = entry.iov_len.min(left);
            left -= entry.iov_len;
            keep += 1;
        }
        self.iov.truncate(keep);
    }

    /// The bytes the entries from `first` on describe.
    pub fn bytes_from(&self, first: usize) -> usize {
        self.iov
            .get(first..)
            .unwrap_or(&[])
            .iter()
            .map(|v| v.iov_len)
            .sum()
    }

    /// Adds memory that shared references may see change ([`Cell`]s): the kernel may read
    /// and write it while the list lives.
    pub fn push_cells(&mut self, buf: &'m [Cell<u8>]) {
        if !buf.is_empty() {
            self.iov.push(libc::iovec {
                iov_base: Cell::as_ptr(&buf[0]).cast(),
                iov_len: buf.len(),
            });
        }
    }

    /// Adds `len` bytes at `base`, extending the last entry instead when the range follows it
    /// in memory (one iovec for a run of adjacent buffers saves the kernel a copy call per
    /// buffer; the bytes it sees are the same).
    ///
    /// # Safety
    /// `base..base + len` must stay valid for the kernel to read, and for a [`RecvIovs`] to
    /// write, for all of `'m`, and no Rust reference to that memory may be used while the
    /// list lives (memory Rust never references, as guest memory, keeps this trivially).
    pub unsafe fn push_raw(&mut self, base: *mut u8, len: usize) {
        if len == 0 {
            return;
        }
        if let Some(last) = self.iov.last_mut()
            && (last.iov_base as usize).checked_add(last.iov_len) == Some(base as usize)
        {
            last.iov_len += len;
            return;
        }
        self.iov.push(libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        });
    }

    /// The entries, for the kernel.
    fn raw(&self) -> &[libc::iovec] {
        self.iov
    }
}

impl<'m> SendIovs<'_, 'm> {
    /// Adds bytes for the kernel to read.
    pub fn push(&mut self, buf: &'m [u8]) {
        if !buf.is_empty() {
            self.iov.push(libc::iovec {
                iov_base: buf.as_ptr().cast_mut().cast(),
                iov_len: buf.len(),
            });
        }
    }
}

impl<'m> RecvIovs<'_, 'm> {
    /// Adds room for the kernel to write.
    pub fn push(&mut self, buf: &'m mut [u8]) {
        if !buf.is_empty() {
            self.iov.push(libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            });
        }
    }
}

/// Sends the bytes `iov` describes (either kind of list: the kernel only reads); `dest` for
/// unconnected datagram sockets.
pub fn sendmsg<A>(
    fd: impl AsFd,
    iov: &IovList<'_, '_, A>,
    dest: Option<&SocketAddr>,
    flags: libc::c_int,
) -> io::Result<usize> {
    // SAFETY: a list's entries are valid for reading while it lives (the iovec contract).
    unsafe { sendmsg_raw(fd.as_fd(), iov.raw(), dest, flags) }
}

/// Sends `buf` (`send`, or `sendto` with `dest`); `flags` as for [`sendmsg`].
pub fn send_buf(
    fd: impl AsFd,
    buf: &[u8],
    dest: Option<&SocketAddr>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let flags =
        rustix::net::SendFlags::from_bits_retain(flags as u32) | rustix::net::SendFlags::NOSIGNAL;
    Ok(match dest {
        Some(dest) => rustix::net::sendto(fd, buf, flags, dest)?,
        None => rustix::net::send(fd, buf, flags)?,
    })
}

/// # Safety
/// Every entry of `iov` must be valid for the kernel to read during the call.
unsafe fn sendmsg_raw(
    fd: BorrowedFd<'_>,
    iov: &[libc::iovec],
    dest: Option<&SocketAddr>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let addr = dest.map(sockaddr);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    if let Some((storage, len)) = &addr {
        msg.msg_name = (storage as *const libc::sockaddr_storage) as *mut libc::c_void;
        msg.msg_namelen = *len;
    }
    // SAFETY: `msg` points at the caller's iovecs (valid for reading: the caller's contract)
    // and our address for the call's duration; the kernel only reads them.
    check_size(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags | libc::MSG_NOSIGNAL) })
}

/// What one `recvmsg` brought.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: Option<SocketAddr>,
    /// A datagram was longer than the buffers (the rest is lost).
    pub truncated: bool,
}

/// Receives into the memory `iov` describes.
pub fn recvmsg(
    fd: impl AsFd,
    iov: &mut RecvIovs<'_, '_>,
    flags: libc::c_int,
) -> io::Result<Received> {
    // SAFETY: a receive list's entries are valid for writing and referenced by nothing else
    // while it lives (the iovec contract); `&mut` keeps the list from being used meanwhile.
    unsafe { recvmsg_raw(fd.as_fd(), iov.raw(), flags) }
}

/// Receives one datagram into `buf` (`recv` with `MSG_TRUNC`, which reports its whole
/// length); the sender is not reported.
pub fn recv_buf(fd: impl AsFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<Received> {
    let flags =
        rustix::net::RecvFlags::from_bits_retain(flags as u32) | rustix::net::RecvFlags::TRUNC;
    let (len, whole) = rustix::net::recv(fd, buf, flags)?;
    Ok(Received {
        len,
        from: None,
        truncated: whole > len,
    })
}

/// # Safety
/// Every entry of `iov` must be valid for the kernel to write during the call, and not
/// referenced by Rust meanwhile.
unsafe fn recvmsg_raw(
    fd: BorrowedFd<'_>,
    iov: &[libc::iovec],
    flags: libc::c_int,
) -> io::Result<Received> {
    // SAFETY: plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the iovecs are valid for writing (the caller's contract); `storage` is ours.
    let n = check_size(unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) })?;
    let from = if msg.msg_namelen > 0 {
        from_sockaddr(&storage)
    } else {
        None
    };
    Ok(Received {
        len: n,
        from,
        truncated: msg.msg_flags & libc::MSG_TRUNC != 0,
    })
}

/// The kernel's limit on iovecs in one call (`UIO_MAXIOV`): more fail with `EMSGSIZE`.
pub const MAX_IOVECS: usize = 1024;

/// Asks for the ICMP errors a datagram socket's traffic causes (`IP_RECVERR` or
/// `IPV6_RECVERR`, by `family`): they queue on the socket's error queue for [`recv_error`].
pub fn set_recv_errors(fd: impl AsFd, family: libc::c_int) -> io::Result<()> {
    match family {
        libc::AF_INET6 => setsockopt_int(fd.as_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1),
        _ => setsockopt_int(fd.as_fd(), libc::IPPROTO_IP, libc::IP_RECVERR, 1),
    }
}

/// One error from a socket's error queue (`MSG_ERRQUEUE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockError {
    /// `ee_errno`: what the error means to the socket (`ECONNREFUSED`, `EMSGSIZE`, ...).
    pub errno: u32,
    /// `ee_origin`: `SO_EE_ORIGIN_ICMP`, `SO_EE_ORIGIN_ICMP6`, `SO_EE_ORIGIN_LOCAL`, ...
    pub origin: u8,
    /// The ICMP type and code, for ICMP origins.
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// `ee_info`: the next-hop MTU of "fragmentation needed" and "packet too big".
    pub info: u32,
    /// Where the datagram that caused the error was going.
    pub dest: Option<SocketAddr>,
    /// How many bytes of that datagram's payload the kernel returned into the buffer.
    pub payload_len: usize,
}

/// Takes the first error off `fd`'s error queue: the payload of the datagram that caused it
/// goes into `buf` (clipped), its details into the result. `WouldBlock` when none is queued.
pub fn recv_error(fd: impl AsFd, buf: &mut [u8]) -> io::Result<SockError> {
    // Room for one cmsg holding a sock_extended_err and the offender's sockaddr_in6.
    let mut control = [0u64; 16];
    // SAFETY: plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control) as _;
    // SAFETY: every buffer `msg` points at (`buf` through `iov`, `storage`, `control`) is a
    // live local or borrow of the stated length for the call's duration.
    let n = check_size(unsafe {
        libc::recvmsg(
            fd.as_fd().as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    })?;
    let mut found = None;
    // SAFETY: `msg` was filled in by the kernel; CMSG_FIRSTHDR/NXTHDR walk `control` within
    // `msg_controllen`, and each header they return lies inside it.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null headers from CMSG_FIRSTHDR/NXTHDR point inside `control`.
        let (level, ty, len) = unsafe { ((*cmsg).cmsg_level, (*cmsg).cmsg_type, (*cmsg).cmsg_len) };
        let is_recverr = (level == libc::IPPROTO_IP && ty == libc::IP_RECVERR)
            || (level == libc::IPPROTO_IPV6 && ty == libc::IPV6_RECVERR);
        // SAFETY: CMSG_LEN is arithmetic on its argument.
        let needed = unsafe { libc::CMSG_LEN(mem::size_of::<libc::sock_extended_err>() as u32) };
        if is_recverr && len >= needed as usize {
            // SAFETY: the header says its data holds at least a sock_extended_err; the data
            // may be unaligned in `control`, hence read_unaligned.
            let ee: libc::sock_extended_err = unsafe {
                std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>())
            };
            found = Some(ee);
            break;
        }
        // SAFETY: as for CMSG_FIRSTHDR above.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    let ee = found.ok_or_else(|| io::Error::from(io::ErrorKind::InvalidData))?;
    Ok(SockError {
        errno: ee.ee_errno,
        origin: ee.ee_origin,
        icmp_type: ee.ee_type,
        icmp_code: ee.ee_code,
        info: ee.ee_info,
        dest: if msg.msg_namelen > 0 {
            from_sockaddr(&storage)
        } else {
            None
        },
        payload_len: n.min(buf.len()),
    })
}

/// The source of the datagram at the front of `fd`'s queue, which stays there.
pub fn peek_source(fd: impl AsFd) -> Option<SocketAddr> {
    let mut none = IoVecs::default();
    recvmsg(
        fd,
        &mut none.for_recv(),
        libc::MSG_PEEK | libc::MSG_DONTWAIT,
    )
    .ok()?
    .from
}

/// Drops the datagram at the front of `fd`'s queue.
pub fn discard_datagram(fd: impl AsFd) -> io::Result<()> {
    let mut none = IoVecs::default();
    recvmsg(fd, &mut none.for_recv(), libc::MSG_DONTWAIT).map(|_| ())
}

/// Drops `len` bytes from the front of a stream socket's receive queue by reading them into a
/// scratch buffer: for unix sockets, which do not take `MSG_TRUNC` as "discard". Returns how
/// many went.
pub fn discard_by_reading(fd: impl AsFd, len: usize) -> io::Result<usize> {
    let mut scratch = [0u8; 16384];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(scratch.len());
        match rustix::net::recv(&fd, &mut scratch[..want], rustix::net::RecvFlags::DONTWAIT) {
            Ok((0, _)) => break,
            Ok((n, _)) => done += n,
            Err(e) if done == 0 => return Err(e.into()),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// Drops `len` bytes from the front of a stream socket's receive queue without copying.
pub fn discard(fd: impl AsFd, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket the kernel discards the data and writes nothing
    // to the (null) buffer.
    check_size(unsafe {
        libc::recv(
            fd.as_fd().as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    })
}

/// Sets an int socket option rustix has no wrapper for.
fn setsockopt_int(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the stated size.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Sets where `MSG_PEEK` starts reading (Linux `SO_PEEK_OFF`); the kernel moves it back as
/// data is consumed, so it stays "bytes already sent to the guest".
pub fn set_peek_offset(fd: impl AsFd, offset: usize) -> io::Result<()> {
    setsockopt_int(
        fd.as_fd(),
        libc::SOL_SOCKET,
        libc::SO_PEEK_OFF,
        libc::c_int::try_from(offset).unwrap_or(libc::c_int::MAX),
    )
}

/// The pending error of a socket (`SO_ERROR`), clearing it.
pub fn take_error(fd: impl AsFd) -> io::Result<Option<io::Error>> {
    Ok(rustix::net::sockopt::socket_error(fd)?
        .err()
        .map(io::Error::from))
}

/// A socket's send buffer in the kernel's own accounting, where every queued buffer is
/// charged its payload plus its bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendMemory {
    /// The budget (`SO_SNDBUF`, as autotuned).
    pub budget: usize,
    /// What the send queue is charged now (written, not yet acknowledged).
    pub queued: usize,
}

/// Both figures of [`SendMemory`] in one call (`SO_MEMINFO`).
pub fn send_memory(fd: impl AsFd) -> io::Result<SendMemory> {
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into the live local array.
    check(unsafe {
        libc::getsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    })?;
    let queued_at = libc::SK_MEMINFO_WMEM_QUEUED as usize;
    if (len as usize) < (queued_at + 1) * mem::size_of::<u32>() {
        return Err(io::Error::from(io::ErrorKind::Unsupported));
    }
    Ok(SendMemory {
        budget: info[libc::SK_MEMINFO_SNDBUF as usize] as usize,
        queued: info[queued_at] as usize,
    })
}

/// Bytes in a TCP socket's receive queue, peeked or not (`SIOCINQ`, which is `FIONREAD`).
pub fn queued_for_reading(fd: impl AsFd) -> io::Result<usize> {
    Ok(usize::try_from(rustix::io::ioctl_fionread(fd)?).unwrap_or(usize::MAX))
}

/// Bytes in a TCP socket's send queue not sent yet (`SIOCOUTQNSD`): what `MSG_MORE` holds
/// back. Tests see with it that the data is held, rather than waiting for it not to arrive.
#[cfg(test)]
pub fn unsent(fd: impl AsFd) -> io::Result<usize> {
    const SIOCOUTQNSD: libc::Ioctl = 0x894b; // linux/sockios.h
    let mut bytes: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int into the live local.
    check(unsafe { libc::ioctl(fd.as_fd().as_raw_fd(), SIOCOUTQNSD, &mut bytes) })?;
    Ok(usize::try_from(bytes).unwrap_or(0))
}

pub fn set_nodelay(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_tcp_nodelay(fd, true)?)
}

/// Makes `close` send a RST instead of a FIN (linger with zero timeout).
pub fn set_linger_zero(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_linger(
        fd,
        Some(std::time::Duration::ZERO),
    )?)
}

/// Closes the sending direction (`shutdown(SHUT_WR)`): the peer sees our FIN.
pub fn shutdown_write(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::net::shutdown(fd, rustix::net::Shutdown::Write)?)
}

/// Binds `fd` to `addr`.
pub fn bind(fd: impl AsFd, addr: &SocketAddr) -> io::Result<()> {
    Ok(rustix::net::bind(fd, addr)?)
}

/// Marks a bound stream socket as accepting connections.
pub fn listen(fd: impl AsFd, backlog: libc::c_int) -> io::Result<()> {
    Ok(rustix::net::listen(fd, backlog)?)
}

/// Takes one waiting connection as a non-blocking, close-on-exec socket with its peer's IP
/// address (none for a unix socket); `Ok(None)` when none waits.
pub fn accept(fd: impl AsFd) -> io::Result<Option<(OwnedFd, Option<SocketAddr>)>> {
    match rustix::net::acceptfrom_with(fd, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
        Ok((sock, peer)) => Ok(Some((
            sock,
            peer.and_then(|p| SocketAddr::try_from(p).ok()),
        ))),
        Err(rustix::io::Errno::AGAIN) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `SO_REUSEADDR`: a forwarded port can be bound again while old connections linger.
pub fn set_reuse_addr(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_socket_reuseaddr(fd, true)?)
}

/// `IPV6_V6ONLY`: whether an IPv6 socket leaves IPv4 to a socket of its own (`true`) or also
/// takes IPv4 peers, as v4-mapped addresses (`false`, whatever `net.ipv6.bindv6only` says).
pub fn set_v6_only(fd: impl AsFd, v6_only: bool) -> io::Result<()> {
    Ok(rustix::net::sockopt::set_ipv6_v6only(fd, v6_only)?)
}

/// `SO_BINDTODEVICE`: the socket only sees traffic of the host interface `name`.
pub fn bind_to_device(fd: impl AsFd, name: &str) -> io::Result<()> {
    // SAFETY: the kernel reads `name.len()` bytes from the live string.
    check(unsafe {
        libc::setsockopt(
            fd.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Raises the soft limit on open descriptors to `wanted`, or as far as the hard limit allows
/// (as passt does; the hard limit is the administrator's). Returns the soft limit in force.
pub fn raise_fd_limit(wanted: usize) -> io::Result<usize> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    let wanted = u64::try_from(wanted).unwrap_or(u64::MAX);
    // `None` is RLIM_INFINITY.
    if limit.current.is_some_and(|current| current < wanted) {
        limit.current = Some(limit.maximum.map_or(wanted, |max| wanted.min(max)));
        setrlimit(Resource::Nofile, limit)?;
    }
    Ok(limit.current.map_or(usize::MAX, |current| {
        usize::try_from(current).unwrap_or(usize::MAX)
    }))
}

/// Whether this process may access `path` in `mode` (`libc::R_OK`, ...), as `access(2)`.
pub fn check_access(path: &std::path::Path, mode: libc::c_int) -> io::Result<()> {
    let mode = rustix::fs::Access::from_bits_retain(mode as _);
    Ok(rustix::fs::access(path, mode)?)
}

/// This process's effective user ID.
pub fn effective_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// The login name of user `uid`, from the password database (`getpwuid_r`).
pub fn user_name(uid: u32) -> io::Result<String> {
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        // SAFETY: an all-zero passwd (null pointers, zero IDs) is a valid value to overwrite.
        let mut entry: libc::passwd = unsafe { mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: `entry`, `buf` (with its true length) and `found` live across the call; the
        // strings written into `entry` point into `buf`, which outlives their use below.
        let rc =
            unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if found.is_null() || entry.pw_name.is_null() {
            return Err(io::Error::new(io::ErrorKind::NotFound, "no such user"));
        }
        // SAFETY: getpwuid_r succeeded, so pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
        return Ok(name.to_string_lossy().into_owned());
    }
}

/// Runs `child` in a new process and returns that process's ID.
///
/// The child keeps only descriptors 0, 1, 2 and `keep`, runs `child`, and exits with the
/// status it returns (101 if it panics): it never returns into the caller's frames, so none of
/// the objects the parent's stack owns is used or dropped in the child. `child` must use no
/// descriptor but those four. Refused unless this process has a single thread: then the child
/// inherits no lock that another thread held, and any code may run in it.
pub fn fork_process(keep: RawFd, child: impl FnOnce() -> i32) -> io::Result<u32> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "cannot fork with {threads} threads running"
        )));
    }
    // SAFETY: the process has one thread (checked above; only this thread could start
    // another), so the child is a consistent copy in which any code may run.
    let pid = check(unsafe { libc::fork() })?;
    if pid > 0 {
        return Ok(pid as u32);
    }
    close_descriptors_except(keep);
    let status = std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(101);
    // SAFETY: _exit ends the child at once, without unwinding into the parent's frames or
    // running their destructors (which would close descriptors this process no longer owns).
    unsafe { libc::_exit(status) }
}

/// Closes every descriptor from 3 up except `keep` (in a child that uses no other).
fn close_descriptors_except(keep: RawFd) {
    let close_range = |first: RawFd, last: libc::c_uint| {
        if first as libc::c_uint > last {
            return true;
        }
        // SAFETY: close_range only closes descriptors; the one caller, a freshly forked child,
        // never uses or drops the objects that owned them (see fork_process).
        unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, last, 0) == 0 }
    };
    let keep = keep.max(3);
    if close_range(3, keep as libc::c_uint - 1) && close_range(keep + 1, libc::c_uint::MAX) {
        return;
    }
    // Kernels before 5.9: whatever /proc/self/fd lists.
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in fds.into_iter().filter(|&fd| fd > 2 && fd != keep) {
        // SAFETY: as above; closing a descriptor nothing will use again.
        unsafe { libc::close(fd) };
    }
}

/// Has `command`'s child mark every descriptor above its standard streams close-on-exec just
/// before it execs: a guest forward command or smbd gets its connection on 0, 1 and 2 and
/// nothing else of this process, whoever opened the rest and however.
pub fn pass_only_standard_streams(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe work is allowed: one system call, and errno read back on failure; no
    // allocation, no lock. close_range with CLOSE_RANGE_CLOEXEC closes nothing, so no
    // descriptor std still uses in the child (its exec-error pipe) goes away.
    unsafe {
        command.pre_exec(|| {
            let rc = libc::syscall(
                libc::SYS_close_range,
                3 as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            if rc < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// `timer`'s descriptor, borrowed for as long as the timer: vmm-sys-util's `TimerFd` owns it
/// but implements only `AsRawFd`.
pub fn timer_fd(timer: &vmm_sys_util::timerfd::TimerFd) -> BorrowedFd<'_> {
    // SAFETY: the `TimerFd` keeps its descriptor open until it is dropped, which the borrow of
    // `timer` prevents for the returned lifetime.
    unsafe { BorrowedFd::borrow_raw(timer.as_raw_fd()) }
}

/// `event`'s descriptor, borrowed for as long as the eventfd: vmm-sys-util's `EventFd` owns
/// it but implements only `AsRawFd`.
pub fn event_fd(event: &vmm_sys_util::eventfd::EventFd) -> BorrowedFd<'_> {
    // SAFETY: the `EventFd` keeps its descriptor open until it is dropped, which the borrow of
    // `event` prevents for the returned lifetime.
    unsafe { BorrowedFd::borrow_raw(event.as_raw_fd()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(list: &RecvIovs<'_, '_>) -> Vec<(usize, usize)> {
        list.raw()
            .iter()
            .map(|v| (v.iov_base as usize, v.iov_len))
            .collect()
    }

    #[test]
    fn adjacent_ranges_share_one_iovec_and_gaps_start_another() {
        let mut buf = [0u8; 0x500];
        let base = buf.as_mut_ptr();
        let mut storage = IoVecs::default();
        let mut list = storage.for_recv();
        // SAFETY: every range lies inside `buf`, which outlives the list and is not used while
        // the list lives.
        unsafe {
            list.push_raw(base, 0x100);
            list.push_raw(base.add(0x100), 0x200);
            list.push_raw(base.add(0x400), 0x10);
            list.push_raw(base, 0x10);
        }
        let at = base as usize;
        assert_eq!(ranges(&list), [(at, 0x300), (at + 0x400, 0x10), (at, 0x10)]);
    }

    #[test]
    fn a_range_ending_at_the_top_of_the_address_space_is_not_extended_by_wrapping() {
        let mut storage = IoVecs::default();
        let mut list = storage.for_recv();
        // SAFETY: the list is never handed to the kernel: only its entries' numbers are
        // compared, and no memory is accessed through them.
        unsafe {
            list.push_raw((usize::MAX - 0xf) as *mut u8, 0x10);
            list.push_raw(std::ptr::null_mut(), 0x10);
        }
        assert_eq!(list.len(), 2);
    }

    #[test]
    fn a_list_starts_empty_whatever_the_last_one_left() {
        let mut buf = [0u8; 8];
        let mut storage = IoVecs::default();
        let mut list = storage.for_recv();
        list.push(&mut buf);
        assert_eq!(list.bytes_from(0), 8);
        assert!(storage.for_send().is_empty());
    }
}
