//! tortie's BGP speaker.
//!
//! The protocol core is sans-IO: [`fsm::Session`] is one RFC 4271 §8 session, driven by
//! `process(now, input) -> outputs`; [`rib::Rib`] holds the Adj-RIBs-In, the decision process
//! and the Adj-RIBs-Out. Neither touches a socket or a clock. The tokio driver (`speaker`) owns
//! the sockets and the kernel routes.

pub mod codec;
pub mod filter;
pub mod fsm;
mod md5;
pub mod rib;
pub mod speaker;
pub mod types;

pub use types::*;
