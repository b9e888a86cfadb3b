//! BGP-4 wire codec: message framing (RFC 4271 §4.1), decoding with the NOTIFICATION that
//! RFC 4271 §6 prescribes for each error, and the conversion between UPDATE messages and
//! [`Update`].
//!
//! Parsing and serializing the message bodies is done by `netgauze-bgp-pkt`. Around it sits a
//! little glue, each piece explained where it lives:
//!
//! - [`FrameDecoder`] checks the marker and the length before anything is parsed: netgauze
//!   accepts UPDATEs up to 65535 bytes (RFC 8654 extended messages), which this speaker never
//!   negotiates, so RFC 4271's 4096-byte limit is enforced here.
//! - OPEN optional parameters are split by hand and each capability is handed to netgauze on
//!   its own, so that a capability netgauze cannot parse is skipped (RFC 5492 §3) instead of
//!   derailing the rest (netgauze's lenient mode loses the TLV boundary after a malformed
//!   capability).
//! - UPDATEs are checked attribute by attribute (RFC 4271 §6.3) before netgauze sees them:
//!   netgauze maps most errors to coarse subcodes with an empty data field, has no notion of
//!   "missing well-known attribute", and would reset the session over attributes this speaker
//!   does not use. Attributes this speaker does not use are dropped before parsing.
//! - NOTIFICATION and ROUTE-REFRESH bodies are read and written by hand: netgauze's typed
//!   NOTIFICATION cannot carry codes or subcodes it does not know, and its ROUTE-REFRESH parser
//!   rejects AFI/SAFI pairs that RFC 2918 §4 says to ignore.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use netgauze_bgp_pkt::BgpMessage;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::community::{Community, LargeCommunity};
use netgauze_bgp_pkt::nlri::{Ipv4Unicast, Ipv4UnicastAddress, Ipv6Unicast, Ipv6UnicastAddress};
use netgauze_bgp_pkt::notification::UpdateMessageError;
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};
use netgauze_bgp_pkt::path_attribute::{
    As2PathSegment, As4Path, As4PathSegment, AsPath, AsPathSegmentType, AtomicAggregate, ClusterId,
    ClusterList, Communities, LargeCommunities, LocalPreference, MpReach, MpUnreach,
    MultiExitDiscriminator, NextHop, Origin as NgOrigin, Originator, PathAttribute,
    PathAttributeValue,
};
use netgauze_bgp_pkt::update::BgpUpdateMessage;
use netgauze_bgp_pkt::wire::deserializer::BgpParsingContext;
use netgauze_parse_utils::WritablePdu;
use netgauze_parse_utils::reader::SliceReader;
use netgauze_parse_utils::traits::{ParseFrom, ParseFromWithOneInput};

use crate::types::{AsSegment, Family, Origin, PathAttrs, Update};

/// Length of the fixed message header: marker, length, type (RFC 4271 §4.1).
pub const HEADER_LEN: usize = 19;
/// Largest message this speaker sends or accepts (RFC 4271 §4.1; RFC 8654 is not negotiated).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// The only BGP version spoken (RFC 4271 §4.2).
pub const BGP_VERSION: u8 = 4;
/// AS_TRANS, sent in 2-octet AS fields in place of a 4-octet ASN (RFC 6793 §9).
pub const AS_TRANS: u32 = 23456;

/// Message type codes (RFC 4271 §4.1, RFC 2918 §3).
pub mod message_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// NOTIFICATION error codes (RFC 4271 §4.5, RFC 7313 §5).
pub mod error_code {
    pub const MESSAGE_HEADER: u8 = 1;
    pub const OPEN_MESSAGE: u8 = 2;
    pub const UPDATE_MESSAGE: u8 = 3;
    pub const HOLD_TIMER_EXPIRED: u8 = 4;
    pub const FSM: u8 = 5;
    pub const CEASE: u8 = 6;
    pub const ROUTE_REFRESH_MESSAGE: u8 = 7;
}

/// Message Header Error subcodes (RFC 4271 §6.1).
pub mod header_error {
    pub const CONNECTION_NOT_SYNCHRONIZED: u8 = 1;
    pub const BAD_MESSAGE_LENGTH: u8 = 2;
    pub const BAD_MESSAGE_TYPE: u8 = 3;
}

/// OPEN Message Error subcodes (RFC 4271 §6.2, RFC 5492 §5).
pub mod open_error {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNSUPPORTED_VERSION: u8 = 1;
    pub const BAD_PEER_AS: u8 = 2;
    pub const BAD_BGP_IDENTIFIER: u8 = 3;
    pub const UNSUPPORTED_OPTIONAL_PARAMETER: u8 = 4;
    pub const UNACCEPTABLE_HOLD_TIME: u8 = 6;
    pub const UNSUPPORTED_CAPABILITY: u8 = 7;
}

/// UPDATE Message Error subcodes (RFC 4271 §6.3).
pub mod update_error {
    pub const UNSPECIFIC: u8 = 0;
    pub const MALFORMED_ATTRIBUTE_LIST: u8 = 1;
    pub const UNRECOGNIZED_WELL_KNOWN: u8 = 2;
    pub const MISSING_WELL_KNOWN: u8 = 3;
    pub const ATTRIBUTE_FLAGS: u8 = 4;
    pub const ATTRIBUTE_LENGTH: u8 = 5;
    pub const INVALID_ORIGIN: u8 = 6;
    pub const INVALID_NEXT_HOP: u8 = 8;
    pub const OPTIONAL_ATTRIBUTE: u8 = 9;
    pub const INVALID_NETWORK_FIELD: u8 = 10;
    pub const MALFORMED_AS_PATH: u8 = 11;
}

/// Finite State Machine Error subcodes (RFC 6608 §3).
pub mod fsm_error {
    pub const UNSPECIFIC: u8 = 0;
    pub const UNEXPECTED_IN_OPEN_SENT: u8 = 1;
    pub const UNEXPECTED_IN_OPEN_CONFIRM: u8 = 2;
    pub const UNEXPECTED_IN_ESTABLISHED: u8 = 3;
}

/// Cease subcodes (RFC 4486 §4, RFC 8538 §3).
pub mod cease {
    pub const MAX_PREFIXES: u8 = 1;
    pub const ADMINISTRATIVE_SHUTDOWN: u8 = 2;
    pub const PEER_DECONFIGURED: u8 = 3;
    pub const ADMINISTRATIVE_RESET: u8 = 4;
    pub const CONNECTION_REJECTED: u8 = 5;
    pub const OTHER_CONFIGURATION_CHANGE: u8 = 6;
    pub const CONNECTION_COLLISION: u8 = 7;
    pub const OUT_OF_RESOURCES: u8 = 8;
    pub const HARD_RESET: u8 = 9;
}

/// Path attribute type codes (RFC 4271 §5, RFC 1997, RFC 4456, RFC 4760, RFC 6793, RFC 8092).
mod attr {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MED: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;

    pub const FLAG_OPTIONAL: u8 = 0x80;
    pub const FLAG_TRANSITIVE: u8 = 0x40;
    pub const FLAG_PARTIAL: u8 = 0x20;
    pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;
}

/// The (AFI, SAFI) pair of a family (RFC 4760 §3, IANA registries).
pub fn family_afi_safi(family: Family) -> (u16, u8) {
    match family {
        Family::Ipv4Unicast => (1, 1),
        Family::Ipv6Unicast => (2, 1),
    }
}

/// The family of an (AFI, SAFI) pair, if this speaker carries it.
pub fn family_from_afi_safi(afi: u16, safi: u8) -> Option<Family> {
    match (afi, safi) {
        (1, 1) => Some(Family::Ipv4Unicast),
        (2, 1) => Some(Family::Ipv6Unicast),
        _ => None,
    }
}

/// netgauze's name for a family.
pub fn family_address_type(family: Family) -> netgauze_iana::address_family::AddressType {
    use netgauze_iana::address_family::AddressType;
    match family {
        Family::Ipv4Unicast => AddressType::Ipv4Unicast,
        Family::Ipv6Unicast => AddressType::Ipv6Unicast,
    }
}

/// The family of a netgauze address type, if this speaker carries it.
pub fn family_from_address_type(
    address_type: netgauze_iana::address_family::AddressType,
) -> Option<Family> {
    use netgauze_iana::address_family::AddressType;
    match address_type {
        AddressType::Ipv4Unicast => Some(Family::Ipv4Unicast),
        AddressType::Ipv6Unicast => Some(Family::Ipv6Unicast),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// NOTIFICATION
// ---------------------------------------------------------------------------------------------

/// A NOTIFICATION message (RFC 4271 §4.5): error code, subcode and data.
///
/// Also the error type of decoding: every decoding failure is the NOTIFICATION to send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

impl Notification {
    pub fn new(code: u8, subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
        Notification {
            code,
            subcode,
            data: data.into(),
        }
    }

    /// Hold Timer Expired, 4/0 (RFC 4271 §6.5).
    pub fn hold_timer_expired() -> Notification {
        Notification::new(error_code::HOLD_TIMER_EXPIRED, 0, [])
    }

    /// Cease with a subcode (RFC 4486).
    pub fn cease(subcode: u8) -> Notification {
        Notification::new(error_code::CEASE, subcode, [])
    }

    /// Finite State Machine Error with an RFC 6608 subcode.
    pub fn fsm(subcode: u8) -> Notification {
        Notification::new(error_code::FSM, subcode, [])
    }

    fn header(subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
        Notification::new(error_code::MESSAGE_HEADER, subcode, data)
    }

    fn open(subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
        Notification::new(error_code::OPEN_MESSAGE, subcode, data)
    }

    fn update(subcode: u8, data: impl Into<Vec<u8>>) -> Notification {
        Notification::new(error_code::UPDATE_MESSAGE, subcode, data)
    }

    /// The whole NOTIFICATION message, header included.
    pub fn encode(&self) -> Vec<u8> {
        // At most 4096 bytes in all (RFC 4271 §4.1): data beyond that is cut.
        let data = &self.data[..self.data.len().min(MAX_MESSAGE_LEN - HEADER_LEN - 2)];
        let mut out = header(message_type::NOTIFICATION, HEADER_LEN + 2 + data.len());
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(data);
        out
    }

    /// The error code in words, e.g. "OPEN Message Error".
    pub fn code_name(&self) -> Option<&'static str> {
        Some(match self.code {
            error_code::MESSAGE_HEADER => "Message Header Error",
            error_code::OPEN_MESSAGE => "OPEN Message Error",
            error_code::UPDATE_MESSAGE => "UPDATE Message Error",
            error_code::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            error_code::FSM => "Finite State Machine Error",
            error_code::CEASE => "Cease",
            error_code::ROUTE_REFRESH_MESSAGE => "ROUTE-REFRESH Message Error",
            _ => return None,
        })
    }

    /// The subcode in words, e.g. "Bad Peer AS"; `None` for 0 (unspecific) and unknown ones.
    pub fn subcode_name(&self) -> Option<&'static str> {
        Some(match (self.code, self.subcode) {
            (1, 1) => "Connection Not Synchronized",
            (1, 2) => "Bad Message Length",
            (1, 3) => "Bad Message Type",
            (2, 1) => "Unsupported Version Number",
            (2, 2) => "Bad Peer AS",
            (2, 3) => "Bad BGP Identifier",
            (2, 4) => "Unsupported Optional Parameter",
            (2, 5) => "Authentication Failure",
            (2, 6) => "Unacceptable Hold Time",
            (2, 7) => "Unsupported Capability",
            (2, 11) => "Role Mismatch",
            (3, 1) => "Malformed Attribute List",
            (3, 2) => "Unrecognized Well-known Attribute",
            (3, 3) => "Missing Well-known Attribute",
            (3, 4) => "Attribute Flags Error",
            (3, 5) => "Attribute Length Error",
            (3, 6) => "Invalid ORIGIN Attribute",
            (3, 7) => "AS Routing Loop",
            (3, 8) => "Invalid NEXT_HOP Attribute",
            (3, 9) => "Optional Attribute Error",
            (3, 10) => "Invalid Network Field",
            (3, 11) => "Malformed AS_PATH",
            (5, 1) => "Receive Unexpected Message in OpenSent State",
            (5, 2) => "Receive Unexpected Message in OpenConfirm State",
            (5, 3) => "Receive Unexpected Message in Established State",
            (6, 1) => "Maximum Number of Prefixes Reached",
            (6, 2) => "Administrative Shutdown",
            (6, 3) => "Peer De-configured",
            (6, 4) => "Administrative Reset",
            (6, 5) => "Connection Rejected",
            (6, 6) => "Other Configuration Change",
            (6, 7) => "Connection Collision Resolution",
            (6, 8) => "Out of Resources",
            (6, 9) => "Hard Reset",
            (6, 10) => "BFD Down",
            (7, 1) => "Invalid Message Length",
            _ => return None,
        })
    }

    /// The Shutdown Communication of a Cease / Administrative Shutdown or Reset (RFC 9003 §2).
    pub fn shutdown_communication(&self) -> Option<&str> {
        if self.code != error_code::CEASE
            || !matches!(
                self.subcode,
                cease::ADMINISTRATIVE_SHUTDOWN | cease::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let (&len, text) = self.data.split_first()?;
        let text = text.get(..usize::from(len))?;
        std::str::from_utf8(text).ok().filter(|t| !t.is_empty())
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code_name() {
            Some(name) => f.write_str(name)?,
            None => write!(f, "Error code {}", self.code)?,
        }
        match self.subcode_name() {
            Some(name) => write!(f, " / {name}")?,
            None if self.subcode != 0 => write!(f, " / subcode {}", self.subcode)?,
            None => {}
        }
        if let Some(text) = self.shutdown_communication() {
            write!(f, ": \"{}\"", text.escape_debug())?;
        }
        Ok(())
    }
}

impl std::error::Error for Notification {}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

fn header(message_type: u8, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&[0xff; 16]);
    // Callers keep `len` within MAX_MESSAGE_LEN.
    out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
    out.push(message_type);
    out
}

/// Checks a message header (RFC 4271 §6.1) and returns the message length and type.
///
/// `header` must hold at least [`HEADER_LEN`] bytes.
pub fn check_header(header: &[u8]) -> Result<(usize, u8), Notification> {
    let Some(header) = header.get(..HEADER_LEN) else {
        return Err(Notification::header(header_error::BAD_MESSAGE_LENGTH, []));
    };
    if header[..16].iter().any(|&b| b != 0xff) {
        return Err(Notification::header(
            header_error::CONNECTION_NOT_SYNCHRONIZED,
            [],
        ));
    }
    let len_field = [header[16], header[17]];
    let len = usize::from(u16::from_be_bytes(len_field));
    let message_type = header[18];
    let bad_length = || Notification::header(header_error::BAD_MESSAGE_LENGTH, len_field);
    if !(HEADER_LEN..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(bad_length());
    }
    // Minimum lengths per type: RFC 4271 §4.2–4.5 and RFC 2918 §3.
    let length_ok = match message_type {
        message_type::OPEN => len >= 29,
        message_type::UPDATE => len >= 23,
        message_type::NOTIFICATION => len >= 21,
        message_type::KEEPALIVE => len == HEADER_LEN,
        message_type::ROUTE_REFRESH => len >= 23,
        other => {
            return Err(Notification::header(
                header_error::BAD_MESSAGE_TYPE,
                [other],
            ));
        }
    };
    if !length_ok {
        return Err(bad_length());
    }
    Ok((len, message_type))
}

/// Cuts a TCP byte stream into whole BGP messages (RFC 4271 §4.1).
///
/// The marker, length and type of each header are checked as soon as the header is in; an
/// error is the NOTIFICATION to send (1/1, 1/2 or 1/3), after which the stream is unusable.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    start: usize,
}

impl FrameDecoder {
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Appends bytes read from the connection.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start >= MAX_MESSAGE_LEN {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message (header included), `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, Notification> {
        let pending = &self.buf[self.start..];
        if pending.len() < HEADER_LEN {
            // A wrong marker is reported without waiting for the rest of the header.
            if pending.iter().take(16).any(|&b| b != 0xff) {
                return Err(Notification::header(
                    header_error::CONNECTION_NOT_SYNCHRONIZED,
                    [],
                ));
            }
            return Ok(None);
        }
        let (len, _) = check_header(pending)?;
        if pending.len() < len {
            return Ok(None);
        }
        let frame = pending[..len].to_vec();
        self.start += len;
        Ok(Some(frame))
    }

    /// Bytes received but not yet returned as a message.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Forgets everything buffered (the connection is gone).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
    }
}

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// A ROUTE-REFRESH message (RFC 2918 §3, RFC 7313 §3.2 subtypes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub afi: u16,
    /// 0 = normal request; 1 and 2 are RFC 7313's BoRR and EoRR.
    pub subtype: u8,
    pub safi: u8,
}

impl RouteRefresh {
    /// A normal route refresh request for a family.
    pub fn request(family: Family) -> RouteRefresh {
        let (afi, safi) = family_afi_safi(family);
        RouteRefresh {
            afi,
            subtype: 0,
            safi,
        }
    }

    /// The family asked for, if this speaker carries it.
    pub fn family(&self) -> Option<Family> {
        family_from_afi_safi(self.afi, self.safi)
    }

    /// The whole ROUTE-REFRESH message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = header(message_type::ROUTE_REFRESH, HEADER_LEN + 4);
        out.extend_from_slice(&self.afi.to_be_bytes());
        out.push(self.subtype);
        out.push(self.safi);
        out
    }
}

/// One decoded BGP message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// An OPEN whose version, hold time and BGP Identifier syntax were checked; capabilities
    /// this codec could not parse are left out (RFC 5492 §3).
    Open(BgpOpenMessage),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

/// The whole KEEPALIVE message (RFC 4271 §4.4).
pub fn keepalive() -> Vec<u8> {
    header(message_type::KEEPALIVE, HEADER_LEN)
}

/// Decodes one whole message as returned by [`FrameDecoder::next_frame`].
///
/// `four_octet_as` says whether both sides advertised the 4-octet AS capability (RFC 6793),
/// which decides how AS_PATH is read in UPDATEs. Errors are the NOTIFICATION to send.
pub fn decode_message(frame: &[u8], four_octet_as: bool) -> Result<Message, Notification> {
    let (len, message_type) = check_header(frame)?;
    if len != frame.len() {
        return Err(Notification::header(
            header_error::BAD_MESSAGE_LENGTH,
            [frame[16], frame[17]],
        ));
    }
    let body = &frame[HEADER_LEN..];
    match message_type {
        message_type::OPEN => decode_open(body).map(Message::Open),
        message_type::UPDATE => decode_update(body, four_octet_as).map(Message::Update),
        message_type::NOTIFICATION => Ok(Message::Notification(Notification::new(
            body[0],
            body[1],
            &body[2..],
        ))),
        message_type::KEEPALIVE => Ok(Message::Keepalive),
        _ => decode_route_refresh(body, frame).map(Message::RouteRefresh),
    }
}

fn decode_route_refresh(body: &[u8], frame: &[u8]) -> Result<RouteRefresh, Notification> {
    if body.len() != 4 {
        // RFC 7313 §5: a BoRR/EoRR of the wrong length is a ROUTE-REFRESH Message Error
        // carrying the message; any other is a plain Bad Message Length.
        if matches!(body.get(2), Some(1 | 2)) {
            return Err(Notification::new(
                error_code::ROUTE_REFRESH_MESSAGE,
                1,
                &frame[..frame.len().min(MAX_MESSAGE_LEN - HEADER_LEN - 2)],
            ));
        }
        return Err(Notification::header(
            header_error::BAD_MESSAGE_LENGTH,
            [frame[16], frame[17]],
        ));
    }
    Ok(RouteRefresh {
        afi: u16::from_be_bytes([body[0], body[1]]),
        subtype: body[2],
        safi: body[3],
    })
}

// ---------------------------------------------------------------------------------------------
// OPEN
// ---------------------------------------------------------------------------------------------

/// Serializes an OPEN built with netgauze (`BgpOpenMessage::new`).
pub fn encode_open(open: &BgpOpenMessage) -> Result<Vec<u8>, EncodeError> {
    serialize(&BgpMessage::Open(open.clone()))
}

/// Decodes an OPEN body (RFC 4271 §4.2, §6.2; RFC 5492; RFC 9072 extended parameters).
fn decode_open(body: &[u8]) -> Result<BgpOpenMessage, Notification> {
    if body.len() < 10 {
        let total = u16::try_from(body.len() + HEADER_LEN).unwrap_or(u16::MAX);
        return Err(Notification::header(
            header_error::BAD_MESSAGE_LENGTH,
            total.to_be_bytes(),
        ));
    }
    let version = body[0];
    if version != BGP_VERSION {
        // Data: the largest locally supported version (RFC 4271 §6.2).
        return Err(Notification::open(
            open_error::UNSUPPORTED_VERSION,
            u16::from(BGP_VERSION).to_be_bytes(),
        ));
    }
    let my_as = u16::from_be_bytes([body[1], body[2]]);
    let hold_time = u16::from_be_bytes([body[3], body[4]]);
    if hold_time == 1 || hold_time == 2 {
        return Err(Notification::open(open_error::UNACCEPTABLE_HOLD_TIME, []));
    }
    let id_bytes = [body[5], body[6], body[7], body[8]];
    let bgp_id = Ipv4Addr::from(id_bytes);
    if bgp_id.is_unspecified() || bgp_id.is_broadcast() || bgp_id.is_multicast() {
        return Err(Notification::open(open_error::BAD_BGP_IDENTIFIER, id_bytes));
    }
    let params_len = usize::from(body[9]);
    let rest = &body[10..];
    let malformed = || Notification::open(open_error::UNSPECIFIC, []);

    // RFC 9072 §2: a non-extended length of 255 followed by type 255 announces 2-octet lengths.
    let (params, extended) = if params_len == 255 && rest.first() == Some(&255) {
        let len_bytes = rest.get(1..3).ok_or_else(malformed)?;
        let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
        (&rest[3..], Some(len))
    } else {
        (rest, None)
    };
    if params.len() != extended.unwrap_or(params_len) {
        let total = u16::try_from(body.len() + HEADER_LEN).unwrap_or(u16::MAX);
        return Err(Notification::header(
            header_error::BAD_MESSAGE_LENGTH,
            total.to_be_bytes(),
        ));
    }

    let mut capabilities = Vec::new();
    let mut rest = params;
    while !rest.is_empty() {
        let (param_type, value, next) = if extended.is_some() {
            let hdr = rest.get(..3).ok_or_else(malformed)?;
            let len = usize::from(u16::from_be_bytes([hdr[1], hdr[2]]));
            let value = rest.get(3..3 + len).ok_or_else(malformed)?;
            (hdr[0], value, &rest[3 + len..])
        } else {
            let hdr = rest.get(..2).ok_or_else(malformed)?;
            let len = usize::from(hdr[1]);
            let value = rest.get(2..2 + len).ok_or_else(malformed)?;
            (hdr[0], value, &rest[2 + len..])
        };
        // Capabilities is the only optional parameter in use (RFC 5492 §4).
        if param_type != 2 {
            return Err(Notification::open(
                open_error::UNSUPPORTED_OPTIONAL_PARAMETER,
                [],
            ));
        }
        decode_capabilities(value, &mut capabilities)?;
        rest = next;
    }
    Ok(BgpOpenMessage::new(
        my_as,
        hold_time,
        bgp_id,
        vec![BgpOpenMessageParameter::Capabilities(
            capabilities.into_boxed_slice(),
        )],
    ))
}

/// Splits a Capabilities parameter into its TLVs and parses each with netgauze on its own;
/// capabilities that cannot be parsed are ignored (RFC 5492 §3).
fn decode_capabilities(mut value: &[u8], out: &mut Vec<BgpCapability>) -> Result<(), Notification> {
    while !value.is_empty() {
        let len = usize::from(
            *value
                .get(1)
                .ok_or_else(|| Notification::open(open_error::UNSPECIFIC, []))?,
        );
        let tlv = value
            .get(..2 + len)
            .ok_or_else(|| Notification::open(open_error::UNSPECIFIC, []))?;
        let mut reader = SliceReader::new(tlv);
        match BgpCapability::parse(&mut reader) {
            Ok(capability) if reader.is_empty() => out.push(capability),
            Ok(_) => tracing::debug!(code = tlv[0], "ignoring capability with trailing bytes"),
            Err(error) => tracing::debug!(code = tlv[0], %error, "ignoring unparseable capability"),
        }
        value = &value[2 + len..];
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// UPDATE decoding
// ---------------------------------------------------------------------------------------------

/// One path attribute as found on the wire.
#[derive(Debug, Clone, Copy)]
struct RawAttr<'a> {
    flags: u8,
    code: u8,
    value: &'a [u8],
    /// Flags, type, length and value: the data of most UPDATE errors.
    raw: &'a [u8],
}

/// The expected (optional, transitive) flags of the attributes this codec knows.
fn attr_flags(code: u8) -> Option<(bool, bool)> {
    Some(match code {
        attr::ORIGIN
        | attr::AS_PATH
        | attr::NEXT_HOP
        | attr::LOCAL_PREF
        | attr::ATOMIC_AGGREGATE => (false, true),
        attr::MED
        | attr::ORIGINATOR_ID
        | attr::CLUSTER_LIST
        | attr::MP_REACH_NLRI
        | attr::MP_UNREACH_NLRI => (true, false),
        attr::AGGREGATOR
        | attr::COMMUNITIES
        | attr::AS4_PATH
        | attr::AS4_AGGREGATOR
        | attr::LARGE_COMMUNITIES => (true, true),
        _ => return None,
    })
}

/// Whether a known attribute's value length is acceptable (RFC 4271 §6.3 "Attribute Length").
fn attr_length_ok(code: u8, len: usize, four_octet_as: bool) -> bool {
    match code {
        attr::ORIGIN => len == 1,
        attr::NEXT_HOP | attr::MED | attr::LOCAL_PREF | attr::ORIGINATOR_ID => len == 4,
        attr::ATOMIC_AGGREGATE => len == 0,
        attr::AGGREGATOR => len == if four_octet_as { 8 } else { 6 },
        attr::AS4_AGGREGATOR => len == 8,
        attr::COMMUNITIES | attr::CLUSTER_LIST => len.is_multiple_of(4),
        attr::LARGE_COMMUNITIES => len.is_multiple_of(12),
        // AFI, SAFI, next hop length, reserved (RFC 4760 §3); AFI, SAFI (§4).
        attr::MP_REACH_NLRI => len >= 5,
        attr::MP_UNREACH_NLRI => len >= 3,
        _ => true,
    }
}

/// Whether an AS_PATH/AS4_PATH value is a well-formed list of non-empty AS_SET/AS_SEQUENCE
/// segments (RFC 4271 §4.3, RFC 7606 §7.2). Confederation segments (RFC 5065) are refused:
/// this speaker is never a confederation member, and a peer outside one does not send them.
fn as_path_ok(mut value: &[u8], asn_len: usize) -> bool {
    while !value.is_empty() {
        let [segment_type, count, rest @ ..] = value else {
            return false;
        };
        let len = usize::from(*count) * asn_len;
        if !matches!(segment_type, 1 | 2) || *count == 0 || rest.len() < len {
            return false;
        }
        value = &rest[len..];
    }
    true
}

/// Checks NLRI/withdrawn prefix syntax: lengths within the family, bytes all there.
fn prefixes_ok(mut value: &[u8], max_len: u8) -> bool {
    while let Some((&len, rest)) = value.split_first() {
        let bytes = usize::from(len).div_ceil(8);
        if len > max_len || rest.len() < bytes {
            return false;
        }
        value = &rest[bytes..];
    }
    true
}

/// The RFC 4271 §6.3 checks, in the RFC's order, on the raw UPDATE body. Returns the parts
/// of the body and the attributes worth parsing.
struct CheckedUpdate<'a> {
    withdrawn: &'a [u8],
    nlri: &'a [u8],
    attrs: Vec<RawAttr<'a>>,
    /// Attributes handed on to netgauze: those this speaker uses, minus ignored ones.
    keep: Vec<bool>,
}

fn check_update(body: &[u8], four_octet_as: bool) -> Result<CheckedUpdate<'_>, Notification> {
    let malformed = || Notification::update(update_error::MALFORMED_ATTRIBUTE_LIST, []);
    let read_u16 = |at: usize| -> Option<usize> {
        let b = body.get(at..at + 2)?;
        Some(usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    // Withdrawn Routes Length + Total Attribute Length + 23 must not exceed the message length.
    let withdrawn_len = read_u16(0).ok_or_else(malformed)?;
    let attrs_len = read_u16(2 + withdrawn_len).ok_or_else(malformed)?;
    let attrs_start = 4 + withdrawn_len;
    if attrs_start + attrs_len > body.len() {
        return Err(malformed());
    }
    let withdrawn = &body[2..2 + withdrawn_len];
    let mut attr_bytes = &body[attrs_start..attrs_start + attrs_len];
    let nlri = &body[attrs_start + attrs_len..];

    let mut attrs = Vec::new();
    let mut seen = [false; 256];
    while !attr_bytes.is_empty() {
        let [flags, code, ..] = *attr_bytes else {
            return Err(malformed());
        };
        let (header_len, len) = if flags & attr::FLAG_EXTENDED_LENGTH != 0 {
            let b = attr_bytes.get(2..4).ok_or_else(malformed)?;
            (4, usize::from(u16::from_be_bytes([b[0], b[1]])))
        } else {
            (3, usize::from(*attr_bytes.get(2).ok_or_else(malformed)?))
        };
        let raw = attr_bytes.get(..header_len + len).ok_or_else(malformed)?;
        // An attribute appearing twice makes the list malformed.
        if std::mem::replace(&mut seen[usize::from(code)], true) {
            return Err(malformed());
        }
        attrs.push(RawAttr {
            flags,
            code,
            value: &raw[header_len..],
            raw,
        });
        attr_bytes = &attr_bytes[raw.len()..];
    }

    let mut keep = Vec::with_capacity(attrs.len());
    for a in &attrs {
        let data = a.raw.to_vec();
        let optional = a.flags & attr::FLAG_OPTIONAL != 0;
        let transitive = a.flags & attr::FLAG_TRANSITIVE != 0;
        let partial = a.flags & attr::FLAG_PARTIAL != 0;
        let Some((want_optional, want_transitive)) = attr_flags(a.code) else {
            if !optional {
                return Err(Notification::update(
                    update_error::UNRECOGNIZED_WELL_KNOWN,
                    data,
                ));
            }
            // Unknown optional attributes are not used by this speaker and not passed on.
            keep.push(false);
            continue;
        };
        // Partial may only be set on optional transitive attributes (RFC 4271 §4.3).
        let partial_ok = !partial || (want_optional && want_transitive);
        if optional != want_optional || transitive != want_transitive || !partial_ok {
            return Err(Notification::update(update_error::ATTRIBUTE_FLAGS, data));
        }
        if !attr_length_ok(a.code, a.value.len(), four_octet_as) {
            return Err(Notification::update(update_error::ATTRIBUTE_LENGTH, data));
        }
        let kept = match a.code {
            attr::ORIGIN => {
                if a.value[0] > 2 {
                    return Err(Notification::update(update_error::INVALID_ORIGIN, data));
                }
                true
            }
            attr::AS_PATH => {
                if !as_path_ok(a.value, if four_octet_as { 4 } else { 2 }) {
                    return Err(Notification::update(update_error::MALFORMED_AS_PATH, []));
                }
                true
            }
            attr::NEXT_HOP => {
                // A valid IP host address (RFC 4271 §6.3).
                let nh = Ipv4Addr::new(a.value[0], a.value[1], a.value[2], a.value[3]);
                if nh.is_unspecified() || nh.is_broadcast() || nh.is_multicast() {
                    return Err(Notification::update(update_error::INVALID_NEXT_HOP, data));
                }
                true
            }
            // Between two 4-octet speakers AS4_PATH is discarded (RFC 6793 §4.1); a malformed
            // one is discarded too (§6, "attribute discard").
            attr::AS4_PATH => !four_octet_as && as_path_ok(a.value, 4),
            // Only the families this speaker carries are parsed; others are ignored.
            attr::MP_REACH_NLRI | attr::MP_UNREACH_NLRI => {
                let afi = u16::from_be_bytes([a.value[0], a.value[1]]);
                family_from_afi_safi(afi, a.value[2]).is_some()
            }
            attr::AGGREGATOR | attr::AS4_AGGREGATOR => false,
            _ => true,
        };
        keep.push(kept);
    }

    if !prefixes_ok(withdrawn, 32) || !prefixes_ok(nlri, 32) {
        return Err(Notification::update(
            update_error::INVALID_NETWORK_FIELD,
            [],
        ));
    }

    // Well-known mandatory attributes: ORIGIN, AS_PATH and NEXT_HOP with NLRI (RFC 4271
    // §5); ORIGIN and AS_PATH with MP_REACH_NLRI (RFC 4760 §3). LOCAL_PREF is not demanded of
    // internal peers: like BIRD, a missing one reads as "not set".
    let mut required: Vec<u8> = Vec::new();
    if !nlri.is_empty() {
        required.extend([attr::ORIGIN, attr::AS_PATH, attr::NEXT_HOP]);
    } else if seen[usize::from(attr::MP_REACH_NLRI)] {
        required.extend([attr::ORIGIN, attr::AS_PATH]);
    }
    if let Some(&missing) = required.iter().find(|&&c| !seen[usize::from(c)]) {
        return Err(Notification::update(
            update_error::MISSING_WELL_KNOWN,
            [missing],
        ));
    }

    Ok(CheckedUpdate {
        withdrawn,
        nlri,
        attrs,
        keep,
    })
}

/// Decodes an UPDATE body into an [`Update`] (RFC 4271 §4.3, RFC 4760, RFC 4724 §2,
/// RFC 6793 §4.2.3).
///
/// Routes of families other than IPv4/IPv6 unicast, non-unicast prefixes (RFC 4271 §6.3:
/// "SHOULD be ignored") and attributes other than those of [`PathAttrs`] are dropped;
/// AGGREGATOR/AS4_AGGREGATOR are checked but not kept. The IPv6 link-local next hop of a
/// 32-byte MP_REACH next hop is dropped, the global one kept.
pub fn decode_update(body: &[u8], four_octet_as: bool) -> Result<Update, Notification> {
    let checked = check_update(body, four_octet_as)?;

    // End-of-RIB (RFC 4724 §2): an empty UPDATE for IPv4 unicast, an UPDATE whose only
    // attribute is an empty MP_UNREACH_NLRI for other families.
    if checked.withdrawn.is_empty() && checked.nlri.is_empty() {
        match checked.attrs.as_slice() {
            [] => {
                return Ok(Update {
                    end_of_rib: vec![Family::Ipv4Unicast],
                    ..Update::default()
                });
            }
            [a] if a.code == attr::MP_UNREACH_NLRI && a.value.len() == 3 => {
                let afi = u16::from_be_bytes([a.value[0], a.value[1]]);
                return Ok(Update {
                    end_of_rib: family_from_afi_safi(afi, a.value[2]).into_iter().collect(),
                    ..Update::default()
                });
            }
            _ => {}
        }
    }

    // Reassemble the body with only the attributes to parse, and let netgauze parse it.
    let kept_len: usize = checked
        .attrs
        .iter()
        .zip(&checked.keep)
        .filter(|(_, keep)| **keep)
        .map(|(a, _)| a.raw.len())
        .sum();
    let mut filtered =
        Vec::with_capacity(4 + checked.withdrawn.len() + kept_len + checked.nlri.len());
    filtered.extend_from_slice(&body[..2 + checked.withdrawn.len()]);
    filtered.extend_from_slice(&u16::try_from(kept_len).unwrap_or(u16::MAX).to_be_bytes());
    for (a, keep) in checked.attrs.iter().zip(&checked.keep) {
        if *keep {
            filtered.extend_from_slice(a.raw);
        }
    }
    filtered.extend_from_slice(checked.nlri);

    let mut ctx = BgpParsingContext::new(
        four_octet_as,
        Default::default(),
        Default::default(),
        false, // non-unicast withdrawn prefixes are ignored
        false, // non-unicast NLRI prefixes are ignored
        true,
        true,
    );
    let mut reader = SliceReader::new(&filtered);
    let message = BgpUpdateMessage::parse(&mut reader, &mut ctx).map_err(|error| {
        tracing::debug!(%error, "UPDATE rejected by netgauze");
        Notification::update(update_error_subcode(&UpdateMessageError::from(error)), [])
    })?;
    if !reader.is_empty() {
        return Err(Notification::update(
            update_error::INVALID_NETWORK_FIELD,
            [],
        ));
    }
    Ok(convert_update(&message, four_octet_as))
}

fn update_error_subcode(error: &UpdateMessageError) -> u8 {
    match error {
        UpdateMessageError::Unspecific { .. } => update_error::UNSPECIFIC,
        UpdateMessageError::MalformedAttributeList { .. } => update_error::MALFORMED_ATTRIBUTE_LIST,
        UpdateMessageError::UnrecognizedWellKnownAttribute { .. } => {
            update_error::UNRECOGNIZED_WELL_KNOWN
        }
        UpdateMessageError::MissingWellKnownAttribute { .. } => update_error::MISSING_WELL_KNOWN,
        UpdateMessageError::AttributeFlagsError { .. } => update_error::ATTRIBUTE_FLAGS,
        UpdateMessageError::AttributeLengthError { .. } => update_error::ATTRIBUTE_LENGTH,
        UpdateMessageError::InvalidOriginAttribute { .. } => update_error::INVALID_ORIGIN,
        UpdateMessageError::InvalidNextHopAttribute { .. } => update_error::INVALID_NEXT_HOP,
        UpdateMessageError::OptionalAttributeError { .. } => update_error::OPTIONAL_ATTRIBUTE,
        UpdateMessageError::InvalidNetworkField { .. } => update_error::INVALID_NETWORK_FIELD,
        UpdateMessageError::MalformedAsPath { .. } => update_error::MALFORMED_AS_PATH,
    }
}

fn segments_from_as2(segments: &[As2PathSegment]) -> Vec<AsSegment> {
    segments
        .iter()
        .map(|s| {
            let asns = s.as_numbers().iter().map(|&a| u32::from(a)).collect();
            segment(s.segment_type(), asns)
        })
        .collect()
}

fn segments_from_as4(segments: &[As4PathSegment]) -> Vec<AsSegment> {
    segments
        .iter()
        .map(|s| segment(s.segment_type(), s.as_numbers().to_vec()))
        .collect()
}

fn segment(segment_type: AsPathSegmentType, asns: Vec<u32>) -> AsSegment {
    match segment_type {
        AsPathSegmentType::AsSet => AsSegment::Set(asns),
        AsPathSegmentType::AsSequence => AsSegment::Sequence(asns),
    }
}

/// Number of ASes in a path the way RFC 6793 §4.2.3 counts them: a SET counts as one.
fn path_count(path: &[AsSegment]) -> usize {
    path.iter()
        .map(|s| match s {
            AsSegment::Sequence(v) => v.len(),
            AsSegment::Set(_) => 1,
        })
        .sum()
}

/// Rebuilds the 4-octet path from AS_PATH and AS4_PATH (RFC 6793 §4.2.3): the leading ASes of
/// AS_PATH that AS4_PATH does not cover, then AS4_PATH. An AS4_PATH longer than AS_PATH is
/// ignored.
fn merge_as4_path(as_path: Vec<AsSegment>, as4_path: Vec<AsSegment>) -> Vec<AsSegment> {
    let (n, m) = (path_count(&as_path), path_count(&as4_path));
    if n < m {
        return as_path;
    }
    let mut keep = n - m;
    let mut out = Vec::new();
    for seg in as_path {
        if keep == 0 {
            break;
        }
        match seg {
            AsSegment::Sequence(v) => {
                let take = v.len().min(keep);
                keep -= take;
                out.push(AsSegment::Sequence(v[..take].to_vec()));
            }
            set @ AsSegment::Set(_) => {
                keep -= 1;
                out.push(set);
            }
        }
    }
    // Join the two halves into one SEQUENCE where they meet.
    let mut rest = as4_path.into_iter().peekable();
    if let (Some(AsSegment::Sequence(last)), Some(AsSegment::Sequence(_))) =
        (out.last_mut(), rest.peek())
        && let Some(AsSegment::Sequence(first)) = rest.next()
    {
        last.extend(first);
    }
    out.extend(rest);
    out
}

fn convert_update(message: &BgpUpdateMessage, four_octet_as: bool) -> Update {
    let mut base = PathAttrs::local(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let mut as_path = Vec::new();
    let mut as4_path = None;
    let mut next_hop = None;
    let mut mp_reach = None;
    let mut mp_unreach = None;
    for a in message.path_attributes() {
        match a.value() {
            PathAttributeValue::Origin(o) => {
                base.origin = match o {
                    NgOrigin::IGP => Origin::Igp,
                    NgOrigin::EGP => Origin::Egp,
                    NgOrigin::Incomplete => Origin::Incomplete,
                }
            }
            PathAttributeValue::AsPath(AsPath::As2PathSegments(s)) => {
                as_path = segments_from_as2(s)
            }
            PathAttributeValue::AsPath(AsPath::As4PathSegments(s)) => {
                as_path = segments_from_as4(s)
            }
            PathAttributeValue::As4Path(p) => as4_path = Some(segments_from_as4(p.segments())),
            PathAttributeValue::NextHop(nh) => next_hop = Some(nh.next_hop()),
            PathAttributeValue::MultiExitDiscriminator(m) => base.med = Some(m.metric()),
            PathAttributeValue::LocalPreference(l) => base.local_pref = Some(l.metric()),
            PathAttributeValue::AtomicAggregate(_) => base.atomic_aggregate = true,
            PathAttributeValue::Communities(c) => {
                base.communities = c.communities().iter().map(Community::value).collect()
            }
            PathAttributeValue::LargeCommunities(c) => {
                base.large_communities = c
                    .communities()
                    .iter()
                    .map(|c| (c.global_admin(), c.local_data1(), c.local_data2()))
                    .collect()
            }
            PathAttributeValue::Originator(o) => base.originator_id = Some(o.id()),
            PathAttributeValue::ClusterList(c) => {
                base.cluster_list = c.cluster_list().iter().map(ClusterId::id).collect()
            }
            PathAttributeValue::MpReach(r) => mp_reach = Some(r),
            PathAttributeValue::MpUnreach(u) => mp_unreach = Some(u),
            _ => {}
        }
    }
    base.as_path = match as4_path {
        Some(as4) if !four_octet_as => merge_as4_path(as_path, as4),
        _ => as_path,
    };

    let mut update = Update::default();
    let with_next_hop = |nh: IpAddr| {
        Arc::new(PathAttrs {
            next_hop: nh,
            ..base.clone()
        })
    };
    if !message.nlri().is_empty()
        && let Some(nh) = next_hop
    {
        let attrs = with_next_hop(IpAddr::V4(nh));
        for n in message.nlri() {
            let net = IpNet::V4(n.network().address().trunc());
            update.announced.push((net, attrs.clone()));
        }
    }
    update.withdrawn.extend(
        message
            .withdraw_routes()
            .iter()
            .map(|n| IpNet::V4(n.network().address().trunc())),
    );
    match mp_reach {
        Some(MpReach::Ipv4Unicast { next_hop, nlri, .. }) if !nlri.is_empty() => {
            let attrs = with_next_hop(*next_hop);
            for n in nlri {
                let net = IpNet::V4(n.network().address().trunc());
                update.announced.push((net, attrs.clone()));
            }
        }
        Some(MpReach::Ipv6Unicast {
            next_hop_global,
            nlri,
            ..
        }) if !nlri.is_empty() => {
            let attrs = with_next_hop(IpAddr::V6(*next_hop_global));
            for n in nlri {
                let net = IpNet::V6(n.network().address().trunc());
                update.announced.push((net, attrs.clone()));
            }
        }
        _ => {}
    }
    match mp_unreach {
        Some(MpUnreach::Ipv4Unicast { nlri }) => update.withdrawn.extend(
            nlri.iter()
                .map(|n| IpNet::V4(n.network().address().trunc())),
        ),
        Some(MpUnreach::Ipv6Unicast { nlri }) => update.withdrawn.extend(
            nlri.iter()
                .map(|n| IpNet::V6(n.network().address().trunc())),
        ),
        _ => {}
    }
    update
}

// ---------------------------------------------------------------------------------------------
// UPDATE encoding
// ---------------------------------------------------------------------------------------------

/// Why an [`Update`] could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// IPv4 prefixes need an IPv4 NEXT_HOP and IPv6 prefixes an IPv6 one (RFC 8950 extended
    /// next hops are not negotiated).
    #[error("next hop {next_hop} cannot be announced for {prefix}")]
    NextHopFamily { prefix: IpNet, next_hop: IpAddr },
    /// Multicast ranges cannot be carried as unicast NLRI.
    #[error("{0} is not a unicast prefix")]
    NotUnicast(IpNet),
    /// The attributes alone fill a 4096-byte UPDATE.
    #[error("path attributes of {0} leave no room for NLRI in a {MAX_MESSAGE_LEN}-byte UPDATE")]
    AttributesTooLarge(IpNet),
    /// netgauze refused to serialize a message.
    #[error("serializing: {0}")]
    Serialize(String),
}

fn serialize(message: &BgpMessage) -> Result<Vec<u8>, EncodeError> {
    let mut out = Vec::with_capacity(message.len());
    message
        .write(&mut out)
        .map_err(|e| EncodeError::Serialize(e.to_string()))?;
    if out.len() > MAX_MESSAGE_LEN {
        return Err(EncodeError::Serialize(format!(
            "message of {} bytes exceeds {MAX_MESSAGE_LEN}",
            out.len()
        )));
    }
    Ok(out)
}

/// Bytes one prefix takes in NLRI: length octet plus the significant octets (RFC 4271 §4.3).
fn prefix_wire_len(prefix: &IpNet) -> usize {
    1 + usize::from(prefix.prefix_len()).div_ceil(8)
}

/// A path attribute with the given flags, using the extended length when the value needs it
/// (RFC 4271 §4.3). netgauze does not decide this itself: given a long value without the flag,
/// it writes a two-octet length under a one-octet flag. MP_REACH/MP_UNREACH always use it so
/// their header size does not depend on how much NLRI they carry.
fn path_attribute(
    optional: bool,
    transitive: bool,
    always_extended: bool,
    value: PathAttributeValue,
) -> Result<PathAttribute, EncodeError> {
    let build = |extended: bool, value: PathAttributeValue| {
        PathAttribute::from(optional, transitive, false, extended, value)
            .map_err(|(_, e)| EncodeError::Serialize(e.to_string()))
    };
    let short = build(always_extended, value)?;
    // flags + type + 1-octet length + value
    if always_extended || short.len() <= 3 + 255 {
        return Ok(short);
    }
    build(true, short.value().clone())
}

/// AS_PATH segments with at most 255 ASes each (RFC 4271 §4.3); empty segments are left out.
fn wire_segments(path: &[AsSegment]) -> Vec<(AsPathSegmentType, &[u32])> {
    let mut out = Vec::new();
    for seg in path {
        let (segment_type, asns) = match seg {
            AsSegment::Sequence(v) => (AsPathSegmentType::AsSequence, v),
            AsSegment::Set(v) => (AsPathSegmentType::AsSet, v),
        };
        out.extend(asns.chunks(255).map(|chunk| (segment_type, chunk)));
    }
    out
}

/// The path attributes of one group of routes, in type code order. `next_hop` is the IPv4
/// NEXT_HOP (IPv4 NLRI), `mp_reach` the MP_REACH_NLRI (IPv6).
fn encode_attrs(
    attrs: &PathAttrs,
    four_octet_as: bool,
    next_hop: Option<Ipv4Addr>,
    mp_reach: Option<MpReach>,
) -> Result<Vec<PathAttribute>, EncodeError> {
    let mut out = Vec::new();
    let origin = match attrs.origin {
        Origin::Igp => NgOrigin::IGP,
        Origin::Egp => NgOrigin::EGP,
        Origin::Incomplete => NgOrigin::Incomplete,
    };
    out.push(path_attribute(
        false,
        true,
        false,
        PathAttributeValue::Origin(origin),
    )?);

    let segments = wire_segments(&attrs.as_path);
    let needs_as4_path =
        !four_octet_as && segments.iter().any(|(_, v)| v.iter().any(|&a| a > 0xffff));
    let as4_segments = || -> Vec<As4PathSegment> {
        segments
            .iter()
            .map(|(t, v)| As4PathSegment::new(*t, v.to_vec()))
            .collect()
    };
    let as_path = if four_octet_as {
        AsPath::As4PathSegments(as4_segments().into())
    } else {
        // RFC 6793 §4.2.2: ASNs that do not fit in two octets become AS_TRANS.
        AsPath::As2PathSegments(
            segments
                .iter()
                .map(|(t, v)| {
                    let asns: Vec<u16> = v
                        .iter()
                        .map(|&a| u16::try_from(a).unwrap_or(AS_TRANS as u16))
                        .collect();
                    As2PathSegment::new(*t, asns)
                })
                .collect::<Vec<_>>()
                .into(),
        )
    };
    out.push(path_attribute(
        false,
        true,
        false,
        PathAttributeValue::AsPath(as_path),
    )?);
    if let Some(nh) = next_hop {
        out.push(path_attribute(
            false,
            true,
            false,
            PathAttributeValue::NextHop(NextHop::new(nh)),
        )?);
    }
    if let Some(med) = attrs.med {
        out.push(path_attribute(
            true,
            false,
            false,
            PathAttributeValue::MultiExitDiscriminator(MultiExitDiscriminator::new(med)),
        )?);
    }
    if let Some(pref) = attrs.local_pref {
        out.push(path_attribute(
            false,
            true,
            false,
            PathAttributeValue::LocalPreference(LocalPreference::new(pref)),
        )?);
    }
    if attrs.atomic_aggregate {
        out.push(path_attribute(
            false,
            true,
            false,
            PathAttributeValue::AtomicAggregate(AtomicAggregate),
        )?);
    }
    if !attrs.communities.is_empty() {
        let c: Vec<Community> = attrs
            .communities
            .iter()
            .map(|&c| Community::new(c))
            .collect();
        out.push(path_attribute(
            true,
            true,
            false,
            PathAttributeValue::Communities(Communities::new(c)),
        )?);
    }
    if let Some(id) = attrs.originator_id {
        out.push(path_attribute(
            true,
            false,
            false,
            PathAttributeValue::Originator(Originator::new(id)),
        )?);
    }
    if !attrs.cluster_list.is_empty() {
        let ids: Vec<ClusterId> = attrs
            .cluster_list
            .iter()
            .map(|&i| ClusterId::new(i))
            .collect();
        out.push(path_attribute(
            true,
            false,
            false,
            PathAttributeValue::ClusterList(ClusterList::new(ids)),
        )?);
    }
    if let Some(reach) = mp_reach {
        out.push(path_attribute(
            true,
            false,
            true,
            PathAttributeValue::MpReach(reach),
        )?);
    }
    if needs_as4_path {
        out.push(path_attribute(
            true,
            true,
            false,
            PathAttributeValue::As4Path(As4Path::new(as4_segments())),
        )?);
    }
    if !attrs.large_communities.is_empty() {
        let c: Vec<LargeCommunity> = attrs
            .large_communities
            .iter()
            .map(|&(a, b, c)| LargeCommunity::new(a, b, c))
            .collect();
        out.push(path_attribute(
            true,
            true,
            false,
            PathAttributeValue::LargeCommunities(LargeCommunities::new(c)),
        )?);
    }
    Ok(out)
}

fn ipv4_nlri(prefix: &IpNet) -> Result<Ipv4UnicastAddress, EncodeError> {
    let IpNet::V4(net) = prefix else {
        return Err(EncodeError::NotUnicast(*prefix));
    };
    Ipv4Unicast::from_net(net.trunc())
        .map(Ipv4UnicastAddress::new_no_path_id)
        .map_err(|_| EncodeError::NotUnicast(*prefix))
}

fn ipv6_nlri(prefix: &IpNet) -> Result<Ipv6UnicastAddress, EncodeError> {
    let IpNet::V6(net) = prefix else {
        return Err(EncodeError::NotUnicast(*prefix));
    };
    Ipv6Unicast::from_net(net.trunc())
        .map(|n| Ipv6UnicastAddress::new(None, n))
        .map_err(|_| EncodeError::NotUnicast(*prefix))
}

/// Splits prefixes into runs whose NLRI encoding fits in `budget` bytes.
fn chunks_within(prefixes: &[IpNet], budget: usize) -> Vec<&[IpNet]> {
    let mut out = Vec::new();
    let (mut start, mut used) = (0, 0);
    for (i, p) in prefixes.iter().enumerate() {
        let len = prefix_wire_len(p);
        if used + len > budget && i > start {
            out.push(&prefixes[start..i]);
            start = i;
            used = 0;
        }
        used += len;
    }
    if start < prefixes.len() {
        out.push(&prefixes[start..]);
    }
    out
}

/// The longest NLRI entry of a family: /32 or /128.
fn max_prefix_wire_len(family: Family) -> usize {
    match family {
        Family::Ipv4Unicast => 5,
        Family::Ipv6Unicast => 17,
    }
}

fn update_message(
    withdrawn: Vec<Ipv4UnicastAddress>,
    attrs: Vec<PathAttribute>,
    nlri: Vec<Ipv4UnicastAddress>,
) -> BgpMessage {
    BgpMessage::Update(BgpUpdateMessage::new(withdrawn, attrs, nlri))
}

fn mp_unreach_v6(nlri: Vec<Ipv6UnicastAddress>) -> Result<PathAttribute, EncodeError> {
    path_attribute(
        true,
        false,
        true,
        PathAttributeValue::MpUnreach(MpUnreach::Ipv6Unicast { nlri: nlri.into() }),
    )
}

/// Encodes an [`Update`] into as few UPDATE messages of at most 4096 bytes as it takes
/// (RFC 4271 §4.3, RFC 4760 §3–4, RFC 4724 §2):
///
/// 1. IPv4 withdrawals in the Withdrawn Routes field; IPv6 ones in MP_UNREACH_NLRI.
/// 2. Announcements grouped by equal [`PathAttrs`], IPv4 in the NLRI field with NEXT_HOP,
///    IPv6 in MP_REACH_NLRI (next hop: the global address in `next_hop`); a group too large
///    for one message is split.
/// 3. End-of-RIB markers last: an empty UPDATE for IPv4, an empty MP_UNREACH_NLRI for IPv6.
///
/// `four_octet_as` selects the AS_PATH encoding; without it, ASNs above 65535 are sent as
/// AS_TRANS with the real path in AS4_PATH (RFC 6793 §4.2.2). The next hop is sent as given:
/// filling it in (the session's local address for eBGP, "next hop self") is the caller's job.
/// Only the attributes of [`PathAttrs`] exist here: unknown optional transitive attributes
/// received from a peer are dropped by [`decode_update`] and so are never passed on, where
/// RFC 4271 §5 would have them forwarded with the Partial bit set.
pub fn encode_update(update: &Update, four_octet_as: bool) -> Result<Vec<Vec<u8>>, EncodeError> {
    let mut out = Vec::new();
    let empty_len = HEADER_LEN + 4;

    // 1. Withdrawals.
    let (v4_withdrawn, v6_withdrawn): (Vec<IpNet>, Vec<IpNet>) = update
        .withdrawn
        .iter()
        .partition(|p| matches!(p, IpNet::V4(_)));
    for chunk in chunks_within(&v4_withdrawn, MAX_MESSAGE_LEN - empty_len) {
        let withdrawn = chunk.iter().map(ipv4_nlri).collect::<Result<Vec<_>, _>>()?;
        out.push(serialize(&update_message(withdrawn, vec![], vec![]))?);
    }
    if !v6_withdrawn.is_empty() {
        let fixed = update_message(vec![], vec![mp_unreach_v6(vec![])?], vec![]).len();
        for chunk in chunks_within(&v6_withdrawn, MAX_MESSAGE_LEN - fixed) {
            let nlri = chunk.iter().map(ipv6_nlri).collect::<Result<Vec<_>, _>>()?;
            out.push(serialize(&update_message(
                vec![],
                vec![mp_unreach_v6(nlri)?],
                vec![],
            ))?);
        }
    }

    // 2. Announcements, grouped by attributes in order of first appearance.
    let mut groups: Vec<(&PathAttrs, Vec<IpNet>, Vec<IpNet>)> = Vec::new();
    let mut index = std::collections::HashMap::<&PathAttrs, usize>::new();
    // The RIB hands over runs of prefixes sharing one `Arc`: hash the attributes once per
    // run, not once per prefix (hashing them was ~7% of a speaker's CPU on a full table).
    let mut prev: Option<(&Arc<PathAttrs>, usize)> = None;
    for (prefix, attrs) in &update.announced {
        let i = match prev {
            Some((p, i)) if Arc::ptr_eq(p, attrs) => i,
            _ => *index.entry(attrs.as_ref()).or_insert_with(|| {
                groups.push((attrs.as_ref(), Vec::new(), Vec::new()));
                groups.len() - 1
            }),
        };
        prev = Some((attrs, i));
        match prefix {
            IpNet::V4(_) => groups[i].1.push(*prefix),
            IpNet::V6(_) => groups[i].2.push(*prefix),
        }
    }
    for (attrs, v4, v6) in groups {
        if let Some(first) = v4.first() {
            let IpAddr::V4(nh) = attrs.next_hop else {
                return Err(EncodeError::NextHopFamily {
                    prefix: *first,
                    next_hop: attrs.next_hop,
                });
            };
            let path_attrs = encode_attrs(attrs, four_octet_as, Some(nh), None)?;
            let fixed = update_message(vec![], path_attrs.clone(), vec![]).len();
            let budget = MAX_MESSAGE_LEN.saturating_sub(fixed);
            if budget < max_prefix_wire_len(Family::Ipv4Unicast) {
                return Err(EncodeError::AttributesTooLarge(*first));
            }
            for chunk in chunks_within(&v4, budget) {
                let nlri = chunk.iter().map(ipv4_nlri).collect::<Result<Vec<_>, _>>()?;
                out.push(serialize(&update_message(
                    vec![],
                    path_attrs.clone(),
                    nlri,
                ))?);
            }
        }
        if let Some(first) = v6.first() {
            let IpAddr::V6(nh) = attrs.next_hop else {
                return Err(EncodeError::NextHopFamily {
                    prefix: *first,
                    next_hop: attrs.next_hop,
                });
            };
            let reach = |nlri: Vec<Ipv6UnicastAddress>| MpReach::Ipv6Unicast {
                next_hop_global: nh,
                next_hop_local: None,
                nlri: nlri.into(),
            };
            let empty = encode_attrs(attrs, four_octet_as, None, Some(reach(vec![])))?;
            let fixed = update_message(vec![], empty, vec![]).len();
            let budget = MAX_MESSAGE_LEN.saturating_sub(fixed);
            if budget < max_prefix_wire_len(Family::Ipv6Unicast) {
                return Err(EncodeError::AttributesTooLarge(*first));
            }
            for chunk in chunks_within(&v6, budget) {
                let nlri = chunk.iter().map(ipv6_nlri).collect::<Result<Vec<_>, _>>()?;
                let path_attrs = encode_attrs(attrs, four_octet_as, None, Some(reach(nlri)))?;
                out.push(serialize(&update_message(vec![], path_attrs, vec![]))?);
            }
        }
    }

    // 3. End-of-RIB.
    for family in &update.end_of_rib {
        let message = match family {
            Family::Ipv4Unicast => update_message(vec![], vec![], vec![]),
            Family::Ipv6Unicast => update_message(vec![], vec![mp_unreach_v6(vec![])?], vec![]),
        };
        out.push(serialize(&message)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::Ipv6Addr;

    use ipnet::{Ipv4Net, Ipv6Net};
    use proptest::prelude::*;

    use super::*;

    fn frame(message_type: u8, body: &[u8]) -> Vec<u8> {
        let mut out = header(message_type, HEADER_LEN + body.len());
        out.extend_from_slice(body);
        out
    }

    /// An UPDATE body from its parts.
    fn body(withdrawn: &[u8], attrs: &[&[u8]], nlri: &[u8]) -> Vec<u8> {
        let attrs = attrs.concat();
        let mut out = (withdrawn.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(withdrawn);
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(&attrs);
        out.extend_from_slice(nlri);
        out
    }

    const ORIGIN_IGP: &[u8] = &[0x40, 1, 1, 0];
    const AS_PATH_4: &[u8] = &[0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe8]; // SEQUENCE 65000
    const AS_PATH_2: &[u8] = &[0x40, 2, 4, 2, 1, 0xfd, 0xe8];
    const NEXT_HOP: &[u8] = &[0x40, 3, 4, 198, 18, 0, 1];
    const NLRI: &[u8] = &[24, 198, 18, 1];

    fn update_error(body: &[u8]) -> (u8, u8, Vec<u8>) {
        let n = decode_update(body, true).unwrap_err();
        assert_eq!(n.code, 3, "{n}");
        (n.code, n.subcode, n.data)
    }

    #[test]
    fn notification_names() {
        let cases = [
            ((1, 1), "Message Header Error / Connection Not Synchronized"),
            ((2, 2), "OPEN Message Error / Bad Peer AS"),
            ((3, 11), "UPDATE Message Error / Malformed AS_PATH"),
            ((4, 0), "Hold Timer Expired"),
            (
                (5, 3),
                "Finite State Machine Error / Receive Unexpected Message in Established State",
            ),
            ((6, 2), "Cease / Administrative Shutdown"),
            ((6, 7), "Cease / Connection Collision Resolution"),
            (
                (7, 1),
                "ROUTE-REFRESH Message Error / Invalid Message Length",
            ),
        ];
        for ((code, subcode), text) in cases {
            assert_eq!(Notification::new(code, subcode, []).to_string(), text);
        }
        let n = Notification::new(6, 2, [3, b'm', b'n', b't']);
        assert_eq!(n.to_string(), "Cease / Administrative Shutdown: \"mnt\"");
        assert_eq!(
            n.encode(),
            [
                [0xff; 16].as_slice(),
                &[0, 25, 3, 6, 2, 3, b'm', b'n', b't']
            ]
            .concat()
        );
        let Ok(Message::Notification(back)) = decode_message(&n.encode(), true) else {
            panic!()
        };
        assert_eq!(back, n);
    }

    #[test]
    fn framing() {
        let mut d = FrameDecoder::new();
        let ka = keepalive();
        let mut stream = ka.repeat(3);
        stream.extend_from_slice(&ka[..10]);
        for chunk in stream.chunks(5) {
            d.feed(chunk);
        }
        for _ in 0..3 {
            assert_eq!(d.next_frame(), Ok(Some(ka.clone())));
        }
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.buffered(), 10);
        d.feed(&ka[10..]);
        assert_eq!(d.next_frame(), Ok(Some(ka.clone())));
        assert_eq!(d.buffered(), 0);

        // A bad marker is seen before the header is complete.
        let mut d = FrameDecoder::new();
        d.feed(&[0xff, 0xff, 0x00]);
        assert_eq!(d.next_frame(), Err(Notification::new(1, 1, [])));
    }

    #[test]
    fn header_errors() {
        let with = |len: u16, t: u8| {
            let mut h = vec![0xff; 16];
            h.extend_from_slice(&len.to_be_bytes());
            h.push(t);
            check_header(&h)
        };
        assert_eq!(with(18, 4), Err(Notification::new(1, 2, [0, 18])));
        assert_eq!(with(4097, 2), Err(Notification::new(1, 2, [0x10, 0x01])));
        assert_eq!(with(20, 4), Err(Notification::new(1, 2, [0, 20])));
        assert_eq!(with(28, 1), Err(Notification::new(1, 2, [0, 28])));
        assert_eq!(with(22, 2), Err(Notification::new(1, 2, [0, 22])));
        assert_eq!(with(20, 3), Err(Notification::new(1, 2, [0, 20])));
        assert_eq!(with(19, 6), Err(Notification::new(1, 3, [6])));
        assert_eq!(with(19, 0), Err(Notification::new(1, 3, [0])));
        assert_eq!(with(4096, 2), Ok((4096, 2)));
        // A frame whose length field disagrees with its size.
        let mut ka = keepalive();
        ka.push(0);
        assert_eq!(
            decode_message(&ka, true),
            Err(Notification::new(1, 2, [0, 19]))
        );
    }

    fn open_body(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
        let mut b = vec![version, 0xfd, 0xe8];
        b.extend_from_slice(&hold.to_be_bytes());
        b.extend_from_slice(&id);
        b.push(params.len() as u8);
        b.extend_from_slice(params);
        b
    }

    fn open_error(body: &[u8]) -> Notification {
        decode_message(&frame(1, body), true).unwrap_err()
    }

    #[test]
    fn open_errors() {
        let id = [198, 18, 0, 1];
        assert_eq!(
            open_error(&open_body(3, 90, id, &[])),
            Notification::new(2, 1, [0, 4])
        );
        assert_eq!(
            open_error(&open_body(4, 2, id, &[])),
            Notification::new(2, 6, [])
        );
        assert_eq!(
            open_error(&open_body(4, 90, [0; 4], &[])),
            Notification::new(2, 3, [0; 4])
        );
        assert_eq!(
            open_error(&open_body(4, 90, [224, 0, 0, 5], &[])),
            Notification::new(2, 3, [224, 0, 0, 5])
        );
        // Parameter type 1 (deprecated authentication).
        assert_eq!(
            open_error(&open_body(4, 90, id, &[1, 1, 0])),
            Notification::new(2, 4, [])
        );
        // A capability running past its parameter.
        assert_eq!(
            open_error(&open_body(4, 90, id, &[2, 3, 65, 4, 0])),
            Notification::new(2, 0, [])
        );
        // Optional parameters length disagreeing with the message.
        let mut b = open_body(4, 90, id, &[2, 2, 2, 0]);
        b[9] = 3;
        assert_eq!(open_error(&b).subcode, 2);
        assert_eq!(open_error(&b).code, 1);
        // Hold time 0 and 3 are fine.
        for hold in [0, 3] {
            assert!(decode_message(&frame(1, &open_body(4, hold, id, &[])), true).is_ok());
        }
    }

    #[test]
    fn open_with_extended_parameters() {
        // RFC 9072: 255, 255, 2-octet length, then parameters with 2-octet lengths.
        let caps = [2u8, 0, 6, 65, 4, 0xfa, 0x56, 0xea, 0x01];
        let mut params = vec![255, 0, caps.len() as u8];
        params.extend_from_slice(&caps);
        let mut b = open_body(4, 90, [198, 18, 0, 1], &[]);
        b[9] = 255;
        b.extend_from_slice(&params);
        let Ok(Message::Open(open)) = decode_message(&frame(1, &b), true) else {
            panic!()
        };
        assert_eq!(open.my_asn4(), 4_200_000_001);
    }

    #[test]
    fn update_errors() {
        let ok = body(&[], &[ORIGIN_IGP, AS_PATH_4, NEXT_HOP], NLRI);
        assert!(decode_update(&ok, true).is_ok());

        // 3/1: withdrawn length past the end, attribute past the end, duplicate attribute.
        let mut b = ok.clone();
        b[1] = 200;
        assert_eq!(update_error(&b), (3, 1, vec![]));
        assert_eq!(
            update_error(&body(&[], &[&[0x40, 1, 5, 0]], &[])),
            (3, 1, vec![])
        );
        assert_eq!(
            update_error(&body(
                &[],
                &[ORIGIN_IGP, ORIGIN_IGP, AS_PATH_4, NEXT_HOP],
                NLRI
            )),
            (3, 1, vec![])
        );
        // 3/2: unknown attribute without the optional bit.
        let unknown = [0x40, 99, 1, 7];
        assert_eq!(
            update_error(&body(&[], &[ORIGIN_IGP, &unknown], &[])),
            (3, 2, unknown.to_vec())
        );
        // ... but unknown optional ones are skipped.
        assert!(
            decode_update(
                &body(
                    &[],
                    &[ORIGIN_IGP, AS_PATH_4, NEXT_HOP, &[0xc0, 99, 1, 7]],
                    NLRI
                ),
                true
            )
            .is_ok()
        );
        // 3/3: each missing well-known attribute, by type code.
        assert_eq!(
            update_error(&body(&[], &[AS_PATH_4, NEXT_HOP], NLRI)),
            (3, 3, vec![1])
        );
        assert_eq!(
            update_error(&body(&[], &[ORIGIN_IGP, NEXT_HOP], NLRI)),
            (3, 3, vec![2])
        );
        assert_eq!(
            update_error(&body(&[], &[ORIGIN_IGP, AS_PATH_4], NLRI)),
            (3, 3, vec![3])
        );
        let mp_reach: &[u8] = &[
            0x90, 14, 0, 24, 0, 2, 1, 16, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
            0, 32, 0x20, 1,
        ];
        assert_eq!(
            update_error(&body(&[], &[ORIGIN_IGP, mp_reach], &[])),
            (3, 3, vec![2])
        );
        // 3/4: ORIGIN marked optional; MED marked transitive; partial on a well-known one.
        let origin = [0xc0, 1, 1, 0];
        assert_eq!(
            update_error(&body(&[], &[&origin], &[])),
            (3, 4, origin.to_vec())
        );
        let med = [0xc0, 4, 4, 0, 0, 0, 1];
        assert_eq!(update_error(&body(&[], &[&med], &[])), (3, 4, med.to_vec()));
        let partial = [0x60, 1, 1, 0];
        assert_eq!(
            update_error(&body(&[], &[&partial], &[])),
            (3, 4, partial.to_vec())
        );
        // 3/5: wrong fixed lengths.
        let origin = [0x40, 1, 2, 0, 0];
        assert_eq!(
            update_error(&body(&[], &[&origin], &[])),
            (3, 5, origin.to_vec())
        );
        let nh = [0x40, 3, 3, 1, 2, 3];
        assert_eq!(update_error(&body(&[], &[&nh], &[])), (3, 5, nh.to_vec()));
        let communities = [0xc0, 8, 3, 1, 2, 3];
        assert_eq!(
            update_error(&body(&[], &[&communities], &[])),
            (3, 5, communities.to_vec())
        );
        // 3/6: ORIGIN 3.
        let origin = [0x40, 1, 1, 3];
        assert_eq!(
            update_error(&body(&[], &[&origin], &[])),
            (3, 6, origin.to_vec())
        );
        // 3/8: NEXT_HOP 0.0.0.0 and multicast.
        for bad in [[0, 0, 0, 0], [224, 0, 0, 1], [255, 255, 255, 255]] {
            let nh = [&[0x40, 3, 4][..], &bad].concat();
            assert_eq!(
                update_error(&body(&[], &[ORIGIN_IGP, AS_PATH_4, &nh], NLRI)),
                (3, 8, nh.clone())
            );
        }
        // 3/9: an MP_REACH_NLRI netgauze cannot parse (truncated next hop).
        let mp = [0x80, 14, 6, 0, 2, 1, 16, 0x20, 1];
        assert_eq!(
            update_error(&body(&[], &[ORIGIN_IGP, AS_PATH_4, &mp], &[])).1,
            9
        );
        // 3/10: /33 in NLRI, truncated withdrawn prefix.
        assert_eq!(
            update_error(&body(
                &[],
                &[ORIGIN_IGP, AS_PATH_4, NEXT_HOP],
                &[33, 1, 2, 3, 4, 5]
            )),
            (3, 10, vec![])
        );
        assert_eq!(
            update_error(&body(&[24, 198, 18], &[], &[])),
            (3, 10, vec![])
        );
        // 3/11: bad segment type, zero-length segment, short segment, 2-octet path on a
        // 4-octet session.
        for path in [
            &[0x40, 2, 6, 5, 1, 0, 0, 0xfd, 0xe8][..],
            &[0x40, 2, 2, 2, 0],
            &[0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe8],
            AS_PATH_2,
        ] {
            assert_eq!(
                update_error(&body(&[], &[ORIGIN_IGP, path, NEXT_HOP], NLRI)),
                (3, 11, vec![])
            );
        }
    }

    #[test]
    fn end_of_rib() {
        let v4 = encode_update(
            &Update {
                end_of_rib: vec![Family::Ipv4Unicast],
                ..Update::default()
            },
            true,
        )
        .unwrap();
        assert_eq!(
            v4,
            vec![[[0xff; 16].as_slice(), &[0, 23, 2, 0, 0, 0, 0]].concat()]
        );
        let v6 = encode_update(
            &Update {
                end_of_rib: vec![Family::Ipv6Unicast],
                ..Update::default()
            },
            true,
        )
        .unwrap();
        assert_eq!(
            v6,
            vec![
                [
                    [0xff; 16].as_slice(),
                    &[0, 30, 2, 0, 0, 0, 7, 0x90, 15, 0, 3, 0, 2, 1]
                ]
                .concat()
            ]
        );
        // Also with the short length form, as most speakers send it.
        let eor = decode_update(&body(&[], &[&[0x80, 15, 3, 0, 2, 1]], &[]), true).unwrap();
        assert_eq!(eor.end_of_rib, vec![Family::Ipv6Unicast]);
        // Another family's End-of-RIB is nothing to us.
        let eor = decode_update(&body(&[], &[&[0x80, 15, 3, 0, 1, 4]], &[]), true).unwrap();
        assert!(eor.is_empty());
    }

    #[test]
    fn as4_path_is_merged_for_old_speakers() {
        // AS_PATH 65000 23456 65001, AS4_PATH 4200000001 65001.
        let as_path = [0x40, 2, 8, 2, 3, 0xfd, 0xe8, 0x5b, 0xa0, 0xfd, 0xe9];
        let as4 = [0xc0, 17, 10, 2, 2, 0xfa, 0x56, 0xea, 0x01, 0, 0, 0xfd, 0xe9];
        let u = decode_update(
            &body(&[], &[ORIGIN_IGP, &as_path, NEXT_HOP, &as4], NLRI),
            false,
        )
        .unwrap();
        assert_eq!(
            u.announced[0].1.as_path,
            vec![AsSegment::Sequence(vec![65000, 4_200_000_001, 65001])]
        );
        // An AS4_PATH longer than AS_PATH is ignored.
        let as4 = [
            0xc0, 17, 14, 2, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4,
        ];
        let as4 = &as4[..as4.len() - 4];
        let mut as4 = as4.to_vec();
        as4[2] = 14;
        as4[4] = 3;
        as4.truncate(3 + 14);
        let as4 = {
            let mut v = vec![0xc0, 17, 18, 2, 4];
            for a in [1u32, 2, 3, 4] {
                v.extend_from_slice(&a.to_be_bytes());
            }
            v
        };
        let u = decode_update(
            &body(&[], &[ORIGIN_IGP, &as_path, NEXT_HOP, &as4], NLRI),
            false,
        )
        .unwrap();
        assert_eq!(
            u.announced[0].1.as_path,
            vec![AsSegment::Sequence(vec![65000, 23456, 65001])]
        );
        // Between 4-octet speakers AS4_PATH is discarded.
        let u = decode_update(
            &body(&[], &[ORIGIN_IGP, AS_PATH_4, NEXT_HOP, &as4], NLRI),
            true,
        )
        .unwrap();
        assert_eq!(
            u.announced[0].1.as_path,
            vec![AsSegment::Sequence(vec![65000])]
        );
        // A malformed AS4_PATH is discarded too (RFC 6793 §6).
        let bad = [0xc0, 17, 2, 2, 0];
        let u = decode_update(
            &body(&[], &[ORIGIN_IGP, AS_PATH_2, NEXT_HOP, &bad], NLRI),
            false,
        )
        .unwrap();
        assert_eq!(
            u.announced[0].1.as_path,
            vec![AsSegment::Sequence(vec![65000])]
        );
    }

    #[test]
    fn merge_cases() {
        use AsSegment::{Sequence as Seq, Set};
        assert_eq!(
            merge_as4_path(
                vec![Seq(vec![1, 23456]), Set(vec![5, 6])],
                vec![Seq(vec![70000]), Set(vec![5, 6])]
            ),
            vec![Seq(vec![1, 70000]), Set(vec![5, 6])]
        );
        assert_eq!(
            merge_as4_path(
                vec![Set(vec![1, 2]), Seq(vec![23456])],
                vec![Seq(vec![70000])]
            ),
            vec![Set(vec![1, 2]), Seq(vec![70000])]
        );
        assert_eq!(merge_as4_path(vec![], vec![]), vec![]);
    }

    #[test]
    fn large_updates_are_split() {
        let attrs = Arc::new(PathAttrs {
            communities: (0..100).collect(),
            ..PathAttrs::local(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)))
        });
        let v6_attrs = Arc::new(PathAttrs {
            next_hop: IpAddr::V6("2001:db8::1".parse().unwrap()),
            ..(*attrs).clone()
        });
        let mut update = Update::default();
        for i in 0..3000u32 {
            let v4 = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 + (i << 8)), 24).unwrap();
            update.announced.push((IpNet::V4(v4), attrs.clone()));
            let v6 = Ipv6Net::new(
                Ipv6Addr::from(0x2001_0db8_u128 << 96 | u128::from(i) << 64),
                64,
            )
            .unwrap();
            update.announced.push((IpNet::V6(v6), v6_attrs.clone()));
            update.withdrawn.push(IpNet::V4(
                Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap(),
            ));
            update.withdrawn.push(IpNet::V6(
                Ipv6Net::new(
                    Ipv6Addr::from(0x2001_0db9_u128 << 96 | u128::from(i) << 64),
                    64,
                )
                .unwrap(),
            ));
        }
        let messages = encode_update(&update, true).unwrap();
        assert!(messages.len() > 10, "{}", messages.len());
        let mut back = Update::default();
        for m in &messages {
            assert!(m.len() <= MAX_MESSAGE_LEN);
            let Ok(Message::Update(u)) = decode_message(m, true) else {
                panic!("undecodable")
            };
            back.announced.extend(u.announced);
            back.withdrawn.extend(u.withdrawn);
        }
        assert!(
            canonical(back) == canonical(update),
            "split update does not decode to the original"
        );
    }

    #[test]
    fn encode_errors() {
        let v6_nh = Arc::new(PathAttrs::local(IpAddr::V6(Ipv6Addr::LOCALHOST)));
        let u = Update {
            announced: vec![("198.18.0.0/24".parse().unwrap(), v6_nh)],
            ..Update::default()
        };
        assert!(matches!(
            encode_update(&u, true),
            Err(EncodeError::NextHopFamily { .. })
        ));
        let nh = Arc::new(PathAttrs::local(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))));
        let u = Update {
            announced: vec![("224.0.0.0/4".parse().unwrap(), nh.clone())],
            ..Update::default()
        };
        assert!(matches!(
            encode_update(&u, true),
            Err(EncodeError::NotUnicast(_))
        ));
        let huge = Arc::new(PathAttrs {
            communities: (0..1100).collect(),
            ..(*nh).clone()
        });
        let u = Update {
            announced: vec![("198.18.0.0/24".parse().unwrap(), huge)],
            ..Update::default()
        };
        assert!(matches!(
            encode_update(&u, true),
            Err(EncodeError::AttributesTooLarge(_))
        ));
    }

    #[test]
    fn long_as_paths_use_extended_length_and_split_segments() {
        let attrs = Arc::new(PathAttrs {
            as_path: vec![AsSegment::Sequence((1..=300).collect())],
            ..PathAttrs::local(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)))
        });
        let u = Update {
            announced: vec![("198.18.0.0/24".parse().unwrap(), attrs)],
            ..Update::default()
        };
        let m = encode_update(&u, true).unwrap();
        let back = decode_update(&m[0][HEADER_LEN..], true).unwrap();
        assert_eq!(
            back.announced[0].1.as_path,
            vec![
                AsSegment::Sequence((1..=255).collect()),
                AsSegment::Sequence((256..=300).collect())
            ]
        );
    }

    fn arb_attrs(next_hop: BoxedStrategy<IpAddr>) -> impl Strategy<Value = PathAttrs> {
        let asn = prop_oneof![1u32..65536, 65536u32..=u32::MAX];
        let segment = prop_oneof![
            prop::collection::vec(asn.clone(), 1..8).prop_map(AsSegment::Sequence),
            prop::collection::vec(asn, 1..4).prop_map(AsSegment::Set),
        ];
        (
            (
                prop_oneof![
                    Just(Origin::Igp),
                    Just(Origin::Egp),
                    Just(Origin::Incomplete)
                ],
                prop::collection::vec(segment, 0..4),
                next_hop,
                any::<Option<u32>>(),
                any::<Option<u32>>(),
            ),
            (
                prop::collection::vec(any::<u32>(), 0..6),
                prop::collection::vec(any::<(u32, u32, u32)>(), 0..3),
                any::<Option<u32>>(),
                prop::collection::vec(any::<u32>(), 0..3),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (origin, as_path, next_hop, med, local_pref),
                    (communities, large_communities, originator, clusters, atomic_aggregate),
                )| PathAttrs {
                    origin,
                    as_path,
                    next_hop,
                    med,
                    local_pref,
                    communities,
                    large_communities,
                    originator_id: originator.map(Ipv4Addr::from),
                    cluster_list: clusters.into_iter().map(Ipv4Addr::from).collect(),
                    atomic_aggregate,
                },
            )
    }

    fn arb_v4_prefix() -> impl Strategy<Value = IpNet> {
        (1u32..224, any::<u32>(), 0u8..=32).prop_map(|(first, rest, len)| {
            let addr = Ipv4Addr::from((first << 24) | (rest & 0x00ff_ffff));
            IpNet::V4(Ipv4Net::new(addr, len.max(8)).unwrap().trunc())
        })
    }

    fn arb_v6_prefix() -> impl Strategy<Value = IpNet> {
        (any::<u128>(), 0u8..=128).prop_map(|(bits, len)| {
            // Clear the top byte so the prefix is never multicast (ff00::/8).
            let addr = Ipv6Addr::from(bits & !(0xff_u128 << 120) | (0x20_u128 << 120));
            IpNet::V6(Ipv6Net::new(addr, len.max(8)).unwrap().trunc())
        })
    }

    fn arb_v4_next_hop() -> BoxedStrategy<IpAddr> {
        (1u32..224, any::<u32>())
            .prop_map(|(first, rest)| {
                IpAddr::V4(Ipv4Addr::from((first << 24) | (rest & 0x00ff_ffff)))
            })
            .boxed()
    }

    fn arb_v6_next_hop() -> BoxedStrategy<IpAddr> {
        any::<u128>()
            .prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)))
            .boxed()
    }

    fn arb_update() -> impl Strategy<Value = Update> {
        (
            prop::collection::vec(arb_attrs(arb_v4_next_hop()), 1..4),
            prop::collection::vec(arb_attrs(arb_v6_next_hop()), 1..4),
            prop::collection::btree_set(arb_v4_prefix(), 0..400),
            prop::collection::btree_set(arb_v6_prefix(), 0..300),
            prop::collection::btree_set(prop_oneof![arb_v4_prefix(), arb_v6_prefix()], 0..200),
            prop::collection::btree_set(
                prop_oneof![Just(Family::Ipv4Unicast), Just(Family::Ipv6Unicast)],
                0..3,
            ),
            any::<u64>(),
        )
            .prop_map(|(v4_attrs, v6_attrs, v4, v6, withdrawn, eor, seed)| {
                let v4_attrs: Vec<_> = v4_attrs.into_iter().map(Arc::new).collect();
                let v6_attrs: Vec<_> = v6_attrs.into_iter().map(Arc::new).collect();
                let mut announced = Vec::new();
                for (i, p) in v4.into_iter().enumerate() {
                    let pick = (seed as usize).wrapping_add(i * 7) % v4_attrs.len();
                    announced.push((p, v4_attrs[pick].clone()));
                }
                for (i, p) in v6.into_iter().enumerate() {
                    let pick = (seed as usize).wrapping_add(i * 5) % v6_attrs.len();
                    announced.push((p, v6_attrs[pick].clone()));
                }
                Update {
                    announced,
                    withdrawn: withdrawn.into_iter().collect(),
                    end_of_rib: eor
                        .into_iter()
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect(),
                }
            })
    }

    fn canonical(mut u: Update) -> (Vec<(IpNet, PathAttrs)>, Vec<IpNet>, Vec<Family>) {
        let mut announced: Vec<_> = u
            .announced
            .drain(..)
            .map(|(p, a)| (p, (*a).clone()))
            .collect();
        announced.sort_by_key(|x| x.0);
        u.withdrawn.sort();
        u.end_of_rib.sort();
        (announced, u.withdrawn, u.end_of_rib)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn update_round_trip(update in arb_update(), four_octet_as in any::<bool>()) {
            let messages = encode_update(&update, four_octet_as).unwrap();
            let mut back = Update::default();
            for m in &messages {
                prop_assert!(m.len() <= MAX_MESSAGE_LEN);
                let decoded = decode_message(m, four_octet_as);
                let Ok(Message::Update(u)) = decoded else {
                    return Err(TestCaseError::fail(format!("{decoded:?}")));
                };
                back.announced.extend(u.announced);
                back.withdrawn.extend(u.withdrawn);
                back.end_of_rib.extend(u.end_of_rib);
            }
            prop_assert_eq!(canonical(back), canonical(update));
        }

        #[test]
        fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600), four_octet_as in any::<bool>()) {
            let _ = decode_update(&bytes, four_octet_as);
            let _ = decode_open(&bytes);
            let mut d = FrameDecoder::new();
            d.feed(&[0xff; 16]);
            d.feed(&((bytes.len() + 19).min(4096) as u16).to_be_bytes());
            d.feed(&bytes);
            while let Ok(Some(frame)) = d.next_frame() {
                let _ = decode_message(&frame, four_octet_as);
            }
        }
    }
}
