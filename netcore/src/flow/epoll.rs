//! The engine's epoll set: what a registration's token names, and adding or changing one.

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

/// What an epoll event is about: a flow's socket (by table and slot), the engine's timer, or
/// a forwarded port (by its index in the engine's forwards).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token {
    Tcp(usize),
    Udp(usize),
    Ping(usize),
    Timer,
    Forward(usize),
    /// Frames other queue pairs handed to this one ([`crate::queue_pairs`]).
    Inbox,
    /// Delayed ACKs are due ([`crate::flow::tcp::DELAYED_ACK`]).
    AckTimer,
}

/// The token's kind is its top byte; the slot or index is the rest.
const KIND_SHIFT: u32 = 56;
const INDEX_MASK: u64 = (1 << KIND_SHIFT) - 1;

impl Token {
    /// The epoll data word for this token.
    pub fn encode(self) -> u64 {
        let (kind, index) = match self {
            Token::Tcp(slot) => (1, slot),
            Token::Udp(slot) => (2, slot),
            Token::Ping(slot) => (3, slot),
            Token::Timer => (4, 0),
            Token::Forward(index) => (5, index),
            Token::Inbox => (6, 0),
            Token::AckTimer => (7, 0),
        };
        kind << KIND_SHIFT | (index as u64 & INDEX_MASK)
    }

    /// The token of an epoll data word; `None` for one we never registered.
    pub fn decode(data: u64) -> Option<Token> {
        let index = (data & INDEX_MASK) as usize;
        Some(match data >> KIND_SHIFT {
            1 => Token::Tcp(index),
            2 => Token::Udp(index),
            3 => Token::Ping(index),
            4 => Token::Timer,
            5 => Token::Forward(index),
            6 => Token::Inbox,
            7 => Token::AckTimer,
            _ => return None,
        })
    }
}

/// Watches `fd` for `events` (`libc::EPOLL*` bits), reported with `token`.
pub fn add(epoll: &Epoll, fd: impl AsFd, events: u32, token: Token) -> io::Result<()> {
    control(epoll, ControlOperation::Add, fd, events, token)
}

/// Changes what `fd`, already watched, is watched for.
pub fn modify(epoll: &Epoll, fd: impl AsFd, events: u32, token: Token) -> io::Result<()> {
    control(epoll, ControlOperation::Modify, fd, events, token)
}

/// Stops watching `fd`.
pub fn remove(epoll: &Epoll, fd: impl AsFd) -> io::Result<()> {
    control(epoll, ControlOperation::Delete, fd, 0, Token::Timer)
}

fn control(
    epoll: &Epoll,
    op: ControlOperation,
    fd: impl AsFd,
    events: u32,
    token: Token,
) -> io::Result<()> {
    epoll.ctl(
        op,
        fd.as_fd().as_raw_fd(),
        EpollEvent::new(EventSet::from_bits_truncate(events), token.encode()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_keep_their_encoding() {
        for token in [
            Token::Tcp(0),
            Token::Tcp(4095),
            Token::Udp(7),
            Token::Ping(255),
            Token::Timer,
            Token::Forward(3),
            Token::Inbox,
            Token::AckTimer,
        ] {
            assert_eq!(Token::decode(token.encode()), Some(token));
        }
        // The words the engine used before the tokens had a type: a kind byte on top.
        assert_eq!(Token::Tcp(5).encode(), 1 << 56 | 5);
        assert_eq!(Token::Forward(2).encode(), 5 << 56 | 2);
        assert_eq!(Token::decode(0), None);
        assert_eq!(Token::decode(9 << 56), None);
    }
}
