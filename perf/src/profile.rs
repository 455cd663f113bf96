//! Splits a backend's CPU samples (`perf script -F ip,sym` of a `perf record -g` on the
//! backend) into the work any backend moving the same bytes through the same host sockets
//! pays, and the rest, which is the backend's own.
//!
//! # Theory of operation
//!
//! A CPU-per-GB target is reachable only if the backend's own part can shrink far enough:
//! the copies between guest memory and the socket buffers, and the TCP transmission and
//! loopback delivery the kernel runs inside the backend's calls (its own sends guest→host; the
//! host sender's, which a window update from the backend's discard sets off, host→guest), are
//! paid per byte by every backend, passt too. Each sample falls in the first share of
//! [`Share::ALL`] that names a function anywhere in its call chain (a copy woken from
//! `epoll_wait` is a copy): a sample is *shared* if its chain names a function of one of the
//! first three shares. The rest —
//! waiting and waking, eventfds, the remainder of the system calls, interrupts, user code — is
//! what a backend could in principle cut, so "its own part at zero" is the least CPU per GB a
//! backend making these calls could reach.
//!
//! The match is by name, so it counts only what this kernel's functions say; a chain perf
//! could not unwind ends early and falls in the share of what it shows.

/// Where a sample's CPU went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Share {
    /// TCP transmission and the loopback delivery under it, either end's (the backend's own
    /// sends, and the host sender's that the backend's window updates set off), and the
    /// receiving socket's processing of what arrives.
    TcpTransmitAndDelivery,
    /// The kernel copying socket data into guest memory.
    CopyToGuest,
    /// The kernel copying guest memory into socket buffers.
    CopyFromGuest,
    /// `epoll_wait`, the scheduler and context switches.
    SleepAndWake,
    /// Eventfd reads and writes: the guest's kicks, the interrupts to it.
    Eventfds,
    /// Anything else inside a system call (entry, socket locking, the discards' frees).
    OtherSystemCalls,
    /// Kernel samples outside system calls: interrupts, page faults.
    OtherKernel,
    /// The backend's own instructions and its libraries'.
    UserCode,
}

impl Share {
    /// Every share, in the order a sample is matched and printed: the order of declaration,
    /// so that `share as usize` indexes it.
    pub const ALL: [Share; 8] = [
        Share::TcpTransmitAndDelivery,
        Share::CopyToGuest,
        Share::CopyFromGuest,
        Share::SleepAndWake,
        Share::Eventfds,
        Share::OtherSystemCalls,
        Share::OtherKernel,
        Share::UserCode,
    ];

    /// Whether every backend moving the same bytes pays this share.
    pub fn is_shared(self) -> bool {
        matches!(
            self,
            Share::TcpTransmitAndDelivery | Share::CopyToGuest | Share::CopyFromGuest
        )
    }

    /// What the share holds, for the report.
    pub fn describe(self) -> &'static str {
        match self {
            Share::TcpTransmitAndDelivery => "TCP transmit and loopback delivery (shared)",
            Share::CopyToGuest => "copy into guest memory (shared)",
            Share::CopyFromGuest => "copy from guest memory (shared)",
            Share::SleepAndWake => "epoll_wait, scheduler, switches",
            Share::Eventfds => "eventfd reads and writes (kicks, interrupts)",
            Share::OtherSystemCalls => "rest of the system calls",
            Share::OtherKernel => "interrupts, faults, other kernel",
            Share::UserCode => "user code (backend, libraries)",
        }
    }

    /// Kernel functions whose presence in a chain puts a sample in this share.
    fn functions(self) -> &'static [&'static str] {
        match self {
            Share::TcpTransmitAndDelivery => &[
                "__tcp_transmit_skb",
                "tcp_write_xmit",
                "tcp_pace_kick",
                "tcp_tsq_handler",
                "net_rx_action",
                "process_backlog",
                "tcp_v4_rcv",
                "tcp_v6_rcv",
                "__release_sock",
            ],
            Share::CopyToGuest => &["_copy_to_iter", "simple_copy_to_iter"],
            Share::CopyFromGuest => &["_copy_from_iter", "skb_copy_to_page_nocache"],
            Share::SleepAndWake => &[
                "do_epoll_wait",
                "schedule",
                "__schedule",
                "finish_task_switch.isra.0",
                "finish_task_switch",
            ],
            Share::Eventfds => &["eventfd_write", "eventfd_read"],
            Share::OtherSystemCalls | Share::OtherKernel | Share::UserCode => &[],
        }
    }
}

/// One sample: its call chain, leaf first, as (instruction address, symbol).
type Chain = Vec<(u64, String)>;

/// Addresses at or above this are the kernel's on x86-64 (the upper half).
const KERNEL_START: u64 = 0xffff_8000_0000_0000;

/// The share a call chain (leaf first) falls in.
pub fn classify(chain: &[(u64, String)]) -> Share {
    for share in Share::ALL {
        let functions = share.functions();
        if chain
            .iter()
            .any(|(_, symbol)| functions.contains(&symbol.as_str()))
        {
            return share;
        }
    }
    let in_kernel = |&(ip, _): &(u64, String)| ip >= KERNEL_START;
    if !chain.first().is_some_and(in_kernel) {
        Share::UserCode
    } else if chain
        .iter()
        .any(|(_, symbol)| symbol.starts_with("entry_SYSCALL_64"))
    {
        Share::OtherSystemCalls
    } else {
        Share::OtherKernel
    }
}

/// The samples of `perf script -F ip,sym` output: call chains separated by blank lines, each
/// line an address in hex and a symbol (`[unknown]` or nothing when perf has none).
pub fn parse_chains(text: &str) -> Vec<Chain> {
    let mut chains = Vec::new();
    let mut chain = Chain::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            if !chain.is_empty() {
                chains.push(std::mem::take(&mut chain));
            }
            continue;
        }
        let (ip, symbol) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let Ok(ip) = u64::from_str_radix(ip, 16) else {
            continue;
        };
        chain.push((ip, symbol.trim().to_owned()));
    }
    if !chain.is_empty() {
        chains.push(chain);
    }
    chains
}

/// How many samples fell in each share, in [`Share::ALL`]'s order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub counts: [u64; Share::ALL.len()],
}

impl Split {
    /// Classifies every chain.
    pub fn of(chains: &[Chain]) -> Split {
        let mut counts = [0; Share::ALL.len()];
        for chain in chains {
            counts[classify(chain) as usize] += 1;
        }
        Split { counts }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The fraction (0..=1) of the samples in `share`.
    pub fn fraction(&self, share: Share) -> f64 {
        self.counts[share as usize] as f64 / self.total().max(1) as f64
    }

    /// The fraction of the samples every backend moving these bytes would pay.
    pub fn shared_fraction(&self) -> f64 {
        Share::ALL
            .into_iter()
            .filter(|s| s.is_shared())
            .map(|s| self.fraction(s))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three samples as perf prints them: a discard whose window update sends the host
    /// sender's segments, a peek's copy, and one in the backend's own code.
    const SCRIPT: &str = "
\tffffffff822527a1 _raw_spin_unlock_irqrestore
\tffffffff8207e2b4 __tcp_transmit_skb
\tffffffff8208c5d0 tcp_recvmsg_locked
\tffffffff81000130 entry_SYSCALL_64_after_hwframe
\t           f838f __libc_recv

\tffffffff81aa0000 _copy_to_iter
\tffffffff81e8c000 __skb_datagram_iter
\tffffffff81000130 entry_SYSCALL_64_after_hwframe
\t           f8400 __libc_recvmsg

\t          1af219 netcore::flow::tcp::TcpTable::push_to_guest
\t          1a0000 [unknown]
";

    #[test]
    fn chains_are_parsed_leaf_first_and_split_by_blank_lines() {
        let chains = parse_chains(SCRIPT);
        assert_eq!(chains.len(), 3);
        assert_eq!(chains[0].len(), 5);
        assert_eq!(chains[0][0].1, "_raw_spin_unlock_irqrestore");
        assert_eq!(chains[0][4], (0xf838f, "__libc_recv".to_owned()));
        assert_eq!(chains[2][1].1, "[unknown]");
    }

    #[test]
    fn samples_fall_in_the_first_share_their_chain_names() {
        let chains = parse_chains(SCRIPT);
        assert_eq!(classify(&chains[0]), Share::TcpTransmitAndDelivery);
        assert_eq!(classify(&chains[1]), Share::CopyToGuest);
        assert_eq!(classify(&chains[2]), Share::UserCode);
        let kernel = |symbols: &[&str]| -> Chain {
            symbols
                .iter()
                .map(|s| (0xffff_ffff_8100_0000, (*s).to_owned()))
                .collect()
        };
        // A wake-up's copy is still a copy: the copy share comes first.
        let chain = kernel(&["_copy_to_iter", "do_epoll_wait"]);
        assert_eq!(classify(&chain), Share::CopyToGuest);
        let chain = kernel(&["_raw_spin_unlock_irq", "eventfd_write", "entry_SYSCALL_64"]);
        assert_eq!(classify(&chain), Share::Eventfds);
        let chain = kernel(&["kfree", "tcp_recvmsg", "entry_SYSCALL_64_after_hwframe"]);
        assert_eq!(classify(&chain), Share::OtherSystemCalls);
        let chain = kernel(&["clear_page", "asm_exc_page_fault"]);
        assert_eq!(classify(&chain), Share::OtherKernel);
        assert_eq!(classify(&[]), Share::UserCode);
    }

    #[test]
    fn the_split_counts_every_sample_once() {
        let split = Split::of(&parse_chains(SCRIPT));
        assert_eq!(split.total(), 3);
        assert_eq!(split.fraction(Share::UserCode), 1.0 / 3.0);
        assert!((split.shared_fraction() - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(split.fraction(Share::SleepAndWake), 0.0);
        // `Split` counts a share at its place in `Share::ALL`.
        for (index, share) in Share::ALL.into_iter().enumerate() {
            assert_eq!(share as usize, index, "{share:?}");
        }
    }
}
