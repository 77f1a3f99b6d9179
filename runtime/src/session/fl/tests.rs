//! One round between a coordinator and devices, deterministic, with a virtual clock.

use super::*;
use crate::wire::{CodecDesc, ModelPayload, RoundConfig};

fn node(name: &str) -> NodeName {
    NodeName::try_from(name).unwrap()
}

fn task(round: u64) -> RoundTask {
    RoundTask {
        round,
        deadline_ms: 10_000,
        config: RoundConfig {
            local_epochs: 1,
            batch_size: 8,
            lr: 0.1,
            proximal_mu: 0.0,
        },
        model: ModelPayload::Full,
        model_codec: CodecDesc::Identity,
        update_codec: CodecDesc::Identity,
        payload_len: 3,
        factors_len: 0,
    }
}

fn update(round: u64, from: &str) -> Update {
    Update {
        round,
        node: node(from),
        num_examples: 5,
        train_loss: 0.0,
        codec: CodecDesc::Identity,
        payload_len: 1,
    }
}

fn send(c: &mut RoundCoordinator, now: Instant, from: &str, u: Update) {
    c.handle_message(now, &node(from), Envelope::Update(u, vec![1]));
}

fn events(c: &mut RoundCoordinator) -> Vec<CoordinatorEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

#[test]
fn each_participant_gets_its_own_model_and_it_again_until_it_reports() {
    let now = Instant::now();
    let assignment = |to: &str, model: Vec<u8>| {
        let mut own = task(99);
        own.payload_len = model.len() as u64;
        Assignment {
            to: node(to),
            task: own,
            model,
        }
    };
    let mut c = RoundCoordinator::start_each(
        now,
        4,
        2_000,
        vec![assignment("a", vec![1]), assignment("b", vec![2, 2])],
        1,
    );
    let sent: Vec<Outgoing> = std::iter::from_fn(|| c.poll_transmit()).collect();
    let models: Vec<(&str, u64, u64, &[u8])> = sent
        .iter()
        .map(|o| match &o.envelope {
            Envelope::RoundTask(t, m) => (o.to.as_str(), t.round, t.deadline_ms, m.as_slice()),
            other => panic!("{other:?}"),
        })
        .collect();
    // The round's number and deadline replace the tasks' own.
    assert_eq!(
        models,
        [("a", 4, 2_000, &[1][..]), ("b", 4, 2_000, &[2, 2][..])]
    );
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(2)));
    assert_eq!(c.participants().count(), 2);
    assert_eq!(c.task_for(&node("b")), Some(&sent[1].envelope));
    assert_eq!(c.task_for(&node("z")), None);
    send(&mut c, now, "b", update(4, "b"));
    assert_eq!(c.task_for(&node("b")), None, "reported: nothing to resend");
    assert_eq!(c.task_for(&node("a")), Some(&sent[0].envelope));
    c.handle_timeout(now + Duration::from_secs(2));
    assert!(c.is_ended());
    assert_eq!(c.task_for(&node("a")), None, "the round is over");
}

#[test]
fn task_goes_to_every_participant_and_all_reports_commit_early() {
    let now = Instant::now();
    let nodes = vec![node("a"), node("b")];
    let mut c = RoundCoordinator::start(now, task(7), vec![1, 2, 3], nodes.clone(), 2);
    let sent: Vec<Outgoing> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(
        |o| matches!(&o.envelope, Envelope::RoundTask(t, m) if t.round == 7 && m == &vec![1, 2, 3])
    ));
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(10)));
    send(&mut c, now, "a", update(7, "a"));
    assert!(!c.is_ended());
    send(&mut c, now, "b", update(7, "b"));
    assert!(
        c.is_ended(),
        "every participant reported: commit before the deadline"
    );
    let ev = events(&mut c);
    let [CoordinatorEvent::Committed { round: 7, updates }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    let from: Vec<&str> = updates.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(from, ["a", "b"]);
    let results: Vec<Outgoing> = std::iter::from_fn(|| c.poll_transmit()).collect();
    assert_eq!(results.len(), 2);
    assert!(results.iter().all(|o| o.envelope
        == Envelope::RoundResult(RoundResult {
            round: 7,
            committed: true,
            accepted: 2,
            rejected: 0
        })));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn duplicates_stale_spoofed_and_strangers_are_never_aggregated() {
    let now = Instant::now();
    let mut c = RoundCoordinator::start(
        now,
        task(3),
        vec![],
        vec![node("a"), node("b"), node("c")],
        1,
    );
    send(&mut c, now, "a", update(3, "a"));
    send(&mut c, now, "a", update(3, "a")); // resend
    send(&mut c, now, "b", update(2, "b")); // stale round
    send(&mut c, now, "b", update(3, "c")); // b claims to be c
    send(&mut c, now, "z", update(3, "z")); // not a participant
    let reasons: Vec<Refusal> = events(&mut c)
        .into_iter()
        .filter_map(|e| match e {
            CoordinatorEvent::Refused { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        [
            Refusal::Duplicate,
            Refusal::StaleRound,
            Refusal::Spoofed,
            Refusal::NotParticipant
        ]
    );
    c.handle_timeout(now + Duration::from_secs(10));
    let ev = events(&mut c);
    let [CoordinatorEvent::Committed { updates, .. }] = ev.as_slice() else {
        panic!("{ev:?}")
    };
    assert_eq!(updates.len(), 1, "counted once");
    let results: Vec<Outgoing> = std::iter::from_fn(|| c.poll_transmit()).skip(3).collect();
    assert_eq!(results.len(), 3);
    // The duplicate is not held against anyone: 3 rejected (stale, spoofed, stranger).
    assert_eq!(
        results[0].envelope,
        Envelope::RoundResult(RoundResult {
            round: 3,
            committed: true,
            accepted: 1,
            rejected: 3
        })
    );
}

#[test]
fn too_few_updates_by_the_deadline_abort_and_late_ones_get_the_result_again() {
    let now = Instant::now();
    let mut c = RoundCoordinator::start(now, task(1), vec![], vec![node("a"), node("b")], 2);
    send(&mut c, now, "a", update(1, "a"));
    c.handle_timeout(now + Duration::from_secs(9));
    assert!(!c.is_ended(), "not before the deadline");
    c.handle_timeout(now + Duration::from_secs(10));
    assert_eq!(
        events(&mut c),
        [CoordinatorEvent::Aborted {
            round: 1,
            delivered: vec![node("a")]
        }]
    );
    while c.poll_transmit().is_some() {}
    send(&mut c, now + Duration::from_secs(11), "b", update(1, "b"));
    assert!(matches!(
        events(&mut c).as_slice(),
        [CoordinatorEvent::Refused {
            reason: Refusal::Late,
            ..
        }]
    ));
    let again = c
        .poll_transmit()
        .expect("the late device learns the result");
    assert_eq!(again.to, node("b"));
    assert!(matches!(
        again.envelope,
        Envelope::RoundResult(RoundResult {
            committed: false,
            ..
        })
    ));
    // Late updates in a loop while nothing is sent (the cloud commits meanwhile): one
    // result waits for the device, not one per update.
    for _ in 0..1000 {
        send(&mut c, now + Duration::from_secs(12), "b", update(1, "b"));
    }
    assert_eq!(std::iter::from_fn(|| c.poll_transmit()).count(), 1);
}

#[test]
fn client_trains_once_and_resends_its_update_until_the_result() {
    let now = Instant::now();
    let mut client = RoundClient::new(Duration::from_secs(1));
    client.handle_message(now, Envelope::RoundTask(task(4), vec![9]));
    client.handle_message(now, Envelope::RoundTask(task(4), vec![9])); // resent task
    let ev: Vec<ClientEvent> = std::iter::from_fn(|| client.poll_event()).collect();
    assert_eq!(
        ev,
        [ClientEvent::Train {
            task: task(4),
            model: vec![9]
        }],
        "trained once"
    );

    client.submit_update(now, update(4, "a"), vec![5]);
    let first = client.poll_transmit().expect("update sent");
    // Lost: resent after 1 s, then 2 s later (backoff).
    client.handle_timeout(now + Duration::from_secs(1));
    assert_eq!(client.poll_transmit(), Some(first.clone()));
    assert_eq!(client.poll_timeout(), Some(now + Duration::from_secs(3)));
    client.handle_reconnect(now + Duration::from_secs(2));
    assert_eq!(client.poll_transmit(), Some(first));

    let result = RoundResult {
        round: 4,
        committed: true,
        accepted: 1,
        rejected: 0,
    };
    client.handle_message(now, Envelope::RoundResult(result.clone()));
    client.handle_message(now, Envelope::RoundResult(result.clone())); // repeated result
    assert_eq!(
        std::iter::from_fn(|| client.poll_event()).collect::<Vec<_>>(),
        [ClientEvent::Ended(result)]
    );
    assert_eq!(client.poll_timeout(), None, "no more resends");
    // A task for a round that already ended is not trained again.
    client.handle_message(now, Envelope::RoundTask(task(4), vec![9]));
    assert_eq!(client.poll_event(), None);
}

#[test]
fn a_task_asked_for_again_after_the_update_was_sent_is_answered_at_once() {
    let now = Instant::now();
    let mut client = RoundClient::new(Duration::from_secs(2));
    let long = |round| RoundTask {
        deadline_ms: 60_000,
        ..task(round)
    };
    client.handle_message(now, Envelope::RoundTask(long(3), vec![1]));
    let _ = client.poll_event();
    client.submit_update(now, update(3, "a"), vec![5]);
    let sent = client.poll_transmit().expect("update sent");
    // Unanswered for a while (resent at 2, 6 and 14 s): the backoff grows to 16 s.
    let mut t = now;
    for _ in 0..3 {
        t = client.poll_timeout().unwrap();
        client.handle_timeout(t);
    }
    assert_eq!(client.poll_timeout(), Some(now + Duration::from_secs(30)));
    // A restarted cloud sends round 3's task again: trained (or answered) again now.
    let later = t + Duration::from_secs(1);
    client.handle_message(later, Envelope::RoundTask(long(3), vec![1]));
    assert_eq!(
        client.poll_event(),
        Some(ClientEvent::Train {
            task: long(3),
            model: vec![1]
        })
    );
    assert_eq!(client.poll_timeout(), None, "the old update is not resent");
    let _ = std::iter::from_fn(|| client.poll_transmit()).count();
    client.submit_update(later, update(3, "a"), vec![5]);
    assert_eq!(client.poll_transmit(), Some(sent));
    assert_eq!(
        client.poll_timeout(),
        Some(later + Duration::from_secs(2)),
        "resends start over"
    );
    // Still once while the application trains: a third copy before it submits is not
    // another Train.
    client.handle_message(later, Envelope::RoundTask(task(4), vec![2]));
    client.handle_message(later, Envelope::RoundTask(task(4), vec![2]));
    assert_eq!(std::iter::from_fn(|| client.poll_event()).count(), 1);
}

#[test]
fn client_gives_up_at_the_deadline() {
    let now = Instant::now();
    let mut client = RoundClient::new(Duration::from_secs(3));
    client.handle_message(now, Envelope::RoundTask(task(2), vec![]));
    let _ = client.poll_event();
    client.submit_update(now, update(2, "a"), vec![]);
    let mut t = now;
    while let Some(next) = client.poll_timeout() {
        t = next;
        client.handle_timeout(t);
    }
    assert_eq!(t, now + Duration::from_secs(10));
    assert_eq!(client.poll_event(), Some(ClientEvent::Expired { round: 2 }));
    // Sent at 0, resent at 3 and 9 (waits 3, 6), then the deadline.
    assert_eq!(std::iter::from_fn(|| client.poll_transmit()).count(), 3);
}
