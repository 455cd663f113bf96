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
/// The snapshot length written in the header: the largest frame the link carries.
const SNAPLEN: u32 = 65535 + 14;

/// One capture file shared by the engines of successive connections.
pub type SharedCapture = Arc<Mutex<Capture>>;

/// Records `frame` into a shared capture (a poisoned lock still records: the file is intact).
pub fn record(capture: &SharedCapture, frame: &[u8]) {
    capture
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .record(frame);
}

/// A pcap file being written.
#[derive(Debug)]
pub struct Capture {
    out: BufWriter<File>,
    failed: bool,
}

impl Capture {
    /// Creates (truncates) `path` and writes the pcap file header.
    pub fn create(path: &Path) -> io::Result<Self> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&PCAP_MAGIC_USEC.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
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
}

/// A link wrapper that counts every frame sent to the guest and, when capturing, records it.
/// Frames built in place (zero-copy payload) are read back only when a capture is running.
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

    fn iovecs(&mut self, frame: usize, offset: usize, len: usize, out: &mut Vec<libc::iovec>) {
        self.inner.iovecs(frame, offset, len, out);
    }

    fn set_meta(&mut self, frame: usize, meta: crate::link::RxMeta) {
        self.inner.set_meta(frame, meta);
    }

    fn commit(self, lens: &[usize]) {
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
