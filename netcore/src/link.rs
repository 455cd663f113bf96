//! The `Link`: how frames cross between the engine and whatever carries them to the guest.
//!
//! # Theory of operation
//!
//! On the vhost-user ring path a frame the guest sent lives in guest memory, which the guest may
//! rewrite at any moment. The engine therefore never sees it as a Rust slice: a [`TxFrame`]
//! copies a bounded prefix out for parsing ([`TxFrame::read_at`]) and hands payload on as
//! iovecs ([`TxFrame::iovecs`]) that only the kernel dereferences (`sendmsg`). The iovecs go
//! into a [`crate::sys::IovList`] borrowed from the frame for as long as the list lives: a
//! frame cannot go away, or be reused, while the kernel may still be given its memory.
//!
//! Toward the guest, [`RxLink::reserve`] gives an [`RxSlot`]: room in guest buffers for one frame
//! of up to a given length. The engine can let the kernel fill the payload region straight from
//! a socket through [`RxSlot::iovecs`], then write the headers ([`RxSlot::write_at`]) once the
//! payload length is known, and [`RxSlot::commit`] the frame. Dropping a slot without committing
//! gives every buffer back untouched, so a frame either reaches the guest whole or not at all.
//!
//! Receive iovecs are taken through a shared borrow (several frames of one reservation go into
//! one list), so the memory behind them must be writable through one: guest memory, which Rust
//! never references, or [`Cell`]s, as [`MemoryLink`] keeps its frames.
//!
//! Offsets and lengths here count from the first byte of the Ethernet header; any virtio-net
//! header is the link's business.

use std::cell::Cell;

pub use crate::sys::{IoVecs, IovList, KernelReads, KernelWrites, RecvIovs, SendIovs};

/// Offloads the guest accepts on frames we send it (negotiated by the link).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxOffloads {
    /// The guest takes frames marked as checksum-verified (virtio `GUEST_CSUM`): we need
    /// not compute TCP/UDP checksums over payload we never looked at.
    pub csum: bool,
    /// TCP segments larger than the MTU, for the guest to take as they are (`GUEST_TSO4/6`).
    pub tso4: bool,
    pub tso6: bool,
}

/// How a frame's transport checksum stands, for the link's per-frame header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RxCsum {
    /// The checksums in the frame are complete.
    #[default]
    Complete,
    /// Not computed; the guest may trust the data (virtio `DATA_VALID`).
    Valid,
    /// The checksum field at `start + offset` holds the pseudo-header sum only
    /// (virtio `NEEDS_CSUM`), as segmentation offload requires.
    Partial { start: u16, offset: u16 },
}

/// Per-frame offload metadata toward the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxMeta {
    pub csum: RxCsum,
    /// A TCP segment carrying several MSS-sized pieces: (IPv6?, segment size, header length).
    pub gso: Option<Gso>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub ipv6: bool,
    pub segment_size: u16,
    pub header_len: u16,
}

/// The guest has not posted enough receive buffers for the frame right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no receive buffers available toward the guest")]
pub struct LinkFull;

/// One frame transmitted by the guest, read where it lies.
pub trait TxFrame {
    /// Frame length in bytes.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies bytes from `offset` into `buf`; returns how many were copied (short at the end).
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize;

    /// Appends iovecs covering `offset..offset + len`, clipped to the frame, to `out`.
    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut SendIovs<'_, 'm>);

    /// Where the guest left a transport checksum for us to complete (virtio `NEEDS_CSUM`):
    /// `(start, offset)` from the Ethernet header. Only frames answered locally need it.
    fn partial_csum(&self) -> Option<(usize, usize)> {
        None
    }
}

/// Room for one frame toward the guest.
pub trait RxSlot {
    /// The largest frame this slot can hold.
    fn capacity(&self) -> usize;

    /// Writes `data` at `offset`. Panics if it does not fit in `capacity()`: callers size frames
    /// before they reserve.
    fn write_at(&mut self, offset: usize, data: &[u8]);

    /// Reads back what the slot holds at `offset` (checksums over peeked payload, captures).
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize;

    /// The RFC 1071 sum (folded, not complemented) of the slot's bytes `offset..offset + len`:
    /// a checksum over payload the kernel wrote. Read back in chunks unless the link can sum
    /// where the bytes lie.
    fn sum_at(&self, offset: usize, len: usize) -> u16 {
        read_back_sum(|at, buf| self.read_at(at, buf), offset, len)
    }

    /// Appends iovecs covering `offset..offset + len`, clipped to the capacity, to `out`.
    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut RecvIovs<'_, 'm>);

    /// Sets the frame's offload metadata (checksum state, segmentation).
    fn set_meta(&mut self, _meta: RxMeta) {}

    /// Hands the first `len` bytes to the guest as one frame.
    fn commit(self, len: usize);
}

/// Byte access to one frame being built, whether it is an [`RxSlot`] or one of several
/// [`RxFrames`]: header writers and checksums work on either.
pub trait RxBytes {
    /// Writes `data` at `offset`; panics if it does not fit the frame's reservation.
    fn write_at(&mut self, offset: usize, data: &[u8]);

    /// Reads back what the frame holds at `offset`.
    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize;

    /// The RFC 1071 sum of the frame's bytes `offset..offset + len` (see [`RxSlot::sum_at`]).
    fn sum_at(&self, offset: usize, len: usize) -> u16 {
        read_back_sum(|at, buf| self.read_at(at, buf), offset, len)
    }
}

impl<S: RxSlot + ?Sized> RxBytes for S {
    fn write_at(&mut self, offset: usize, data: &[u8]) {
        RxSlot::write_at(self, offset, data);
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        RxSlot::read_at(self, offset, buf)
    }

    fn sum_at(&self, offset: usize, len: usize) -> u16 {
        RxSlot::sum_at(self, offset, len)
    }
}

/// The RFC 1071 sum (folded, not complemented) of `len` bytes from `offset`, read back
/// through `read_at` in chunks: payload may sit in guest memory, which we never view as a
/// slice. A short read ends the sum.
pub fn read_back_sum(
    read_at: impl Fn(usize, &mut [u8]) -> usize,
    offset: usize,
    len: usize,
) -> u16 {
    let mut chunk = [0u8; 2048];
    let mut sums = PieceSums::default();
    let mut done = 0;
    while done < len {
        let want = chunk.len().min(len - done);
        let got = read_at(offset + done, &mut chunk[..want]);
        if got == 0 {
            break;
        }
        sums.add(done, smoltcp::wire::checksum::data(&chunk[..got]));
        done += got;
    }
    sums.total()
}

/// RFC 1071 sums of the pieces of one range, added up: a piece that starts at an odd byte of
/// the range has its 16-bit words shifted by one, so its sum is byte-swapped first.
#[derive(Debug, Default, Clone, Copy)]
pub struct PieceSums(u32);

impl PieceSums {
    /// Adds the sum of the piece at `position` in the range (not enough pieces to overflow:
    /// 65536 of them).
    pub fn add(&mut self, position: usize, sum: u16) {
        let sum = if position % 2 == 1 {
            sum.swap_bytes()
        } else {
            sum
        };
        self.0 += u32::from(sum);
    }

    /// The range's sum, folded, not complemented.
    pub fn total(self) -> u16 {
        smoltcp::wire::checksum::combine(&[(self.0 & 0xffff) as u16, (self.0 >> 16) as u16])
    }
}

/// Room for several frames toward the guest, reserved together so that one socket read can
/// fill all their payloads: one `recvmsg` per batch of frames rather than per frame.
///
/// Frames are numbered from 0 in the order the guest will receive them; offsets count from
/// each frame's Ethernet header, as for [`RxSlot`].
pub trait RxFrames {
    /// How many frames were reserved: at least one.
    fn count(&self) -> usize;

    /// The largest `frame` can be.
    fn capacity(&self, frame: usize) -> usize;

    /// Writes `data` at `offset` in `frame`. Panics if it does not fit the reservation.
    fn write_at(&mut self, frame: usize, offset: usize, data: &[u8]);

    /// Reads back what `frame` holds at `offset`.
    fn read_at(&self, frame: usize, offset: usize, buf: &mut [u8]) -> usize;

    /// The RFC 1071 sum of `frame`'s bytes `offset..offset + len` (see [`RxSlot::sum_at`]).
    fn sum_at(&self, frame: usize, offset: usize, len: usize) -> u16 {
        read_back_sum(|at, buf| self.read_at(frame, at, buf), offset, len)
    }

    /// Appends iovecs covering `offset..offset + len` of `frame`, clipped to its capacity.
    fn iovecs<'m>(&'m self, frame: usize, offset: usize, len: usize, out: &mut RecvIovs<'_, 'm>);

    /// Sets `frame`'s offload metadata.
    fn set_meta(&mut self, frame: usize, meta: RxMeta);

    /// Hands frames `0..lens.len()` to the guest, frame `i` being `lens[i]` bytes long; the
    /// frames after them go back untouched. Every frame but the last one handed over should be
    /// filled to the length it was reserved for (as one read into all their iovecs does): a
    /// link that lays frames out in shared buffers returns room left inside the earlier frames
    /// to the guest as empty buffers.
    fn commit(self, lens: &[usize]);
}

/// One frame of an [`RxFrames`], as [`RxBytes`].
#[derive(Debug)]
pub struct FrameOf<'f, F: ?Sized> {
    pub frames: &'f mut F,
    pub index: usize,
}

impl<F: RxFrames + ?Sized> RxBytes for FrameOf<'_, F> {
    fn write_at(&mut self, offset: usize, data: &[u8]) {
        self.frames.write_at(self.index, offset, data);
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        self.frames.read_at(self.index, offset, buf)
    }

    fn sum_at(&self, offset: usize, len: usize) -> u16 {
        self.frames.sum_at(self.index, offset, len)
    }
}

/// The first frame of an [`RxFrames`] reservation as an [`RxSlot`]: how links that reserve
/// frames together hand out single ones.
#[derive(Debug)]
pub struct FirstFrame<F>(pub F);

impl<F: RxFrames> RxSlot for FirstFrame<F> {
    fn capacity(&self) -> usize {
        self.0.capacity(0)
    }

    fn write_at(&mut self, offset: usize, data: &[u8]) {
        self.0.write_at(0, offset, data);
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        self.0.read_at(0, offset, buf)
    }

    fn sum_at(&self, offset: usize, len: usize) -> u16 {
        self.0.sum_at(0, offset, len)
    }

    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut RecvIovs<'_, 'm>) {
        self.0.iovecs(0, offset, len, out);
    }

    fn set_meta(&mut self, meta: RxMeta) {
        self.0.set_meta(0, meta);
    }

    fn commit(self, len: usize) {
        self.0.commit(&[len]);
    }
}

/// An [`RxSlot`] as a reservation of one frame, for links that gain nothing from reserving
/// several at once.
#[derive(Debug)]
pub struct OneFrame<S>(pub S);

impl<S: RxSlot> RxFrames for OneFrame<S> {
    fn count(&self) -> usize {
        1
    }

    fn capacity(&self, frame: usize) -> usize {
        if frame == 0 { self.0.capacity() } else { 0 }
    }

    fn write_at(&mut self, frame: usize, offset: usize, data: &[u8]) {
        assert_eq!(frame, 0, "a single-frame reservation");
        self.0.write_at(offset, data);
    }

    fn read_at(&self, frame: usize, offset: usize, buf: &mut [u8]) -> usize {
        if frame == 0 {
            self.0.read_at(offset, buf)
        } else {
            0
        }
    }

    fn sum_at(&self, frame: usize, offset: usize, len: usize) -> u16 {
        if frame == 0 {
            self.0.sum_at(offset, len)
        } else {
            0
        }
    }

    fn iovecs<'m>(&'m self, frame: usize, offset: usize, len: usize, out: &mut RecvIovs<'_, 'm>) {
        if frame == 0 {
            self.0.iovecs(offset, len, out);
        }
    }

    fn set_meta(&mut self, frame: usize, meta: RxMeta) {
        if frame == 0 {
            self.0.set_meta(meta);
        }
    }

    fn commit(self, lens: &[usize]) {
        if let Some(&len) = lens.first() {
            self.0.commit(len);
        }
    }
}

/// The guest-bound side of a link.
pub trait RxLink {
    type Slot<'a>: RxSlot
    where
        Self: 'a;

    type Frames<'a>: RxFrames
    where
        Self: 'a;

    /// Reserves room for a frame of up to `max_len` bytes, or `None` when the guest has not
    /// posted enough buffers (the link then watches for new ones).
    fn reserve(&mut self, max_len: usize) -> Option<Self::Slot<'_>>;

    /// Reserves room for up to `count` frames of up to `max_len` bytes each: fewer when the
    /// guest has posted buffers for fewer, `None` (watching for more) when not even one fits.
    fn reserve_frames(&mut self, max_len: usize, count: usize) -> Option<Self::Frames<'_>>;

    /// What the guest accepts; none by default.
    fn offloads(&self) -> RxOffloads {
        RxOffloads::default()
    }

    /// Sends a frame made of `parts`, copied.
    fn send(&mut self, parts: &[&[u8]]) -> Result<(), LinkFull> {
        let len = parts.iter().map(|p| p.len()).sum();
        let mut slot = self.reserve(len).ok_or(LinkFull)?;
        let mut offset = 0;
        for part in parts {
            RxSlot::write_at(&mut slot, offset, part);
            offset += part.len();
        }
        slot.commit(len);
        Ok(())
    }
}

/// A frame held in ordinary memory: the stream link and tests use it.
impl TxFrame for [u8] {
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let src = self.get(offset..).unwrap_or(&[]);
        let n = src.len().min(buf.len());
        buf[..n].copy_from_slice(&src[..n]);
        n
    }

    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut SendIovs<'_, 'm>) {
        let src = self.get(offset..).unwrap_or(&[]);
        out.push(&src[..src.len().min(len)]);
    }
}

/// Copies `src` into the cells `dst` (of the same length).
pub fn copy_to_cells(dst: &[Cell<u8>], src: &[u8]) {
    for (cell, &byte) in dst.iter().zip(src) {
        cell.set(byte);
    }
}

/// Copies from the cells `src` into `dst` as far as both go; returns how many bytes.
pub fn copy_from_cells(src: &[Cell<u8>], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len());
    for (byte, cell) in dst.iter_mut().zip(&src[..n]) {
        *byte = cell.get();
    }
    n
}

/// An in-memory link for unit tests: frames toward the guest collect in `frames`, and
/// `buffers_left` limits how many may be reserved before the link reports full.
#[derive(Debug, Default)]
pub struct MemoryLink {
    pub frames: Vec<Vec<u8>>,
    /// The offload metadata of each frame in `frames`.
    pub metas: Vec<RxMeta>,
    /// `None` means unlimited.
    pub buffers_left: Option<usize>,
    /// What this link claims the guest accepts.
    pub offloads: RxOffloads,
    /// Bytes the engine read back out of slots (checksums over payload, captures): zero
    /// when nothing copies payload.
    pub bytes_read_back: usize,
    /// What each call of [`RxLink::reserve_frames`] that reserved anything asked for:
    /// `(max_len, count)`.
    pub frame_reservations: Vec<(usize, usize)>,
    /// Hands out iovecs of at most this many bytes, each apart from the next, as a guest's
    /// buffers made of tiny descriptors come out of the ring: `None` for one per frame.
    pub iovec_piece: Option<usize>,
}

impl MemoryLink {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the frames sent so far.
    pub fn take(&mut self) -> Vec<Vec<u8>> {
        self.metas.clear();
        std::mem::take(&mut self.frames)
    }
}

/// Frames of [`MemoryLink`], each its own buffer (a slot is the first of one).
#[derive(Debug)]
pub struct MemoryFrames<'a> {
    /// Cells, so that the kernel may fill them through the shared borrow iovecs take.
    bufs: Vec<Vec<Cell<u8>>>,
    metas: Vec<RxMeta>,
    /// `read_at` takes `&self`; the count goes to the link on drop.
    read_back: std::cell::Cell<usize>,
    link: &'a mut MemoryLink,
}

impl Drop for MemoryFrames<'_> {
    fn drop(&mut self) {
        self.link.bytes_read_back += self.read_back.get();
        // Frames not handed over give their buffers back.
        if let Some(left) = self.link.buffers_left.as_mut() {
            *left += self.bufs.len();
        }
    }
}

impl RxFrames for MemoryFrames<'_> {
    fn count(&self) -> usize {
        self.bufs.len()
    }

    fn capacity(&self, frame: usize) -> usize {
        self.bufs[frame].len()
    }

    fn write_at(&mut self, frame: usize, offset: usize, data: &[u8]) {
        copy_to_cells(&self.bufs[frame][offset..offset + data.len()], data);
    }

    fn read_at(&self, frame: usize, offset: usize, buf: &mut [u8]) -> usize {
        let n = copy_from_cells(self.bufs[frame].get(offset..).unwrap_or(&[]), buf);
        self.read_back.set(self.read_back.get() + n);
        n
    }

    fn iovecs<'m>(&'m self, frame: usize, offset: usize, len: usize, out: &mut RecvIovs<'_, 'm>) {
        let piece = self.link.iovec_piece.unwrap_or(usize::MAX).max(1);
        let buf = &self.bufs[frame];
        let end = offset.saturating_add(len).min(buf.len());
        let mut at = offset;
        while at < end {
            let n = piece.min(end - at);
            out.push_cells(&buf[at..at + n]);
            at += n;
        }
    }

    fn set_meta(&mut self, frame: usize, meta: RxMeta) {
        self.metas[frame] = meta;
    }

    fn commit(mut self, lens: &[usize]) {
        assert!(lens.len() <= self.bufs.len(), "more frames than reserved");
        let frames = self
            .bufs
            .drain(..lens.len())
            .zip(self.metas.drain(..lens.len()));
        for ((buf, meta), &len) in frames.zip(lens) {
            self.link
                .frames
                .push(buf.iter().take(len).map(Cell::get).collect());
            self.link.metas.push(meta);
        }
    }
}

impl MemoryLink {
    /// Up to `count` frames, as many as `buffers_left` allows.
    fn frames(&mut self, max_len: usize, count: usize) -> Option<MemoryFrames<'_>> {
        let count = count.min(self.buffers_left.unwrap_or(usize::MAX));
        if count == 0 {
            return None;
        }
        if let Some(left) = self.buffers_left.as_mut() {
            *left -= count;
        }
        Some(MemoryFrames {
            bufs: vec![vec![Cell::new(0); max_len]; count],
            metas: vec![RxMeta::default(); count],
            read_back: std::cell::Cell::new(0),
            link: self,
        })
    }
}

impl RxLink for MemoryLink {
    type Slot<'a> = FirstFrame<MemoryFrames<'a>>;
    type Frames<'a> = MemoryFrames<'a>;

    fn reserve_frames(&mut self, max_len: usize, count: usize) -> Option<MemoryFrames<'_>> {
        let frames = self.frames(max_len, count)?;
        frames
            .link
            .frame_reservations
            .push((max_len, frames.bufs.len()));
        Some(frames)
    }

    fn reserve(&mut self, max_len: usize) -> Option<Self::Slot<'_>> {
        self.frames(max_len, 1).map(FirstFrame)
    }

    fn offloads(&self) -> RxOffloads {
        self.offloads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_sum_matches_contiguous_sum_for_odd_lengths() {
        let data: Vec<u8> = (0..5001u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut link = MemoryLink::new();
        let mut slot = link.reserve(6000).unwrap();
        RxSlot::write_at(&mut slot, 100, &data);
        assert_eq!(
            RxSlot::sum_at(&slot, 100, data.len()),
            smoltcp::wire::checksum::data(&data)
        );
    }

    #[test]
    fn slice_frame_reads_clip_at_end() {
        let frame: &[u8] = &[1, 2, 3, 4, 5];
        let mut buf = [0u8; 4];
        assert_eq!(frame.read_at(3, &mut buf), 2);
        assert_eq!(&buf[..2], &[4, 5]);
        assert_eq!(frame.read_at(9, &mut buf), 0);
        let mut storage = crate::sys::IoVecs::default();
        let mut iov = storage.for_send();
        frame.iovecs(1, 100, &mut iov);
        assert_eq!(iov.len(), 1);
        assert_eq!(iov.bytes_from(0), 4);
    }

    #[test]
    fn memory_link_reports_full_and_keeps_order() {
        let mut link = MemoryLink {
            buffers_left: Some(1),
            ..Default::default()
        };
        assert_eq!(link.send(&[b"ab", b"cd"]), Ok(()));
        assert_eq!(link.send(&[b"x"]), Err(LinkFull));
        assert_eq!(link.take(), vec![b"abcd".to_vec()]);
    }

    #[test]
    fn dropped_slot_sends_nothing_and_gives_its_buffer_back() {
        let mut link = MemoryLink {
            buffers_left: Some(1),
            ..Default::default()
        };
        {
            let mut slot = link.reserve(10).unwrap();
            RxSlot::write_at(&mut slot, 0, b"zz");
        }
        assert!(link.frames.is_empty());
        assert_eq!(link.send(&[b"x"]), Ok(()));
    }
}
