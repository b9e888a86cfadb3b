//! Claim and release protocol tests over an in-memory store.

use std::collections::BTreeMap;
use std::sync::Arc;

use tortie_store::Store;
use tortie_store::memory::MemoryStore;

use super::*;

fn setup() -> (Arc<MemoryStore>, Ipam) {
    let store = Arc::new(MemoryStore::new());
    let ipam = Ipam::new(store.clone());
    (store, ipam)
}

fn cidr() -> IpNet {
    "10.0.0.0/29".parse().unwrap()
}

async fn affinity(store: &MemoryStore, host: &str) -> Option<BlockAffinity> {
    let kv = store
        .get(&keys::affinity_key(host, &cidr()))
        .await
        .unwrap()?;
    Some(serde_json::from_slice(&kv.value).unwrap())
}

async fn put<T: serde::Serialize>(store: &MemoryStore, key: &str, v: &T) {
    store
        .update(key, &serde_json::to_vec(v).unwrap(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn claims_a_free_block_in_three_steps() {
    let (store, ipam) = setup();
    assert_eq!(ipam.claim_block("n1", cidr()).await.unwrap(), Claim::Ours);
    let b = ipam.get_block(&cidr()).await.unwrap().unwrap();
    assert_eq!(b.value.affinity.as_deref(), Some("host:n1"));
    assert!(b.value.affinity_claim_time.is_some());
    assert_eq!(
        affinity(&store, "n1").await.unwrap().state,
        AffinityState::Confirmed
    );
}

#[tokio::test]
async fn losing_the_block_removes_our_pending_affinity() {
    let (store, ipam) = setup();
    let theirs = AllocationBlock::new(cidr(), Some(host_affinity("n2")), None);
    put(&store, &keys::block_key(&cidr()), &theirs).await;
    assert_eq!(ipam.claim_block("n1", cidr()).await.unwrap(), Claim::Taken);
    assert!(affinity(&store, "n1").await.is_none());
}

#[tokio::test]
async fn a_crashed_claim_is_taken_over() {
    let (store, ipam) = setup();
    let pending = BlockAffinity::host("n1", cidr(), AffinityState::Pending);
    put(&store, &keys::affinity_key("n1", &cidr()), &pending).await;
    let ours = AllocationBlock::new(cidr(), Some(host_affinity("n1")), None);
    put(&store, &keys::block_key(&cidr()), &ours).await;
    assert_eq!(ipam.claim_block("n1", cidr()).await.unwrap(), Claim::Ours);
    assert_eq!(
        affinity(&store, "n1").await.unwrap().state,
        AffinityState::Confirmed
    );
}

#[tokio::test]
async fn release_backs_off_when_the_block_changed() {
    let (store, ipam) = setup();
    ipam.claim_block("n1", cidr()).await.unwrap();
    let seen = ipam.get_block(&cidr()).await.unwrap().unwrap();
    let mut used = seen.value.clone();
    used.allocate(1, "h", &BTreeMap::new(), |_| false);
    ipam.put_block(&used, seen.rev).await.unwrap().unwrap();
    assert!(!ipam.release_block(&seen).await.unwrap());
    assert!(ipam.get_block(&cidr()).await.unwrap().is_some());
    assert_eq!(
        affinity(&store, "n1").await.unwrap().state,
        AffinityState::Confirmed,
        "affinity restored"
    );
}

#[tokio::test]
async fn release_skips_a_claim_in_flight_and_deletes_an_idle_block() {
    let (store, ipam) = setup();
    ipam.claim_block("n1", cidr()).await.unwrap();
    let seen = ipam.get_block(&cidr()).await.unwrap().unwrap();
    let pending = BlockAffinity::host("n1", cidr(), AffinityState::Pending);
    put(&store, &keys::affinity_key("n1", &cidr()), &pending).await;
    assert!(!ipam.release_block(&seen).await.unwrap());
    let confirmed = BlockAffinity::host("n1", cidr(), AffinityState::Confirmed);
    put(&store, &keys::affinity_key("n1", &cidr()), &confirmed).await;
    assert!(ipam.release_block(&seen).await.unwrap());
    assert!(ipam.get_block(&cidr()).await.unwrap().is_none());
    assert!(affinity(&store, "n1").await.is_none());
}

#[tokio::test]
async fn adopting_an_existing_block_defeats_a_stale_release() {
    let (store, ipam) = setup();
    ipam.claim_block("n1", cidr()).await.unwrap();
    let seen = ipam.get_block(&cidr()).await.unwrap().unwrap();
    // A release marked the affinity pendingDeletion, then stalled before deleting the block.
    let marking = BlockAffinity::host("n1", cidr(), AffinityState::PendingDeletion);
    put(&store, &keys::affinity_key("n1", &cidr()), &marking).await;
    assert_eq!(ipam.claim_block("n1", cidr()).await.unwrap(), Claim::Ours);
    let deleted = store
        .delete(&keys::block_key(&cidr()), Some(seen.rev))
        .await;
    assert!(deleted.is_err(), "the stale delete must fail");
    assert_eq!(
        affinity(&store, "n1").await.unwrap().state,
        AffinityState::Confirmed
    );
}
