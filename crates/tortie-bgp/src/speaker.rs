//! The tokio driver: sockets, timers and the one task that owns every session and the RIB.
//!
//! Shape: a single control task holds the sans-IO [`Session`]s (one per peer, plus a second
//! one while a connection collision is being resolved) and the [`Rib`]. Small tasks only move
//! bytes: one accepts connections, one per connection reads, one per connection writes, one per
//! connection attempt connects. Everything they learn comes back to the control task as an
//! [`Event`], so the protocol logic runs in one place, in order, with no locks.
//!
//! Sockets come from a [`SocketFactory`], so an agent running in one network namespace can
//! speak BGP from another (the socket's namespace is fixed when it is created).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::filter::Filter;
use crate::fsm::{DownReason, Input, Output, Session, SessionConfig, State};
use crate::rib::{NextHopMode, PeerInfo, Rib, RibChanges, Source};
use crate::types::{Family, PathAttrs};

/// Calico's BIRD template: `connect retry time 5`.
pub const CONNECT_RETRY: Duration = Duration::from_secs(5);
/// How long one TCP connect may take: less than [`CONNECT_RETRY`], so an attempt to a silent
/// peer ends with its own error (shown in the status) before the next one replaces it.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// BIRD's default graceful restart time, which Calico keeps (`nodeMeshMaxRestartTime`).
pub const DEFAULT_RESTART_TIME: u16 = 120;

/// Makes unconnected TCP sockets of a domain (IPv4 or IPv6), in whatever network namespace
/// the speaker should use.
pub type SocketFactory = Arc<dyn Fn(Domain) -> io::Result<Socket> + Send + Sync>;

/// Sockets in the caller's own network namespace.
pub fn local_sockets() -> SocketFactory {
    Arc::new(|domain| Socket::new(domain, Type::STREAM, Some(Protocol::TCP)))
}

/// What the speaker is, independent of its peers.
#[derive(Clone)]
pub struct SpeakerConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    /// Where to accept connections; `None` = only connect out.
    pub listen_port: Option<u16>,
    /// `Some` makes this speaker a route reflector with that cluster id.
    pub cluster_id: Option<Ipv4Addr>,
    /// The source address of outgoing IPv4 sessions and the IPv4 next hop for "self".
    pub local_v4: Option<Ipv4Addr>,
    /// The same for IPv6.
    pub local_v6: Option<Ipv6Addr>,
    pub sockets: SocketFactory,
}

impl fmt::Debug for SpeakerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpeakerConfig")
            .field("local_as", &self.local_as)
            .field("router_id", &self.router_id)
            .field("listen_port", &self.listen_port)
            .field("cluster_id", &self.cluster_id)
            .field("local_v4", &self.local_v4)
            .field("local_v6", &self.local_v6)
            .finish_non_exhaustive()
    }
}

/// How a peer came to be configured; `node status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerKind {
    /// Calico's node-to-node mesh.
    Mesh,
    /// A BGPPeer for every node.
    Global,
    /// A BGPPeer for some nodes.
    NodeSpecific,
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PeerKind::Mesh => "node-to-node mesh",
            PeerKind::Global => "global",
            PeerKind::NodeSpecific => "node specific",
        })
    }
}

/// One configured peer.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerConfig {
    pub addr: IpAddr,
    pub port: u16,
    pub remote_as: u32,
    /// Overrides the speaker's AS for this session (BGPPeer `localASNumber`).
    pub local_as: Option<u32>,
    /// Wait for the peer to connect (Calico's mesh: the node with the lower IP waits).
    pub passive: bool,
    pub password: Option<String>,
    pub rr_client: bool,
    pub next_hop: NextHopMode,
    pub families: Vec<Family>,
    pub import: Filter,
    pub export: Filter,
    pub hold_time: u16,
    /// Graceful restart time to advertise; `None` = no graceful restart.
    pub graceful_restart: Option<u16>,
    pub kind: PeerKind,
}

impl PeerConfig {
    /// A peer with Calico's defaults: both families, hold time 90, graceful restart 120 s.
    pub fn new(addr: IpAddr, remote_as: u32, kind: PeerKind) -> PeerConfig {
        PeerConfig {
            addr,
            port: 179,
            remote_as,
            local_as: None,
            passive: false,
            password: None,
            rr_client: false,
            next_hop: NextHopMode::Auto,
            families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
            import: Filter::default(),
            export: Filter::default(),
            hold_time: 90,
            graceful_restart: Some(DEFAULT_RESTART_TIME),
            kind,
        }
    }
}

/// A peer's state as `node status` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    pub addr: IpAddr,
    pub kind: PeerKind,
    /// The RFC 4271 state.
    pub state: State,
    /// When the state last changed.
    pub since: SystemTime,
    /// The last error (a NOTIFICATION or a socket error), if the session is not up.
    pub last_error: Option<String>,
    /// Prefixes received from the peer / accepted by import / advertised to it.
    pub received: usize,
    pub accepted: usize,
    pub advertised: usize,
    /// The local address of the current or last connection.
    pub local_addr: Option<SocketAddr>,
    /// Established, and the peer has sent End-of-RIB for every family (its whole table).
    pub synced: bool,
    /// A TCP MD5 password is configured for the peer (on the listener and outgoing sockets).
    pub password: bool,
}

impl PeerStatus {
    /// BIRD-style info column: the state, then the reason it is not up.
    pub fn info(&self) -> String {
        match (&self.state, &self.last_error) {
            (State::Established, _) | (_, None) => self.state.to_string(),
            (s, Some(e)) => format!("{s} {e}"),
        }
    }
}

/// The speaker's whole status.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpeakerStatus {
    /// Sorted by address.
    pub peers: Vec<PeerStatus>,
    /// Prefixes in the Loc-RIB.
    pub loc_rib: usize,
}

/// A change of the best route to a prefix learned from a peer: `Some(next hop)` = install or
/// replace, `None` = remove (withdrawn, or now locally originated).
pub type RouteChange = (IpNet, Option<IpAddr>);

enum Command {
    SetPeers(Vec<PeerConfig>),
    SetLocal(BTreeMap<IpNet, Arc<PathAttrs>>),
    Stop(oneshot::Sender<()>),
}

/// A running speaker. Dropping it stops every session at once (no NOTIFICATION); prefer
/// [`Speaker::shutdown`].
#[derive(Debug)]
pub struct Speaker {
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<SpeakerStatus>,
    task: Option<JoinHandle<()>>,
    listen_addrs: Vec<SocketAddr>,
}

impl Speaker {
    /// Binds the listeners and starts the control task. Best-route changes arrive on the
    /// returned receiver, in order, batched.
    pub async fn start(
        config: SpeakerConfig,
    ) -> io::Result<(Speaker, mpsc::UnboundedReceiver<Vec<RouteChange>>)> {
        let mut listeners = Vec::new();
        if let Some(port) = config.listen_port {
            listeners.push(listen(&config.sockets, Domain::IPV4, port)?);
            match listen(&config.sockets, Domain::IPV6, port) {
                Ok(l) => listeners.push(l),
                Err(e) => tracing::debug!(error = %e, "no IPv6 BGP listener"),
            }
        }
        let listen_addrs = listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (routes_tx, routes) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(SpeakerStatus::default());
        let rib = Rib::new(config.local_as, config.router_id, config.cluster_id);
        let mut accept_tasks = Vec::new();
        let mut md5_fds = Vec::new();
        for l in listeners {
            let l = TcpListener::from_std(l)?;
            md5_fds.push(ListenerKey::of(&l));
            accept_tasks.push(AbortOnDrop(tokio::spawn(accept_loop(
                Arc::new(l),
                events_tx.clone(),
            ))));
        }
        let control = Control {
            config,
            rib,
            peers: BTreeMap::new(),
            conns: HashMap::new(),
            next_conn: 0,
            events_tx,
            routes_tx,
            status_tx,
            listeners: md5_fds,
            _accept_tasks: accept_tasks,
        };
        let task = tokio::spawn(control.run(command_rx, events));
        Ok((
            Speaker {
                commands,
                status,
                task: Some(task),
                listen_addrs,
            },
            routes,
        ))
    }

    /// The addresses the speaker accepts connections on.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.listen_addrs
    }

    /// Replaces the peer set. Unchanged peers keep their sessions; changed ones restart.
    pub fn set_peers(&self, peers: Vec<PeerConfig>) {
        let _ = self.commands.send(Command::SetPeers(peers));
    }

    /// Replaces the set of locally originated routes.
    pub fn set_local_routes(&self, routes: BTreeMap<IpNet, Arc<PathAttrs>>) {
        let _ = self.commands.send(Command::SetLocal(routes));
    }

    /// The status, updated as sessions change.
    pub fn status(&self) -> watch::Receiver<SpeakerStatus> {
        self.status.clone()
    }

    /// Stops every session with a Cease NOTIFICATION and waits for the control task.
    pub async fn shutdown(mut self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(5), rx).await;
        }
        if let Some(t) = self.task.take() {
            t.abort();
            // Wait until the control task is gone (its sessions and accept tasks dropped),
            // so a speaker started next finds the port as free as the kernel allows.
            let _ = t.await;
        }
    }
}

impl Drop for Speaker {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listening socket's descriptor, for setting per-peer MD5 keys on it.
struct ListenerKey {
    fd: std::os::fd::RawFd,
    v6: bool,
}

impl ListenerKey {
    fn of(l: &TcpListener) -> ListenerKey {
        use std::os::fd::AsRawFd;
        ListenerKey {
            fd: l.as_raw_fd(),
            v6: l.local_addr().is_ok_and(|a| a.is_ipv6()),
        }
    }
}

impl std::os::fd::AsRawFd for ListenerKey {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }
}

fn listen(sockets: &SocketFactory, domain: Domain, port: u16) -> io::Result<std::net::TcpListener> {
    let s = sockets(domain)?;
    s.set_reuse_address(true)?;
    let addr: SocketAddr = if domain == Domain::IPV6 {
        s.set_only_v6(true)?;
        (Ipv6Addr::UNSPECIFIED, port).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, port).into()
    };
    s.bind(&addr.into())
        .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

async fn accept_loop(l: Arc<TcpListener>, events: mpsc::UnboundedSender<Event>) {
    loop {
        match l.accept().await {
            Ok((stream, from)) => {
                if events.send(Event::Accepted(stream, from)).is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a BGP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

type ConnId = u64;

enum Event {
    Accepted(TcpStream, SocketAddr),
    Connected {
        peer: IpAddr,
        attempt: u64,
        result: io::Result<TcpStream>,
    },
    Read {
        conn: ConnId,
        data: Vec<u8>,
    },
    Closed {
        conn: ConnId,
        error: String,
    },
}

/// One live TCP connection.
struct Conn {
    peer: IpAddr,
    /// Dropping the sender lets the writer flush what is queued and close.
    writer: Option<mpsc::UnboundedSender<Vec<u8>>>,
    _reader: AbortOnDrop,
    local: Option<SocketAddr>,
}

/// Which of a peer's sessions an output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Main,
    /// The second connection of a collision.
    Second,
}

struct Peer {
    cfg: PeerConfig,
    session: Session,
    conn: Option<ConnId>,
    second: Option<(Session, ConnId)>,
    attempt: u64,
    connecting: Option<AbortOnDrop>,
    since: SystemTime,
    last_state: State,
    established: bool,
    last_error: Option<String>,
    /// Graceful restart: the peer's stale routes are dropped at this time.
    stale_until: Option<Instant>,
    local_addr: Option<SocketAddr>,
    /// Families the peer has sent End-of-RIB for since the session came up.
    end_of_rib: Vec<Family>,
    /// The restart time of the peer's Graceful Restart capability on the current session,
    /// kept from Established: by the time the driver sees `Output::Down` the session has
    /// already reset and forgotten what was negotiated.
    peer_restart_time: Option<u16>,
    /// Whether the main connection is one we opened (for collision resolution).
    main_outgoing: bool,
}

struct Control {
    config: SpeakerConfig,
    rib: Rib,
    peers: BTreeMap<IpAddr, Peer>,
    conns: HashMap<ConnId, Conn>,
    next_conn: ConnId,
    events_tx: mpsc::UnboundedSender<Event>,
    routes_tx: mpsc::UnboundedSender<Vec<RouteChange>>,
    status_tx: watch::Sender<SpeakerStatus>,
    listeners: Vec<ListenerKey>,
    _accept_tasks: Vec<AbortOnDrop>,
}

/// IPv4-mapped IPv6 addresses (from a dual-stack accept) as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Control {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut events: mpsc::UnboundedReceiver<Event>,
    ) {
        loop {
            let deadline = self.next_deadline();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::SetPeers(p)) => self.set_peers(p),
                    Some(Command::SetLocal(r)) => {
                        let ch = self.rib.set_local(r);
                        self.dispatch(ch);
                    }
                    Some(Command::Stop(done)) => {
                        self.set_peers(Vec::new());
                        // Let the writers flush their NOTIFICATIONs.
                        self.conns.clear();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let _ = done.send(());
                        return;
                    }
                    None => return,
                },
                Some(ev) = events.recv() => {
                    self.on_event(ev);
                    // Drain what else is queued before publishing status once. In between,
                    // let the tasks each event woke run: above all the writers of the
                    // UPDATEs it queued, which the runtime keeps on this worker and would
                    // otherwise start only after the whole batch, so that routes flow on
                    // while more arrive and the queues stay short.
                    let mut n = 0;
                    while n < 1024 {
                        tokio::task::yield_now().await;
                        match events.try_recv() {
                            Ok(ev) => self.on_event(ev),
                            Err(_) => break,
                        }
                        n += 1;
                    }
                }
                () = sleep_until_opt(deadline) => self.on_timers(),
            }
            self.publish();
            // The same after a command or the timers (and without it this task would only
            // yield when tokio's cooperative budget runs out, 128 rounds of this loop).
            tokio::task::yield_now().await;
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let mut best: Option<Instant> = None;
        let mut consider = |d: Option<std::time::Instant>| {
            if let Some(d) = d {
                let d = Instant::from_std(d);
                best = Some(best.map_or(d, |b| b.min(d)));
            }
        };
        for p in self.peers.values() {
            consider(p.session.next_deadline());
            if let Some((s, _)) = &p.second {
                consider(s.next_deadline());
            }
            consider(p.stale_until.map(Instant::into_std));
        }
        best
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        let addrs: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in addrs {
            self.feed(addr, Slot::Main, Input::Tick);
            if self.peers.get(&addr).is_some_and(|p| p.second.is_some()) {
                self.feed(addr, Slot::Second, Input::Tick);
            }
            let expired = self
                .peers
                .get(&addr)
                .and_then(|p| p.stale_until)
                .is_some_and(|t| t <= now);
            if expired {
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.stale_until = None;
                }
                tracing::info!(peer = %addr, "graceful restart time over; dropping stale routes");
                let ch = self.rib.purge_stale(addr);
                self.dispatch(ch);
            }
        }
    }

    fn set_peers(&mut self, wanted: Vec<PeerConfig>) {
        let mut wanted: BTreeMap<IpAddr, PeerConfig> =
            wanted.into_iter().map(|p| (p.addr, p)).collect();
        let existing: Vec<IpAddr> = self.peers.keys().copied().collect();
        for addr in existing {
            let keep = wanted.get(&addr) == self.peers.get(&addr).map(|p| &p.cfg);
            if keep {
                wanted.remove(&addr);
            } else {
                self.remove_peer(addr);
            }
        }
        for (addr, cfg) in wanted {
            self.add_peer(addr, cfg);
        }
    }

    fn session_config(&self, cfg: &PeerConfig) -> SessionConfig {
        SessionConfig {
            local_as: cfg.local_as.unwrap_or(self.config.local_as),
            remote_as: cfg.remote_as,
            local_id: self.config.router_id,
            hold_time: cfg.hold_time,
            connect_retry: CONNECT_RETRY,
            families: cfg.families.clone(),
            graceful_restart: cfg.graceful_restart,
            passive: cfg.passive,
        }
    }

    fn add_peer(&mut self, addr: IpAddr, cfg: PeerConfig) {
        self.set_listener_key(addr, cfg.password.as_deref());
        let session = Session::new(self.session_config(&cfg));
        tracing::info!(peer = %addr, kind = %cfg.kind, remote_as = cfg.remote_as, passive = cfg.passive, "BGP peer configured");
        self.peers.insert(
            addr,
            Peer {
                cfg,
                session,
                conn: None,
                second: None,
                attempt: 0,
                connecting: None,
                since: SystemTime::now(),
                last_state: State::Idle,
                established: false,
                last_error: None,
                stale_until: None,
                local_addr: None,
                end_of_rib: Vec::new(),
                peer_restart_time: None,
                main_outgoing: false,
            },
        );
        self.feed(addr, Slot::Main, Input::ManualStart);
    }

    fn remove_peer(&mut self, addr: IpAddr) {
        self.feed(addr, Slot::Main, Input::ManualStop);
        if self.peers.get(&addr).is_some_and(|p| p.second.is_some()) {
            self.feed(addr, Slot::Second, Input::ManualStop);
        }
        if let Some(p) = self.peers.remove(&addr) {
            for c in p.conn.into_iter().chain(p.second.map(|(_, c)| c)) {
                self.close(c);
            }
            if p.cfg.password.is_some() {
                self.set_listener_key(addr, None);
            }
        }
        let ch = self.rib.peer_down(addr, false);
        self.dispatch(ch);
        tracing::info!(peer = %addr, "BGP peer removed");
    }

    fn set_listener_key(&self, addr: IpAddr, password: Option<&str>) {
        for l in &self.listeners {
            if l.v6 != addr.is_ipv6() {
                continue;
            }
            if let Err(e) = crate::md5::set_key(l, addr, password.map(str::as_bytes)) {
                tracing::warn!(peer = %addr, error = %e, "cannot set the BGP password on the listener");
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Accepted(stream, from) => self.on_accepted(stream, from),
            Event::Connected {
                peer,
                attempt,
                result,
            } => {
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                if p.attempt != attempt {
                    return;
                }
                p.connecting = None;
                match result {
                    Ok(stream) if p.conn.is_none() => {
                        let id = self.attach(peer, stream);
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.conn = Some(id);
                            p.main_outgoing = true;
                        }
                        self.feed(peer, Slot::Main, Input::TcpConnected);
                    }
                    // An accepted connection won the race meanwhile.
                    Ok(_) => {}
                    Err(e) => {
                        let msg = e.to_string();
                        // The session stays in Connect/Active and reports no Down, so the
                        // status would not say why; keep the reason for `node status`.
                        p.last_error = Some(DownReason::Tcp(msg.clone()).to_string());
                        self.feed(peer, Slot::Main, Input::TcpFailed(msg));
                    }
                }
            }
            Event::Read { conn, data } => {
                let Some((peer, slot)) = self.slot_of(conn) else {
                    return;
                };
                self.feed(peer, slot, Input::Bytes(&data));
            }
            Event::Closed { conn, error } => {
                let Some((peer, slot)) = self.slot_of(conn) else {
                    self.conns.remove(&conn);
                    return;
                };
                self.conns.remove(&conn);
                match slot {
                    Slot::Main => {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.conn = None;
                        }
                    }
                    Slot::Second => {
                        if let Some(p) = self.peers.get_mut(&peer) {
                            p.second = None;
                        }
                        return;
                    }
                }
                self.feed(peer, slot, Input::TcpFailed(error));
            }
        }
    }

    fn slot_of(&self, conn: ConnId) -> Option<(IpAddr, Slot)> {
        let peer = self.conns.get(&conn)?.peer;
        let p = self.peers.get(&peer)?;
        if p.conn == Some(conn) {
            Some((peer, Slot::Main))
        } else if p.second.as_ref().is_some_and(|(_, c)| *c == conn) {
            Some((peer, Slot::Second))
        } else {
            None
        }
    }

    fn on_accepted(&mut self, stream: TcpStream, from: SocketAddr) {
        let addr = canonical(from.ip());
        let Some(p) = self.peers.get(&addr) else {
            tracing::debug!(from = %from, "BGP connection from an unknown address; closing");
            return;
        };
        match p.session.state() {
            State::Idle | State::Connect | State::Active if p.conn.is_none() => {
                // Take the accepted connection; forget an outgoing attempt in flight.
                let id = self.attach(addr, stream);
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.attempt += 1;
                    p.connecting = None;
                    p.conn = Some(id);
                    p.main_outgoing = false;
                }
                if self
                    .peers
                    .get(&addr)
                    .is_some_and(|p| p.session.state() == State::Idle)
                {
                    self.feed(addr, Slot::Main, Input::ManualStart);
                }
                self.feed(addr, Slot::Main, Input::TcpConnected);
            }
            State::OpenSent | State::OpenConfirm if p.second.is_none() => {
                // A collision (RFC 4271 §6.8): run both until the OPENs say which stays.
                let mut cfg = self.session_config(&p.cfg);
                cfg.passive = true;
                let session = Session::new(cfg);
                let id = self.attach(addr, stream);
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.second = Some((session, id));
                }
                self.feed(addr, Slot::Second, Input::ManualStart);
                self.feed(addr, Slot::Second, Input::TcpConnected);
            }
            State::Established => {
                // The peer opened a new session while ours looks up: it restarted (RFC 4724
                // §4.2). Drop the old session (keeping routes if graceful restart applies) and
                // take the new connection.
                tracing::info!(peer = %addr, "new connection while Established: the peer restarted");
                if let Some(c) = p.conn {
                    self.close(c);
                }
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.conn = None;
                }
                self.feed(
                    addr,
                    Slot::Main,
                    Input::TcpFailed("peer reconnected".to_string()),
                );
                let id = self.attach(addr, stream);
                let cfg = self.peers.get(&addr).map(|p| self.session_config(&p.cfg));
                if let (Some(p), Some(cfg)) = (self.peers.get_mut(&addr), cfg) {
                    let mut cfg = cfg;
                    cfg.passive = true;
                    p.attempt += 1;
                    p.connecting = None;
                    p.session = Session::new(cfg);
                    p.conn = Some(id);
                    p.main_outgoing = false;
                }
                self.feed(addr, Slot::Main, Input::ManualStart);
                self.feed(addr, Slot::Main, Input::TcpConnected);
            }
            _ => tracing::debug!(peer = %addr, "extra BGP connection; closing"),
        }
    }

    /// Starts the reader and writer of a new connection.
    fn attach(&mut self, peer: IpAddr, stream: TcpStream) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        if let Some(p) = self.peers.get_mut(&peer) {
            p.local_addr = local;
        }
        let (mut rd, mut wr) = stream.into_split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let events = self.events_tx.clone();
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let error = loop {
                match rd.read(&mut buf).await {
                    Ok(0) => break "Connection closed by peer".to_string(),
                    Ok(n) => {
                        let data = buf[..n].to_vec();
                        if events.send(Event::Read { conn: id, data }).is_err() {
                            return;
                        }
                    }
                    Err(e) => break e.to_string(),
                }
            };
            let _ = events.send(Event::Closed { conn: id, error });
        });
        tokio::spawn(async move {
            while let Some(bytes) = rx.recv().await {
                if wr.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        });
        self.conns.insert(
            id,
            Conn {
                peer,
                writer: Some(tx),
                _reader: AbortOnDrop(reader),
                local,
            },
        );
        id
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(mut c) = self.conns.remove(&conn) {
            // The writer flushes what is queued (a NOTIFICATION), then closes.
            c.writer.take();
        }
    }

    fn connect(&mut self, addr: IpAddr) {
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        // `Output::Connect` means dial again: a pending attempt is dropped (and aborted).
        if p.conn.is_some() {
            return;
        }
        p.attempt += 1;
        let attempt = p.attempt;
        let port = p.cfg.port;
        let password = p.cfg.password.clone();
        let password_set = password.is_some();
        let source = match addr {
            IpAddr::V4(_) => self.config.local_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.config.local_v6.map(IpAddr::V6),
        };
        let sockets = self.config.sockets.clone();
        let events = self.events_tx.clone();
        let task = tokio::spawn(async move {
            let result = tokio::time::timeout(
                CONNECT_TIMEOUT,
                connect(sockets, addr, port, source, password),
            )
            .await
            .unwrap_or_else(|_| Err(connect_timed_out(password_set)));
            let _ = events.send(Event::Connected {
                peer: addr,
                attempt,
                result,
            });
        });
        p.connecting = Some(AbortOnDrop(task));
    }

    /// Feeds one input to a session and carries out what it asks for.
    fn feed(&mut self, addr: IpAddr, slot: Slot, input: Input<'_>) {
        let now = std::time::Instant::now();
        let outputs = {
            let Some(p) = self.peers.get_mut(&addr) else {
                return;
            };
            match slot {
                Slot::Main => p.session.process(now, input),
                Slot::Second => match &mut p.second {
                    Some((s, _)) => s.process(now, input),
                    None => return,
                },
            }
        };
        for out in outputs {
            self.on_output(addr, slot, out);
        }
        if let Some(p) = self.peers.get_mut(&addr) {
            let state = p.session.state();
            if state != p.last_state {
                p.last_state = state;
                p.since = SystemTime::now();
            }
        }
    }

    fn on_output(&mut self, addr: IpAddr, slot: Slot, out: Output) {
        match out {
            Output::Connect => {
                if slot == Slot::Main {
                    self.connect(addr);
                }
            }
            Output::Send(bytes) => {
                let conn = self.peers.get(&addr).and_then(|p| match slot {
                    Slot::Main => p.conn,
                    Slot::Second => p.second.as_ref().map(|(_, c)| *c),
                });
                if let Some(w) = conn
                    .and_then(|c| self.conns.get(&c))
                    .and_then(|c| c.writer.as_ref())
                {
                    let _ = w.send(bytes);
                }
            }
            Output::Disconnect => {
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                let conn = match slot {
                    Slot::Main => p.conn.take(),
                    Slot::Second => p.second.take().map(|(_, c)| c),
                };
                if let Some(c) = conn {
                    self.close(c);
                }
            }
            Output::OpenReceived { remote_id } => self.resolve_collision(addr, slot, remote_id),
            Output::Established(neg) => {
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                p.established = true;
                p.last_error = None;
                p.end_of_rib.clear();
                p.peer_restart_time = neg.peer_graceful_restart.as_ref().map(|gr| gr.restart_time);
                tracing::info!(peer = %addr, remote_id = %neg.remote_id, families = ?neg.families, "BGP session established");
                let info = PeerInfo {
                    addr,
                    local_as: p.cfg.local_as.unwrap_or(self.config.local_as),
                    remote_as: neg.remote_as,
                    remote_id: neg.remote_id,
                    local_addr_v4: self.config.local_v4,
                    local_addr_v6: self.config.local_v6,
                    rr_client: p.cfg.rr_client,
                    next_hop: p.cfg.next_hop,
                    families: neg.families.clone(),
                    import: p.cfg.import.clone(),
                    export: p.cfg.export.clone(),
                };
                let ch = self.rib.peer_up(info);
                self.dispatch(ch);
            }
            Output::Received(update) => {
                let eors = update.end_of_rib.clone();
                if let Some(p) = self.peers.get_mut(&addr) {
                    p.end_of_rib.extend(eors.iter().copied());
                }
                let ch = self.rib.update(addr, update);
                self.dispatch(ch);
                for f in eors {
                    let ch = self.rib.end_of_rib(addr, f);
                    self.dispatch(ch);
                }
            }
            Output::RefreshRequested(family) => {
                let mut all = self.rib.adj_rib_out(addr);
                all.announced.retain(|(p, _)| Family::of(p) == family);
                all.withdrawn.clear();
                all.end_of_rib = vec![family];
                self.feed(addr, Slot::Main, Input::Announce(all));
            }
            Output::Down(reason) => self.on_down(addr, slot, reason),
        }
    }

    fn on_down(&mut self, addr: IpAddr, slot: Slot, reason: DownReason) {
        let text = reason.to_string();
        let Some(p) = self.peers.get_mut(&addr) else {
            return;
        };
        if slot == Slot::Second {
            tracing::debug!(peer = %addr, reason = %text, "second connection closed");
            return;
        }
        p.last_error = Some(text.clone());
        if !p.established {
            tracing::debug!(peer = %addr, reason = %text, "BGP session not up");
            return;
        }
        p.established = false;
        // RFC 4724: keep the routes through a restart the peer announced it can do, unless
        // the session ended with a NOTIFICATION (the peer meant it).
        // Not `p.session.negotiated()`: the session reset itself before reporting Down.
        let restart = p.peer_restart_time.take();
        let keep = restart.filter(|_| {
            !matches!(
                reason,
                DownReason::NotificationReceived(_)
                    | DownReason::NotificationSent(_)
                    | DownReason::Stopped
            )
        });
        if let Some(t) = keep {
            p.stale_until = Some(Instant::now() + Duration::from_secs(u64::from(t)));
        }
        tracing::warn!(peer = %addr, reason = %text, graceful_restart = keep.is_some(), "BGP session down");
        let ch = self.rib.peer_down(addr, keep.is_some());
        self.dispatch(ch);
    }

    fn resolve_collision(&mut self, addr: IpAddr, slot: Slot, remote_id: Ipv4Addr) {
        let Some(p) = self.peers.get(&addr) else {
            return;
        };
        let Some((second, _)) = &p.second else {
            return;
        };
        // Both connections must have seen the peer's OPEN (or the other is already further).
        let other_state = match slot {
            Slot::Main => second.state(),
            Slot::Second => p.session.state(),
        };
        if !matches!(other_state, State::OpenConfirm | State::Established) {
            return;
        }
        // The second connection is always one we accepted.
        let main_outgoing = p.main_outgoing;
        let keep_outgoing = crate::fsm::collision_keeps_outgoing(self.config.router_id, remote_id);
        let lose_main = main_outgoing != keep_outgoing;
        tracing::info!(peer = %addr, keep_outgoing, "BGP connection collision resolved");
        if lose_main {
            self.feed(addr, Slot::Main, Input::CollisionLost);
            let mut old = None;
            if let Some(p) = self.peers.get_mut(&addr)
                && let Some((s, c)) = p.second.take()
            {
                old = p.conn.replace(c);
                p.session = s;
                p.main_outgoing = false;
            }
            if let Some(old) = old {
                self.close(old);
            }
        } else {
            self.feed(addr, Slot::Second, Input::CollisionLost);
        }
    }

    /// The address outgoing sessions to `peer` are bound to.
    fn source_for(&self, peer: IpAddr) -> Option<IpAddr> {
        match peer {
            IpAddr::V4(_) => self.config.local_v4.map(IpAddr::V4),
            IpAddr::V6(_) => self.config.local_v6.map(IpAddr::V6),
        }
    }

    /// Sends the RIB's per-peer updates and reports best-route changes.
    fn dispatch(&mut self, ch: RibChanges) {
        for (peer, update) in ch.to_peers {
            if !update.is_empty() {
                self.feed(peer, Slot::Main, Input::Announce(update));
            }
        }
        if ch.best.is_empty() {
            return;
        }
        let changes: Vec<RouteChange> = ch
            .best
            .into_iter()
            .map(|(prefix, best)| {
                let nh = best.and_then(|b| match b.source {
                    Source::Peer(_) => Some(b.attrs.next_hop),
                    Source::Local => None,
                });
                (prefix, nh)
            })
            .collect();
        let _ = self.routes_tx.send(changes);
    }

    fn publish(&self) {
        let peers = self
            .peers
            .iter()
            .map(|(addr, p)| PeerStatus {
                addr: *addr,
                kind: p.cfg.kind,
                state: p.session.state(),
                since: p.since,
                last_error: p.last_error.clone(),
                received: self.rib.received(*addr),
                accepted: self.rib.accepted(*addr),
                advertised: self.rib.advertised(*addr),
                local_addr: p
                    .conn
                    .and_then(|c| self.conns.get(&c))
                    .and_then(|c| c.local)
                    .or(p.local_addr)
                    .or_else(|| self.source_for(*addr).map(|ip| SocketAddr::new(ip, 0))),
                synced: p.established
                    && p.session
                        .negotiated()
                        .is_some_and(|n| n.families.iter().all(|f| p.end_of_rib.contains(f))),
                password: p.cfg.password.is_some(),
            })
            .collect();
        let status = SpeakerStatus {
            peers,
            loc_rib: self.rib.loc_rib_len(),
        };
        self.status_tx.send_if_modified(|cur| {
            let changed = *cur != status;
            if changed {
                *cur = status;
            }
            changed
        });
    }
}

/// The error of a connection attempt that got no answer within [`CONNECT_TIMEOUT`]. With a
/// TCP MD5 password the kernel silently drops segments whose signature does not match, so a
/// wrong password looks exactly like this; say so.
fn connect_timed_out(password_set: bool) -> io::Error {
    let msg = if password_set {
        "Connection timed out (a TCP MD5 password is set for this peer: a password mismatch \
         shows up like this)"
    } else {
        "Connection timed out"
    };
    io::Error::new(io::ErrorKind::TimedOut, msg)
}

/// Opens a TCP connection from `source` with an optional MD5 key.
async fn connect(
    sockets: SocketFactory,
    addr: IpAddr,
    port: u16,
    source: Option<IpAddr>,
    password: Option<String>,
) -> io::Result<TcpStream> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let s = sockets(domain)?;
    if let Some(pw) = &password {
        crate::md5::set_key(&s, addr, Some(pw.as_bytes()))?;
    }
    if let Some(src) = source {
        s.bind(&SocketAddr::new(src, 0).into())
            .map_err(|e| io::Error::new(e.kind(), format!("cannot bind to {src}: {e}")))?;
    }
    s.set_nonblocking(true)?;
    let std: std::net::TcpStream = s.into();
    let socket = tokio::net::TcpSocket::from_std_stream(std);
    socket.connect(SocketAddr::new(addr, port)).await
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Routes originated for `prefixes` with this speaker as next hop (filled per peer by the RIB).
pub fn originate(prefixes: impl IntoIterator<Item = IpNet>) -> BTreeMap<IpNet, Arc<PathAttrs>> {
    let v4 = Arc::new(PathAttrs::local(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    let v6 = Arc::new(PathAttrs::local(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
    prefixes
        .into_iter()
        .map(|p| {
            let a = match p {
                IpNet::V4(_) => v4.clone(),
                IpNet::V6(_) => v6.clone(),
            };
            (p, a)
        })
        .collect()
}
