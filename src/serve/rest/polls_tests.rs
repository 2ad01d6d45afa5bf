use super::*;

fn poll<'a>(asked: &'a str, current: &'a Arc<str>) -> Poll<'a> {
    Poll {
        asked,
        names: &[],
        error: None,
        nonce: "",
        current,
    }
}

fn v(version: &str) -> Arc<str> {
    version.into()
}

#[test]
fn a_new_poller_is_sent_the_current_version_and_acks_it_by_asking_with_it() {
    let mut state = TypePoll::default();
    let current = v("v1");
    assert_eq!(state.on_poll(poll("", &current)), (Answer::Send, None));
    let acked = state.on_poll(poll("v1", &current));
    assert_eq!(acked, (Answer::NotModified, Some(Verdict::Acked(v("v1")))));
    assert_eq!(
        state.on_poll(poll("v1", &current)),
        (Answer::NotModified, None)
    );
    let newer = v("v2");
    assert_eq!(state.on_poll(poll("v1", &newer)), (Answer::Send, None));
    let acked = state.on_poll(poll("v2", &newer));
    assert_eq!(acked, (Answer::NotModified, Some(Verdict::Acked(v("v2")))));
}

#[test]
fn asking_again_with_the_older_version_is_answered_once_more_then_recorded_as_rejected() {
    let mut state = TypePoll::default();
    let (good, bad) = (v("good"), v("bad"));
    state.on_poll(poll("", &good));
    state.on_poll(poll("good", &good));
    assert_eq!(state.on_poll(poll("good", &bad)), (Answer::Send, None));
    // Lost, or rejected: sent once more.
    assert_eq!(state.on_poll(poll("good", &bad)), (Answer::Send, None));
    let (answer, verdict) = state.on_poll(poll("good", &bad));
    assert_eq!(answer, Answer::NotModified);
    let Some(Verdict::Rejected { version, message }) = verdict else {
        panic!("expected a rejection, got {verdict:?}");
    };
    assert_eq!(&*version, "bad");
    assert!(message.contains("update_rejected"), "{message}");
    // Not resent, and not recorded again, while it is the current version.
    for _ in 0..5 {
        assert_eq!(
            state.on_poll(poll("good", &bad)),
            (Answer::NotModified, None)
        );
    }
    // A newer version is sent, and can be ACKed.
    let fixed = v("fixed");
    assert_eq!(state.on_poll(poll("good", &fixed)), (Answer::Send, None));
    let acked = state.on_poll(poll("fixed", &fixed));
    assert_eq!(acked, (Answer::NotModified, Some(Verdict::Acked(fixed))));
}

#[test]
fn error_detail_rejects_the_version_its_nonce_names_and_that_version_is_not_resent() {
    let mut state = TypePoll::default();
    let bad = v("bad");
    state.on_poll(poll("", &bad));
    let nack = Poll {
        error: Some("listener: duplicate filter chain"),
        nonce: "bad",
        ..poll("", &bad)
    };
    let (answer, verdict) = state.on_poll(nack);
    assert_eq!(answer, Answer::NotModified);
    assert_eq!(
        verdict,
        Some(Verdict::Rejected {
            version: v("bad"),
            message: "listener: duplicate filter chain".into()
        })
    );
    assert_eq!(state.on_poll(poll("", &bad)), (Answer::NotModified, None));
}

#[test]
fn changed_resource_names_are_answered_in_full_even_at_the_same_version() {
    let mut state = TypePoll::default();
    let current = v("v1");
    let (one, two) = (vec!["a".to_owned()], vec!["a".to_owned(), "b".to_owned()]);
    let named = |names| Poll {
        names,
        ..poll("v1", &current)
    };
    assert_eq!(state.on_poll(named(&one)).0, Answer::Send);
    assert_eq!(state.on_poll(named(&one)).0, Answer::NotModified);
    assert_eq!(state.on_poll(named(&two)).0, Answer::Send);
    assert_eq!(state.on_poll(named(&two)).0, Answer::NotModified);
}

#[test]
fn a_first_poll_already_at_the_current_version_is_not_modified_unless_it_names_resources() {
    let current = v("v1");
    let mut wildcard = TypePoll::default();
    let answer = wildcard.on_poll(poll("v1", &current));
    assert_eq!(answer, (Answer::NotModified, Some(Verdict::Acked(v("v1")))));
    let mut named = TypePoll::default();
    let names = ["orders".to_owned()];
    let first = Poll {
        names: &names,
        ..poll("v1", &current)
    };
    assert_eq!(named.on_poll(first).0, Answer::Send);
}

fn poller(node_id: &str) -> Poller {
    Poller {
        node_id: node_id.into(),
        node_type: "sidecar".into(),
        caller: String::new(),
        location: Location::default(),
        identity: None,
    }
}

#[test]
fn pollers_show_in_the_status_registry_with_what_they_acked_and_rejected() {
    let (polls, status) = (Polls::default(), StatusRegistry::default());
    let (good, bad) = (v("good"), v("bad"));
    let lds = ResourceType::Listener;
    polls.poll(&status, poller("rest-1"), lds, poll("", &good));
    polls.poll(&status, poller("rest-1"), lds, poll("good", &good));
    for _ in 0..6 {
        polls.poll(&status, poller("rest-1"), lds, poll("good", &bad));
    }
    let streams = status.streams();
    assert_eq!(streams.len(), 1, "{streams:?}");
    let stream = &streams[0];
    assert_eq!((stream.service, stream.mode), ("rest", "rest"));
    let types = &stream.types[lds.index()];
    assert_eq!(types.acked_version.as_deref(), Some("good"));
    assert_eq!(types.sent_version.as_deref(), Some("bad"));
    let nack = types.last_nack.as_ref().expect("a NACK is recorded");
    assert_eq!(nack.rejected_version, "bad");
    // good once, bad twice; then nothing more.
    assert_eq!(status.counters().pushes(lds), 3);
    assert_eq!(status.counters().nacks(lds), 1);
    assert_eq!(status.counters().acks(lds), 1);
}

#[test]
fn another_envoy_with_the_same_node_id_starts_afresh_and_replaces_the_entry() {
    let (polls, status) = (Polls::default(), StatusRegistry::default());
    let current = v("v1");
    polls.poll(
        &status,
        poller("rest-1"),
        ResourceType::Cluster,
        poll("", &current),
    );
    let other = Poller {
        node_type: "gateway".into(),
        ..poller("rest-1")
    };
    let answer = polls.poll(&status, other, ResourceType::Cluster, poll("", &current));
    assert_eq!(answer, Answer::Send);
    let streams = status.streams();
    assert_eq!(streams.len(), 1, "{streams:?}");
    assert_eq!(streams[0].node_type, "gateway");
}
