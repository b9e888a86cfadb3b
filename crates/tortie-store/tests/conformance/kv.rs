//! Key-value cases: get, list, create, CAS update/delete, upsert, revisions.

use tortie_store::StoreError;

use super::Fixture;

pub async fn create_get_list_by_prefix(fx: &Fixture) {
    let s = fx.store.as_ref();
    // Inserted out of order, with a sibling prefix ("/a/" vs "/ab/") and a prefix-less key.
    let r_c = s.create("/a/c", b"3").await.unwrap();
    let r_a = s.create("/a/a", b"1").await.unwrap();
    let r_b = s.create("/a/b", b"2").await.unwrap();
    s.create("/ab/x", b"x").await.unwrap();
    s.create("/b/y", b"y").await.unwrap();
    let last = s.create("a", b"bare").await.unwrap();
    assert!(r_c < r_a && r_a < r_b && r_b < last);

    let kv = s.get("/a/a").await.unwrap().expect("/a/a exists");
    assert_eq!(kv.key, "/a/a");
    assert_eq!(kv.value, b"1");
    assert_eq!(kv.create_revision, r_a);
    assert_eq!(kv.mod_revision, r_a);
    assert_eq!(s.get("/a/zz").await.unwrap(), None);
    assert_eq!(s.get("/a/").await.unwrap(), None, "a prefix is not a key");

    let list = s.list("/a/").await.unwrap();
    let keys: Vec<&str> = list.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/a", "/a/b", "/a/c"]);
    let only_keys = s.list_keys("/a/").await.unwrap();
    assert_eq!(
        only_keys.keys,
        [
            ("/a/a".to_string(), r_a),
            ("/a/b".to_string(), r_b),
            ("/a/c".to_string(), r_c)
        ]
    );
    assert!(only_keys.revision >= last);
    assert_eq!(list.items[2].mod_revision, r_c);
    assert!(
        list.revision >= last,
        "list revision {} < last write {last}",
        list.revision
    );

    let all = s.list("").await.unwrap();
    let keys: Vec<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/a/a", "/a/b", "/a/c", "/ab/x", "/b/y", "a"]);
    assert!(s.list("/nothing/").await.unwrap().items.is_empty());
}

pub async fn create_existing_fails(fx: &Fixture) {
    let s = fx.store.as_ref();
    let rev = s.create("/k", b"one").await.unwrap();
    match s.create("/k", b"two").await {
        Err(StoreError::AlreadyExists { key }) => assert_eq!(key, "/k"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let kv = s.get("/k").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"one"[..], rev));
    assert_eq!(
        s.revision().await.unwrap(),
        rev,
        "a failed create must not bump the revision"
    );
}

pub async fn update_cas_success_and_conflict(fx: &Fixture) {
    let s = fx.store.as_ref();
    let created = s.create("/k", b"v1").await.unwrap();
    let updated = s.update("/k", b"v2", Some(created)).await.unwrap();
    assert!(updated > created);
    let kv = s.get("/k").await.unwrap().unwrap();
    assert_eq!(kv.value, b"v2");
    assert_eq!(kv.create_revision, created, "update keeps create_revision");
    assert_eq!(kv.mod_revision, updated);

    match s.update("/k", b"stale", Some(created)).await {
        Err(StoreError::Conflict {
            key,
            expected,
            actual,
        }) => {
            assert_eq!(key, "/k");
            assert_eq!(expected, created);
            assert_eq!(actual, updated, "conflict carries the actual revision");
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, b"v2");
    assert_eq!(s.revision().await.unwrap(), updated);
}

pub async fn writes_to_missing_keys_fail(fx: &Fixture) {
    let s = fx.store.as_ref();
    s.create("/present", b"p").await.unwrap();
    let before = s.revision().await.unwrap();
    for expected in [Some(1), Some(0), Some(before)] {
        match s.update("/missing", b"x", expected).await {
            Err(StoreError::NotFound { key }) => assert_eq!(key, "/missing"),
            other => panic!("update {expected:?} of a missing key: {other:?}"),
        }
    }
    for expected in [None, Some(0), Some(before)] {
        match s.delete("/missing", expected).await {
            Err(StoreError::NotFound { key }) => assert_eq!(key, "/missing"),
            other => panic!("delete {expected:?} of a missing key: {other:?}"),
        }
    }
    assert_eq!(s.get("/missing").await.unwrap(), None);
    assert_eq!(
        s.revision().await.unwrap(),
        before,
        "failed writes must not bump the revision"
    );
}

pub async fn unconditional_upsert(fx: &Fixture) {
    let s = fx.store.as_ref();
    let created = s.update("/u", b"first", None).await.unwrap();
    let kv = s.get("/u").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision), (created, created));
    let replaced = s.update("/u", b"second", None).await.unwrap();
    assert!(replaced > created);
    let kv = s.get("/u").await.unwrap().unwrap();
    assert_eq!(kv.value, b"second");
    assert_eq!((kv.create_revision, kv.mod_revision), (created, replaced));
}

pub async fn delete_cas(fx: &Fixture) {
    let s = fx.store.as_ref();
    let created = s.create("/d", b"1").await.unwrap();
    let updated = s.update("/d", b"2", None).await.unwrap();
    match s.delete("/d", Some(created)).await {
        Err(StoreError::Conflict {
            expected, actual, ..
        }) => assert_eq!((expected, actual), (created, updated)),
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(s.get("/d").await.unwrap().is_some());
    let deleted = s.delete("/d", Some(updated)).await.unwrap();
    assert!(deleted > updated);
    assert_eq!(s.get("/d").await.unwrap(), None);
    assert_eq!(s.revision().await.unwrap(), deleted);

    // Re-creating starts a new life: a new create_revision.
    let again = s.create("/d", b"3").await.unwrap();
    assert!(again > deleted);
    assert_eq!(s.get("/d").await.unwrap().unwrap().create_revision, again);
    let gone = s.delete("/d", None).await.unwrap();
    assert!(gone > again);
}

pub async fn revision_is_monotonic(fx: &Fixture) {
    let s = fx.store.as_ref();
    let mut last = s.revision().await.unwrap();
    for i in 0..30 {
        let key = format!("/m/{}", i % 7);
        let rev = match i % 3 {
            0 => s.update(&key, b"x", None).await.unwrap(),
            1 => s
                .update(&key, format!("{i}").as_bytes(), None)
                .await
                .unwrap(),
            _ => match s.delete(&key, None).await {
                Ok(rev) => rev,
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => panic!("{e}"),
            },
        };
        assert!(rev > last, "revision went from {last} to {rev}");
        assert_eq!(s.revision().await.unwrap(), rev);
        last = rev;
        // Reads never move the revision.
        s.get(&key).await.unwrap();
        s.list("/m/").await.unwrap();
        assert_eq!(s.revision().await.unwrap(), rev);
    }
}

pub async fn values_are_opaque_bytes(fx: &Fixture) {
    let s = fx.store.as_ref();
    let binary: Vec<u8> = (0..=255).collect();
    let large = vec![0xA5; 256 * 1024];
    s.create("/bin", &binary).await.unwrap();
    s.create("/empty", b"").await.unwrap();
    s.create("/large", &large).await.unwrap();
    s.create("/ключ/ü", "unicode key".as_bytes()).await.unwrap();
    assert_eq!(s.get("/bin").await.unwrap().unwrap().value, binary);
    assert_eq!(s.get("/empty").await.unwrap().unwrap().value, b"");
    assert_eq!(s.get("/large").await.unwrap().unwrap().value, large);
    let list = s.list("/ключ/").await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].key, "/ключ/ü");
    // Non-ASCII sorts bytewise after ASCII, like Rust strings.
    let all = s.list("/").await.unwrap();
    let keys: Vec<&str> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    assert_eq!(keys.last(), Some(&"/ключ/ü"));
}
