//! Arbitrary bytes through the framing decoder, the message decoder and a session that has
//! just sent its OPEN: nothing may panic.
#![no_main]

use std::net::Ipv4Addr;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tortie_bgp::codec::{self, FrameDecoder};
use tortie_bgp::fsm::{Input, Session, SessionConfig};

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new();
    decoder.feed(data);
    while let Ok(Some(frame)) = decoder.next_frame() {
        let _ = codec::decode_message(&frame, true);
        let _ = codec::decode_message(&frame, false);
    }
    let _ = codec::decode_update(data, true);
    let _ = codec::decode_update(data, false);

    let now = Instant::now();
    let mut session = Session::new(SessionConfig::new(
        64512,
        64513,
        Ipv4Addr::new(198, 18, 0, 1),
    ));
    session.process(now, Input::ManualStart);
    session.process(now, Input::TcpConnected);
    session.process(now, Input::Bytes(data));
});
