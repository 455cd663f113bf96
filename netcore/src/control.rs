//! Runtime control: the forward rules engines watch, changed while they run, and questions
//! answered from inside an engine's event loop.
//!
//! # Theory of operation
//!
//! One [`Control`] lives for the whole process and is shared (through
//! [`crate::EngineOptions::control`]) by the engines of every frontend connection (one per
//! queue pair), so a rule added or removed lasts across QEMU reconnects: a new engine takes
//! the rules as they are.
//!
//! Each engine takes a [`Seat`] when it starts: its own eventfd and the generation it applied
//! last. Whoever changes the rules (the API socket's thread) binds the host sockets itself,
//! outside any lock, then records the change under the mutex, bumps `generation` and writes
//! every seat's eventfd. The link's event loop watches the eventfd
//! ([`crate::Engine::control_fd`]) beside the engine's own descriptor, even before the guest's
//! rings exist; the engine, in its thread, locks the mutex only long enough to compare rule ids
//! with the sockets it watches (adding and removing epoll registrations), adds its answer to a
//! waiting question, records the generation it saw in its seat and wakes the waiters. The data
//! path so never waits on a bind or on a client; the changer waits (bounded) until every seat
//! has applied its generation, so its reply comes after the change took effect everywhere, and
//! a question's answer sums every engine's.
//!
//! Dropping a rule drops the control's references to its sockets; the engine drops its own
//! when it applies the change, and the listening socket closes. Connections accepted through
//! it are flows of their own and stay, as slirp4netns leaves them. A UDP forward's socket
//! that became a flow (with its first datagram) is the forward itself: that flow is closed
//! with it, and the port is free.

use std::fmt;
use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use netplan::PortForward;
use vmm_sys_util::eventfd::EventFd;

use crate::engine::Stats;
use crate::flow::FlowInfo;
use crate::forward::ForwardSocket;

/// One forward: what was asked, its id, and its bound sockets.
#[derive(Debug)]
pub struct Rule {
    pub id: u32,
    pub spec: PortForward,
    pub sockets: Vec<Arc<ForwardSocket>>,
}

/// What an engine reads and answers under the lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) rules: Vec<Rule>,
    next_id: u32,
    /// Bumped by every change or question; each engine records in its seat what it saw.
    generation: u64,
    /// Engines alive, by seat number, with the generation each applied last: with none,
    /// nobody will apply a change and nobody is waited for.
    seats: Vec<(u64, u64)>,
    next_seat: u64,
    pub(crate) want_stats: bool,
    /// One answer per engine that applied the question's generation.
    pub(crate) stats: Vec<Stats>,
    pub(crate) want_flows: bool,
    pub(crate) flows: Vec<FlowInfo>,
    /// Engines that answered the question.
    pub(crate) answered: usize,
}

/// One engine's place at a [`Control`]: its number and the eventfd that wakes it.
#[derive(Debug)]
pub struct Seat {
    number: u64,
    wake: Option<EventFd>,
}

impl Seat {
    /// The eventfd the engine's link watches, if the control can change.
    pub(crate) fn wake(&self) -> Option<&EventFd> {
        self.wake.as_ref()
    }

    /// Consumes the eventfd's count (the engine, before applying).
    pub(crate) fn take_wake(&self) {
        if let Some(wake) = &self.wake {
            let _ = wake.read();
        }
    }
}

/// The rules and the channel to the engines; see the module's theory of operation.
pub struct Control {
    state: Mutex<State>,
    applied: Condvar,
    /// The seats' eventfds, written when something changed (a copy of each seat's); empty
    /// for a control that never changes (tests, the default options).
    wakes: Mutex<Vec<(u64, EventFd)>>,
    changeable: bool,
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("rules", &self.lock().rules.len())
            .finish_non_exhaustive()
    }
}

impl Default for Control {
    /// No rules, and no way to change them.
    fn default() -> Self {
        Control::with_wake(Vec::new(), false)
    }
}

/// How long a change waits for the engine to apply it before its reply goes anyway (the
/// change is recorded either way; an engine busy for this long applies it when it gets to it).
const APPLY_WAIT: Duration = Duration::from_secs(2);

impl Control {
    /// A control holding `rules` (the forwards given at startup, ids from 1), which can be
    /// changed at run time.
    pub fn new(rules: Vec<(PortForward, Vec<ForwardSocket>)>) -> io::Result<Control> {
        Ok(Control::with_wake(rules, true))
    }

    /// A control holding `rules` that never changes.
    pub fn fixed(rules: Vec<(PortForward, Vec<ForwardSocket>)>) -> Control {
        Control::with_wake(rules, false)
    }

    fn with_wake(rules: Vec<(PortForward, Vec<ForwardSocket>)>, changeable: bool) -> Self {
        let mut state = State {
            next_id: 1,
            ..State::default()
        };
        for (spec, sockets) in rules {
            state.push(spec, sockets);
        }
        Control {
            state: Mutex::new(state),
            applied: Condvar::new(),
            wakes: Mutex::new(Vec::new()),
            changeable,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wakes(&self) -> MutexGuard<'_, Vec<(u64, EventFd)>> {
        self.wakes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An engine starts: its seat, with an eventfd of its own if this control can change.
    pub(crate) fn join(&self) -> io::Result<Seat> {
        let wake = match self.changeable {
            true => Some(EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?),
            false => None,
        };
        let copy = wake.as_ref().map(EventFd::try_clone).transpose()?;
        let mut state = self.lock();
        let number = state.next_seat;
        state.next_seat += 1;
        // It takes the rules as they are now, before it serves anything.
        let generation = state.generation;
        state.seats.push((number, generation));
        if let Some(copy) = copy {
            self.wakes().push((number, copy));
        }
        Ok(Seat { number, wake })
    }

    /// The engine of `seat` is gone: nobody waits for it any more.
    pub(crate) fn leave(&self, seat: &Seat) {
        let mut state = self.lock();
        state.seats.retain(|&(n, _)| n != seat.number);
        self.wakes().retain(|&(n, _)| n != seat.number);
        drop(state);
        self.applied.notify_all();
    }

    /// Whether the engine of `seat` has yet to apply the current generation (and so to answer
    /// its question).
    pub(crate) fn behind(state: &State, seat: &Seat) -> bool {
        state
            .seats
            .iter()
            .any(|&(n, applied)| n == seat.number && applied < state.generation)
    }

    /// The engine of `seat` applied everything up to the current generation.
    pub(crate) fn applied(&self, state: &mut State, seat: &Seat) {
        let generation = state.generation;
        for (n, applied) in &mut state.seats {
            if *n == seat.number {
                *applied = generation;
            }
        }
        self.applied.notify_all();
    }

    /// Wakes every engine; an error if this control cannot change.
    fn wake_all(&self) -> io::Result<()> {
        if !self.changeable {
            return Err(io::ErrorKind::Unsupported.into());
        }
        for (_, wake) in self.wakes().iter() {
            wake.write(1)?;
        }
        Ok(())
    }

    /// The rules as they are now: id, what was asked, and where each socket listens.
    pub fn rules(&self) -> Vec<(u32, PortForward)> {
        self.lock()
            .rules
            .iter()
            .map(|r| (r.id, r.spec.clone()))
            .collect()
    }

    /// The id of a rule that `spec` would clash with: same protocol and host port on a
    /// meeting address, or the same unix path.
    pub fn clash(&self, spec: &PortForward) -> Option<u32> {
        self.lock()
            .rules
            .iter()
            .find(|r| r.spec.clash(spec).is_some())
            .map(|r| r.id)
    }

    /// Adds a rule whose sockets are bound already; returns its id once the running engine
    /// (if any) watches them.
    pub fn add(&self, spec: PortForward, sockets: Vec<ForwardSocket>) -> io::Result<u32> {
        if !self.changeable {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let mut state = self.lock();
        let id = state.push(spec, sockets);
        state.generation += 1;
        let generation = state.generation;
        drop(state);
        self.wake_all()?;
        self.wait_applied(generation);
        Ok(id)
    }

    /// Removes rule `id`; returns what it was, once the running engine (if any) let go of
    /// its sockets, or `None` for an unknown id.
    pub fn remove(&self, id: u32) -> io::Result<Option<PortForward>> {
        if !self.changeable {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let mut state = self.lock();
        let Some(at) = state.rules.iter().position(|r| r.id == id) else {
            return Ok(None);
        };
        let rule = state.rules.remove(at);
        state.generation += 1;
        let generation = state.generation;
        drop(state);
        self.wake_all()?;
        self.wait_applied(generation);
        Ok(Some(rule.spec))
    }

    /// The running engines' statistics, each taken in its own thread and summed; `None` when
    /// no engine runs (no frontend connected) or none answered in time.
    pub fn stats(&self) -> Option<Stats> {
        let parts = self.ask(|s| &mut s.want_stats, |s| std::mem::take(&mut s.stats))?;
        let mut parts = parts.into_iter();
        let mut sum = parts.next()?;
        for part in parts {
            sum.merge(&part);
        }
        Some(sum)
    }

    /// The running engines' open flows, taken in their own threads; `None` as for
    /// [`Control::stats`].
    pub fn flows(&self) -> Option<Vec<FlowInfo>> {
        self.ask(|s| &mut s.want_flows, |s| std::mem::take(&mut s.flows))
    }

    /// Raises the question `want` points at, wakes the engines, and takes their answers.
    fn ask<T>(
        &self,
        want: impl Fn(&mut State) -> &mut bool,
        answers: impl Fn(&mut State) -> Vec<T>,
    ) -> Option<Vec<T>> {
        if !self.changeable {
            return None;
        }
        let mut state = self.lock();
        if state.seats.is_empty() {
            return None;
        }
        *want(&mut state) = true;
        let _ = answers(&mut state);
        state.answered = 0;
        state.generation += 1;
        let generation = state.generation;
        drop(state);
        self.wake_all().ok()?;
        self.wait_applied(generation);
        let mut state = self.lock();
        *want(&mut state) = false;
        let got = answers(&mut state);
        (state.answered > 0).then_some(got)
    }

    /// Waits until every engine applied `generation`, none is left, or [`APPLY_WAIT`] passed.
    fn wait_applied(&self, generation: u64) {
        let deadline = Instant::now() + APPLY_WAIT;
        let mut state = self.lock();
        while state.seats.iter().any(|&(_, applied)| applied < generation) {
            let now = Instant::now();
            if now >= deadline {
                log::warn!("runtime control: the engine did not apply a change in {APPLY_WAIT:?}");
                return;
            }
            state = match self.applied.wait_timeout(state, deadline - now) {
                Ok((s, _)) => s,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

impl State {
    fn push(&mut self, spec: PortForward, sockets: Vec<ForwardSocket>) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.rules.push(Rule {
            id,
            spec,
            sockets: sockets.into_iter().map(Arc::new).collect(),
        });
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netplan::{HostListen, PortRange, Proto};

    fn fwd(proto: Proto, addr: Option<&str>, port: u16) -> PortForward {
        PortForward {
            proto,
            host: HostListen::Inet {
                addr: addr.map(|a| a.parse().unwrap()),
                iface: None,
                ports: PortRange::single(port),
            },
            guest_addr: None,
            guest_port: 80,
            skip_ephemeral: false,
        }
    }

    #[test]
    fn clashes_need_the_same_protocol_port_and_a_meeting_address() {
        let t = |a, p| fwd(Proto::Tcp, a, p);
        let clashes = |a: &PortForward, b: &PortForward| a.clash(b).is_some();
        assert!(clashes(&t(None, 80), &t(Some("127.0.0.1"), 80)));
        assert!(clashes(&t(Some("0.0.0.0"), 80), &t(Some("127.0.0.1"), 80)));
        assert!(!clashes(
            &t(Some("127.0.0.1"), 80),
            &t(Some("127.0.0.2"), 80)
        ));
        assert!(!clashes(&t(Some("::"), 80), &t(Some("127.0.0.1"), 80)));
        assert!(!clashes(&t(None, 80), &t(None, 81)));
        assert!(!clashes(&t(None, 80), &fwd(Proto::Udp, None, 80)));
    }

    #[test]
    fn ids_count_from_one_and_are_not_reused_and_without_engines_nothing_waits() {
        let control = Control::new(vec![(fwd(Proto::Tcp, None, 1), Vec::new())]).unwrap();
        let a = control.add(fwd(Proto::Tcp, None, 2), Vec::new()).unwrap();
        assert_eq!(a, 2);
        assert_eq!(control.remove(a).unwrap().map(|f| f.guest_port), Some(80));
        assert!(control.remove(a).unwrap().is_none());
        assert_eq!(
            control.add(fwd(Proto::Tcp, None, 2), Vec::new()).unwrap(),
            3
        );
        let ids: Vec<u32> = control.rules().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(
            control.clash(&fwd(Proto::Tcp, Some("127.0.0.1"), 2)),
            Some(3)
        );
        assert!(control.stats().is_none(), "no engine runs");
        let fixed = Control::fixed(Vec::new());
        assert!(fixed.add(fwd(Proto::Tcp, None, 2), Vec::new()).is_err());
    }

    /// An engine of the slirp plan under `control`.
    fn engine_with(control: &Arc<Control>) -> crate::Engine {
        let options = crate::EngineOptions {
            control: Arc::clone(control),
            ..Default::default()
        };
        crate::Engine::with_options(netplan::NetPlan::slirp_default(), options).unwrap()
    }

    /// Runs the engine's loop (control events and host sockets) until `work`, in another
    /// thread, is done; its result.
    fn serve_while<T: Send + 'static>(
        engine: &mut crate::Engine,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        let mut link = crate::MemoryLink::new();
        let done = std::thread::spawn(work);
        while !done.is_finished() {
            engine.on_control_event();
            engine.poll_host(&mut link);
            std::thread::sleep(Duration::from_millis(1));
        }
        done.join().unwrap()
    }

    /// Polls the engine's host sockets until `taken` says so, for at most 5 s.
    fn poll_until(engine: &mut crate::Engine, what: &str, taken: impl Fn(&crate::Engine) -> bool) {
        let mut link = crate::MemoryLink::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !taken(engine) {
            assert!(Instant::now() < deadline, "{what}");
            engine.poll_host(&mut link);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A forward added while an engine runs is taken at once; removed, its port refuses while
    /// the connection it brought stays; a question is answered from the engine's loop.
    #[test]
    fn a_running_engine_takes_added_forwards_and_lets_removed_ones_go() {
        let control = Arc::new(Control::new(Vec::new()).unwrap());
        let mut engine = engine_with(&control);
        let spec = fwd(Proto::Tcp, Some("127.0.0.1"), 0);
        let sockets = crate::forward::open_one(&spec).unwrap();
        let crate::forward::Local::Inet(local) = sockets[0].local.clone() else {
            unreachable!()
        };
        let port = {
            use std::os::fd::AsFd;
            let sock = sockets[0].as_fd().try_clone_to_owned().unwrap();
            std::net::TcpListener::from(sock)
                .local_addr()
                .unwrap()
                .port()
        };
        assert_eq!(local.port(), 0, "asked for any port");
        let c = Arc::clone(&control);
        assert_eq!(
            serve_while(&mut engine, move || c.add(spec, sockets).unwrap()),
            1
        );
        let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        poll_until(&mut engine, "the connection was not taken", |e| {
            e.open_flows().0 > 0
        });
        let c = Arc::clone(&control);
        serve_while(&mut engine, move || {
            assert!(c.stats().is_some_and(|s| s.open.tcp == 1));
            let flows = c.flows().unwrap();
            assert_eq!(flows.len(), 1);
            assert_eq!(flows[0].proto, "tcp");
            assert_eq!(flows[0].state, "SYN_SENT", "our SYN went to the guest");
            assert_eq!(flows[0].guest.to_string(), "10.0.2.15:80");
            assert_eq!(
                flows[0].remote.map(|r| r.ip().to_string()),
                Some("10.0.2.2".into())
            );
        });
        let c = Arc::clone(&control);
        assert!(serve_while(&mut engine, move || c.remove(1).unwrap()).is_some());
        let refused = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(engine.open_flows().0, 1, "the connection stays");
        drop(client);
        drop(engine);
        assert!(control.stats().is_none(), "no engine any more");
    }

    /// A UDP forward's socket becomes a flow with its first datagram; removed, that flow goes
    /// too and the port is free again.
    #[test]
    fn a_removed_udp_forward_closes_the_flow_its_socket_became() {
        let control = Arc::new(Control::new(Vec::new()).unwrap());
        let mut engine = engine_with(&control);
        let port = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spec = fwd(Proto::Udp, Some("127.0.0.1"), port);
        let sockets = crate::forward::open_one(&spec).unwrap();
        let c = Arc::clone(&control);
        assert_eq!(
            serve_while(&mut engine, move || c.add(spec, sockets).unwrap()),
            1
        );
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hello", ("127.0.0.1", port)).unwrap();
        poll_until(&mut engine, "the datagram was not taken", |e| {
            e.open_flows().1 > 0
        });
        assert!(std::net::UdpSocket::bind(("127.0.0.1", port)).is_err());
        let c = Arc::clone(&control);
        assert!(serve_while(&mut engine, move || c.remove(1).unwrap()).is_some());
        assert_eq!(engine.open_flows().1, 0, "the adopted flow went");
        std::net::UdpSocket::bind(("127.0.0.1", port)).expect("the port is free");
    }
}
