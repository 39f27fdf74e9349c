//! Registrations: node ids owned, streams replaced and limited, grace
//! periods, and the file they survive a restart in.

use std::time::{Duration, Instant};

use weft_proto::discovery::v1::Node;

use super::*;

fn owner(spiffe: &str) -> Owner {
    Owner::Workload {
        spiffe: spiffe.into(),
        group: "reviews".into(),
        address: "10.0.0.7".parse().expect("ip"),
    }
}

fn admitted(id: &str, spiffe: &str) -> Admitted {
    Admitted {
        node: Node {
            id: id.into(),
            workload: "reviews".into(),
            address: "10.0.0.7".into(),
            ..Node::default()
        },
        owner: owner(spiffe),
    }
}

const REVIEWS: &str = "spiffe://cluster.local/ns/default/sa/reviews";
const OTHER: &str = "spiffe://cluster.local/ns/default/sa/other";

#[test]
fn a_node_id_belongs_to_its_owner() {
    let registrations = Registrations::default();
    let first = registrations
        .register(admitted("a", REVIEWS))
        .expect("first");
    let Err(Conflict::NodeIdTaken(why)) = registrations.register(admitted("a", OTHER)) else {
        panic!("another identity took the node id");
    };
    assert!(
        why.contains("node id \"a\" is registered to spiffe://cluster.local/ns/default/sa/reviews"),
        "{why}"
    );
    assert!(
        why.contains("refused for spiffe://cluster.local/ns/default/sa/other"),
        "{why}"
    );
    // The refused stream ends nothing of the first.
    assert!(registrations.is_connected("a"));
    // Even after the first stream is lost, the id stays its owner's.
    assert!(registrations.leave("a", first.session, Leaving::Lost, Instant::now(), || {}));
    assert!(matches!(
        registrations.register(admitted("a", OTHER)),
        Err(Conflict::NodeIdTaken(_))
    ));
}

#[test]
fn the_same_owner_replaces_its_older_stream() {
    let registrations = Registrations::default();
    let mut first = registrations
        .register(admitted("a", REVIEWS))
        .expect("first");
    let second = registrations
        .register(admitted("a", REVIEWS))
        .expect("second");
    assert!(
        first
            .replaced
            .try_recv()
            .is_err_and(|e| e == oneshot::error::TryRecvError::Closed)
    );
    // The replaced stream ending removes nothing.
    assert!(!registrations.leave("a", first.session, Leaving::Goodbye, Instant::now(), || {}));
    assert_eq!(registrations.workloads().len(), 1);
    assert!(registrations.leave("a", second.session, Leaving::Goodbye, Instant::now(), || {}));
    assert!(
        registrations.workloads().is_empty(),
        "a goodbye leaves at once"
    );
}

#[test]
fn a_lost_stream_is_kept_for_the_grace_period() {
    let registrations = Registrations::new(Duration::from_secs(10), 4);
    let start = Instant::now();
    let held = registrations.register(admitted("a", REVIEWS)).expect("a");
    registrations.register(admitted("b", REVIEWS)).expect("b");
    assert!(registrations.leave("a", held.session, Leaving::Lost, start, || {}));
    assert_eq!(
        registrations.next_expiry(),
        Some(start + Duration::from_secs(10))
    );
    assert!(
        registrations
            .expire(start + Duration::from_secs(9), |_| {})
            .is_empty()
    );
    assert_eq!(registrations.workloads().len(), 2, "still an endpoint");
    assert_eq!(
        registrations.expire(start + Duration::from_secs(10), |_| {}),
        ["a"]
    );
    assert_eq!(
        registrations.workloads().len(),
        1,
        "only its own registration went"
    );
    assert!(registrations.is_connected("b"));
}

#[test]
fn streams_are_limited_per_proven_identity() {
    let registrations = Registrations::new(DEFAULT_GRACE, 2);
    registrations.register(admitted("a", REVIEWS)).expect("a");
    registrations.register(admitted("b", REVIEWS)).expect("b");
    let Err(Conflict::TooManyStreams(why)) = registrations.register(admitted("c", REVIEWS)) else {
        panic!("a third stream was admitted");
    };
    assert!(
        why.contains("already has 2 streams open (at most 2)"),
        "{why}"
    );
    // Reconnecting an id it holds is not a new stream; another identity
    // has its own allowance.
    registrations
        .register(admitted("a", REVIEWS))
        .expect("a again");
    registrations
        .register(admitted("c", OTHER))
        .expect("other identity");
}

#[test]
fn restored_registrations_wait_one_grace_period_for_their_proxies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let before = Registrations::default();
    before.register(admitted("a", REVIEWS)).expect("a");
    before.register(admitted("b", OTHER)).expect("b");
    save(dir.path(), &before.saved()).expect("save");

    let (saved, problem) = load(dir.path());
    assert_eq!(problem, None);
    let after = Registrations::new(Duration::from_secs(10), 4);
    let start = Instant::now();
    after.restore(saved, start);
    assert_eq!(
        after.workloads(),
        before.workloads(),
        "the same endpoints from the start"
    );
    // "a" comes back, "b" does not.
    after.register(admitted("a", REVIEWS)).expect("a back");
    assert!(
        matches!(
            after.register(admitted("b", REVIEWS)),
            Err(Conflict::NodeIdTaken(_))
        ),
        "a restored id is still its owner's"
    );
    assert_eq!(after.expire(start + Duration::from_secs(10), |_| {}), ["b"]);
    assert!(after.is_connected("a"));
}

#[test]
fn a_broken_file_is_set_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join(FILE_NAME), "").expect("write");
    let (saved, problem) = load(dir.path());
    assert!(saved.is_empty());
    let problem = problem.expect("reported");
    assert!(problem.contains("not a registrations file"), "{problem}");
    assert!(dir.path().join("registrations.json.bad").exists());
    assert_eq!(load(dir.path()), (Vec::new(), None));
}

#[test]
fn readmission_updates_a_changed_node_and_removes_a_refused_one() {
    let registrations = Registrations::default();
    let peer = "10.0.0.7:4000".parse().expect("addr");
    let claim = Claim {
        caller: Caller::Plaintext { peer },
        claimed: Node::default(),
    };
    let mut held = registrations
        .register_claimed(admitted("a", REVIEWS), Some(claim))
        .expect("a");
    // Not claimed: never re-admitted.
    registrations.register(admitted("b", REVIEWS)).expect("b");
    let before = *registrations.subscribe().borrow();

    // Same answer: nothing changes, no rebuild.
    assert!(
        registrations
            .readmit(|_, _| Ok(admitted("a", REVIEWS)))
            .is_empty()
    );
    assert_eq!(*registrations.subscribe().borrow(), before);
    assert!(!held.admitted.has_changed().expect("open"));

    // New labels: the registration and its stream get them.
    let mut relabelled = admitted("a", REVIEWS);
    relabelled
        .node
        .labels
        .insert("track".into(), "canary".into());
    assert!(
        registrations
            .readmit(|_, _| Ok(relabelled.clone()))
            .is_empty()
    );
    assert!(*registrations.subscribe().borrow() > before);
    assert_eq!(
        *held.admitted.borrow_and_update(),
        Ok(relabelled.node.clone())
    );
    assert!(registrations.nodes().contains(&relabelled.node));

    // Refused: gone at once (no grace), its stream told why.
    let refused = registrations.readmit(|_, _| Err(Refusal("group deleted".into())));
    assert_eq!(
        refused,
        [("a".to_string(), Refusal("group deleted".into()))]
    );
    assert!(!registrations.is_connected("a"));
    assert_eq!(registrations.nodes().len(), 1, "b stays");
    assert_eq!(
        *held.admitted.borrow(),
        Err(Refusal("group deleted".into()))
    );
}
