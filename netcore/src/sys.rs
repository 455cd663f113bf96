//! The crate's only unsafe code: host socket calls that std does not offer (non-blocking
//! connect, scatter/gather I/O on raw iovecs, peek offsets, queue sizes), and the few process
//! queries smb= needs (`access`, the effective user and its name), and forking the guest
//! forwards' launcher ([`crate::launcher`]).
//!
//! The iovecs passed here may point into guest memory. They are handed to the kernel only,
//! which copies to or from them; Rust never dereferences them.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// A non-blocking, close-on-exec socket.
pub fn socket(family: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with integer arguments.
    let fd = check(unsafe {
        libc::socket(
            family,
            ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            protocol,
        )
    })?;
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
pub fn connect(fd: &OwnedFd, addr: &SocketAddr) -> io::Result<bool> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid address of `len` bytes for the call's duration.
    let rc = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&storage as *const libc::sockaddr_storage).cast(),
            len,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EINPROGRESS) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Sends the bytes the iovecs describe; `dest` for unconnected datagram sockets.
pub fn sendmsg(
    fd: RawFd,
    iov: &[libc::iovec],
    dest: Option<&SocketAddr>,
    flags: libc::c_int,
) -> io::Result<usize> {
    let addr = dest.map(sockaddr);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    if let Some((storage, len)) = &addr {
        msg.msg_name = (storage as *const libc::sockaddr_storage) as *mut libc::c_void;
        msg.msg_namelen = *len;
    }
    // SAFETY: `msg` points at the caller's iovec array and our address for the call's
    // duration. The iovecs describe memory valid for reading (guest memory checked by the
    // link, or our own buffers); the kernel only reads it.
    check_size(unsafe { libc::sendmsg(fd, &msg, flags | libc::MSG_NOSIGNAL) })
}

/// What one `recvmsg` brought.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub from: Option<SocketAddr>,
    /// A datagram was longer than the buffers (the rest is lost).
    pub truncated: bool,
}

/// Receives into the iovecs.
pub fn recvmsg(fd: RawFd, iov: &[libc::iovec], flags: libc::c_int) -> io::Result<Received> {
    // SAFETY: plain data; all-zero is valid.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iov.len() as _;
    msg.msg_name = (&mut storage as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the iovecs describe memory valid for writing (RX slots the link reserved for
    // us, or our own buffers) that nothing reads until the call returns; `storage` is ours.
    let n = check_size(unsafe { libc::recvmsg(fd, &mut msg, flags) })?;
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
pub fn set_recv_errors(fd: RawFd, family: libc::c_int) -> io::Result<()> {
    match family {
        libc::AF_INET6 => setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVERR, 1),
        _ => setsockopt_int(fd, libc::IPPROTO_IP, libc::IP_RECVERR, 1),
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
pub fn recv_error(fd: RawFd, buf: &mut [u8]) -> io::Result<SockError> {
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
        libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT)
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
pub fn peek_source(fd: RawFd) -> Option<SocketAddr> {
    recvmsg(fd, &[], libc::MSG_PEEK | libc::MSG_DONTWAIT)
        .ok()?
        .from
}

/// Drops the datagram at the front of `fd`'s queue.
pub fn discard_datagram(fd: RawFd) -> io::Result<()> {
    recvmsg(fd, &[], libc::MSG_DONTWAIT).map(|_| ())
}

/// Drops `len` bytes from the front of a stream socket's receive queue by reading them into a
/// scratch buffer: for unix sockets, which do not take `MSG_TRUNC` as "discard". Returns how
/// many went.
pub fn discard_by_reading(fd: RawFd, len: usize) -> io::Result<usize> {
    let mut scratch = [0u8; 16384];
    let mut done = 0;
    while done < len {
        let want = (len - done).min(scratch.len());
        // SAFETY: the kernel writes at most `want` bytes into the live local buffer.
        let n = check_size(unsafe {
            libc::recv(fd, scratch.as_mut_ptr().cast(), want, libc::MSG_DONTWAIT)
        });
        match n {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

/// Drops `len` bytes from the front of a stream socket's receive queue without copying.
pub fn discard(fd: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: with MSG_TRUNC on a TCP socket the kernel discards the data and writes nothing
    // to the (null) buffer.
    check_size(unsafe {
        libc::recv(
            fd,
            std::ptr::null_mut(),
            len,
            libc::MSG_TRUNC | libc::MSG_DONTWAIT,
        )
    })
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a live c_int of the stated size.
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

fn getsockopt_int(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into the live local `value`.
    check(unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// Sets where `MSG_PEEK` starts reading (Linux `SO_PEEK_OFF`); the kernel moves it back as
/// data is consumed, so it stays "bytes already sent to the guest".
pub fn set_peek_offset(fd: RawFd, offset: usize) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::SOL_SOCKET,
        libc::SO_PEEK_OFF,
        libc::c_int::try_from(offset).unwrap_or(libc::c_int::MAX),
    )
}

/// The pending error of a socket (`SO_ERROR`), clearing it.
pub fn take_error(fd: RawFd) -> io::Result<Option<io::Error>> {
    let err = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
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
pub fn send_memory(fd: RawFd) -> io::Result<SendMemory> {
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into the live local array.
    check(unsafe {
        libc::getsockopt(
            fd,
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

/// Bytes in a TCP socket's receive queue, peeked or not (`SIOCINQ`).
pub fn queued_for_reading(fd: RawFd) -> io::Result<usize> {
    let mut bytes: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into the live local.
    check(unsafe { libc::ioctl(fd, libc::FIONREAD, &mut bytes) })?;
    Ok(usize::try_from(bytes).unwrap_or(0))
}

/// Bytes in a TCP socket's send queue not sent yet (`SIOCOUTQNSD`): what `MSG_MORE` holds
/// back. Tests see with it that the data is held, rather than waiting for it not to arrive.
#[cfg(test)]
pub fn unsent(fd: RawFd) -> io::Result<usize> {
    const SIOCOUTQNSD: libc::Ioctl = 0x894b; // linux/sockios.h
    let mut bytes: libc::c_int = 0;
    // SAFETY: SIOCOUTQNSD writes one int into the live local.
    check(unsafe { libc::ioctl(fd, SIOCOUTQNSD, &mut bytes) })?;
    Ok(usize::try_from(bytes).unwrap_or(0))
}

pub fn set_nodelay(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)
}

/// Makes `close` send a RST instead of a FIN (linger with zero timeout).
pub fn set_linger_zero(fd: RawFd) -> io::Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value is a live linger struct of the stated size.
    check(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })?;
    Ok(())
}

/// Closes the sending direction (`shutdown(SHUT_WR)`): the peer sees our FIN.
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain system call with integer arguments.
    check(unsafe { libc::shutdown(fd, libc::SHUT_WR) })?;
    Ok(())
}

/// Binds `fd` to `addr`.
pub fn bind(fd: RawFd, addr: &SocketAddr) -> io::Result<()> {
    let (storage, len) = sockaddr(addr);
    // SAFETY: `storage` holds a valid address of `len` bytes for the call's duration.
    check(unsafe { libc::bind(fd, (&storage as *const libc::sockaddr_storage).cast(), len) })?;
    Ok(())
}

/// Marks a bound stream socket as accepting connections.
pub fn listen(fd: RawFd, backlog: libc::c_int) -> io::Result<()> {
    // SAFETY: plain system call with integer arguments.
    check(unsafe { libc::listen(fd, backlog) })?;
    Ok(())
}

/// Takes one waiting connection as a non-blocking, close-on-exec socket with its peer's IP
/// address (none for a unix socket); `Ok(None)` when none waits.
pub fn accept(fd: RawFd) -> io::Result<Option<(OwnedFd, Option<SocketAddr>)>> {
    // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes of address into the live local storage.
    let rc = unsafe {
        libc::accept4(
            fd,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut len,
            libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
        )
    };
    if rc < 0 {
        let err = io::Error::last_os_error();
        return match err.kind() {
            io::ErrorKind::WouldBlock => Ok(None),
            _ => Err(err),
        };
    }
    // SAFETY: the kernel just returned this new descriptor; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(rc) };
    Ok(Some((sock, from_sockaddr(&storage))))
}

/// `SO_REUSEADDR`: a forwarded port can be bound again while old connections linger.
pub fn set_reuse_addr(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
}

/// `IPV6_V6ONLY`: whether an IPv6 socket leaves IPv4 to a socket of its own (`true`) or also
/// takes IPv4 peers, as v4-mapped addresses (`false`, whatever `net.ipv6.bindv6only` says).
pub fn set_v6_only(fd: RawFd, v6_only: bool) -> io::Result<()> {
    setsockopt_int(
        fd,
        libc::IPPROTO_IPV6,
        libc::IPV6_V6ONLY,
        i32::from(v6_only),
    )
}

/// `SO_BINDTODEVICE`: the socket only sees traffic of the host interface `name`.
pub fn bind_to_device(fd: RawFd, name: &str) -> io::Result<()> {
    // SAFETY: the kernel reads `name.len()` bytes from the live string.
    check(unsafe {
        libc::setsockopt(
            fd,
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
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: the kernel writes one rlimit into the live local.
    check(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) })?;
    let wanted = libc::rlim_t::try_from(wanted).unwrap_or(libc::rlim_t::MAX);
    if limit.rlim_cur < wanted {
        limit.rlim_cur = wanted.min(limit.rlim_max);
        // SAFETY: the kernel reads one rlimit from the live local.
        check(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) })?;
    }
    Ok(usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX))
}

/// Whether this process may access `path` in `mode` (`libc::R_OK`, ...), as `access(2)`.
pub fn check_access(path: &std::path::Path, mode: libc::c_int) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: the kernel reads the NUL-terminated string, which lives across the call.
    check(unsafe { libc::access(c_path.as_ptr(), mode) }).map(drop)
}

/// This process's effective user ID.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
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

/// Reusable iovec storage for the flow tables.
///
/// `libc::iovec` holds raw pointers, which makes its containers neither `Send` nor `Sync`;
/// the engine moves between threads with its connection, so the scratch vector must too.
#[derive(Debug, Default)]
pub struct IoVecs(Vec<libc::iovec>);

// SAFETY: the vector is scratch space, cleared before each use and filled with pointers that
// are used only within that one call on the engine's own thread; no pointer outlives the call
// or is dereferenced by Rust, so moving or sharing the (stale) vector across threads is sound.
unsafe impl Send for IoVecs {}
// SAFETY: as above; `&IoVecs` only exposes the stale pointers as values.
unsafe impl Sync for IoVecs {}

impl std::ops::Deref for IoVecs {
    type Target = Vec<libc::iovec>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for IoVecs {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
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
