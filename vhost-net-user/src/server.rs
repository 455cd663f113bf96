//! Accepting frontends: one listening socket for the life of the process, a fresh device per
//! connection.
//!
//! The listening socket stays open between connections, so a QEMU that connects while the
//! previous one is being torn down waits in the backlog instead of failing. Each connection
//! gets a new [`NetBackend`] and daemon (so a new exit eventfd), and runs through the QEMU 7.2
//! [`relay`]: QEMU talks to the relay, the relay to the daemon over a socket in a private
//! directory.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;

use netcore::EngineOptions;
use netcore::capture::SharedCapture;
use policy::NetPlan;
use vhost::vhost_user::{Error as VhostUserError, Listener};
use vhost_user_backend::{Error as DaemonError, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

use crate::device::{CONTROL_EVENT, HOST_EVENT, MODERATION_EVENT, NetBackend};
use crate::error::error_chain;
use crate::relay;

/// How long the next frontend waits after a connection that ended before guest memory came.
const EARLY_END_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// What every connection is served with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub plan: NetPlan,
    pub engine: EngineOptions,
    pub one_off: bool,
    pub capture: Option<SharedCapture>,
    /// Queue pairs the ring link offers (`--max-queue-pairs`).
    pub max_queue_pairs: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("accepting a frontend connection failed")]
    Accept(#[source] io::Error),
    #[error("creating the internal daemon socket failed")]
    InternalSocket(#[source] io::Error),
    #[error("setting up the vhost-user device failed")]
    Device(#[source] io::Error),
    /// The daemon's error type does not implement `std::error::Error`, so it is shown inline.
    #[error("the vhost-user daemon failed: {0}")]
    Daemon(DaemonError),
}

/// A connected pair for one connection: the daemon's listener with our end already in its
/// backlog. The socket lives in a directory only we can enter, and both are removed before
/// the daemon accepts, so nothing is left behind even if the process is killed.
fn daemon_socket() -> io::Result<(Listener, UnixStream)> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("vhost-net-user.{}.{nanos:x}", std::process::id()));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let path = dir.join("daemon.sock");
    let result = Listener::new(&path, true)
        .map_err(io::Error::other)
        .and_then(|listener| Ok((listener, UnixStream::connect(&path)?)));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    result
}

/// Serves frontends that connect to `listener` until `--one-off` says stop after the first.
pub fn serve(listener: UnixListener, config: &ServeConfig) -> Result<(), ServeError> {
    accept_loop(&listener, config, "frontend", serve_connection)
}

/// Serves the one frontend already connected to `frontend` (passt's `--fd`) until it
/// disconnects.
pub fn serve_connected(frontend: UnixStream, config: &ServeConfig) -> Result<(), ServeError> {
    serve_logged(frontend, config, "frontend", serve_connection);
    Ok(())
}

/// Accepts `kind` frontends on `listener` one at a time and serves each with `serve_one`
/// until it disconnects; stops after the first with `--one-off`. A connection that ends with
/// an error is logged, and the next one is awaited.
pub(crate) fn accept_loop<E: std::error::Error>(
    listener: &UnixListener,
    config: &ServeConfig,
    kind: &str,
    mut serve_one: impl FnMut(UnixStream, &ServeConfig) -> Result<(), E>,
) -> Result<(), ServeError> {
    loop {
        let frontend = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ServeError::Accept(e)),
        };
        serve_logged(frontend, config, kind, &mut serve_one);
        if config.one_off {
            return Ok(());
        }
    }
}

/// Serves one `kind` frontend with `serve_one`, saying when it came and went (and how).
pub(crate) fn serve_logged<E: std::error::Error>(
    frontend: UnixStream,
    config: &ServeConfig,
    kind: &str,
    serve_one: impl FnOnce(UnixStream, &ServeConfig) -> Result<(), E>,
) {
    log::info!("{kind} connected");
    match serve_one(frontend, config) {
        Ok(()) => log::info!("{kind} disconnected"),
        Err(e) => log::error!("{kind} connection ended with an error: {}", error_chain(&e)),
    }
}

fn serve_connection(frontend: UnixStream, config: &ServeConfig) -> Result<(), ServeError> {
    let backend = NetBackend::new(
        config.plan.clone(),
        config.engine.clone(),
        config.capture.clone(),
        config.max_queue_pairs,
    )
    .map_err(ServeError::Device)?;
    let exit = backend.exit_notifier().map_err(ServeError::Device)?;
    let backend = Arc::new(backend);
    let mut daemon = VhostUserDaemon::new(
        "vhost-net-user".into(),
        backend.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(ServeError::Daemon)?;
    // One worker thread per queue pair serves its two vrings and its engine's host sockets.
    for (index, handler) in daemon.get_epoll_handlers().iter().enumerate() {
        let Some(fds) = backend.pair_fds(index) else {
            break;
        };
        let watch = |fd, event: u16| {
            handler
                .register_listener(fd, EventSet::IN, u64::from(event))
                .map_err(ServeError::Device)
        };
        watch(fds.host, HOST_EVENT)?;
        watch(fds.moderation, MODERATION_EVENT)?;
        if let Some(fd) = fds.control {
            watch(fd, CONTROL_EVENT)?;
        }
    }

    let (mut listener, daemon_side) = daemon_socket().map_err(ServeError::InternalSocket)?;
    let relay = relay::spawn(frontend, daemon_side, config.max_queue_pairs)
        .map_err(ServeError::InternalSocket)?;
    daemon.start(&mut listener).map_err(ServeError::Daemon)?;
    drop(listener);
    let result = match daemon.wait() {
        Ok(()) => Ok(()),
        Err(DaemonError::HandleRequest(
            VhostUserError::Disconnected
            | VhostUserError::PartialMessage
            | VhostUserError::SocketBroken(_),
        )) => Ok(()),
        Err(e) => Err(ServeError::Daemon(e)),
    };
    // Wake the worker threads so dropping the daemon can join them.
    if let Err(e) = exit.notify() {
        log::warn!("stopping the vring worker failed: {e}");
    }
    drop(daemon);
    let outcome = relay.join();
    for fd in backend.take_handed_out() {
        #[allow(unsafe_code)]
        // SAFETY: the daemon is dropped, so its worker threads, which took these descriptors
        // with `into_raw_fd` and never close them, are joined; nothing else has them.
        unsafe {
            crate::sys::close_abandoned(fd)
        };
    }
    log_summary(&backend);
    if !outcome.memory_table {
        // QEMU gives up on a connection it will not use (more queue pairs wanted than we
        // serve, say) and reconnects at once, for ever: bound that loop to a few a second.
        std::thread::sleep(EARLY_END_BACKOFF);
    }
    result
}

/// The engines' `key=value` statistics summed over the queue pairs, then the rings' under
/// `ring.`; with several pairs, the frames both ways of each pair that carried any
/// (`pairN.tx`, `pairN.rx`), which show whether the guest spread its traffic.
fn log_summary(backend: &NetBackend) {
    let mut stats: Option<netcore::engine::Stats> = None;
    let mut ring = crate::ring::RingCounters::default();
    let mut per_pair = String::new();
    backend.with_pairs(|index, pair| {
        let pair_stats = pair.engine().stats();
        match &mut stats {
            Some(sum) => sum.merge(&pair_stats),
            None => stats = Some(pair_stats),
        }
        ring.add(&pair.ring_counters());
        let used = pair_stats.engine.tx_frames + pair_stats.engine.rx_frames > 0;
        if backend.queue_pairs() > 1 && used {
            use std::fmt::Write as _;
            let _ = write!(
                per_pair,
                " pair{index}.tx={} pair{index}.rx={}",
                pair_stats.engine.tx_frames, pair_stats.engine.rx_frames
            );
        }
    });
    let crate::ring::RingCounters {
        bad_tx_chains,
        bad_rx_chains,
        late_tx,
        late_rx,
        late_interrupts,
        tx_streams,
    } = ring;
    log::info!(
        "connection summary: {} ring.bad_tx_chains={bad_tx_chains} \
         ring.bad_rx_chains={bad_rx_chains} ring.late_tx={late_tx} ring.late_rx={late_rx} \
         ring.late_interrupts={late_interrupts} ring.tx_streams={tx_streams}{per_pair}",
        stats.unwrap_or_default()
    );
}
