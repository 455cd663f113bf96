//! The vhost-user virtio-net device: queue pairs of one RX and one TX virtqueue, each feeding
//! a netcore engine of its own.
//!
//! A fresh [`NetBackend`] (engines and exit eventfd) is made for every frontend connection;
//! reusing an exit eventfd would stop the next connection's workers at once.
//!
//! Multiqueue: the device offers `--max-queue-pairs` pairs (vring `2k` is pair `k`'s RX, `2k +
//! 1` its TX) and vhost-user-backend runs one worker thread per pair
//! ([`NetBackend::queues_per_thread`]), which sees only its own two vrings. Each pair's state
//! (engine, scratch buffers, moderation timer, counters) sits behind a mutex of its own that
//! only its worker takes on the packet path; the vhost-user thread takes it only to hand over
//! features and memory. What the pairs' engines share is netcore's [`netcore::queue_pairs`].
//! With one pair the engine runs alone, as before multiqueue.
//!
//! Guest mistakes never end the worker thread: vhost-user-backend ends it silently on any
//! `Err` from `handle_event`, so every guest-caused failure is counted and logged here and
//! the handler returns `Ok`.

use std::io;
use std::time::{Duration, Instant};

use std::os::fd::{AsRawFd, RawFd};

use netcore::capture::SharedCapture;
use netcore::link::{RxOffloads, TxFrame};
use netcore::{Engine, EngineOptions};
use policy::NetPlan;
use std::sync::{Mutex, MutexGuard};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};

use netcore::queue_pairs::QueuePairs;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};
use vmm_sys_util::timerfd::TimerFd;

use crate::ring::{
    self, AvailChains, GuestMem, Recheck, RingCounters, RingRx, RxFeatures, RxScratch, TxScratch,
};
use crate::vnet;

/// A pair's RX and TX vrings, as its worker thread sees them (and as device events).
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// Vrings per worker thread: one queue pair.
pub const NUM_QUEUES: usize = 2;
/// Queue pairs offered when the command line does not say.
pub const DEFAULT_MAX_QUEUE_PAIRS: u16 = 8;
/// The most `--max-queue-pairs` may ask for: vhost-user-backend gives each thread a 64-bit
/// vring mask, and 64 vrings are 32 pairs.
pub const MAX_QUEUE_PAIRS: u16 = 32;
/// Device event for the engine's host sockets and timers. vhost-user-backend keeps the events
/// up to the device's number of vrings (its exit event) for itself, whichever thread they are
/// registered in: ours start past the most vrings a device can have.
pub const HOST_EVENT: u16 = 2 * MAX_QUEUE_PAIRS + 1;
/// Device event for the TX moderation timer (see `TxModeration`).
pub const MODERATION_EVENT: u16 = HOST_EVENT + 1;
/// Device event for runtime control (the API socket's changes and questions), served even
/// before the guest's memory and rings exist.
pub const CONTROL_EVENT: u16 = MODERATION_EVENT + 1;
/// Largest ring QEMU may ask for (its `rx_queue_size`/`tx_queue_size` go up to 1024).
pub const MAX_QUEUE_SIZE: usize = 1024;
/// TX chains taken for one engine batch, whose frames the engine sees together (one flow's
/// payload from all of them goes to its socket in one write) and which go back to the guest
/// together after it. A guest without offloads sends 1514-byte frames as two-descriptor
/// chains, of which QEMU's default ring of 256 holds 128, and a wakeup finds about 85: 64 cut
/// that into two writes, and the kernel's cost per GB (each write wakes the reader) fell by a
/// fifth with one (perf/README.md). Chains of one descriptor fill half the ring at 128, so
/// such a guest keeps buffers to fill while we work.
const TX_BATCH_CHAINS: usize = 128;

/// The virtio features offered: only what the data path implements.
///
/// Checksum and segmentation offloads both ways: guest TCP payload goes to host sockets
/// whole (a 64 KiB TSO frame in one write, no checksum needed), and frames to the guest skip
/// checksums over payload we never read and carry up to 64 KiB of TCP at once. Multiqueue
/// when more than one pair is allowed (QEMU's control queue, which the guest needs to turn
/// pairs on, is QEMU's own).
pub fn offered_features(max_queue_pairs: u16) -> u64 {
    let mq = if max_queue_pairs > 1 {
        1 << VIRTIO_NET_F_MQ
    } else {
        0
    };
    mq | 1 << VIRTIO_F_VERSION_1
        | 1 << VIRTIO_NET_F_MRG_RXBUF
        | 1 << VIRTIO_RING_F_EVENT_IDX
        | 1 << VIRTIO_NET_F_CSUM
        | 1 << VIRTIO_NET_F_GUEST_CSUM
        | 1 << VIRTIO_NET_F_HOST_TSO4
        | 1 << VIRTIO_NET_F_HOST_TSO6
        | 1 << VIRTIO_NET_F_GUEST_TSO4
        | 1 << VIRTIO_NET_F_GUEST_TSO6
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
}

/// Kick moderation for bulk guest→host traffic.
///
/// A TCG guest sends a 64 KiB TSO frame every 100-400 µs, and a kick per frame costs a wakeup
/// (epoll, eventfd, a context switch) that is worth more than moving the frame. Once a batch
/// carries a frame of [`TxModeration::BULK_FRAME`] bytes or more, the device leaves kicks off
/// (EVENT_IDX: `avail_event` is not moved) and takes the ring every period instead, until a
/// period brings no bulk frame. Small frames never start it, so request/response traffic keeps
/// its latency; during a bulk transfer other frames wait at most one period.
///
/// The period adapts to the guest. While drains find fewer than 2 frames it doubles, up to
/// [`TxModeration::LONGEST`]: a slow guest (one frame every 400 µs) would otherwise leave
/// periods empty, end the moderation and kick again for every frame. A guest fast enough to
/// post [`TxModeration::MANY`] frames in a period (a KVM guest, not TCG's) would soon fill its
/// ring and wait for us, so the period halves while drains find that many, down to
/// [`TxModeration::SHORTEST`].
///
/// A fast one-way stream of small frames ([`OneWayStream`]) starts and keeps it as bulk frames
/// do.
#[derive(Debug)]
struct TxModeration {
    timer: TimerFd,
    /// When the armed timer expires; `None` when it is not armed.
    deadline: Option<Instant>,
    active: bool,
    period: Duration,
}

impl TxModeration {
    const BULK_FRAME: usize = 16 << 10;
    /// 1 ms rather than 250 µs: with the guest at 1.3-1.9 Gbit/s, guest→host rose to 2.0-3.0
    /// Gbit/s and the backend's CPU fell from 0.63-0.74 to 0.37-0.46 s/GB (perf/README.md).
    const LONGEST: Duration = Duration::from_micros(1000);
    const SHORTEST: Duration = Duration::from_micros(30);
    /// Frames in one drain that mean the guest outpaces the period (8 TSO frames are about
    /// 4 Gbit/s at 1 ms, 15 Gbit/s at 250 µs); fewer than a quarter of it let the period grow.
    const MANY: usize = 8;

    fn new() -> io::Result<Self> {
        Ok(TxModeration {
            timer: TimerFd::new().map_err(|e| io::Error::from_raw_os_error(e.errno()))?,
            deadline: None,
            active: false,
            period: Self::LONGEST,
        })
    }

    /// Makes sure the timer will fire; false if it cannot be armed (then kicks stay on).
    fn arm(&mut self) -> bool {
        if self.deadline.is_some() {
            return true;
        }
        match self.timer.reset(self.period, None) {
            Ok(()) => {
                self.deadline = Some(Instant::now() + self.period);
                true
            }
            Err(e) => {
                log::debug!("TX moderation timer: {e}");
                false
            }
        }
    }

    /// Adapts the period to how many frames one drain found.
    fn drained(&mut self, frames: usize) {
        if frames >= Self::MANY {
            self.period = (self.period / 2).max(Self::SHORTEST);
        } else if frames < Self::MANY / 4 {
            self.period = (self.period * 2).min(Self::LONGEST);
        }
    }

    /// The timer's event: true if it really expired (an event from before a re-arm is stale,
    /// and reading the timer then would block until the new deadline).
    fn expired(&mut self) -> bool {
        match self.deadline {
            Some(deadline) if Instant::now() >= deadline => {
                let _ = self.timer.wait();
                self.deadline = None;
                true
            }
            _ => false,
        }
    }
}

/// Notices a fast one-way stream of small frames from the guest (a UDP sender), which
/// [`TxModeration`] then serves as it serves bulk frames.
///
/// A TCG guest kicks for each datagram: each kick costs the guest an exit to QEMU's I/O path
/// and us a wakeup, at tens of thousands a second. Drains that follow each other closely with
/// nothing sent to the guest between them are such a stream (what a drain answers itself, a
/// TCP ACK of what it took, does not count: a fast upload of small segments is one too);
/// request/response traffic (an answer between two requests) and sparse traffic never look
/// like one, so their latency stays as it was.
#[derive(Debug, Default)]
struct OneWayStream {
    /// When the last drain that found frames ended.
    last_drain: Option<Instant>,
    /// Frames sent to the guest by the end of that drain (the engine's `rx_frames`).
    rx_frames: u64,
    /// Such drains in a row.
    drains: u32,
}

impl OneWayStream {
    /// Drains closer than this to the previous one continue a stream.
    const GAP: Duration = Duration::from_micros(300);
    /// Drains in a row that make a stream.
    const DRAINS: u32 = 16;

    fn is_on(&self) -> bool {
        self.drains >= Self::DRAINS
    }

    /// Records a drain that took `frames` frames, ending at `now`, with `rx_frames` sent to
    /// the guest so far; `moderated` when the drain came from the moderation timer (its gap
    /// is the period, and two frames or more in it keep the stream going).
    fn drained(&mut self, now: Instant, frames: usize, rx_frames: u64, moderated: bool) {
        if frames == 0 {
            return;
        }
        let quiet = rx_frames == self.rx_frames;
        let close = if moderated {
            frames >= 2
        } else {
            self.last_drain
                .is_some_and(|t| now.saturating_duration_since(t) <= Self::GAP)
        };
        // A guest may keep a stream up for days: the count stops at its top.
        self.drains = if quiet && close {
            self.drains.saturating_add(1)
        } else {
            0
        };
        self.last_drain = Some(now);
        self.rx_frames = rx_frames;
    }
}

/// One queue pair's state: its engine and what its worker thread reuses.
#[derive(Debug)]
pub struct Pair {
    engine: Engine,
    mem: Option<GuestMemoryAtomic<GuestMem>>,
    event_idx: bool,
    rx_features: RxFeatures,
    counters: RingCounters,
    tx_scratch: TxScratch,
    rx_scratch: RxScratch,
    tx_moderation: TxModeration,
    one_way: OneWayStream,
}

/// Device state for one frontend connection.
#[derive(Debug)]
pub struct NetBackend {
    pairs: Vec<Mutex<Pair>>,
    exit: (EventConsumer, EventNotifier),
    /// Exit-event consumers handed to the worker threads: vhost-user-backend 0.24
    /// (`VringEpollHandler::new`) takes them with `into_raw_fd` and never closes them.
    handed_out: Mutex<Vec<RawFd>>,
}

/// The descriptors one pair's worker thread must watch beside its vrings.
#[derive(Debug, Clone, Copy)]
pub struct PairFds {
    /// The engine's sockets and timers, as [`HOST_EVENT`].
    pub host: RawFd,
    /// The TX moderation timer, as [`MODERATION_EVENT`].
    pub moderation: RawFd,
    /// Runtime control, as [`CONTROL_EVENT`].
    pub control: Option<RawFd>,
}

impl Pair {
    fn new(engine: Engine) -> io::Result<Self> {
        Ok(Pair {
            engine,
            mem: None,
            event_idx: false,
            rx_features: RxFeatures {
                header_len: vnet::header_len(0),
                mergeable: false,
                offloads: RxOffloads::default(),
            },
            counters: RingCounters::default(),
            tx_scratch: TxScratch::default(),
            rx_scratch: RxScratch::default(),
            tx_moderation: TxModeration::new()?,
            one_way: OneWayStream::default(),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn ring_counters(&self) -> RingCounters {
        self.counters
    }

    fn fds(&self) -> PairFds {
        PairFds {
            host: self.engine.host_fd(),
            moderation: self.tx_moderation.timer.as_raw_fd(),
            control: self.engine.control_fd(),
        }
    }

    /// Drains the TX ring into the engine, then either asks for the guest's next kick or, for
    /// bulk traffic, leaves kicks off and polls (see [`TxModeration`]). Tells the guest once.
    fn process_tx(&mut self, vrings: &[VringRwLock], mem: &GuestMem) {
        let (rx_vring, tx_vring) = (&vrings[RX_QUEUE], &vrings[TX_QUEUE]);
        let mut rx = RingRx::new(
            rx_vring,
            mem,
            &self.rx_features,
            &mut self.rx_scratch,
            &mut self.counters,
        );
        let mut bad_tx = 0u64;
        let mut frames = 0usize;
        let moderated = self.tx_moderation.active;
        let mut bulk = self.one_way.is_on();
        let mut chains = AvailChains::new(tx_vring, mem);
        let header_len = self.rx_features.header_len;
        // Rounds in a row that took no chain: a ring whose avail index runs more than a ring
        // ahead gives none while `enable_notification` keeps saying there are more.
        let mut idle_rounds = 0;
        loop {
            let before = frames;
            loop {
                let batch =
                    self.tx_scratch
                        .pop_batch(&mut chains, mem, header_len, TX_BATCH_CHAINS);
                if batch.is_empty() {
                    break;
                }
                bulk |= batch
                    .frames()
                    .iter()
                    .any(|f| f.len() >= TxModeration::BULK_FRAME);
                self.engine.handle_frames(batch.frames(), &mut rx);
                // Only now: the engine may have written a frame's payload at the batch's end.
                for (head, refused) in batch.heads() {
                    if let Some(e) = refused {
                        bad_tx += 1;
                        log::debug!("guest TX chain {head} refused: {e}");
                    }
                    if let Err(e) = tx_vring.add_used(head, 0) {
                        log::debug!("returning TX chain {head} failed: {e}");
                    }
                }
                frames += batch.len();
            }
            if self.tx_moderation.active {
                self.tx_moderation.drained(frames);
            }
            self.tx_moderation.active = self.event_idx && bulk && self.tx_moderation.arm();
            idle_rounds = if frames == before { idle_rounds + 1 } else { 0 };
            if self.tx_moderation.active
                || !self.event_idx
                || !tx_vring.enable_notification().unwrap_or(false)
                || idle_rounds > 1
            {
                break;
            }
        }
        self.engine.end_batch(&mut rx);
        if self.engine.host_events_likely() {
            self.engine.poll_host(&mut rx);
        }
        rx.finish();
        let rx_frames = self.engine.counters().rx_frames;
        let streaming = self.one_way.is_on();
        self.one_way
            .drained(Instant::now(), frames, rx_frames, moderated);
        if self.one_way.is_on() && !streaming {
            self.counters.tx_streams += 1;
        }
        self.counters.bad_tx_chains += bad_tx;
        if frames > 0 {
            ring::notify(tx_vring);
        }
    }

    /// Runs `f` with the engine and the RX ring as a link, then tells the guest once.
    fn with_rx(
        &mut self,
        vrings: &[VringRwLock],
        mem: &GuestMem,
        f: impl FnOnce(&mut Engine, &mut RingRx<'_>),
    ) {
        let mut rx = RingRx::new(
            &vrings[RX_QUEUE],
            mem,
            &self.rx_features,
            &mut self.rx_scratch,
            &mut self.counters,
        );
        f(&mut self.engine, &mut rx);
        rx.finish();
    }

    /// The guest posted RX buffers: what waited for them goes out.
    fn process_rx(&mut self, vrings: &[VringRwLock], mem: &GuestMem) {
        self.with_rx(vrings, mem, |engine, rx| {
            engine.start(rx);
            engine.end_batch(rx);
        });
    }

    /// Host sockets or timers are ready.
    fn process_host(&mut self, vrings: &[VringRwLock], mem: &GuestMem) {
        self.with_rx(vrings, mem, |engine, rx| engine.poll_host(rx));
    }

    /// One event of this pair's worker thread; `vrings` are the pair's RX and TX.
    fn handle_event(&mut self, device_event: u16, vrings: &[VringRwLock]) {
        if device_event == CONTROL_EVENT {
            self.engine.on_control_event();
            return;
        }
        let Some(atomic) = self.mem.clone() else {
            return;
        };
        if vrings.len() < NUM_QUEUES {
            return;
        }
        let mem = atomic.memory();
        match device_event {
            HOST_EVENT => self.process_host(vrings, &mem),
            MODERATION_EVENT => {
                if self.tx_moderation.expired() {
                    self.process_tx(vrings, &mem);
                }
            }
            e if usize::from(e) == RX_QUEUE => {
                self.rx_scratch.kicked();
                self.process_rx(vrings, &mem);
            }
            e if usize::from(e) == TX_QUEUE => self.process_tx(vrings, &mem),
            other => log::debug!("unexpected device event {other}"),
        }
        self.settle(vrings, &mem);
    }

    /// After any batch: serves what the guest posted without a kick reaching us, and interrupts
    /// a guest left waiting (see `ring`'s notes on lost notifications). Bounded, so that a
    /// guest posting without pause cannot keep the worker from its other events.
    fn settle(&mut self, vrings: &[VringRwLock], mem: &GuestMem) {
        const ROUNDS: usize = 4;
        for _ in 0..ROUNDS {
            let late = Recheck::run(
                &vrings[RX_QUEUE],
                &vrings[TX_QUEUE],
                mem,
                &mut self.rx_scratch,
            );
            if late.interrupted {
                self.counters.late_interrupts += 1;
            }
            // While moderating, chains wait for the timer by design.
            let serve_tx = late.tx_pending && !self.tx_moderation.active;
            if serve_tx {
                self.counters.late_tx += 1;
                self.process_tx(vrings, mem);
            }
            if late.rx_buffers {
                self.counters.late_rx += 1;
                self.process_rx(vrings, mem);
            }
            if !serve_tx && !late.rx_buffers {
                break;
            }
        }
    }
}

impl NetBackend {
    /// A device of `max_queue_pairs` pairs (at least one), each with an engine for `plan`.
    pub fn new(
        plan: NetPlan,
        options: EngineOptions,
        capture: Option<SharedCapture>,
        max_queue_pairs: u16,
    ) -> io::Result<Self> {
        let count = max_queue_pairs.clamp(1, MAX_QUEUE_PAIRS);
        let shared = match count {
            1 => None,
            _ => Some(QueuePairs::new(count, &plan)?),
        };
        let pairs = (0..count)
            .map(|index| {
                let options = EngineOptions {
                    queue_pair: shared.as_ref().and_then(|s| s.pair(index)),
                    ..options.clone()
                };
                let mut engine = Engine::with_options(plan.clone(), options)?;
                if let Some(capture) = &capture {
                    engine.set_capture(capture.clone());
                }
                Ok(Mutex::new(Pair::new(engine)?))
            })
            .collect::<io::Result<_>>()?;
        Ok(NetBackend {
            pairs,
            exit: new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC)?,
            handed_out: Mutex::new(Vec::new()),
        })
    }

    fn pair(&self, index: usize) -> Option<MutexGuard<'_, Pair>> {
        let pair = self.pairs.get(index)?;
        Some(pair.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn each_pair(&self, mut f: impl FnMut(&mut Pair)) {
        for index in 0..self.pairs.len() {
            if let Some(mut pair) = self.pair(index) {
                f(&mut pair);
            }
        }
    }

    /// How many queue pairs the device offers.
    pub fn queue_pairs(&self) -> usize {
        self.pairs.len()
    }

    /// What pair `index`'s worker thread must watch beside its vrings.
    pub fn pair_fds(&self, index: usize) -> Option<PairFds> {
        self.pair(index).map(|pair| pair.fds())
    }

    /// Runs `f` on each pair's state, in order (for the summary when the connection ends).
    pub fn with_pairs(&self, mut f: impl FnMut(usize, &Pair)) {
        for index in 0..self.pairs.len() {
            if let Some(pair) = self.pair(index) {
                f(index, &pair);
            }
        }
    }

    /// The exit-event consumers the worker threads were given, which they leak: to be closed
    /// (`sys::close_abandoned`) once the daemon, and so every worker, is gone.
    pub fn take_handed_out(&self) -> Vec<RawFd> {
        std::mem::take(&mut *self.handed_out.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wakes the worker threads so they exit; used when the connection ends.
    pub fn exit_notifier(&self) -> io::Result<EventNotifier> {
        self.exit.1.try_clone()
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES * self.pairs.len()
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        offered_features(self.pairs.len() as u16)
    }

    /// One worker thread per queue pair, each with the pair's two vrings.
    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.pairs.len()).map(|k| 0b11 << (2 * k)).collect()
    }

    fn acked_features(&self, features: u64) {
        let acked = |bit: u32| features & (1 << bit) != 0;
        let rx_features = RxFeatures {
            header_len: vnet::header_len(features),
            mergeable: acked(VIRTIO_NET_F_MRG_RXBUF),
            offloads: RxOffloads {
                csum: acked(VIRTIO_NET_F_GUEST_CSUM),
                tso4: acked(VIRTIO_NET_F_GUEST_TSO4) && acked(VIRTIO_NET_F_GUEST_CSUM),
                tso6: acked(VIRTIO_NET_F_GUEST_TSO6) && acked(VIRTIO_NET_F_GUEST_CSUM),
            },
        };
        self.each_pair(|pair| pair.rx_features = rx_features);
        // `key=value` words: tests and readers match on them (not on `Debug`).
        let RxFeatures {
            header_len,
            mergeable,
            offloads: RxOffloads { csum, tso4, tso6 },
        } = rx_features;
        let mq = acked(VIRTIO_NET_F_MQ);
        log::debug!(
            "features acked: {features:#x}: header_len={header_len} mergeable={mergeable} \
             csum={csum} tso4={tso4} tso6={tso6} mq={mq}"
        );
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::REPLY_ACK | VhostUserProtocolFeatures::MQ
    }

    fn set_event_idx(&self, enabled: bool) {
        self.each_pair(|pair| pair.event_idx = enabled);
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestMem>) -> io::Result<()> {
        self.each_pair(|pair| pair.mem = Some(mem.clone()));
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        let consumer = self.exit.0.try_clone().ok()?;
        let notifier = self.exit.1.try_clone().ok()?;
        self.handed_out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(consumer.as_raw_fd());
        Some((consumer, notifier))
    }

    /// `thread_id` is the queue pair: each thread has one ([`NetBackend::queues_per_thread`]).
    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        thread_id: usize,
    ) -> io::Result<()> {
        crate::sandbox::narrow_worker_thread();
        if let Some(mut pair) = self.pair(thread_id) {
            pair.handle_event(device_event, vrings);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use virtio_queue::QueueT;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    const SIZE: u16 = 16;

    /// A ready vring with EVENT_IDX over a mock ring at `base`.
    fn vring(mem: &GuestMem, base: u64) -> VringRwLock {
        let ring = MockSplitQueue::create(mem, GuestAddress(base), SIZE);
        let vring = crate::ring::tests::ready_vring(mem, &ring, SIZE);
        vring.set_queue_event_idx(true);
        vring
    }

    /// Runs one event of a backend with EVENT_IDX over `vrings` on its own thread; whether it
    /// returned within a few seconds.
    fn event_returns(
        event: usize,
        setup: impl FnOnce(&GuestMem) -> [VringRwLock; 2] + Send + 'static,
    ) -> bool {
        let (done, returned) = mpsc::channel();
        std::thread::spawn(move || {
            let mem = GuestMem::from_ranges(&[(GuestAddress(0), 0x20000)]).unwrap();
            let vrings = setup(&mem);
            let options = EngineOptions {
                max_flows: 0,
                ..EngineOptions::default()
            };
            let backend = NetBackend::new(NetPlan::default(), options, None, 1).unwrap();
            backend.acked_features(1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX);
            backend.set_event_idx(true);
            backend
                .update_memory(GuestMemoryAtomic::new(mem.clone()))
                .unwrap();
            let _ = backend.handle_event(event as u16, EventSet::IN, &vrings, 0);
            let _ = done.send(());
        });
        returned.recv_timeout(Duration::from_secs(10)).is_ok()
    }

    /// Moves a queue's avail index more than a ring ahead of what was taken: the device takes
    /// nothing from such a ring, and virtio-queue's `enable_notification` reports more to take.
    fn run_ahead(mem: &GuestMem, vring: &VringRwLock) {
        let avail = vring.get_ref().get_queue().avail_ring();
        mem.write_obj(SIZE * 3, GuestAddress(avail + 2)).unwrap();
    }

    /// The periods a moderation goes through from `start`, one drain of `frames` each.
    fn periods(start: Duration, frames: usize, drains: usize) -> Vec<Duration> {
        let mut m = TxModeration::new().unwrap();
        m.period = start;
        (0..drains)
            .map(|_| {
                m.drained(frames);
                m.period
            })
            .collect()
    }

    const US: fn(u64) -> Duration = Duration::from_micros;

    #[test]
    fn the_period_halves_while_drains_find_eight_frames_or_more_down_to_30_us() {
        for frames in [8, 9, 64] {
            let got = periods(US(1000), frames, 7);
            // Halving 125 µs gives 62.5 µs: compare in whole microseconds.
            let got: Vec<u128> = got.iter().map(Duration::as_micros).collect();
            assert_eq!(
                got,
                [500, 250, 125, 62, 31, 30, 30],
                "{frames} frames a drain"
            );
        }
    }

    #[test]
    fn the_period_doubles_while_drains_find_fewer_than_two_frames_up_to_1_ms() {
        for frames in [0, 1] {
            let got = periods(US(30), frames, 7);
            let want = [60, 120, 240, 480, 960, 1000, 1000].map(US);
            assert_eq!(got, want, "{frames} frames a drain");
        }
    }

    #[test]
    fn drains_of_two_to_seven_frames_keep_the_period() {
        for frames in 2..8 {
            assert_eq!(periods(US(250), frames, 3), [US(250); 3], "{frames} frames");
        }
    }

    /// A stream after `drains` kicked drains of one frame each, `gap` apart, none of them
    /// followed by a frame to the guest.
    fn one_way_after(drains: u32, gap: Duration) -> (OneWayStream, Instant) {
        let mut stream = OneWayStream::default();
        let mut now = Instant::now();
        for _ in 0..drains {
            now += gap;
            stream.drained(now, 1, 0, false);
        }
        (stream, now)
    }

    #[test]
    fn sixteen_close_drains_in_a_row_with_nothing_to_the_guest_make_a_stream() {
        // The first drain has no predecessor: 16 close ones after it.
        let (stream, _) = one_way_after(16, US(100));
        assert!(!stream.is_on(), "the first drain does not count");
        let (stream, _) = one_way_after(17, US(100));
        assert!(stream.is_on());
        let (stream, _) = one_way_after(17, US(300));
        assert!(stream.is_on(), "300 µs apart is still close");
    }

    #[test]
    fn a_frame_to_the_guest_or_a_longer_gap_starts_the_count_again() {
        let (mut stream, now) = one_way_after(17, US(100));
        // Request/response: an answer went to the guest since the last drain.
        stream.drained(now + US(100), 1, 1, false);
        assert!(!stream.is_on());
        let (mut stream, now) = one_way_after(17, US(100));
        stream.drained(now + US(301), 1, 0, false);
        assert!(!stream.is_on());
        let (stream, _) = one_way_after(40, US(400));
        assert!(!stream.is_on(), "sparse traffic is never a stream");
    }

    #[test]
    fn a_stream_that_never_ends_stays_on() {
        let (mut stream, now) = one_way_after(17, US(100));
        stream.drains = u32::MAX;
        stream.drained(now + US(100), 1, 0, false);
        assert!(stream.is_on());
        assert_eq!(stream.drains, u32::MAX);
    }

    #[test]
    fn moderated_drains_keep_a_stream_while_they_find_two_frames_or_more() {
        let (mut stream, mut now) = one_way_after(17, US(100));
        for frames in [2, 30, 2] {
            // The moderation timer's drains come a period apart, longer than the gap.
            now += US(1000);
            stream.drained(now, frames, 0, true);
            assert!(stream.is_on(), "{frames} frames in a period");
        }
        stream.drained(now + US(1000), 0, 0, true);
        assert!(stream.is_on(), "an empty drain says nothing");
        stream.drained(now + US(2000), 1, 0, true);
        assert!(!stream.is_on(), "one frame in a period: the stream ended");
    }

    #[test]
    fn a_new_moderation_starts_at_the_longest_period_unarmed() {
        let m = TxModeration::new().unwrap();
        assert_eq!(m.period, US(1000));
        assert!(!m.active);
        assert_eq!(m.deadline, None);
    }

    #[test]
    fn arming_twice_keeps_the_first_deadline_and_nothing_expires_before_it() {
        let mut m = TxModeration::new().unwrap();
        m.period = Duration::from_secs(60);
        assert!(m.arm());
        let deadline = m.deadline.expect("armed");
        assert!(m.arm());
        assert_eq!(m.deadline, Some(deadline), "the armed timer is left alone");
        // An event for the timer now (a stale one) is not an expiry, and does not block.
        assert!(!m.expired());
        assert_eq!(m.deadline, Some(deadline));
    }

    #[test]
    fn the_timer_expires_once_after_its_period_and_can_be_armed_again() {
        let mut m = TxModeration::new().unwrap();
        m.period = US(200);
        assert!(m.arm());
        let give_up = Instant::now() + Duration::from_secs(10);
        while !m.expired() {
            assert!(
                Instant::now() < give_up,
                "no expiry in 10 s for a 200 µs period"
            );
            std::thread::yield_now();
        }
        assert_eq!(m.deadline, None, "expired: unarmed");
        assert!(!m.expired(), "one expiry per arming");
        assert!(m.arm());
        assert!(m.deadline.is_some());
    }

    #[test]
    fn a_tx_ring_whose_avail_index_runs_ahead_does_not_spin_the_worker() {
        assert!(event_returns(TX_QUEUE, |mem| {
            let rx = vring(mem, 0x1000);
            let tx = vring(mem, 0x2000);
            run_ahead(mem, &tx);
            [rx, tx]
        }));
    }
}
