//! How a guest forward's command is started, here or in the [`crate::launcher`]: the one
//! place both take it from, so that neither needs the other.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Commands of guest forwards running at once, at most.
pub const MAX_RUNNING: usize = 128;

/// Starts `argv` with `conn` as its standard input, output and error, in a process group of
/// its own (by [`crate::guestfwd::Commands`], or in the [`crate::launcher`]).
pub(crate) fn spawn(argv: &[String], conn: OwnedFd) -> io::Result<Child> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::from(conn.try_clone()?))
        .stdout(Stdio::from(conn.try_clone()?))
        .stderr(Stdio::from(conn))
        .process_group(0);
    crate::sys::pass_only_standard_streams(&mut command);
    command.spawn()
}
