//! One whole round in one process, every message carried by hand: what the tests and
//! `cargo xtask bench secagg` run. Devices listed in `drop_before_masking` vanish after
//! sharing their secrets (the case that needs their mask keys rebuilt); those in
//! `drop_before_unmasking` send their masked input and then vanish.

use super::client::Client;
use super::messages::{Reveals, wire_len};
use super::server::{Opened, Server};
use super::{SecAggError, Settings};
use crate::rng::SplitMix64;
use std::time::{Duration, Instant};

/// Bytes and compute of a round.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    /// Bytes all devices sent, every step.
    pub up_bytes: u64,
    /// Bytes the cloud relayed down (keys, shares, the unmask request).
    pub down_bytes: u64,
    /// Bytes of the masked inputs alone (the update itself, in fixed point).
    pub masked_bytes: u64,
    /// Compute of all devices together.
    pub device_time: Duration,
    /// Compute of the cloud (routing, unpacking, opening).
    pub cloud_time: Duration,
}

/// A seeded stand-in for the system generator (simulation only).
pub fn seeded_random(seed: u64) -> impl FnMut(&mut [u8]) {
    let mut rng = SplitMix64::new(seed);
    move |out: &mut [u8]| {
        for chunk in out.chunks_mut(8) {
            let word = rng.next_u64().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The seed of participant `i`'s fixed-point rounding in a round run from `seed` (a
/// stream of its own, apart from the key material's).
pub fn rounding_seed(seed: u64, i: usize) -> u64 {
    SplitMix64::derive(seed ^ 0x20_0d, i as u64).next_u64()
}

/// Runs a round of `settings` over `updates` (one per participant), randomness from
/// `seed`; the opened sum and the round's traffic.
pub fn run(
    settings: Settings,
    updates: &[impl AsRef<[f32]>],
    drop_before_masking: &[usize],
    drop_before_unmasking: &[usize],
    seed: u64,
) -> Result<(Opened, Traffic), SecAggError> {
    let n = settings.participants;
    if updates.len() != n {
        return Err(SecAggError::Participants(updates.len()));
    }
    let mut random = seeded_random(seed);
    let mut traffic = Traffic::default();
    let timed = |clock: &mut Duration, started: Instant| *clock += started.elapsed();

    let started = Instant::now();
    let mut clients = (0..n)
        .map(|i| Client::new(i, settings, &mut random))
        .collect::<Result<Vec<_>, _>>()?;
    timed(&mut traffic.device_time, started);
    let mut server = Server::new(settings);
    for client in &clients {
        traffic.up_bytes += wire_len(client.public_keys()) as u64;
        let started = Instant::now();
        server.receive_keys(client.public_keys().clone())?;
        timed(&mut traffic.cloud_time, started);
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let keys = server.keys_for(i);
        traffic.down_bytes += keys.iter().map(|k| wire_len(k) as u64).sum::<u64>();
        let started = Instant::now();
        let shares = client.share(&keys, &mut random)?;
        timed(&mut traffic.device_time, started);
        traffic.up_bytes += shares.iter().map(|s| wire_len(s) as u64).sum::<u64>();
        let started = Instant::now();
        server.receive_shares(shares)?;
        timed(&mut traffic.cloud_time, started);
    }
    // Who shared goes down with each mailbox.
    let sharers = server.sharers();
    for (i, client) in clients.iter_mut().enumerate() {
        if drop_before_masking.contains(&i) {
            continue;
        }
        let shares = server.shares_for(i);
        traffic.down_bytes += shares.iter().map(|s| wire_len(s) as u64).sum::<u64>();
        traffic.down_bytes += wire_len(&sharers) as u64;
        let started = Instant::now();
        let input = client.mask(
            &shares,
            &sharers,
            updates[i].as_ref(),
            rounding_seed(seed, i),
        )?;
        timed(&mut traffic.device_time, started);
        let bytes = wire_len(&input) as u64;
        traffic.up_bytes += bytes;
        traffic.masked_bytes += bytes;
        let started = Instant::now();
        server.receive_masked(input)?;
        timed(&mut traffic.cloud_time, started);
    }
    let request = server.unmask_request()?;
    let mut answers: Vec<Reveals> = Vec::new();
    for (i, client) in clients.iter_mut().enumerate() {
        if drop_before_masking.contains(&i) || drop_before_unmasking.contains(&i) {
            continue;
        }
        traffic.down_bytes += wire_len(&request) as u64;
        let started = Instant::now();
        let reveals = client.unmask(&request)?;
        timed(&mut traffic.device_time, started);
        traffic.up_bytes += wire_len(&reveals) as u64;
        answers.push(reveals);
    }
    let started = Instant::now();
    for reveals in answers {
        server.receive_reveals(reveals)?;
    }
    let opened = server.open()?;
    timed(&mut traffic.cloud_time, started);
    Ok((opened, traffic))
}
