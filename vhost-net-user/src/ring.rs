//! The ring link: netcore's `TxFrame`/`RxLink` over virtqueues in guest memory.
//!
//! # Theory of operation
//!
//! Guest memory is shared with an untrusted guest, so nothing here makes a Rust slice of it.
//! Chains are taken through [`AvailChains`] (the queue's areas mapped once per batch, see
//! `virtq`). A TX chain is validated once (readable descriptors only, linked inside the table
//! without loops, each inside one guest memory region, at least a virtio-net header long, no
//! longer than the largest frame) and kept as a list of guest ranges; the engine copies
//! bounded prefixes out through vm-memory's volatile accessors and gets raw iovecs for
//! payload, which only the kernel dereferences.
//!
//! Toward the guest, [`RingRx::reserve`] pops descriptor chains until their writable space
//! covers the frame (several chains with `MRG_RXBUF`, one without). If the guest has posted too
//! little, `next_avail` is rewound so the chains stay available, and the queue is armed so the
//! guest's next post kicks us: nothing is lost or half-written. On commit the header (with
//! `num_buffers`) is written into the first chain, each used chain is returned with the bytes it
//! holds, and chains popped but not needed are given back by rewinding `next_avail` (they were
//! popped last, so they are exactly the ones after the used ones).
//!
//! # Notifications a guest's memory order can lose
//!
//! EVENT_IDX is a handshake in shared memory: each side stores its index, issues a full barrier,
//! then loads the other side's event index. Under TCG with one vCPU, QEMU drops the guest's
//! barriers (they only matter between vCPUs), so the guest's store can still sit in the host
//! CPU's store buffer when both sides load: the guest then skips a kick or waits for an
//! interrupt that we decided it did not want, and the ring stalls for good (seen in 8 of 20
//! benchmark runs). [`Recheck`] closes that gap: after each batch, once our own system calls
//! have given the guest's stores time to land, it looks at the indices again (plain loads, no
//! system call) and reports TX chains or RX buffers that arrived without a kick, and interrupts
//! a guest that has been waiting, unchanged, for entries we published.

use vhost_user_backend::{VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Address, Bytes, GuestAddress};

use netcore::engine::MAX_FRAME_LEN;
use netcore::link::{
    FirstFrame, IovList, RecvIovs, RxFrames, RxLink, RxMeta, RxOffloads, SendIovs, TxFrame,
};

use crate::sys::{HostMap, HostRange, Mapped};
use crate::virtq::{self, Desc, DriverAreas};
pub use crate::virtq::{ChainError, GuestMem};
use crate::vnet;

/// A contiguous range of guest memory inside one region.
#[derive(Debug, Clone, Copy)]
struct Segment {
    addr: GuestAddress,
    /// Where `addr` lies in the mapping, found when the descriptor was checked, so that
    /// building iovecs does not look the region up again (it is still bounds-checked).
    host: HostRange,
    len: usize,
}

/// Appends the chain's descriptors to `segs` after checking each, returning their total length.
fn gather(
    chain: impl Iterator<Item = Result<Desc, ChainError>>,
    map: &Mapped<'_>,
    writable: bool,
    limit: usize,
    segs: &mut Vec<Segment>,
) -> Result<usize, ChainError> {
    let mut total = 0usize;
    for desc in chain {
        let desc = desc?;
        if desc.write_only != writable {
            return Err(if writable {
                ChainError::ReadOnlyInRx
            } else {
                ChainError::WriteOnlyInTx
            });
        }
        let len = desc.len as usize;
        if len == 0 {
            continue;
        }
        let Some(host) = map.locate(desc.addr, len) else {
            return Err(ChainError::OutOfMemory);
        };
        total += len;
        if total > limit {
            return Err(ChainError::TooLong);
        }
        segs.push(Segment {
            addr: desc.addr,
            host,
            len,
        });
    }
    Ok(total)
}

/// Takes the chains the guest made available on one queue, for one batch, through
/// [`DriverAreas`] (the areas resolved once).
pub struct AvailChains<'m> {
    vring: &'m VringRwLock,
    areas: Option<DriverAreas<'m>>,
}

impl<'m> AvailChains<'m> {
    pub fn new(vring: &'m VringRwLock, mem: &'m GuestMem) -> Self {
        let areas = DriverAreas::resolve(vring.get_ref().get_queue(), mem);
        AvailChains { vring, areas }
    }

    /// Takes the next chain and appends its checked segments to `segs` (on error, some may
    /// have been appended): its head, with its total length or why it is refused. `None` when
    /// nothing more is posted, or the queue is not ready or not in guest memory.
    fn pop(
        &mut self,
        map: &Mapped<'_>,
        writable: bool,
        limit: usize,
        segs: &mut Vec<Segment>,
    ) -> Option<(u16, Result<usize, ChainError>)> {
        let areas = self.areas.as_mut()?;
        let mut state = self.vring.get_mut();
        let head = areas.pop_head(state.get_queue_mut())?;
        drop(state);
        Some((head, gather(areas.chain(head), map, writable, limit, segs)))
    }
}

impl std::fmt::Debug for AvailChains<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AvailChains")
            .field("mapped", &self.areas.as_ref().map(DriverAreas::is_mapped))
            .finish_non_exhaustive()
    }
}

/// Visits the parts of `segs` covering `offset..offset + len` as (segment, offset within it,
/// part length, position within the requested range).
fn for_each_span(
    segs: &[Segment],
    mut offset: usize,
    mut len: usize,
    mut f: impl FnMut(&Segment, usize, usize, usize),
) {
    let mut pos = 0;
    for seg in segs {
        if len == 0 {
            break;
        }
        if offset >= seg.len {
            offset -= seg.len;
            continue;
        }
        let n = (seg.len - offset).min(len);
        f(seg, offset, n, pos);
        pos += n;
        len -= n;
        offset = 0;
    }
}

fn read_spans(mem: &GuestMem, segs: &[Segment], offset: usize, buf: &mut [u8]) -> usize {
    let mut copied = 0;
    for_each_span(segs, offset, buf.len(), |seg, at, n, pos| {
        let addr = seg.addr.unchecked_add(at as u64);
        if mem.read_slice(&mut buf[pos..pos + n], addr).is_ok() {
            copied = pos + n;
        }
    });
    copied
}

fn span_iovecs<'o, A>(
    map: &Mapped<'o>,
    segs: &[Segment],
    offset: usize,
    len: usize,
    out: &mut IovList<'_, 'o, A>,
) {
    for_each_span(segs, offset, len, |seg, at, n, _| {
        map.push_iovec(seg.host, at, n, out);
    });
}

/// A TX frame's bytes whose cache lines a batch loads ahead: the virtio-net header and the
/// headers the engine parses (Ethernet, IPv4 and TCP with options).
const HEADERS_PREFETCHED: usize = 192;

/// Reusable storage for TX chains, so the hot path does not allocate.
#[derive(Debug, Default)]
pub struct TxScratch {
    segs: Vec<Segment>,
    map: HostMap,
    popped: Vec<Popped>,
}

/// A chain taken for a batch: its head, and its frame's segments (a range of the scratch's) or
/// why it was refused.
#[derive(Debug)]
struct Popped {
    head: u16,
    frame: Result<PoppedFrame, ChainError>,
}

#[derive(Debug)]
struct PoppedFrame {
    segs: std::ops::Range<usize>,
    len: usize,
}

impl TxScratch {
    /// Takes up to `max` TX chains and validates each into a frame view, all alive together
    /// (the engine gathers one flow's payload from several of them into one write). The
    /// frames' ranges are checked against, and their iovecs point into, `mem`, mapped once for
    /// the batch.
    pub fn pop_batch<'a>(
        &'a mut self,
        chains: &mut AvailChains<'_>,
        mem: &'a GuestMem,
        header_len: usize,
        max: usize,
    ) -> TxBatch<'a> {
        let TxScratch { segs, map, popped } = self;
        let map = map.map(mem);
        segs.clear();
        popped.clear();
        let limit = header_len + MAX_FRAME_LEN;
        while popped.len() < max {
            let start = segs.len();
            let Some((head, total)) = chains.pop(&map, false, limit, segs) else {
                break;
            };
            for_each_span(&segs[start..], 0, HEADERS_PREFETCHED, |seg, at, n, _| {
                map.prefetch(seg.host, at, n);
            });
            let frame = total.and_then(|total| {
                if total < header_len {
                    return Err(ChainError::TooShort);
                }
                Ok(PoppedFrame {
                    segs: start..segs.len(),
                    len: total - header_len,
                })
            });
            if frame.is_err() {
                // A refused chain may have left some segments: they belong to no frame.
                segs.truncate(start);
            }
            popped.push(Popped { head, frame });
        }
        // The virtio-net headers once all chains are taken: their loads, started above, have
        // had the walk of the later chains to arrive.
        let frames = popped
            .iter()
            .filter_map(|p| p.frame.as_ref().ok())
            .map(|f| {
                let segs = &segs[f.segs.clone()];
                let mut vnet_header = [0u8; vnet::MAX_HEADER_LEN];
                let n = read_spans(mem, segs, 0, &mut vnet_header[..header_len]);
                RingTxFrame {
                    mem,
                    map,
                    segs,
                    header_len,
                    len: f.len,
                    partial_csum: vnet::tx_partial_csum(&vnet_header[..n]),
                }
            })
            .collect();
        TxBatch {
            popped: popped.as_slice(),
            frames,
        }
    }
}

/// The chains one [`TxScratch::pop_batch`] took: the valid frames, to hand the engine whole,
/// and every head, to return once the engine is done with all of them.
#[derive(Debug)]
pub struct TxBatch<'a> {
    popped: &'a [Popped],
    frames: Vec<RingTxFrame<'a>>,
}

impl<'a> TxBatch<'a> {
    /// The chains taken, valid or not.
    pub fn len(&self) -> usize {
        self.popped.len()
    }

    pub fn is_empty(&self) -> bool {
        self.popped.is_empty()
    }

    /// The valid frames, in the order the guest posted them.
    pub fn frames(&self) -> &[RingTxFrame<'a>] {
        &self.frames
    }

    /// Every chain's head, with why it was refused if it was.
    pub fn heads(&self) -> impl Iterator<Item = (u16, Option<ChainError>)> + '_ {
        self.popped
            .iter()
            .map(|p| (p.head, p.frame.as_ref().err().copied()))
    }
}

/// One frame the guest transmitted, as validated guest ranges (virtio-net header skipped).
#[derive(Debug)]
pub struct RingTxFrame<'a> {
    mem: &'a GuestMem,
    map: Mapped<'a>,
    segs: &'a [Segment],
    header_len: usize,
    len: usize,
    /// A checksum the guest left for us to complete (`NEEDS_CSUM`).
    partial_csum: Option<(usize, usize)>,
}

impl TxFrame for RingTxFrame<'_> {
    fn len(&self) -> usize {
        self.len
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        let n = buf.len().min(self.len.saturating_sub(offset));
        read_spans(self.mem, self.segs, self.header_len + offset, &mut buf[..n])
    }

    fn iovecs<'f>(&'f self, offset: usize, len: usize, out: &mut SendIovs<'_, 'f>) {
        let len = len.min(self.len.saturating_sub(offset));
        span_iovecs(&self.map, self.segs, self.header_len + offset, len, out);
    }

    fn partial_csum(&self) -> Option<(usize, usize)> {
        self.partial_csum
    }
}

/// Counts of guest mistakes seen on the rings, and of what the device did about kicks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RingCounters {
    pub bad_tx_chains: u64,
    pub bad_rx_chains: u64,
    /// TX chains, and RX buffers we were waiting for, found by a [`Recheck`] rather than a kick.
    pub late_tx: u64,
    pub late_rx: u64,
    /// Interrupts sent by a [`Recheck`] to a guest left waiting.
    pub late_interrupts: u64,
    /// Fast one-way streams of small guest frames that the device served with kicks off, as
    /// it serves bulk frames (see `device::OneWayStream`).
    pub tx_streams: u64,
}

impl RingCounters {
    /// Adds `other`'s counts (another queue pair's) to these.
    pub fn add(&mut self, other: &RingCounters) {
        let RingCounters {
            bad_tx_chains,
            bad_rx_chains,
            late_tx,
            late_rx,
            late_interrupts,
            tx_streams,
        } = *other;
        self.bad_tx_chains += bad_tx_chains;
        self.bad_rx_chains += bad_rx_chains;
        self.late_tx += late_tx;
        self.late_rx += late_rx;
        self.late_interrupts += late_interrupts;
        self.tx_streams += tx_streams;
    }
}

/// A popped RX chain within a slot; its segments follow those of the chains before it.
#[derive(Debug, Clone, Copy)]
struct RxChain {
    head: u16,
    capacity: usize,
}

/// What the driver acked that shapes frames toward it.
#[derive(Debug, Clone, Copy)]
pub struct RxFeatures {
    pub header_len: usize,
    pub mergeable: bool,
    pub offloads: RxOffloads,
}

/// One frame of a multi-frame reservation: its chains and their segments, as ranges of the
/// scratch lists (the frames follow each other in both).
#[derive(Debug, Clone)]
struct FrameSpan {
    chains: std::ops::Range<usize>,
    segs: std::ops::Range<usize>,
    capacity: usize,
    meta: RxMeta,
    /// Chains the frame fills, set when it is committed.
    used: usize,
}

/// Reusable storage for RX slots, and what was published since the guest was last considered
/// for an interrupt.
#[derive(Debug, Default)]
pub struct RxScratch {
    state: RxState,
    map: HostMap,
}

/// [`RxScratch`] but the memory map, which a batch borrows separately.
#[derive(Debug, Default)]
struct RxState {
    chains: Vec<RxChain>,
    segs: Vec<Segment>,
    frames: Vec<FrameSpan>,
    /// Used entries published since the last notification decision, and the used index they
    /// started from (EVENT_IDX asks whether `used_event` lies in that range).
    published: u16,
    published_from: u16,
    /// The avail index we asked to be kicked beyond while waiting for RX buffers.
    armed_at: Option<u16>,
    /// Where the used entries not followed by an interrupt start, and the guest's `used_event`
    /// and our used index when last rechecked (see [`Recheck`]).
    unsignalled_from: Option<u16>,
    last_seen: Option<(u16, u16)>,
    /// Used elements staged by `publish_used`, kept to avoid an allocation per batch.
    used_elements: Vec<u8>,
}

/// The RX virtqueue as an [`RxLink`] for one batch of work.
pub struct RingRx<'a> {
    vring: &'a VringRwLock,
    mem: &'a GuestMem,
    header_len: usize,
    mergeable: bool,
    offloads: RxOffloads,
    scratch: &'a mut RxState,
    map: Mapped<'a>,
    counters: &'a mut RingCounters,
    avail: AvailChains<'a>,
    /// Chains were returned to the guest in this batch: it may need an interrupt.
    used_any: bool,
}

impl std::fmt::Debug for RingRx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingRx")
            .field("header_len", &self.header_len)
            .field("mergeable", &self.mergeable)
            .field("used_any", &self.used_any)
            .finish_non_exhaustive()
    }
}

impl RxScratch {
    /// The guest kicked the RX queue: the buffers an earlier arm waited for are here, so a
    /// [`Recheck`] need not report them again (the batch that follows arms anew if still short).
    pub fn kicked(&mut self) {
        self.state.armed_at = None;
    }
}

impl<'a> RingRx<'a> {
    pub fn new(
        vring: &'a VringRwLock,
        mem: &'a GuestMem,
        features: &RxFeatures,
        scratch: &'a mut RxScratch,
        counters: &'a mut RingCounters,
    ) -> Self {
        let RxScratch { state, map } = scratch;
        RingRx {
            vring,
            mem,
            header_len: features.header_len,
            mergeable: features.mergeable,
            offloads: features.offloads,
            scratch: state,
            map: map.map(mem),
            counters,
            avail: AvailChains::new(vring, mem),
            used_any: false,
        }
    }

    /// Interrupts the guest once for the whole batch, if anything was delivered and the
    /// guest's `used_event` asks for it.
    pub fn finish(self) {
        if !self.used_any {
            return;
        }
        let wanted = {
            let mut state = self.vring.get_mut();
            let queue = state.get_queue_mut();
            let published = std::mem::take(&mut self.scratch.published);
            let from = self.scratch.published_from;
            let next_used = queue.next_used();
            if !queue.event_idx_enabled() || next_used != from.wrapping_add(published) {
                // Without EVENT_IDX, or when the queue was reset under us: always interrupt.
                true
            } else {
                // The used index we stored must be visible before we read the guest's event.
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
                match virtq::used_event(queue, self.mem) {
                    Some(event) => need_event(event, next_used, from),
                    None => true,
                }
            }
        };
        if wanted {
            self.scratch.unsignalled_from = None;
            self.scratch.last_seen = None;
            if let Err(e) = self.vring.signal_used_queue() {
                log::debug!("signalling the guest failed: {e}");
            }
        } else {
            let from = self.scratch.published_from;
            self.scratch.unsignalled_from.get_or_insert(from);
        }
    }

    /// Returns chains to the guest as used, all at once: the entries are written first and the
    /// used index moves only after them, so the guest never sees part of a multi-buffer frame
    /// (it would drop the frame and misread the rest as new frames).
    fn publish_used(&mut self, entries: impl IntoIterator<Item = (u16, u32)>) {
        let mut state = self.vring.get_mut();
        let queue = state.get_queue_mut();
        let size = queue.size();
        let ring = GuestAddress(queue.used_ring());
        let start = queue.next_used();
        if self.scratch.published == 0 {
            self.scratch.published_from = start;
        }
        // The elements are staged and written a run at a time (the ring wraps at most once
        // per run): one guest-memory write per run instead of one per 4 KiB buffer.
        let staged = &mut self.scratch.used_elements;
        staged.clear();
        let mut next = start;
        let mut run_start = start;
        for (head, len) in entries {
            if size == 0 || head >= size {
                continue;
            }
            staged.extend_from_slice(&u32::from(head).to_le_bytes());
            staged.extend_from_slice(&len.to_le_bytes());
            next = next.wrapping_add(1);
            if next % size == 0 {
                write_used_run(self.mem, ring, size, run_start, staged);
                run_start = next;
            }
        }
        if next == start {
            return;
        }
        write_used_run(self.mem, ring, size, run_start, staged);
        // Release: the entries above are visible before the index that covers them.
        let _ = self.mem.store(
            next.to_le(),
            ring.unchecked_add(2),
            std::sync::atomic::Ordering::Release,
        );
        queue.set_next_used(next);
        self.scratch.published = self
            .scratch
            .published
            .wrapping_add(next.wrapping_sub(start));
        self.used_any = true;
    }

    fn rewind(&self, chains: usize) {
        if chains > 0 {
            let mut state = self.vring.get_mut();
            let queue = state.get_queue_mut();
            let next = queue.next_avail().wrapping_sub(chains as u16);
            queue.set_next_avail(next);
        }
    }

    /// Asks the guest to kick us when it posts buffers beyond the ones we have seen. With
    /// EVENT_IDX that means `avail_event` = the current avail index, not our (rewound)
    /// `next_avail`, which the guest has already passed. Returns whether more arrived
    /// meanwhile.
    fn arm(&mut self) -> bool {
        let mut state = self.vring.get_mut();
        let queue = state.get_queue_mut();
        let saved = queue.next_avail();
        let avail = match queue.avail_idx(self.mem, std::sync::atomic::Ordering::Acquire) {
            Ok(idx) => idx.0,
            Err(_) => return false,
        };
        queue.set_next_avail(avail);
        let more = queue.enable_notification(self.mem).unwrap_or(false);
        queue.set_next_avail(saved);
        self.scratch.armed_at = Some(avail);
        more
    }

    fn pop_chain(&mut self) -> Option<Result<RxChain, (u16, ChainError)>> {
        let first_seg = self.scratch.segs.len();
        let (head, capacity) =
            self.avail
                .pop(&self.map, true, usize::MAX, &mut self.scratch.segs)?;
        match capacity {
            Ok(capacity) => Some(Ok(RxChain { head, capacity })),
            Err(e) => {
                self.scratch.segs.truncate(first_seg);
                Some(Err((head, e)))
            }
        }
    }

    /// Gives a refused chain back with nothing written, and any chains gathered before it too
    /// (they can no longer be rewound past it).
    fn refuse_chain(&mut self, head: u16, err: ChainError) {
        self.counters.bad_rx_chains += 1;
        log::debug!("guest RX chain {head} refused: {err}");
        let mut chains = std::mem::take(&mut self.scratch.chains);
        self.publish_used(
            chains
                .iter()
                .map(|c| (c.head, 0))
                .chain(std::iter::once((head, 0))),
        );
        chains.clear();
        self.scratch.chains = chains;
        self.scratch.segs.clear();
    }
}

/// What a late look at the rings found (see the module's notes on lost notifications).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recheck {
    /// The guest posted TX chains we have not taken, and no kick may come for them.
    pub tx_pending: bool,
    /// The guest posted RX buffers beyond those we were waiting on.
    pub rx_buffers: bool,
    /// The guest was interrupted for used entries it had been waiting on.
    pub interrupted: bool,
}

impl Recheck {
    /// Looks at both rings again after a batch; interrupts the guest if it has been waiting,
    /// with nothing changed since the last look, for used entries we published without one.
    pub fn run(
        rx_vring: &VringRwLock,
        tx_vring: &VringRwLock,
        mem: &GuestMem,
        scratch: &mut RxScratch,
    ) -> Recheck {
        let scratch = &mut scratch.state;
        let tx_pending = {
            let state = tx_vring.get_ref();
            let queue = state.get_queue();
            queue.ready()
                && queue
                    .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                    .is_ok_and(|idx| idx.0 != queue.next_avail())
        };
        let (rx_buffers, late_interrupt) = {
            let state = rx_vring.get_ref();
            let queue = state.get_queue();
            let rx_buffers = scratch.armed_at.is_some_and(|armed| {
                queue
                    .avail_idx(mem, std::sync::atomic::Ordering::Acquire)
                    .is_ok_and(|idx| idx.0 != armed)
            });
            let late_interrupt = match scratch.unsignalled_from {
                Some(from) if queue.event_idx_enabled() => {
                    let next_used = queue.next_used();
                    match virtq::used_event(queue, mem) {
                        Some(event) => {
                            let seen = (event, next_used);
                            let stuck = scratch.last_seen == Some(seen)
                                && need_event(event, next_used, from);
                            scratch.last_seen = Some(seen);
                            stuck
                        }
                        None => false,
                    }
                }
                _ => false,
            };
            (rx_buffers, late_interrupt)
        };
        if rx_buffers {
            scratch.armed_at = None;
        }
        if late_interrupt {
            scratch.unsignalled_from = None;
            scratch.last_seen = None;
            if let Err(e) = rx_vring.signal_used_queue() {
                log::debug!("signalling the guest failed: {e}");
            }
        }
        Recheck {
            tx_pending,
            rx_buffers,
            interrupted: late_interrupt,
        }
    }
}

/// A split virtqueue's used ring: `flags` and `idx` (2 bytes each), then 8-byte entries.
const USED_RING_HEADER_LEN: u64 = 4;

const USED_ELEMENT_LEN: usize = 8;

/// Writes the staged used elements (`USED_ELEMENT_LEN` bytes each) from ring position
/// `first`, which must not wrap within them, and empties the stage.
fn write_used_run(mem: &GuestMem, ring: GuestAddress, size: u16, first: u16, staged: &mut Vec<u8>) {
    if staged.is_empty() {
        return;
    }
    let offset = USED_RING_HEADER_LEN + u64::from(first % size) * USED_ELEMENT_LEN as u64;
    let _ = mem.write_slice(staged, ring.unchecked_add(offset));
    staged.clear();
}

/// As the kernel's `vring_need_event`: moving the used index from `old` to `new` passed the
/// guest's `event`, so it wants an interrupt.
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Signals the guest if the queue's notification state asks for it.
pub fn notify(vring: &VringRwLock) {
    if vring.needs_notification().unwrap_or(true)
        && let Err(e) = vring.signal_used_queue()
    {
        log::debug!("signalling the guest failed: {e}");
    }
}

impl<'a> RxLink for RingRx<'a> {
    type Slot<'s>
        = FirstFrame<RingFrames<'s, 'a>>
    where
        Self: 's;

    type Frames<'s>
        = RingFrames<'s, 'a>
    where
        Self: 's;

    fn offloads(&self) -> RxOffloads {
        self.offloads
    }

    fn reserve(&mut self, max_len: usize) -> Option<Self::Slot<'_>> {
        self.reserve_frames(max_len, 1).map(FirstFrame)
    }

    fn reserve_frames(&mut self, max_len: usize, count: usize) -> Option<RingFrames<'_, 'a>> {
        if self.pop_frames(max_len, count) == 0 {
            return None;
        }
        Some(RingFrames { rx: self })
    }
}

impl RingRx<'_> {
    /// Pops chains for up to `count` frames of `max_len` bytes into the scratch lists, each
    /// frame starting on a chain of its own; returns how many frames it found room for. With
    /// none, the chains go back and the guest is asked to kick when it posts more.
    fn pop_frames(&mut self, max_len: usize, count: usize) -> usize {
        let need = self.header_len + max_len;
        loop {
            self.scratch.chains.clear();
            self.scratch.segs.clear();
            self.scratch.frames.clear();
            let mut refused = false;
            'frames: while self.scratch.frames.len() < count {
                let chains_from = self.scratch.chains.len();
                let segs_from = self.scratch.segs.len();
                let mut total = 0usize;
                while total < need {
                    match self.pop_chain() {
                        None => break,
                        Some(Err((head, err))) if self.scratch.frames.is_empty() => {
                            self.refuse_chain(head, err);
                            refused = true;
                            break 'frames;
                        }
                        Some(Err(_)) => {
                            // Left for the next reservation, which refuses it as its first.
                            self.give_back_frame(chains_from, segs_from, 1);
                            break 'frames;
                        }
                        Some(Ok(chain)) => {
                            total += chain.capacity;
                            self.scratch.chains.push(chain);
                            if !self.mergeable {
                                break;
                            }
                        }
                    }
                }
                if total < need {
                    self.give_back_frame(chains_from, segs_from, 0);
                    break;
                }
                self.scratch.frames.push(FrameSpan {
                    chains: chains_from..self.scratch.chains.len(),
                    segs: segs_from..self.scratch.segs.len(),
                    capacity: total - self.header_len,
                    meta: RxMeta::default(),
                    used: 0,
                });
            }
            if !self.scratch.frames.is_empty() {
                return self.scratch.frames.len();
            }
            if refused {
                continue;
            }
            if !self.arm() {
                return 0;
            }
        }
    }

    /// Gives back the chains popped for a frame that will not be reserved (those from
    /// `chains_from` on, plus `refused` popped and dropped from the lists by `pop_chain`).
    fn give_back_frame(&mut self, chains_from: usize, segs_from: usize, refused: usize) {
        let popped = self.scratch.chains.len() - chains_from + refused;
        self.scratch.chains.truncate(chains_from);
        self.scratch.segs.truncate(segs_from);
        self.rewind(popped);
    }
}

/// Room for several frames in popped RX chains, filled by one read.
#[derive(Debug)]
pub struct RingFrames<'s, 'a> {
    rx: &'s mut RingRx<'a>,
}

impl RingFrames<'_, '_> {
    fn span(&self, frame: usize) -> (&[Segment], usize) {
        let span = &self.rx.scratch.frames[frame];
        (&self.rx.scratch.segs[span.segs.clone()], span.capacity)
    }
}

impl RxFrames for RingFrames<'_, '_> {
    fn count(&self) -> usize {
        self.rx.scratch.frames.len()
    }

    fn capacity(&self, frame: usize) -> usize {
        self.span(frame).1
    }

    fn write_at(&mut self, frame: usize, offset: usize, data: &[u8]) {
        let (segs, capacity) = self.span(frame);
        assert!(
            offset + data.len() <= capacity,
            "frame larger than its reservation"
        );
        let mem = self.rx.mem;
        for_each_span(
            segs,
            self.rx.header_len + offset,
            data.len(),
            |seg, at, n, pos| {
                // Validated at pop time; a failure here means the guest unmapped memory under
                // us, and the frame is simply garbage to the guest.
                let _ = mem.write_slice(&data[pos..pos + n], seg.addr.unchecked_add(at as u64));
            },
        );
    }

    fn read_at(&self, frame: usize, offset: usize, buf: &mut [u8]) -> usize {
        let (segs, capacity) = self.span(frame);
        let n = buf.len().min(capacity.saturating_sub(offset));
        read_spans(
            self.rx.mem,
            segs,
            self.rx.header_len + offset,
            &mut buf[..n],
        )
    }

    fn sum_at(&self, frame: usize, offset: usize, len: usize) -> u16 {
        let (segs, capacity) = self.span(frame);
        let len = len.min(capacity.saturating_sub(offset));
        let map = &self.rx.map;
        let mut sums = netcore::link::PieceSums::default();
        for_each_span(segs, self.rx.header_len + offset, len, |seg, at, n, pos| {
            // Validated at pop time, like `write_at`; a stale range only spoils the checksum.
            sums.add(pos, map.ones_sum(seg.host, at, n).unwrap_or(0));
        });
        sums.total()
    }

    fn iovecs<'f>(&'f self, frame: usize, offset: usize, len: usize, out: &mut RecvIovs<'_, 'f>) {
        let (segs, capacity) = self.span(frame);
        let len = len.min(capacity.saturating_sub(offset));
        span_iovecs(&self.rx.map, segs, self.rx.header_len + offset, len, out);
    }

    fn set_meta(&mut self, frame: usize, meta: RxMeta) {
        self.rx.scratch.frames[frame].meta = meta;
    }

    fn commit(self, lens: &[usize]) {
        let rx = &mut *self.rx;
        let committed = lens.len().min(rx.scratch.frames.len());
        if committed == 0 {
            return; // Drop gives every chain back
        }
        let header_len = rx.header_len;
        let chains = std::mem::take(&mut rx.scratch.chains);
        let mut frames = std::mem::take(&mut rx.scratch.frames);
        let mem = rx.mem;
        for (span, &len) in frames.iter_mut().zip(lens) {
            // The chains the frame fills; its header names that count.
            let mut left = header_len + len.min(span.capacity);
            span.used = 0;
            for chain in &chains[span.chains.clone()] {
                if left == 0 {
                    break;
                }
                left -= chain.capacity.min(left);
                span.used += 1;
            }
            let header = vnet::rx_header(header_len, span.used as u16, &span.meta);
            let segs = &rx.scratch.segs[span.segs.clone()];
            for_each_span(segs, 0, header_len, |seg, at, n, pos| {
                let _ = mem.write_slice(&header[pos..pos + n], seg.addr.unchecked_add(at as u64));
            });
        }
        let last = committed - 1;
        rx.publish_used(frames[..committed].iter().zip(lens).enumerate().flat_map(
            |(index, (span, &len))| {
                let mut left = header_len + len.min(span.capacity);
                // Room a frame before the last leaves unfilled goes back empty (see the
                // trait): it cannot be rewound past the frames after it.
                let keep = if index < last {
                    span.chains.len()
                } else {
                    span.used
                };
                chains[span.chains.clone()]
                    .iter()
                    .take(keep)
                    .map(move |chain| {
                        let n = chain.capacity.min(left);
                        left -= n;
                        (chain.head, n as u32)
                    })
            },
        ));
        let unused = chains.len() - (frames[last].chains.start + frames[last].used);
        rx.scratch.chains = chains;
        rx.scratch.frames = frames;
        rx.scratch.chains.clear();
        rx.scratch.frames.clear();
        rx.scratch.segs.clear();
        rx.rewind(unused);
    }
}

impl Drop for RingFrames<'_, '_> {
    fn drop(&mut self) {
        // After commit the lists are empty; otherwise every popped chain goes back untouched.
        let unused = self.rx.scratch.chains.len();
        self.rx.scratch.chains.clear();
        self.rx.scratch.segs.clear();
        self.rx.scratch.frames.clear();
        self.rx.rewind(unused);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{AvailChains, ChainError, GuestMem, HostMap};
    use vhost_user_backend::{VringRwLock, VringT};
    use virtio_bindings::bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::{RawDescriptor, split::Descriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryBackend};

    /// A popped chain's head, with its total length or why it was refused.
    type Popped = (u16, Result<usize, ChainError>);

    /// A ready vring over the queue `ring` lays out in `mem`.
    pub(crate) fn ready_vring(
        mem: &GuestMem,
        ring: &MockSplitQueue<'_, GuestMem>,
        size: u16,
    ) -> VringRwLock {
        let vring = VringRwLock::new(GuestMemoryAtomic::new(mem.clone()), size).unwrap();
        vring.set_queue_size(size);
        vring
            .set_queue_info(
                ring.desc_table_addr().0,
                ring.avail_addr().0,
                ring.used_addr().0,
            )
            .unwrap();
        vring.set_queue_ready(true);
        vring
    }

    /// Pops every chain of a queue at `base` in `mem`, and tells whether the queue's areas were
    /// mapped; checks the segments gathered. (Four chains stay below slot 8, where the mock's
    /// used ring starts inside its avail ring.)
    fn pop_all(mem: &GuestMem, base: u64) -> (Vec<Popped>, bool) {
        const SIZE: u16 = 16;
        let ring = MockSplitQueue::create(mem, GuestAddress(base), SIZE);
        let desc = |addr, len, flags: u32, next| {
            RawDescriptor::from(Descriptor::new(addr, len, flags as u16, next))
        };
        let write = VRING_DESC_F_WRITE;
        ring.add_desc_chains(
            &[
                desc(0x10000, 100, VRING_DESC_F_NEXT | write, 1),
                desc(0x10100, 200, write, 0),
                desc(0x11000, 50, write, 0),
                desc(0x12000, 10, 0, 0),
            ],
            0,
        )
        .unwrap();
        let vring = ready_vring(mem, &ring, SIZE);
        let mut chains = AvailChains::new(&vring, mem);
        let mapped = chains
            .areas
            .as_ref()
            .is_some_and(crate::virtq::DriverAreas::is_mapped);
        let mut host_map = HostMap::default();
        let map = host_map.map(mem);
        let mut popped = Vec::new();
        let mut segs = Vec::new();
        while let Some(chain) = chains.pop(&map, true, usize::MAX, &mut segs) {
            popped.push(chain);
        }
        let ranges: Vec<_> = segs.iter().map(|s| (s.addr.0, s.len)).collect();
        assert_eq!(ranges, [(0x10000, 100), (0x10100, 200), (0x11000, 50)]);
        (popped, mapped)
    }

    #[test]
    fn chains_come_the_same_whether_the_queue_areas_are_mapped_or_not() {
        let one = GuestMem::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
        let split =
            GuestMem::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1f000)])
                .unwrap();
        let expected = vec![
            (0, Ok(300)),
            (2, Ok(50)),
            (3, Err(ChainError::ReadOnlyInRx)),
        ];
        assert_eq!(pop_all(&one, 0), (expected.clone(), true));
        // The descriptor table (256 bytes) starts 64 bytes before the second region.
        assert_eq!(pop_all(&split, 0xfc0), (expected, false));
    }

    /// Indirect descriptors (not offered) are refused wherever the queue's areas lie, across
    /// two regions too: a walker that followed them would take a table of up to 65535 entries
    /// from the guest.
    #[test]
    fn an_indirect_descriptor_is_refused_on_a_queue_across_regions() {
        const SIZE: u16 = 16;
        let split =
            GuestMem::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1f000)])
                .unwrap();
        let ring = MockSplitQueue::create(&split, GuestAddress(0xfc0), SIZE);
        // The indirect table: one writable buffer.
        let table =
            RawDescriptor::from(Descriptor::new(0x10000, 100, VRING_DESC_F_WRITE as u16, 0));
        split.write_obj(table, GuestAddress(0x18000)).unwrap();
        ring.add_desc_chains(
            &[RawDescriptor::from(Descriptor::new(
                0x18000,
                16,
                VRING_DESC_F_INDIRECT as u16,
                0,
            ))],
            0,
        )
        .unwrap();
        let vring = ready_vring(&split, &ring, SIZE);
        let mut chains = AvailChains::new(&vring, &split);
        let mut host_map = HostMap::default();
        let map = host_map.map(&split);
        let mut segs = Vec::new();
        assert_eq!(
            chains.pop(&map, true, usize::MAX, &mut segs),
            Some((0, Err(ChainError::Indirect)))
        );
        assert!(segs.is_empty(), "{segs:?}");
    }

    /// The sum read where the bytes lie equals the one over a copy, at every alignment and
    /// length (odd ones too) around the 8-byte words and the 32-byte blocks it reads.
    #[test]
    fn the_host_map_sums_guest_bytes_in_place_as_a_copy_is_summed() {
        let mem = GuestMem::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        let data: Vec<u8> = (0..0x3000u32).map(|i| (i * 131 + i / 7) as u8).collect();
        mem.write_slice(&data, GuestAddress(0)).unwrap();
        let mut host_map = HostMap::default();
        let map = host_map.map(&mem);
        let range = map.locate(GuestAddress(0), 0x3000).unwrap();
        for start in 0..70 {
            for len in (0..40).chain([127, 128, 129, 160, 1499, 1500, 4096, 0x2fe0 - 70]) {
                let copy = |at: usize, buf: &mut [u8]| {
                    let n = buf.len().min(data.len() - at);
                    buf[..n].copy_from_slice(&data[at..at + n]);
                    n
                };
                let expected = netcore::link::read_back_sum(copy, start, len);
                assert_eq!(
                    map.ones_sum(range, start, len),
                    Some(expected),
                    "start {start}, length {len}"
                );
            }
        }
        // All ones: every carry folds around.
        mem.write_slice(&[0xff; 0x3000], GuestAddress(0)).unwrap();
        for start in [0, 3, 8, 37] {
            assert_eq!(map.ones_sum(range, start, 0x2000), Some(0xffff));
        }
        assert_eq!(map.ones_sum(range, 0x3ff0, 0x20), None, "past the region");
    }

    #[test]
    fn the_host_map_takes_ranges_inside_one_region_only() {
        let mem = GuestMem::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x10000), 0x2000),
        ])
        .unwrap();
        let mut host_map = HostMap::default();
        let map = host_map.map(&mem);
        let host_of = |a: u64| mem.get_host_address(GuestAddress(a)).unwrap() as usize;
        let host = |a: u64, len: usize| {
            map.locate(GuestAddress(a), len)
                .and_then(|r| map.address(r))
        };
        assert_eq!(host(0x10, 0x20), Some(host_of(0x10)));
        assert_eq!(host(0x1ff0, 0x10), Some(host_of(0x1ff0)));
        assert_eq!(host(0x10000, 0x2000), Some(host_of(0x10000)));
        // Into the next region, even an adjacent one: not one mapping.
        assert_eq!(host(0xff0, 0x20), None);
        assert_eq!(host(0x11fff, 2), None);
        assert_eq!(host(0x2000, 1), None);
        assert_eq!(host(u64::MAX, 1), None);
        assert_eq!(host(0x10, usize::MAX), None);
    }
}
