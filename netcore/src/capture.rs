//! Packet capture in the classic pcap format (`--pcap FILE`), readable by tcpdump and Wireshark.
//!
//! Both directions go to one file, frames as the guest sees them (Ethernet, no virtio header).

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const PCAP_MAGIC_USEC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// The pcap format version written (2.4, the one every reader takes).
const PCAP_VERSION: (u16, u16) = (2, 4);
/// The snapshot length written in the header: the largest frame the link carries.
const SNAPLEN: u32 = (crate::wire::ipv4::MAX_PACKET_LEN + crate::wire::ethernet::HEADER_LEN) as u32;

/// One capture file shared by the engines of successive connections.
pub type SharedCapture = Arc<Mutex<Capture>>;

/// Records `frame` into a shared capture (a poisoned lock still records: the file is intact).
pub fn record(capture: &SharedCapture, frame: &[u8]) {
    capture
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .record(frame);
}

/// Opens `path` for writing as passt opens its output files: created (or truncated) with mode
/// 0600, never through a symbolic link (`O_NOFOLLOW`: ELOOP), close-on-exec. A file that
/// existed (a regular one) holds our data now, so it loses any access others had to it. For the pcap file,
/// which holds all the guest's traffic, and the pid file.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    create_private(path, false)
}

/// [`create_private_file`], open for reading too: passt mode's log file, which reads back the
/// records it keeps when it is full.
pub fn create_private_file_rw(path: &Path) -> io::Result<File> {
    create_private(path, true)
}

fn create_private(path: &Path, read: bool) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .read(read)
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    // Not a device someone named (/dev/null): its mode is not ours to change.
    if file.metadata()?.is_file() {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// A pcap file being written.
#[derive(Debug)]
pub struct Capture {
    out: BufWriter<File>,
    failed: bool,
}

impl Capture {
    /// Creates (truncates) `path`, readable by its owner only, and writes the pcap file header.
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut out = BufWriter::new(create_private_file(path)?);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&PCAP_MAGIC_USEC.to_le_bytes());
        header.extend_from_slice(&PCAP_VERSION.0.to_le_bytes());
        header.extend_from_slice(&PCAP_VERSION.1.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&header)?;
        out.flush()?;
        Ok(Capture { out, failed: false })
    }

    /// Appends one frame with the current time. Write errors are logged once and then the
    /// capture goes quiet: a full disk must not stop the network.
    pub fn record(&mut self, frame: &[u8]) {
        if self.failed {
            return;
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut rec = [0u8; 16];
        rec[0..4].copy_from_slice(&(now.as_secs() as u32).to_le_bytes());
        rec[4..8].copy_from_slice(&now.subsec_micros().to_le_bytes());
        rec[8..12].copy_from_slice(&len.to_le_bytes());
        rec[12..16].copy_from_slice(&len.to_le_bytes());
        let res = self
            .out
            .write_all(&rec)
            .and_then(|_| self.out.write_all(frame))
            .and_then(|_| self.out.flush());
        if let Err(e) = res {
            self.failed = true;
            log::warn!("pcap capture failed, further frames are not recorded: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_header_and_records() {
        let dir = std::env::temp_dir().join(format!("vnu-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.pcap");
        let mut cap = Capture::create(&path).unwrap();
        cap.record(&[0xaa; 60]);
        cap.record(&[0xbb; 42]);
        drop(cap);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 60 + 16 + 42);
        assert_eq!(&bytes[0..4], &PCAP_MAGIC_USEC.to_le_bytes());
        assert_eq!(&bytes[20..24], &LINKTYPE_ETHERNET.to_le_bytes());
        assert_eq!(&bytes[24 + 8..24 + 12], &60u32.to_le_bytes());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A link whose buffers hold stale bytes, as reused guest buffers do.
    struct StaleLink {
        sent: Vec<Vec<u8>>,
    }

    struct StaleSlot<'a> {
        buf: Vec<u8>,
        sent: &'a mut Vec<Vec<u8>>,
    }

    impl crate::link::RxSlot for StaleSlot<'_> {
        fn capacity(&self) -> usize {
            self.buf.len()
        }
        fn write_at(&mut self, offset: usize, data: &[u8]) {
            self.buf[offset..offset + data.len()].copy_from_slice(data);
        }
        fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
            crate::link::TxFrame::read_at(self.buf.as_slice(), offset, buf)
        }
        fn iovecs<'m>(
            &'m self,
            _offset: usize,
            _len: usize,
            _out: &mut crate::sys::RecvIovs<'_, 'm>,
        ) {
            unreachable!("not used by these tests");
        }
        fn commit(self, len: usize) {
            self.sent.push(self.buf[..len].to_vec());
        }
    }

    impl crate::link::RxLink for StaleLink {
        type Slot<'a> = StaleSlot<'a>;
        type Frames<'a> = crate::link::OneFrame<StaleSlot<'a>>;

        fn reserve(&mut self, max_len: usize) -> Option<StaleSlot<'_>> {
            Some(StaleSlot {
                buf: vec![0xee; max_len],
                sent: &mut self.sent,
            })
        }

        fn reserve_frames(&mut self, max_len: usize, _count: usize) -> Option<Self::Frames<'_>> {
            self.reserve(max_len).map(crate::link::OneFrame)
        }
    }

    #[test]
    fn frames_under_the_ethernet_minimum_reach_the_guest_zero_padded_and_counted() {
        use crate::link::{RxFrames, RxLink};
        let mut link = StaleLink { sent: Vec::new() };
        let mut frames = 0;
        let mut tap = Tap::new(&mut link, None, &mut frames);
        // A bare TCP ACK over IPv4 is 54 bytes; frames of 60 bytes and more stay as they are.
        tap.send(&[&[0xaa; 54]]).unwrap();
        tap.send(&[&[0xbb; 60]]).unwrap();
        tap.send(&[&[0xcc; 100]]).unwrap();
        // A frame reserved for more than it carries.
        let mut reserved = tap.reserve_frames(100, 1).unwrap();
        reserved.write_at(0, 0, &[0xdd; 20]);
        reserved.commit(&[20]);
        assert_eq!(frames, 4);
        let sent = link.sent;
        let lens: Vec<usize> = sent.iter().map(Vec::len).collect();
        assert_eq!(lens, [60, 60, 100, 60]);
        assert!(sent[0][..54].iter().all(|&b| b == 0xaa));
        assert!(sent[0][54..].iter().all(|&b| b == 0));
        assert!(sent[1].iter().all(|&b| b == 0xbb));
        assert!(sent[2].iter().all(|&b| b == 0xcc));
        assert!(sent[3][..20].iter().all(|&b| b == 0xdd));
        assert!(sent[3][20..].iter().all(|&b| b == 0));
    }
}

/// A link wrapper that every frame to the guest goes through: it pads frames shorter than the
/// Ethernet minimum with zeros (as slirp does since 4.8: some guest drivers drop runts), counts
/// them and, when capturing, records them. Frames built in place (zero-copy payload) are read
/// back only when a capture is running.
#[derive(Debug)]
pub struct Tap<'c, L> {
    inner: &'c mut L,
    capture: Option<&'c SharedCapture>,
    frames: &'c mut u64,
}

impl<'c, L> Tap<'c, L> {
    pub fn new(inner: &'c mut L, capture: Option<&'c SharedCapture>, frames: &'c mut u64) -> Self {
        Tap {
            inner,
            capture,
            frames,
        }
    }
}

/// Frames reserved through a [`Tap`].
#[derive(Debug)]
pub struct TapFrames<'s, F> {
    inner: F,
    capture: Option<&'s SharedCapture>,
    frames: &'s mut u64,
}

impl<F: crate::link::RxFrames> crate::link::RxFrames for TapFrames<'_, F> {
    fn count(&self) -> usize {
        self.inner.count()
    }

    fn capacity(&self, frame: usize) -> usize {
        self.inner.capacity(frame)
    }

    fn write_at(&mut self, frame: usize, offset: usize, data: &[u8]) {
        self.inner.write_at(frame, offset, data);
    }

    fn read_at(&self, frame: usize, offset: usize, buf: &mut [u8]) -> usize {
        self.inner.read_at(frame, offset, buf)
    }

    fn sum_at(&self, frame: usize, offset: usize, len: usize) -> u16 {
        self.inner.sum_at(frame, offset, len)
    }

    fn iovecs<'m>(
        &'m self,
        frame: usize,
        offset: usize,
        len: usize,
        out: &mut crate::sys::RecvIovs<'_, 'm>,
    ) {
        self.inner.iovecs(frame, offset, len, out);
    }

    fn set_meta(&mut self, frame: usize, meta: crate::link::RxMeta) {
        self.inner.set_meta(frame, meta);
    }

    fn commit(mut self, lens: &[usize]) {
        const MIN: usize = crate::wire::ethernet::MIN_FRAME_LEN;
        const ZEROS: [u8; MIN] = [0; MIN];
        // Reservations hold at most one socket read's frames, so padded lengths fit on the
        // stack: no allocation per packet. A larger one would get a vector.
        const ON_STACK: usize = crate::flow::tcp::MAX_FRAMES_PER_READ;
        let mut on_stack = [0usize; ON_STACK];
        let mut on_heap = Vec::new();
        let lens = if lens.iter().all(|&len| len >= MIN) {
            lens
        } else {
            let padded = if lens.len() <= ON_STACK {
                &mut on_stack[..lens.len()]
            } else {
                on_heap.resize(lens.len(), 0);
                &mut on_heap[..]
            };
            for ((index, &len), out) in lens.iter().enumerate().zip(padded.iter_mut()) {
                if len < MIN {
                    self.inner.write_at(index, len, &ZEROS[len..]);
                }
                *out = len.max(MIN);
            }
            &*padded
        };
        if let Some(capture) = self.capture {
            for (index, &len) in lens.iter().enumerate() {
                let mut frame = vec![0u8; len];
                let n = self.inner.read_at(index, 0, &mut frame);
                record(capture, &frame[..n]);
            }
        }
        *self.frames += lens.len() as u64;
        self.inner.commit(lens);
    }
}

impl<L: crate::link::RxLink> crate::link::RxLink for Tap<'_, L> {
    type Slot<'s>
        = crate::link::FirstFrame<TapFrames<'s, L::Frames<'s>>>
    where
        Self: 's;

    type Frames<'s>
        = TapFrames<'s, L::Frames<'s>>
    where
        Self: 's;

    fn reserve_frames(&mut self, max_len: usize, count: usize) -> Option<Self::Frames<'_>> {
        let max_len = max_len.max(crate::wire::ethernet::MIN_FRAME_LEN);
        let inner = self.inner.reserve_frames(max_len, count)?;
        Some(TapFrames {
            inner,
            capture: self.capture,
            frames: self.frames,
        })
    }

    fn offloads(&self) -> crate::link::RxOffloads {
        self.inner.offloads()
    }

    fn reserve(&mut self, max_len: usize) -> Option<Self::Slot<'_>> {
        self.reserve_frames(max_len, 1).map(crate::link::FirstFrame)
    }
}
