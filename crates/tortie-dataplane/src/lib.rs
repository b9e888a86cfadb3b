//! tortie's nftables policy dataplane: the calc's [`DataplaneModel`] becomes one
//! `inet tortie` table, applied with `nft -f -` as one atomic transaction per change.
//!
//! - [`render`](mod@render) (pure): model → [`NftTable`], plain data (sets, verdict maps, chains with
//!   rules as nft text).
//! - [`diff`] (pure): (old table, new table) → the nft script between them; a full atomic
//!   replace when the old one is unknown.
//! - [`nft`] (effectful): [`NftRunner`], with [`NftCommand`] running the `nft` binary
//!   (optionally inside a network namespace via `nsenter`) and [`RecordingNft`] as the fake.
//! - [`nfnl`] (effectful): nf_tables over netlink for the generation and for set element
//!   updates, the two things on the change path that must not pay for an `nft` process.
//! - [`manager`]: [`NftManager`] applies models, reads the table back and repairs drift.
//!
//! Why nft text rather than nft's JSON or netlink directly: every change is one readable
//! transaction that nft validates and commits atomically, can be logged and replayed by
//! hand, and whose errors point at a line. The exception is a change that only moves
//! addresses in or out of selector hash sets: it goes as one netlink batch (its nft
//! equivalent is still what [`ApplyStats::script`] shows).
//!
//! # Table layout
//!
//! Mark bits [`MARK_ACCEPT`] (`0x10000`) and [`MARK_PASS`] (`0x20000`), as Felix.
//!
//! - `forward` (filter hook forward, priority filter, policy accept):
//!   `ct state established,related accept`; `iifname "cali*" jump from-wl`;
//!   `oifname "cali*" jump to-wl`. A pod-to-pod packet on one node runs the source pod's
//!   egress chain, which *returns* on allow, then the destination pod's ingress chain.
//! - `input` (filter hook input, priority filter, policy accept):
//!   `ct state established,related accept`; `iifname "cali*" jump wl-to-host`.
//!   `wl-to-host` accepts ICMPv6 neighbour discovery and MLD (types 130–133, 135, 136, as
//!   Calico), jumps `from-wl` (the pod's egress policy) and then applies the configured
//!   endpoint-to-host action (`drop`, `accept` or `return`).
//! - `from-wl` / `to-wl`: `ct state invalid drop`; `iifname vmap @fw-dispatch` /
//!   `oifname vmap @tw-dispatch`; then `drop` "unknown interface": a `cali*` interface with no
//!   endpoint yet is fail-closed. The verdict maps `fw-dispatch` / `tw-dispatch`
//!   (`ifname : verdict`) send each local workload interface to `goto fw-<iface>` /
//!   `goto tw-<iface>`. (INVALID is dropped here, for workload traffic only, rather than in
//!   `forward`, so forwarded traffic that never touches a pod is left alone.)
//! - `tw-<iface>` (traffic to the pod: ingress policy and profiles) and `fw-<iface>` (from the
//!   pod: egress): clear ACCEPT and PASS; per tier: clear PASS, then per policy
//!   `meta mark & PASS == 0 jump <policy chain>` and `meta mark & ACCEPT == ACCEPT return`;
//!   at the end of a tier whose default action is Deny, `meta mark & PASS == 0 drop`
//!   "end of tier `<name>`". Then per profile `jump <profile chain>` and the same accepted
//!   check; finally `drop` "no profile matched".
//! - Policy and profile chains (`pi-`/`po-`/`pri-`/`pro-` + id, shared by every endpoint
//!   that uses them): one or more nft rules per rendered rule. Allow sets ACCEPT and returns,
//!   Pass sets PASS and returns, Deny drops, Log sends the packet to NFLOG group
//!   [`LOG_GROUP`] (prefix `tortie <rule>: `, read by the agent's `policy_log` listener) and
//!   continues. Each carries its rule's identity as a comment (`knp/x/allow ingress[0]`).
//!   Numeric ports and each named-port set are alternatives, so such a rule becomes one nft
//!   rule per combination of source and destination alternatives.
//! - Sets: selector sets (`s4-…`/`s6-…`): plain hash sets when every member is a single
//!   address (nft re-reads every interval set before changing one), else `flags interval`
//!   with elements aggregated so that none overlap (no `auto-merge`, which would make
//!   element-by-element updates impossible); and
//!   named-port sets (`n4-…`/`n6-…`, `addr . inet_proto . inet_service`).
//! - NAT: sets `masq-pools4/6` and `all-pools4/6` always; a `postrouting` chain
//!   (nat hook postrouting, priority srcnat) with
//!   `ip saddr @masq-pools4 ip daddr != @all-pools4 masquerade` (and the IPv6 twin) only
//!   when some pool has natOutgoing.
//!
//! Names: nft 1.0.6 accepts no quoted chain or set names, so a model name that is not a plain
//! identifier is rewritten with a hash ([`table::nft_name`]). Workloads whose interface name
//! nft cannot match exactly are left out (and so dropped by the dispatch chains).
//!
//! - Host endpoints (only when the model has some; otherwise none of this exists and the
//!   table is exactly the workload-only one): `input` continues, for traffic that is not
//!   from a workload (`iifname "cali*" accept` catches the endpoint-to-host `return`) and
//!   not on `lo` (never policed), with `iifname vmap @fh-dispatch` (→ `goto fh-<iface>`) and,
//!   when an all-interfaces (`*`) host endpoint exists, `goto from-hep-all`. A new `output`
//!   base chain (filter hook output, priority filter, policy accept) accepts
//!   established/related, lets the host reach its own pods (`oifname "cali*" accept`, as
//!   Calico) and `lo`, then `oifname vmap @th-dispatch` (→ `goto th-<iface>`) and
//!   `goto to-hep-all`. Interfaces with no host endpoint fall through to the accept policy.
//!   The host endpoint chains are built like the workload ones (clear marks, tiers,
//!   profiles, final drop, so no policy and no profile = deny), preceded by
//!   `ct state invalid drop` and `jump failsafe-in` / `jump failsafe-out`, whose rules
//!   accept the failsafe ports in one set lookup (`meta l4proto . th dport { tcp . 22, … }`)
//!   plus one rule per port restricted to a `net`. Reached by `goto` from a base chain, an
//!   endpoint chain's `return` on allow ends the base chain with its accept policy.
//!
//! - Staged policy preview (only for workloads and directions the staged policies change):
//!   `tw-<iface>`/`fw-<iface>` first `jump stw-<iface>`/`sfw-<iface>`, which run the staged
//!   view's tiers and profiles over preview copies of the chains (`s` + name). A preview
//!   verdict is logged (`tortie staged allow|deny <rule>: `, group [`LOG_GROUP`]) and marked
//!   ([`MARK_ACCEPT`], [`MARK_STAGED_DENY`]), never enforced; the marks are cleared before
//!   the enforced chain goes on.
//! - Host endpoint stages: `doNotTrack` policies in raw prerouting/output chains (an allow is
//!   `notrack` and final), `preDNAT` policies in a prerouting chain at mangle priority, and
//!   `applyOnForward` policies on traffic forwarded through a host endpoint.
//!
//! Not rendered (yet): the IPIP/VXLAN-from-workload drops, REJECT as deny action, and
//! `cali*` prefixes other than `cali`. (Host endpoints given by `expectedIPs` arrive here
//! already resolved to interfaces by the calculation.)

pub mod diff;
pub mod manager;
pub mod nfnl;
pub mod nft;
pub mod render;
pub mod rule;
pub mod table;

#[cfg(test)]
mod fixtures;

pub use manager::{ApplyMode, ApplyStats, NftManager};
pub use nft::{NftCommand, NftError, NftRunner, RecordingNft, SetElements};
pub use render::render;
pub use rule::{
    LOG_GROUP, LOG_PREFIX_START, MARK_ACCEPT, MARK_PASS, MARK_STAGED_DENY, STAGED_ALLOW,
    STAGED_DENY,
};
pub use table::{ChainDef, MapDef, NftTable, SetDef};
pub use tortie_calc::dataplane::DataplaneModel;
