//! One bounds-checked way to read bytes a guest sent.
//!
//! Everything a guest sends may be cut short or lie about its lengths. Instead of checking a
//! length before each index (and getting one of them wrong some day), readers of guest bytes go
//! through [`Frame`], whose getters return `None` past the end, as passt's
//! `packet_check_range` does for all of its parsers. Nothing here panics.

use std::net::Ipv6Addr;

/// A view of guest bytes whose every read is bounds-checked.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a>(&'a [u8]);

impl<'a> Frame<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Frame(bytes)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// All the bytes of the view.
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    /// `len` bytes from `at`.
    pub fn get(&self, at: usize, len: usize) -> Option<&'a [u8]> {
        self.0.get(at..at.checked_add(len)?)
    }

    /// The view from `at` to the end.
    pub fn from(&self, at: usize) -> Option<Frame<'a>> {
        self.0.get(at..).map(Frame)
    }

    /// The first `len` bytes, or all of them when there are fewer.
    pub fn up_to(&self, len: usize) -> Frame<'a> {
        Frame(&self.0[..len.min(self.0.len())])
    }

    pub fn u8(&self, at: usize) -> Option<u8> {
        self.0.get(at).copied()
    }

    /// A big-endian (network order) 16-bit field.
    pub fn u16(&self, at: usize) -> Option<u16> {
        self.array(at).map(u16::from_be_bytes)
    }

    pub fn array<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        self.get(at, N)?.try_into().ok()
    }

    pub fn ipv6(&self, at: usize) -> Option<Ipv6Addr> {
        self.array::<16>(at).map(Ipv6Addr::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_past_the_end_are_none() {
        let f = Frame::new(&[1, 2, 3, 4, 5]);
        assert_eq!(f.u8(4), Some(5));
        assert_eq!(f.u8(5), None);
        assert_eq!(f.u16(3), Some(0x0405));
        assert_eq!(f.u16(4), None);
        assert_eq!(f.get(2, 3), Some(&[3, 4, 5][..]));
        assert_eq!(f.get(2, 4), None);
        assert_eq!(f.get(usize::MAX, 2), None, "no overflow");
        assert_eq!(f.ipv6(0), None);
        assert_eq!(f.from(5).map(|r| r.len()), Some(0));
        assert!(f.from(6).is_none());
        assert_eq!(f.up_to(9).len(), 5);
    }
}
