//! Queue pairs: one engine per virtio queue pair serving one guest, and the little they share.
//!
//! # Theory of operation
//!
//! With multiqueue the guest sends each packet on the TX queue of the vCPU it runs on (Linux's
//! XPS), and the link runs one [`crate::Engine`] per queue pair, each in a thread of its own, with
//! its own flow tables, epoll set, timer and host sockets: nothing on the per-packet path is
//! shared between pairs. A flow lives on the pair whose engine saw its first frame, and what
//! comes back for it goes to that pair's RX queue.
//!
//! A guest socket can move to another vCPU, and its next packets then arrive on another pair
//! (a TCP socket moves when nothing of it is in flight; an unconnected UDP socket with every
//! migration). So every flow table records its keys in a [`Directory`] the pairs share: a mutex
//! taken when a flow is made or removed, and when a frame matches no flow of its own pair, never
//! for a frame of a flow the pair has. A frame whose flow lives on another pair is copied into
//! that pair's [`Inbox`], whose eventfd is in the owner's epoll set; the owner handles it as one
//! of its own and never hands it on. The copy is the price of the rare frame that changed
//! queues; a full inbox drops the frame and counts it, as a full ring would.
//!
//! Order: Linux moves a TCP socket to another TX queue only once the device has completed
//! everything it sent before, and the ring completes a frame only after the engine handled it,
//! so a flow's frames reach its engine in order, except handed frames: they are completed once
//! they sit in the inbox, and the guest may send the flow's next frames on the owner's queue
//! before the owner took them. So before each guest frame of its own, an engine takes what
//! waits in its inbox (one atomic load tells it: [`QueuePair::inbox_waiting`]); without that, a
//! bulk upload whose ACK-clocked segments go out from another vCPU was reordered, and the guest
//! retransmitted thousands of segments.
//!
//! Shared as well, because they are one guest's: the DHCP server (its leases) and the guest's
//! learned IPv6 address, which a forwarded connection needs when its rule names no address.
//! Each engine learns the guest's MAC from its own frames.
//!
//! Forwarded ports: pair 0's engine watches every forward; the others watch the TCP ones once
//! their pair has carried a guest frame (a pair the guest does not use must not take
//! connections it could never deliver). The engines' accepts race on the shared listening
//! socket, so connections spread over the pairs in use. UDP and unix-socket forwards stay on
//! pair 0: a UDP forward's socket becomes one flow, and unix clients take their guest-side
//! ports from one sequence.

use std::collections::HashMap;
use std::hash::Hash;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use netplan::NetPlan;
use vmm_sys_util::eventfd::EventFd;

use crate::link::{SendIovs, TxFrame};
use crate::service::dhcp;
use crate::{ping, tcp};

/// Frames waiting in one pair's inbox, at most: past it they are dropped and counted.
const MAX_INBOX: usize = 256;

/// Which pair holds the flow of each key: see the module's theory of operation.
#[derive(Debug)]
pub(crate) struct Directory<K> {
    owners: Mutex<HashMap<K, u16>>,
}

impl<K: Copy + Eq + Hash> Directory<K> {
    fn new() -> Self {
        Directory {
            owners: Mutex::new(HashMap::new()),
        }
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<K, u16>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `pair` made the flow of `key`.
    pub(crate) fn claim(&self, key: K, pair: u16) {
        self.owners().insert(key, pair);
    }

    /// `pair` removed the flow of `key` (a later claim by another pair stays).
    pub(crate) fn release(&self, key: &K, pair: u16) {
        let mut owners = self.owners();
        if owners.get(key) == Some(&pair) {
            owners.remove(key);
        }
    }

    pub(crate) fn owner(&self, key: &K) -> Option<u16> {
        self.owners().get(key).copied()
    }
}

/// A flow table's place in the directory: the directory of its protocol and its own pair.
#[derive(Debug, Clone)]
pub(crate) struct Listing<K> {
    pub(crate) directory: Arc<Directory<K>>,
    pub(crate) pair: u16,
}

impl<K: Copy + Eq + Hash> Listing<K> {
    /// The other pair that holds `key`'s flow, if one does.
    pub(crate) fn elsewhere(&self, key: &K) -> Option<u16> {
        self.directory
            .owner(key)
            .filter(|&owner| owner != self.pair)
    }
}

/// A guest frame copied out of the ring of the pair it came on, for the pair that holds its
/// flow.
#[derive(Debug)]
pub(crate) struct HandedFrame {
    bytes: Vec<u8>,
    partial_csum: Option<(usize, usize)>,
}

impl HandedFrame {
    pub(crate) fn copy_of<F: TxFrame + ?Sized>(frame: &F) -> Self {
        let mut bytes = vec![0; frame.len()];
        let n = frame.read_at(0, &mut bytes);
        bytes.truncate(n);
        HandedFrame {
            bytes,
            partial_csum: frame.partial_csum(),
        }
    }
}

impl TxFrame for HandedFrame {
    fn len(&self) -> usize {
        self.bytes.len()
    }

    fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
        self.bytes[..].read_at(offset, buf)
    }

    fn iovecs<'m>(&'m self, offset: usize, len: usize, out: &mut SendIovs<'_, 'm>) {
        self.bytes[..].iovecs(offset, len, out)
    }

    fn partial_csum(&self) -> Option<(usize, usize)> {
        self.partial_csum
    }
}

/// Frames other pairs handed to one pair, and the eventfd that tells its engine.
#[derive(Debug)]
struct Inbox {
    frames: Mutex<Vec<HandedFrame>>,
    /// Frames in `frames`, readable without the lock.
    waiting: AtomicUsize,
    wake: EventFd,
}

/// What the engines of one guest's queue pairs share.
#[derive(Debug)]
pub struct QueuePairs {
    inboxes: Vec<Inbox>,
    pub(crate) tcp: Arc<Directory<tcp::FlowKey>>,
    pub(crate) udp: Arc<Directory<SocketAddr>>,
    pub(crate) ping: Arc<Directory<ping::Key>>,
    pub(crate) dhcp: Arc<Mutex<dhcp::Server>>,
    guest_ipv6: Mutex<Option<Ipv6Addr>>,
}

impl QueuePairs {
    /// The shared state of `count` pairs (at least 1) serving a guest under `plan`.
    pub fn new(count: u16, plan: &NetPlan) -> io::Result<Arc<Self>> {
        let inboxes = (0..count.max(1))
            .map(|_| {
                Ok(Inbox {
                    frames: Mutex::new(Vec::new()),
                    waiting: AtomicUsize::new(0),
                    wake: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
                })
            })
            .collect::<io::Result<_>>()?;
        Ok(Arc::new(QueuePairs {
            inboxes,
            tcp: Arc::new(Directory::new()),
            udp: Arc::new(Directory::new()),
            ping: Arc::new(Directory::new()),
            dhcp: Arc::new(Mutex::new(dhcp::Server::new(plan))),
            guest_ipv6: Mutex::new(None),
        }))
    }

    pub fn count(&self) -> u16 {
        self.inboxes.len() as u16
    }

    /// The handle of pair `index`'s engine; `None` past the last pair.
    pub fn pair(self: &Arc<Self>, index: u16) -> Option<QueuePair> {
        (usize::from(index) < self.inboxes.len()).then(|| QueuePair {
            shared: Arc::clone(self),
            index,
        })
    }
}

/// One pair's engine's view of the shared state ([`crate::EngineOptions::queue_pair`]).
#[derive(Debug, Clone)]
pub struct QueuePair {
    shared: Arc<QueuePairs>,
    index: u16,
}

impl QueuePair {
    pub fn index(&self) -> u16 {
        self.index
    }

    pub(crate) fn shared(&self) -> &QueuePairs {
        &self.shared
    }

    pub(crate) fn listing<K>(&self, directory: &Arc<Directory<K>>) -> Listing<K> {
        Listing {
            directory: Arc::clone(directory),
            pair: self.index,
        }
    }

    /// This pair's inbox eventfd, for its engine's epoll set.
    pub(crate) fn inbox_fd(&self) -> &EventFd {
        &self.shared.inboxes[usize::from(self.index)].wake
    }

    /// Gives `frame` to pair `owner`; false if its inbox is full (the frame is dropped).
    pub(crate) fn hand_to<F: TxFrame + ?Sized>(&self, owner: u16, frame: &F) -> bool {
        let Some(inbox) = self.shared.inboxes.get(usize::from(owner)) else {
            return false;
        };
        let mut frames = inbox.frames.lock().unwrap_or_else(|p| p.into_inner());
        if frames.len() >= MAX_INBOX {
            return false;
        }
        frames.push(HandedFrame::copy_of(frame));
        inbox.waiting.store(frames.len(), Ordering::Release);
        drop(frames);
        let _ = inbox.wake.write(1);
        true
    }

    /// The frames handed to this pair, oldest first; `into` is emptied first (and reused).
    pub(crate) fn take_inbox(&self, into: &mut Vec<HandedFrame>) {
        let inbox = &self.shared.inboxes[usize::from(self.index)];
        let _ = inbox.wake.read();
        into.clear();
        let mut frames = inbox.frames.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *frames, into);
        inbox.waiting.store(0, Ordering::Release);
    }

    /// Whether other pairs handed this one frames it has not taken yet.
    pub(crate) fn inbox_waiting(&self) -> bool {
        self.shared.inboxes[usize::from(self.index)]
            .waiting
            .load(Ordering::Acquire)
            > 0
    }

    pub(crate) fn learn_guest_ipv6(&self, addr: Ipv6Addr) {
        *self
            .shared
            .guest_ipv6
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(addr);
    }

    pub(crate) fn guest_ipv6(&self) -> Option<Ipv6Addr> {
        *self
            .shared
            .guest_ipv6
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_elsewhere_only_when_another_pair_holds_it() {
        let directory = Arc::new(Directory::new());
        let zero = Listing {
            directory: Arc::clone(&directory),
            pair: 0,
        };
        let one = Listing {
            directory: Arc::clone(&directory),
            pair: 1,
        };
        assert_eq!(zero.elsewhere(&7u32), None);
        directory.claim(7u32, 1);
        assert_eq!(zero.elsewhere(&7), Some(1));
        assert_eq!(one.elsewhere(&7), None, "its own");
        directory.release(&7, 0);
        assert_eq!(zero.elsewhere(&7), Some(1), "only the holder releases");
        directory.release(&7, 1);
        assert_eq!(zero.elsewhere(&7), None);
    }

    #[test]
    fn handed_frames_arrive_in_order_with_their_checksum_request_and_the_inbox_is_bounded() {
        let plan = NetPlan::slirp_default();
        let pairs = QueuePairs::new(2, &plan).unwrap();
        let (zero, one) = (pairs.pair(0).unwrap(), pairs.pair(1).unwrap());
        assert!(pairs.pair(2).is_none());
        struct Offloaded;
        impl TxFrame for Offloaded {
            fn len(&self) -> usize {
                3
            }
            fn read_at(&self, offset: usize, buf: &mut [u8]) -> usize {
                [1u8, 2, 3][..].read_at(offset, buf)
            }
            fn iovecs<'m>(&'m self, _: usize, _: usize, _: &mut SendIovs<'_, 'm>) {}
            fn partial_csum(&self) -> Option<(usize, usize)> {
                Some((1, 2))
            }
        }
        assert!(zero.hand_to(1, &Offloaded));
        assert!(zero.hand_to(1, &[9u8][..]));
        assert_eq!(one.inbox_fd().read().unwrap(), 2, "woken once per frame");
        assert!(one.inbox_waiting() && !zero.inbox_waiting());
        let mut got = Vec::new();
        one.take_inbox(&mut got);
        assert!(!one.inbox_waiting());
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].bytes, [1, 2, 3]);
        assert_eq!(got[0].partial_csum(), Some((1, 2)));
        assert_eq!(got[1].bytes, [9]);
        for _ in 0..MAX_INBOX {
            assert!(zero.hand_to(1, &[0u8][..]));
        }
        assert!(!zero.hand_to(1, &[0u8][..]), "full");
        assert!(!zero.hand_to(5, &[0u8][..]), "no such pair");
        one.take_inbox(&mut got);
        assert_eq!(got.len(), MAX_INBOX);
        assert!(zero.hand_to(1, &[0u8][..]), "room again");
    }
}
