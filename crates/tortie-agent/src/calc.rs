//! Desired routes from the routing model: Calico's "no BGP" static routing (Felix
//! `programClusterRoutes` without encapsulation).
//!
//! Rules, for the agent of node `me`:
//! - a block with a confirmed affinity to another node: `<block> via <that node's IP>`;
//! - a block with a confirmed affinity to `me`: a blackhole for the block, so unassigned
//!   addresses of our own blocks never leak to the default route (the CNI's per-pod /32 dev
//!   routes are more specific and win);
//! - an address allocated to node `O` (allocation attribute `node`) inside a block that is not
//!   affine to `O`, where `O` is not `me`: `/32` (`/128`) via `O`'s IP. This covers addresses
//!   other nodes borrowed from our blocks and, so traffic takes one hop, addresses borrowed
//!   from third nodes' or unaffined blocks;
//! - an address allocated to `me` in someone else's block: nothing (the CNI's /32 dev route);
//! - pending, pending-deletion and tombstoned affinities are ignored; a node without an
//!   address of the block's family is reported in [`CalcOutput::unresolved`], not routed.
//!
//! Pure and deterministic: output is a `BTreeMap`, independent of input order. When several
//! nodes hold a confirmed affinity to the same block (an inconsistency `ipam check` reports),
//! `me` wins, else the smallest node name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tortie_ipam::model::AffinityState;

use crate::model::RoutingModel;
use crate::route::{RouteSet, RouteTarget};

/// A route that could not be built because the next-hop node has no usable address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unresolved {
    pub dst: IpNet,
    pub node: String,
}

/// The result of [`desired_routes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalcOutput {
    pub routes: RouteSet,
    pub unresolved: BTreeSet<Unresolved>,
}

/// The routes node `me` should have.
pub fn desired_routes(model: &RoutingModel, me: &str) -> CalcOutput {
    let owners = block_owners(model, me);
    let mut out = CalcOutput::default();
    for (cidr, owner) in &owners {
        if *owner == me {
            out.routes.insert(*cidr, RouteTarget::Blackhole);
        } else {
            route_via(model, &mut out, *cidr, owner);
        }
    }
    for (cidr, allocs) in &model.allocations {
        let block_owner = owners.get(cidr).copied();
        for (ip, node) in allocs {
            if node == me || Some(node.as_str()) == block_owner {
                continue;
            }
            route_via(model, &mut out, host_net(*ip), node);
        }
    }
    out
}

/// Block CIDR → the node whose confirmed affinity owns it.
fn block_owners<'a>(model: &'a RoutingModel, me: &str) -> BTreeMap<IpNet, &'a str> {
    let mut owners: BTreeMap<IpNet, &str> = BTreeMap::new();
    for ((node, cidr), state) in &model.affinities {
        if *state != AffinityState::Confirmed {
            continue;
        }
        // Affinities iterate by (node, cidr): the first holder seen is the smallest name.
        let entry = owners.entry(*cidr).or_insert(node.as_str());
        if node == me {
            *entry = node.as_str();
        }
    }
    owners
}

fn route_via(model: &RoutingModel, out: &mut CalcOutput, dst: IpNet, node: &str) {
    match model.nodes.get(node).and_then(|a| a.for_family_of(&dst)) {
        Some(gw) => {
            out.routes.insert(dst, RouteTarget::Via(gw));
        }
        None => {
            out.unresolved.insert(Unresolved {
                dst,
                node: node.to_string(),
            });
        }
    }
}

/// `ip/32` or `ip/128`.
pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

#[cfg(test)]
#[path = "calc_tests.rs"]
mod tests;
