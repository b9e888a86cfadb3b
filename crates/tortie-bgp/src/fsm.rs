//! One BGP session, the RFC 4271 §8 finite state machine, sans-IO.
//!
//! A [`Session`] owns no socket and reads no clock: the driver feeds it [`Input`]s with the
//! current time and carries out the [`Output`]s it returns (connect, send bytes, close, report).
//! Timers are deadlines: the driver calls `process(now, Input::Tick)` once
//! [`Session::next_deadline`] has passed. One `Session` handles one TCP connection at a time;
//! during a connection collision (RFC 4271 §6.8) the driver runs a second `Session` for the
//! second connection and tells the loser [`Input::CollisionLost`].
//!
//! Restarts are automatic after a failure, as in BIRD: a session that was stopped by an error
//! waits in Idle (NOTIFICATION sent or received, hold timer) or Active (connection lost) for an
//! error wait time that starts at 5 s and doubles up to 30 s while failures come less than
//! 300 s apart (Calico's `error wait time 5,30`), then connects again. A refused connection
//! attempt is retried after `connect_retry` (RFC 4271's ConnectRetryTimer).

use std::fmt;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, GracefulRestartAddressFamily, GracefulRestartCapability,
    MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};

use crate::codec::{
    self, AS_TRANS, FrameDecoder, Message, Notification, RouteRefresh, cease, error_code,
    fsm_error, message_type, open_error,
};
use crate::types::{Family, Update};

/// Hold time while waiting for the peer's OPEN: "a large value", 4 minutes (RFC 4271 §8.2.2).
pub const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);
/// First wait before restarting after a failure.
pub const ERROR_WAIT_MIN: Duration = Duration::from_secs(5);
/// Longest wait before restarting after repeated failures.
pub const ERROR_WAIT_MAX: Duration = Duration::from_secs(30);
/// Failures further apart than this no longer count as a series (BIRD's `error forget time`).
pub const ERROR_FORGET: Duration = Duration::from_secs(300);

/// What one session is configured with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub local_as: u32,
    pub remote_as: u32,
    pub local_id: Ipv4Addr,
    /// Hold time to propose in seconds (RFC 4271 §4.2); 0 disables keepalives. 1 and 2 are
    /// not allowed by the RFC and are sent as 3.
    pub hold_time: u16,
    /// ConnectRetryTimer: delay between connection attempts (RFC 4271 §8).
    pub connect_retry: Duration,
    /// Families to negotiate with the Multiprotocol capability (RFC 4760 §8). Empty means
    /// IPv4 unicast.
    pub families: Vec<Family>,
    /// Restart time to advertise in the Graceful Restart capability (RFC 4724 §3), with the
    /// Forwarding State bit set for every family. `None`: no capability.
    pub graceful_restart: Option<u16>,
    /// Never connect; wait for the driver to hand over an accepted connection.
    pub passive: bool,
}

impl SessionConfig {
    /// A configuration with the defaults: hold time 90 s, connect retry 5 s, IPv4 unicast,
    /// no graceful restart, active.
    pub fn new(local_as: u32, remote_as: u32, local_id: Ipv4Addr) -> SessionConfig {
        SessionConfig {
            local_as,
            remote_as,
            local_id,
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            families: vec![Family::Ipv4Unicast],
            graceful_restart: None,
            passive: false,
        }
    }

    fn families(&self) -> Vec<Family> {
        if self.families.is_empty() {
            vec![Family::Ipv4Unicast]
        } else {
            self.families.clone()
        }
    }

    fn is_internal(&self) -> bool {
        self.local_as == self.remote_as
    }
}

/// Session states (RFC 4271 §8.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        })
    }
}

impl State {
    /// Whether a TCP connection is up (OpenSent, OpenConfirm, Established).
    pub fn is_connected(self) -> bool {
        matches!(
            self,
            State::OpenSent | State::OpenConfirm | State::Established
        )
    }
}

/// What the driver tells a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input<'a> {
    /// Start the session (RFC 4271 event 1); ignored unless Idle.
    ManualStart,
    /// Stop it for good (event 2): Cease / Administrative Shutdown if connected.
    ManualStop,
    /// A TCP connection is up: the outgoing one asked for with [`Output::Connect`], or an
    /// accepted one. Refused with [`Output::Disconnect`] while Idle.
    TcpConnected,
    /// The connection attempt failed or the connection broke, with the socket error.
    TcpFailed(String),
    /// Bytes read from the connection.
    Bytes(&'a [u8]),
    /// Routes to send; ignored unless Established. Families not negotiated are left out.
    Announce(Update),
    /// Ask the peer to resend a family (RFC 2918), if it supports route refresh.
    RequestRefresh(Family),
    /// This connection lost a collision (RFC 4271 §6.8): Cease / Connection Collision
    /// Resolution, and the session stays Idle.
    CollisionLost,
    /// Time passed: fire the timers whose deadline is due.
    Tick,
}

/// What a session asks of the driver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer, abandoning any attempt still pending.
    Connect,
    /// Write one whole message to the connection.
    Send(Vec<u8>),
    /// Close the connection (after writing what was sent before).
    Disconnect,
    /// The peer's OPEN was accepted: the driver checks for a collision here.
    OpenReceived { remote_id: Ipv4Addr },
    /// The session is up.
    Established(Negotiated),
    /// An UPDATE, restricted to the negotiated families.
    Received(Update),
    /// The peer asked for a family to be sent again (RFC 2918).
    RefreshRequested(Family),
    /// The session went down, or was stopped.
    Down(DownReason),
}

/// What both sides agreed on in their OPENs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// The peer's AS, from the 4-octet AS capability when present (RFC 6793 §4.1).
    pub remote_as: u32,
    pub remote_id: Ipv4Addr,
    /// The smaller of both hold times (RFC 4271 §4.2); 0 means no keepalives.
    pub hold_time: u16,
    /// A third of the hold time, whole seconds, at least 1 s (zero with hold time 0).
    pub keepalive: Duration,
    /// Families both sides advertised (RFC 4760 §8); a peer with no Multiprotocol capability
    /// carries IPv4 unicast only.
    pub families: Vec<Family>,
    /// Both sides advertised the 4-octet AS capability (RFC 6793).
    pub four_octet_as: bool,
    /// The peer accepts ROUTE-REFRESH (RFC 2918).
    pub route_refresh: bool,
    /// The peer's Graceful Restart capability (RFC 4724 §3).
    pub peer_graceful_restart: Option<PeerGracefulRestart>,
}

/// The peer's Graceful Restart capability (RFC 4724 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGracefulRestart {
    /// Seconds the peer asks us to keep its routes after the session drops.
    pub restart_time: u16,
    /// The Restart State (R) bit: the peer has just restarted.
    pub restarting: bool,
    /// Families whose Forwarding State (F) bit is set: forwarding survived the restart.
    pub preserved: Vec<Family>,
}

/// Why a session went down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// This side found an error and sent this NOTIFICATION.
    NotificationSent(Notification),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// No message from the peer within the hold time; NOTIFICATION 4/0 was sent.
    HoldTimerExpired,
    /// The connection failed, with the socket error.
    Tcp(String),
    /// Stopped by [`Input::ManualStop`].
    Stopped,
}

impl DownReason {
    /// The NOTIFICATION this side sent, if any.
    pub fn sent(&self) -> Option<Notification> {
        match self {
            DownReason::NotificationSent(n) => Some(n.clone()),
            DownReason::HoldTimerExpired => Some(Notification::hold_timer_expired()),
            _ => None,
        }
    }
}

impl fmt::Display for DownReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownReason::NotificationSent(n) => write!(f, "Error: {n}"),
            DownReason::NotificationReceived(n) => write!(f, "Received: {n}"),
            DownReason::HoldTimerExpired => f.write_str("Error: Hold Timer Expired"),
            DownReason::Tcp(e) => write!(f, "Socket: {e}"),
            DownReason::Stopped => f.write_str("Stopped"),
        }
    }
}

/// Which connection survives a collision (RFC 4271 §6.8): the one initiated by the speaker
/// with the higher BGP Identifier. `true` keeps the connection this side initiated.
///
/// Equal identifiers (possible between external peers, RFC 6286 §2.3) are resolved by AS
/// number there; this function then keeps the incoming connection.
pub fn collision_keeps_outgoing(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> bool {
    u32::from(local_id) > u32::from(remote_id)
}

/// One BGP session. See the module documentation.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    decoder: FrameDecoder,
    negotiated: Option<Negotiated>,
    last_error: Option<DownReason>,
    /// Restart by itself after a failure: set by ManualStart, cleared by ManualStop and
    /// CollisionLost.
    auto_start: bool,
    connect_retry_at: Option<Instant>,
    hold_at: Option<Instant>,
    keepalive_at: Option<Instant>,
    /// In Idle after a failure: when to start again.
    restart_at: Option<Instant>,
    error_wait: Duration,
    last_failure: Option<Instant>,
}

impl Session {
    pub fn new(config: SessionConfig) -> Session {
        Session {
            config,
            state: State::Idle,
            decoder: FrameDecoder::new(),
            negotiated: None,
            last_error: None,
            auto_start: false,
            connect_retry_at: None,
            hold_at: None,
            keepalive_at: None,
            restart_at: None,
            error_wait: ERROR_WAIT_MIN,
            last_failure: None,
        }
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// What the OPENs agreed on, from OpenConfirm until the session goes down.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The earliest timer deadline, if any timer runs.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.connect_retry_at,
            self.hold_at,
            self.keepalive_at,
            self.restart_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Why the session last went down or why the last connection attempt failed; cleared
    /// when the session reaches Established.
    pub fn last_error(&self) -> Option<&DownReason> {
        self.last_error.as_ref()
    }

    /// Feeds one input; returns what the driver must do, in order.
    pub fn process(&mut self, now: Instant, input: Input<'_>) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::ManualStart => {
                if self.state == State::Idle {
                    self.auto_start = true;
                    self.restart_at = None;
                    self.start(now, &mut out);
                }
            }
            Input::ManualStop => self.manual_stop(&mut out),
            Input::TcpConnected => self.tcp_connected(now, &mut out),
            Input::TcpFailed(error) => self.tcp_failed(now, error, &mut out),
            Input::Bytes(bytes) => self.bytes(now, bytes, &mut out),
            Input::Announce(update) => self.announce(now, update, &mut out),
            Input::RequestRefresh(family) => {
                if self.state == State::Established
                    && let Some(n) = &self.negotiated
                    && n.route_refresh
                    && n.families.contains(&family)
                {
                    out.push(Output::Send(RouteRefresh::request(family).encode()));
                }
            }
            Input::CollisionLost => self.collision_lost(&mut out),
            Input::Tick => self.tick(now, &mut out),
        }
        out
    }

    /// Leaves Idle: connect, or wait for a connection when passive.
    fn start(&mut self, now: Instant, out: &mut Vec<Output>) {
        if self.config.passive {
            self.state = State::Active;
            self.connect_retry_at = None;
        } else {
            self.state = State::Connect;
            self.connect_retry_at = Some(now + self.config.connect_retry);
            out.push(Output::Connect);
        }
    }

    fn manual_stop(&mut self, out: &mut Vec<Output>) {
        if self.state == State::Idle && !self.auto_start {
            return;
        }
        if self.state.is_connected() {
            out.push(Output::Send(
                Notification::cease(cease::ADMINISTRATIVE_SHUTDOWN).encode(),
            ));
        }
        if self.state != State::Idle && self.state != State::Active {
            out.push(Output::Disconnect);
        }
        self.auto_start = false;
        self.reset(State::Idle);
        self.last_error = Some(DownReason::Stopped);
        out.push(Output::Down(DownReason::Stopped));
    }

    fn collision_lost(&mut self, out: &mut Vec<Output>) {
        let was = self.state;
        self.auto_start = false;
        if was.is_connected() {
            let n = Notification::cease(cease::CONNECTION_COLLISION);
            out.push(Output::Send(n.encode()));
            out.push(Output::Disconnect);
            let reason = DownReason::NotificationSent(n);
            self.last_error = Some(reason.clone());
            out.push(Output::Down(reason));
        } else if was == State::Connect {
            out.push(Output::Disconnect);
        }
        self.reset(State::Idle);
    }

    fn tcp_connected(&mut self, now: Instant, out: &mut Vec<Output>) {
        match self.state {
            State::Connect | State::Active => {
                self.decoder.clear();
                self.connect_retry_at = None;
                out.push(Output::Send(self.open_message()));
                self.hold_at = Some(now + OPEN_HOLD_TIME);
                self.state = State::OpenSent;
            }
            // RFC 4271 §8.2.2: Idle refuses connections.
            State::Idle => out.push(Output::Disconnect),
            State::OpenSent | State::OpenConfirm | State::Established => {
                tracing::warn!(
                    state = %self.state,
                    "TcpConnected for a session that already has a connection; ignored"
                );
            }
        }
    }

    fn tcp_failed(&mut self, now: Instant, error: String, out: &mut Vec<Output>) {
        match self.state {
            State::Connect => {
                self.last_error = Some(DownReason::Tcp(error));
                self.state = State::Active;
                self.connect_retry_at = Some(now + self.config.connect_retry);
            }
            State::Active => self.last_error = Some(DownReason::Tcp(error)),
            State::OpenSent | State::OpenConfirm | State::Established => {
                out.push(Output::Disconnect);
                let reason = DownReason::Tcp(error);
                self.last_error = Some(reason.clone());
                out.push(Output::Down(reason));
                self.reset(State::Active);
                let wait = self.note_failure(now);
                if !self.config.passive {
                    self.connect_retry_at = Some(now + wait);
                }
            }
            State::Idle => {}
        }
    }

    fn bytes(&mut self, now: Instant, bytes: &[u8], out: &mut Vec<Output>) {
        if !self.state.is_connected() {
            return;
        }
        self.decoder.feed(bytes);
        while self.state.is_connected() {
            match self.decoder.next_frame() {
                Ok(Some(frame)) => self.frame(now, &frame, out),
                Ok(None) => break,
                Err(n) => self.fail(now, n, out),
            }
        }
    }

    /// Handles one whole message.
    fn frame(&mut self, now: Instant, frame: &[u8], out: &mut Vec<Output>) {
        // Messages that are wrong in this state (RFC 4271 §8.2.2, subcodes RFC 6608 §4).
        let message_type = frame[18];
        let unexpected = match (self.state, message_type) {
            (_, message_type::NOTIFICATION) => None,
            (State::OpenSent, message_type::OPEN) => None,
            (State::OpenSent, _) => Some(fsm_error::UNEXPECTED_IN_OPEN_SENT),
            (State::OpenConfirm, message_type::KEEPALIVE) => None,
            (State::OpenConfirm, _) => Some(fsm_error::UNEXPECTED_IN_OPEN_CONFIRM),
            (_, message_type::OPEN) => Some(fsm_error::UNEXPECTED_IN_ESTABLISHED),
            _ => None,
        };
        if let Some(subcode) = unexpected {
            return self.fail(now, Notification::fsm(subcode), out);
        }
        let four_octet_as = self.negotiated.as_ref().is_some_and(|n| n.four_octet_as);
        let message = match codec::decode_message(frame, four_octet_as) {
            Ok(message) => message,
            Err(n) => return self.fail(now, n, out),
        };
        if let Some(n) = &self.negotiated
            && n.hold_time > 0
        {
            self.hold_at = Some(now + Duration::from_secs(u64::from(n.hold_time)));
        }
        match message {
            Message::Notification(n) => {
                out.push(Output::Disconnect);
                self.down(now, DownReason::NotificationReceived(n), out);
            }
            Message::Open(open) => self.open(now, &open, out),
            Message::Keepalive => {
                if self.state == State::OpenConfirm
                    && let Some(n) = &self.negotiated
                {
                    self.state = State::Established;
                    self.last_error = None;
                    out.push(Output::Established(n.clone()));
                }
            }
            Message::Update(mut update) => {
                let families = self.negotiated.as_ref().map(|n| n.families.clone());
                retain_families(&mut update, &families.unwrap_or_default());
                if !update.is_empty() {
                    out.push(Output::Received(update));
                }
            }
            Message::RouteRefresh(rr) => {
                // RFC 2918 §4: a family not negotiated is ignored; so are RFC 7313 BoRR/EoRR,
                // as enhanced route refresh is not advertised.
                if let (0, Some(family), Some(n)) = (rr.subtype, rr.family(), &self.negotiated)
                    && n.families.contains(&family)
                {
                    out.push(Output::RefreshRequested(family));
                }
            }
        }
    }

    /// Checks the peer's OPEN (RFC 4271 §6.2, RFC 6286 §2.2, RFC 5492) and moves to
    /// OpenConfirm.
    fn open(&mut self, now: Instant, open: &BgpOpenMessage, out: &mut Vec<Output>) {
        let capabilities = open.capabilities();
        let four_octet = capabilities.iter().find_map(|c| match c {
            BgpCapability::FourOctetAs(c) => Some(c.asn4()),
            _ => None,
        });
        let remote_as = four_octet.unwrap_or(u32::from(open.my_as()));
        if remote_as != self.config.remote_as {
            let data = match four_octet {
                Some(asn) => asn.to_be_bytes().to_vec(),
                None => open.my_as().to_be_bytes().to_vec(),
            };
            let n = Notification::new(error_code::OPEN_MESSAGE, open_error::BAD_PEER_AS, data);
            return self.fail(now, n, out);
        }
        // Zero is refused by the codec; the same identifier as ours only on internal sessions
        // (RFC 6286 §2.2), external peers may share it.
        let remote_id = open.bgp_id();
        if self.config.is_internal() && remote_id == self.config.local_id {
            let n = Notification::new(
                error_code::OPEN_MESSAGE,
                open_error::BAD_BGP_IDENTIFIER,
                remote_id.octets(),
            );
            return self.fail(now, n, out);
        }

        let mut peer_families = Vec::new();
        let mut any_mp = false;
        for c in &capabilities {
            if let BgpCapability::MultiProtocolExtensions(mp) = c {
                any_mp = true;
                peer_families.extend(codec::family_from_address_type(mp.address_type()));
            }
        }
        if !any_mp {
            peer_families.push(Family::Ipv4Unicast);
        }
        let families: Vec<Family> = self
            .config
            .families()
            .into_iter()
            .filter(|f| peer_families.contains(f))
            .collect();
        if families.is_empty() {
            // RFC 5492 §5: the data lists the capabilities the peer lacks, our MP ones.
            let data = self
                .config
                .families()
                .into_iter()
                .flat_map(|f| {
                    let (afi, safi) = codec::family_afi_safi(f);
                    let [a, b] = afi.to_be_bytes();
                    [1, 4, a, b, 0, safi]
                })
                .collect::<Vec<u8>>();
            let n = Notification::new(
                error_code::OPEN_MESSAGE,
                open_error::UNSUPPORTED_CAPABILITY,
                data,
            );
            return self.fail(now, n, out);
        }

        let hold_time = self.hold_time().min(open.hold_time());
        let keepalive = if hold_time == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(u64::from(hold_time / 3).max(1))
        };
        let peer_graceful_restart = capabilities.iter().find_map(|c| match c {
            BgpCapability::GracefulRestartCapability(gr) => Some(PeerGracefulRestart {
                restart_time: gr.time(),
                restarting: gr.restart(),
                preserved: gr
                    .address_families()
                    .iter()
                    .filter(|af| af.forwarding_state())
                    .filter_map(|af| codec::family_from_address_type(af.address_type()))
                    .collect(),
            }),
            _ => None,
        });
        let negotiated = Negotiated {
            remote_as,
            remote_id,
            hold_time,
            keepalive,
            families,
            four_octet_as: four_octet.is_some(),
            route_refresh: capabilities.iter().any(|c| {
                matches!(
                    c,
                    BgpCapability::RouteRefresh | BgpCapability::CiscoRouteRefresh
                )
            }),
            peer_graceful_restart,
        };

        out.push(Output::Send(codec::keepalive()));
        self.hold_at = (hold_time > 0).then(|| now + Duration::from_secs(u64::from(hold_time)));
        self.keepalive_at = (hold_time > 0).then(|| now + keepalive);
        self.negotiated = Some(negotiated);
        self.state = State::OpenConfirm;
        out.push(Output::OpenReceived { remote_id });
    }

    fn announce(&mut self, now: Instant, mut update: Update, out: &mut Vec<Output>) {
        let Some(n) = self
            .negotiated
            .as_ref()
            .filter(|_| self.state == State::Established)
        else {
            return;
        };
        retain_families(&mut update, &n.families);
        if update.is_empty() {
            return;
        }
        match codec::encode_update(&update, n.four_octet_as) {
            Ok(messages) => {
                if !messages.is_empty() && n.hold_time > 0 {
                    // Sending an UPDATE restarts the KeepaliveTimer (RFC 4271 §8.2.2).
                    self.keepalive_at = Some(now + n.keepalive);
                }
                out.extend(messages.into_iter().map(Output::Send));
            }
            Err(error) => {
                tracing::error!(%error, "cannot encode routes for the peer; update not sent");
            }
        }
    }

    fn tick(&mut self, now: Instant, out: &mut Vec<Output>) {
        let due = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if due(self.hold_at) {
            let n = Notification::hold_timer_expired();
            out.push(Output::Send(n.encode()));
            out.push(Output::Disconnect);
            return self.down(now, DownReason::HoldTimerExpired, out);
        }
        if due(self.keepalive_at)
            && let Some(n) = &self.negotiated
        {
            out.push(Output::Send(codec::keepalive()));
            self.keepalive_at = Some(now + n.keepalive);
        }
        if due(self.connect_retry_at) {
            match self.state {
                State::Connect | State::Active if !self.config.passive => {
                    self.state = State::Connect;
                    self.connect_retry_at = Some(now + self.config.connect_retry);
                    out.push(Output::Connect);
                }
                _ => self.connect_retry_at = None,
            }
        }
        if due(self.restart_at) {
            self.restart_at = None;
            if self.state == State::Idle && self.auto_start {
                self.start(now, out);
            }
        }
    }

    /// This side found an error: send the NOTIFICATION, close, go down.
    fn fail(&mut self, now: Instant, n: Notification, out: &mut Vec<Output>) {
        out.push(Output::Send(n.encode()));
        out.push(Output::Disconnect);
        self.down(now, DownReason::NotificationSent(n), out);
    }

    /// The connection is closed (Disconnect already emitted): report and wait in Idle for the
    /// error wait time.
    fn down(&mut self, now: Instant, reason: DownReason, out: &mut Vec<Output>) {
        self.last_error = Some(reason.clone());
        out.push(Output::Down(reason));
        self.reset(State::Idle);
        if self.auto_start {
            let wait = self.note_failure(now);
            self.restart_at = Some(now + wait);
        }
    }

    /// Drops everything about the connection and enters `state`.
    fn reset(&mut self, state: State) {
        self.state = state;
        self.decoder.clear();
        self.negotiated = None;
        self.hold_at = None;
        self.keepalive_at = None;
        self.connect_retry_at = None;
        self.restart_at = None;
    }

    /// Counts a failure and returns how long to wait before trying again.
    fn note_failure(&mut self, now: Instant) -> Duration {
        self.error_wait = match self.last_failure {
            Some(t) if now.saturating_duration_since(t) < ERROR_FORGET => {
                (self.error_wait * 2).min(ERROR_WAIT_MAX)
            }
            _ => ERROR_WAIT_MIN,
        };
        self.last_failure = Some(now);
        self.error_wait
    }

    fn hold_time(&self) -> u16 {
        match self.config.hold_time {
            1 | 2 => 3,
            t => t,
        }
    }

    /// Our OPEN (RFC 4271 §4.2) with the capabilities of RFC 4760, RFC 2918, RFC 4724 and
    /// RFC 6793.
    fn open_message(&self) -> Vec<u8> {
        let families = self.config.families();
        let mut capabilities: Vec<BgpCapability> = families
            .iter()
            .map(|&f| {
                BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
                    codec::family_address_type(f),
                ))
            })
            .collect();
        capabilities.push(BgpCapability::RouteRefresh);
        if let Some(restart_time) = self.config.graceful_restart {
            let afs: Vec<GracefulRestartAddressFamily> = families
                .iter()
                .map(|&f| GracefulRestartAddressFamily::new(true, codec::family_address_type(f)))
                .collect();
            // The restart time is a 12-bit field.
            capabilities.push(BgpCapability::GracefulRestartCapability(
                GracefulRestartCapability::new(false, false, restart_time.min(0x0fff), afs),
            ));
        }
        capabilities.push(BgpCapability::FourOctetAs(FourOctetAsCapability::new(
            self.config.local_as,
        )));
        let my_as = u16::try_from(self.config.local_as).unwrap_or(AS_TRANS as u16);
        let open = BgpOpenMessage::new(
            my_as,
            self.hold_time(),
            self.config.local_id,
            vec![BgpOpenMessageParameter::Capabilities(capabilities.into())],
        );
        codec::encode_open(&open).expect("an OPEN with a handful of capabilities fits 4096 bytes")
    }
}

/// Keeps only the routes and End-of-RIB markers of `families`.
fn retain_families(update: &mut Update, families: &[Family]) {
    update
        .announced
        .retain(|(p, _)| families.contains(&Family::of(p)));
    update
        .withdrawn
        .retain(|p| families.contains(&Family::of(p)));
    update.end_of_rib.retain(|f| families.contains(f));
}

#[cfg(test)]
#[path = "fsm_tests.rs"]
mod tests;
