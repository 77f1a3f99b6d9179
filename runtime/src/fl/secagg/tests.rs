//! Whole rounds: the sum opens exactly (against the fixed-point sum computed apart),
//! with and without drop-outs, on full and sparse graphs; what the cloud holds of one
//! device is noise; malformed or greedy requests are refused.

use super::client::Client;
use super::crypto;
use super::messages::{Secret, UnmaskRequest};
use super::round::{rounding_seed, run, seeded_random};
use super::server::Server;
use super::shamir::{self, Share};
use super::{SecAggError, Settings};
use crate::rng::SplitMix64;

fn updates(n: usize, len: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| (rng.next_f64() as f32 - 0.5) * 0.8)
                .collect()
        })
        .collect()
}

/// The fixed-point sum of `who`'s updates, as `round::run` rounds them, decoded.
fn expected_sum(settings: &Settings, updates: &[Vec<f32>], who: &[usize], seed: u64) -> Vec<f32> {
    let fixed = settings.fixed;
    let mut sum = vec![0u32; settings.len];
    for &i in who {
        for (s, v) in sum
            .iter_mut()
            .zip(fixed.encode(&updates[i], rounding_seed(seed, i)))
        {
            *s = s.wrapping_add(v) & fixed.mask();
        }
    }
    fixed.decode(&sum)
}

#[test]
fn the_sum_opens_to_the_sum_of_the_updates() {
    let settings = Settings::new(1, 10, 9, 5, 1000, 0.5, 12).unwrap();
    let ups = updates(10, 1000, 1);
    let (opened, traffic) = run(settings, &ups, &[], &[], 7).unwrap();
    let all: Vec<usize> = (0..10).collect();
    assert_eq!(opened.survivors, all);
    assert_eq!(opened.sum, expected_sum(&settings, &ups, &all, 7));
    // And close to the float sum: at most one level (0.5 / 2047) per update.
    for (j, s) in opened.sum.iter().enumerate() {
        let float: f32 = ups.iter().map(|u| u[j]).sum();
        assert!(
            (s - float).abs() <= 10.0 * 0.5 / 2047.0 + 1e-4,
            "{s} vs {float}"
        );
    }
    // 12 bits + 4 for 10 participants: 2 bytes a value in the masked inputs.
    assert!(traffic.masked_bytes >= 10 * 2000 && traffic.masked_bytes < 10 * 2000 + 100);
}

#[test]
fn a_round_with_drop_outs_still_opens_to_the_survivors_sum() {
    let settings = Settings::new(2, 10, 9, 5, 500, 0.5, 8).unwrap();
    let ups = updates(10, 500, 2);
    // Three vanish after sharing (their masks must be rebuilt), one after masking.
    let (opened, _) = run(settings, &ups, &[1, 4, 8], &[6], 3).unwrap();
    let survivors = [0, 2, 3, 5, 6, 7, 9];
    assert_eq!(opened.survivors, survivors);
    assert_eq!(opened.sum, expected_sum(&settings, &ups, &survivors, 3));
}

#[test]
fn a_sparse_graph_opens_with_thirty_percent_dropped() {
    // 30 neighbours, 16 needed (a majority): every survivor keeps at least 16 here.
    let settings = Settings::new(3, 60, 30, 16, 300, 1.0, 8).unwrap();
    let graph = settings.graph();
    for (i, near) in graph.iter().enumerate() {
        assert_eq!(near.len(), 30);
        assert!(near.iter().all(|&j| j != i && graph[j].contains(&i)));
    }
    let ups = updates(60, 300, 3);
    let dropped: Vec<usize> = (0..60).filter(|i| i % 10 < 3).collect();
    let (opened, _) = run(settings, &ups, &dropped, &[], 4).unwrap();
    let survivors: Vec<usize> = (0..60).filter(|i| i % 10 >= 3).collect();
    assert_eq!(opened.survivors, survivors);
    assert_eq!(opened.sum, expected_sum(&settings, &ups, &survivors, 4));
}

#[test]
fn too_many_drop_outs_fail_with_a_reason_not_a_wrong_sum() {
    let settings = Settings::new(4, 10, 9, 5, 100, 1.0, 8).unwrap();
    let ups = updates(10, 100, 4);
    // Threshold 5 of 9 neighbours; six gone leaves four.
    let err = run(settings, &ups, &[0, 1, 2, 3, 4, 5], &[], 5).unwrap_err();
    assert!(
        matches!(
            err,
            SecAggError::Request(_) | SecAggError::TooFewShares { .. }
        ),
        "{err}"
    );
}

/// Every participant of `settings` (keys from a generator seeded with `seed`), the cloud
/// holding their public keys, and the generator for what follows.
fn keyed(settings: Settings, seed: u64) -> (Vec<Client>, Server, impl FnMut(&mut [u8])) {
    let mut random = seeded_random(seed);
    let clients: Vec<Client> = (0..settings.participants)
        .map(|i| Client::new(i, settings, &mut random).unwrap())
        .collect();
    let mut server = Server::new(settings);
    for c in &clients {
        server.receive_keys(c.public_keys().clone()).unwrap();
    }
    (clients, server, random)
}

/// The Pearson correlation of two equally long series.
fn correlation(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    cov / (va * vb).sqrt()
}

#[test]
fn the_cloud_cannot_read_back_a_single_update() {
    // Device 0's update is a loud, known pattern; the cloud holds its masked input and,
    // as a survivor's, its self-mask seed rebuilt from the revealed shares.
    let len = 4000;
    let settings = Settings::new(5, 5, 4, 3, len, 1.0, 8).unwrap();
    let mut ups = updates(5, len, 5);
    ups[0] = (0..len)
        .map(|j| if j % 2 == 0 { 1.0 } else { -1.0 })
        .collect();
    let (mut clients, mut server, mut random) = keyed(settings, 6);
    for (i, c) in clients.iter_mut().enumerate() {
        let shares = c.share(&server.keys_for(i), &mut random).unwrap();
        server.receive_shares(shares).unwrap();
    }
    let mut seen = Vec::new();
    for (i, c) in clients.iter_mut().enumerate() {
        let input = c
            .mask(
                &server.shares_for(i),
                &server.sharers(),
                &ups[i],
                rounding_seed(0, i),
            )
            .unwrap();
        if i == 0 {
            seen = settings.fixed.unpack(&input.values, len).unwrap();
        }
        server.receive_masked(input).unwrap();
    }
    let request = server.unmask_request().unwrap();
    let mut self_mask_shares: Vec<Share> = Vec::new();
    for c in &mut clients {
        let reveals = c.unmask(&request).unwrap();
        for r in &reveals.reveals {
            assert!(r.owner != 0 || r.secret == Secret::SelfMask);
            if r.owner == 0 {
                self_mask_shares.push(r.share.clone());
            }
        }
        // A message naming one owner twice is refused whole, and the revealer may answer
        // again.
        let mut twice = reveals.clone();
        twice.reveals.push(twice.reveals[0].clone());
        assert!(server.receive_reveals(twice).is_err());
        server.receive_reveals(reveals).unwrap();
    }
    let seed: [u8; 32] = shamir::combine(&self_mask_shares, settings.threshold)
        .unwrap()
        .try_into()
        .unwrap();
    let mut without_self_mask = seen.clone();
    crypto::apply_mask(&mut without_self_mask, &seed, true, settings.fixed.mask());
    let truth: Vec<f64> = ups[0].iter().map(|&v| f64::from(v)).collect();
    let signal_sign: Vec<f64> = truth.iter().map(|v| v.signum()).collect();
    for view in [&seen, &without_self_mask] {
        let decoded: Vec<f64> = settings
            .fixed
            .decode(view)
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let r = correlation(&decoded, &truth);
        // Independent series of 4,000: |r| is about 1/sqrt(4000) = 0.016.
        assert!(r.abs() < 0.06, "correlation {r}");
        // Not even the sign of the loud pattern: half the values agree, as by chance.
        let agree = decoded
            .iter()
            .zip(&signal_sign)
            .filter(|(d, s)| d.signum() == **s)
            .count() as f64
            / len as f64;
        assert!((agree - 0.5).abs() < 0.03, "sign agreement {agree}");
    }
    // Yet the sum opens.
    let opened = server.open().unwrap();
    assert_eq!(
        opened.sum,
        expected_sum(&settings, &ups, &[0, 1, 2, 3, 4], 0)
    );
}

#[test]
fn devices_refuse_greedy_or_malformed_requests_and_forged_shares() {
    let settings = Settings::new(6, 4, 3, 2, 10, 1.0, 8).unwrap();
    let (mut clients, mut server, mut random) = keyed(settings, 8);
    assert!(
        server
            .receive_keys(clients[0].public_keys().clone())
            .is_err()
    );
    for (i, c) in clients.iter_mut().enumerate() {
        let shares = c.share(&server.keys_for(i), &mut random).unwrap();
        server.receive_shares(shares).unwrap();
    }
    // A share altered in transit does not decrypt.
    let mut forged = server.shares_for(0);
    let last = forged[0].sealed.len() - 1;
    forged[0].sealed[last] ^= 1;
    assert!(matches!(
        clients[0].mask(&forged, &server.sharers(), &[0.0; 10], 0),
        Err(SecAggError::Decrypt(_))
    ));
    // A mailbox short of one neighbour that shared: its mask would not cancel.
    let short = &server.shares_for(0)[1..];
    assert!(matches!(
        clients[0].mask(short, &server.sharers(), &[0.0; 10], 0),
        Err(SecAggError::Request(_))
    ));
    for (i, c) in clients.iter_mut().enumerate().skip(1) {
        let input = c
            .mask(&server.shares_for(i), &server.sharers(), &[0.1; 10], 0)
            .unwrap();
        server.receive_masked(input).unwrap();
    }
    // Both secrets of device 2 (named survivor and dropped): refused.
    let both = UnmaskRequest {
        survivors: vec![1, 2, 3],
        dropped: vec![0, 2],
    };
    assert!(matches!(
        clients[1].unmask(&both),
        Err(SecAggError::Request(_))
    ));
    // A device answers once.
    let fair = UnmaskRequest {
        survivors: vec![1, 2, 3],
        dropped: vec![0],
    };
    assert!(matches!(
        clients[1].unmask(&fair),
        Err(SecAggError::Order(_))
    ));
    // Named dropped itself: refused.
    let me_dropped = UnmaskRequest {
        survivors: vec![1, 3],
        dropped: vec![0, 2],
    };
    assert!(matches!(
        clients[2].unmask(&me_dropped),
        Err(SecAggError::Request(_))
    ));
    // The cloud refuses a masked input of the wrong size.
    let mut other = Server::new(settings);
    assert!(matches!(
        other.receive_masked(super::messages::MaskedInput {
            from: 0,
            values: vec![0; 3]
        }),
        Err(SecAggError::Unexpected(0))
    ));
}

#[test]
fn two_devices_make_a_round() {
    let settings = Settings::new(7, 2, 1, 1, 20, 1.0, 8).unwrap();
    let ups = updates(2, 20, 7);
    let (opened, _) = run(settings, &ups, &[], &[], 8).unwrap();
    assert_eq!(opened.sum, expected_sum(&settings, &ups, &[0, 1], 8));
}

/// With `t <= k / 2`, a cloud that tells half of u's neighbours "u survived" and the
/// other half "u dropped" collects `t` shares of each of u's two secrets and unmasks u's
/// update alone: a threshold is a strict majority of the neighbourhood.
#[test]
fn a_threshold_of_half_the_neighbours_or_fewer_is_refused() {
    for (participants, neighbours) in [(10, 9), (10, 4), (60, 20), (3, 2)] {
        for threshold in 1..=neighbours {
            let settings = Settings::new(1, participants, neighbours, threshold, 10, 1.0, 8);
            let majority = threshold > neighbours / 2;
            assert_eq!(
                settings.is_ok(),
                majority,
                "{threshold} of {neighbours} neighbours ({participants} participants)"
            );
            if !majority {
                assert!(matches!(settings, Err(SecAggError::Neighbours { .. })));
            }
        }
    }
}
