//! The in-memory pair harness: a device and a cloud session joined by a simulated link
//! with a virtual clock, latency, jitter (so reordering), and loss. Deterministic: the
//! same seed gives the same run, in milliseconds of real time.

use super::Envelope;
use super::split::{CloudEvent, DeviceEvent, SplitCloud, SplitConfig, SplitDevice};
use crate::wire::{Activations, CodecDesc, CutGradient};
use std::time::{Duration, Instant};

/// The simulated link, the same in both directions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    /// One-way delay before jitter.
    pub latency: Duration,
    /// Extra delay drawn uniformly in `0..jitter`: messages overtake each other.
    pub jitter: Duration,
    /// Probability that a message is dropped (a lost connection's data).
    pub loss: f64,
}

/// A message on its way.
struct Flight {
    at: Instant,
    to_cloud: bool,
    envelope: Envelope,
}

/// A device and a cloud session over a [`Link`], with scripted applications: the device
/// sends `steps` steps one after the other; the cloud answers each with a gradient whose
/// tensor is its activations' tensor reversed.
pub(crate) struct Pair {
    pub now: Instant,
    pub device: SplitDevice,
    pub cloud: SplitCloud,
    link: Link,
    rng: u64,
    flights: Vec<Flight>,
    /// Steps the cloud application was handed, in order.
    pub cloud_trained: Vec<u64>,
    /// Gradients the device application received, in order, with their tensors.
    pub device_received: Vec<(u64, Vec<u8>)>,
    /// Steps the device gave up.
    pub failed: Vec<u64>,
    /// Messages the link dropped.
    pub dropped: u64,
}

impl Pair {
    pub fn new(link: Link, config: SplitConfig, seed: u64) -> Self {
        Self {
            now: Instant::now(),
            device: SplitDevice::new(config, 0),
            cloud: SplitCloud::new(),
            link,
            rng: seed | 1,
            flights: Vec::new(),
            cloud_trained: Vec::new(),
            device_received: Vec::new(),
            failed: Vec::new(),
            dropped: 0,
        }
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn activations(batch: u16) -> Activations {
        Activations {
            batch,
            ..super::check::probe_activations()
        }
    }

    /// Moves every pending transmit onto the link.
    fn collect_transmits(&mut self) {
        let mut out = Vec::new();
        while let Some(envelope) = self.device.poll_transmit() {
            out.push((true, envelope));
        }
        while let Some(envelope) = self.cloud.poll_transmit() {
            out.push((false, envelope));
        }
        for (to_cloud, envelope) in out {
            if self.random() < self.link.loss {
                self.dropped += 1;
                continue;
            }
            let jitter = self.link.jitter.mul_f64(self.random());
            self.flights.push(Flight {
                at: self.now + self.link.latency + jitter,
                to_cloud,
                envelope,
            });
        }
    }

    /// Runs the scripted applications on pending events.
    fn run_applications(&mut self) {
        while let Some(event) = self.cloud.poll_event() {
            let CloudEvent::Activations {
                activations,
                mut tensor,
            } = event;
            self.cloud_trained.push(activations.step);
            tensor.reverse();
            let gradient = CutGradient {
                step: activations.step,
                loss: 1.0 / (activations.step + 1) as f32,
                kept: false,
                codec: CodecDesc::Identity,
                payload_len: tensor.len() as u64,
            };
            self.cloud
                .send_gradient(self.now, gradient, tensor)
                .expect("pending step");
        }
        while let Some(event) = self.device.poll_event() {
            match event {
                DeviceEvent::Gradient { gradient, tensor } => {
                    self.device_received.push((gradient.step, tensor))
                }
                DeviceEvent::StepFailed { step, .. } => self.failed.push(step),
            }
        }
    }

    /// Sends `steps` steps (tensor of step s = [s, s+1, s+2] as bytes), one after the
    /// other, driving the link until each completes or fails. Stops after `limit` of
    /// virtual time.
    pub fn run_steps(&mut self, steps: u64, limit: Duration) {
        let end = self.now + limit;
        let mut sent = 0;
        while self.now < end {
            if self.device.poll_timeout().is_none() && sent < steps {
                let step = self.device.next_step();
                let tensor = vec![step as u8, step as u8 + 1, step as u8 + 2];
                self.device
                    .send_step(self.now, Self::activations(1), tensor)
                    .expect("free");
                sent += 1;
            }
            self.collect_transmits();
            // Next thing to happen: a delivery or a device timer.
            let next_flight = self.flights.iter().map(|f| f.at).min();
            let next = match (next_flight, self.device.poll_timeout()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => break,
            };
            self.now = next.max(self.now);
            // Deliver everything due now, in arrival order.
            self.flights.sort_by_key(|f| f.at);
            let due: Vec<Flight> = {
                let split = self.flights.iter().take_while(|f| f.at <= self.now).count();
                self.flights.drain(..split).collect()
            };
            for flight in due {
                if flight.to_cloud {
                    self.cloud.handle_message(self.now, flight.envelope);
                } else {
                    self.device.handle_message(self.now, flight.envelope);
                }
            }
            self.device.handle_timeout(self.now);
            self.run_applications();
            self.collect_transmits();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::split::{MAX_STEP_REPEATS, RepeatFlood};

    const SMOOTH: Link = Link {
        latency: Duration::from_millis(20),
        jitter: Duration::ZERO,
        loss: 0.0,
    };

    fn fast_retries() -> SplitConfig {
        SplitConfig {
            step_timeout: Duration::from_millis(100),
            backoff: 1.5,
            max_retries: 8,
        }
    }

    fn assert_each_step_once(pair: &Pair, steps: u64) {
        let want: Vec<u64> = (0..steps).collect();
        assert_eq!(
            pair.cloud_trained, want,
            "the cloud trained a step twice or skipped one"
        );
        let got: Vec<u64> = pair.device_received.iter().map(|(s, _)| *s).collect();
        assert_eq!(got, want, "the device missed or repeated a gradient");
        for (step, tensor) in &pair.device_received {
            let s = *step as u8;
            assert_eq!(
                tensor,
                &vec![s + 2, s + 1, s],
                "gradient of step {step} garbled"
            );
        }
    }

    #[test]
    fn lossless_link_completes_every_step_once_without_resends() {
        let mut pair = Pair::new(SMOOTH, fast_retries(), 1);
        let start = pair.now;
        pair.run_steps(100, Duration::from_secs(60));
        assert_each_step_once(&pair, 100);
        assert_eq!(pair.device.stats().resent, 0);
        assert_eq!(pair.cloud.stats(), Default::default());
        assert!(pair.failed.is_empty());
        // 100 round trips of 2 x 20 ms, back to back: exactly 4 s of virtual time.
        assert_eq!(pair.now - start, Duration::from_secs(4));
    }

    #[test]
    fn lossy_reordering_link_still_trains_each_step_exactly_once() {
        for seed in 1..20 {
            let link = Link {
                latency: Duration::from_millis(20),
                jitter: Duration::from_millis(150),
                loss: 0.3,
            };
            let mut pair = Pair::new(link, fast_retries(), seed);
            pair.run_steps(50, Duration::from_secs(600));
            assert!(
                pair.failed.is_empty(),
                "seed {seed}: steps failed {:?}",
                pair.failed
            );
            assert_each_step_once(&pair, 50);
            assert!(pair.dropped > 0, "seed {seed}: the link dropped nothing");
            assert!(pair.device.stats().resent > 0);
        }
    }

    #[test]
    fn silent_cloud_makes_the_step_fail_after_the_retries() {
        let link = Link {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 1.0,
        };
        let config = fast_retries();
        let mut pair = Pair::new(link, config.clone(), 7);
        let start = pair.now;
        pair.run_steps(1, Duration::from_secs(600));
        assert_eq!(pair.failed, vec![0]);
        assert!(pair.cloud_trained.is_empty());
        assert_eq!(pair.device.stats().resent, u64::from(config.max_retries));
        // Sum of the waits: timeout * (1 + b + b^2 + ... + b^max_retries).
        let waited: f64 = (0..=config.max_retries)
            .map(|i| config.backoff.powi(i as i32))
            .sum();
        let expected = config.step_timeout.mul_f64(waited);
        let took = pair.now - start;
        assert!(
            took >= expected && took < expected + Duration::from_millis(1),
            "{took:?}"
        );
    }

    #[test]
    fn reconnect_resends_the_step_in_flight_and_stale_answers_are_ignored() {
        let mut device = SplitDevice::new(SplitConfig::default(), 5);
        let now = Instant::now();
        let step = device
            .send_step(now, Pair::activations(2), vec![1])
            .unwrap();
        assert_eq!(step, 5);
        assert_eq!(
            device.send_step(now, Pair::activations(2), vec![2]),
            Err(super::super::split::SplitError::StepInFlight(5))
        );
        let first = device.poll_transmit().expect("sent");
        device.handle_reconnect(now);
        assert_eq!(
            device.poll_transmit(),
            Some(first),
            "the same step is resent"
        );
        let stale = CutGradient {
            step: 4,
            loss: 0.0,
            kept: false,
            codec: CodecDesc::Identity,
            payload_len: 0,
        };
        device.handle_message(now, Envelope::CutGradient(stale, vec![]));
        assert_eq!(device.poll_event(), None);
        assert_eq!(device.stats().ignored, 1);
    }

    #[test]
    fn cloud_answers_a_repeated_step_from_its_cache_and_ignores_stale_ones() {
        let mut cloud = SplitCloud::new();
        let now = Instant::now();
        let mut a = Pair::activations(1);
        a.step = 3;
        cloud.handle_message(now, Envelope::Activations(Box::new(a.clone()), vec![9]));
        assert!(matches!(
            cloud.poll_event(),
            Some(CloudEvent::Activations { .. })
        ));
        // A resend while still computing: ignored, not handed out again.
        cloud.handle_message(now, Envelope::Activations(Box::new(a.clone()), vec![9]));
        assert_eq!(cloud.poll_event(), None);
        let g = CutGradient {
            step: 3,
            loss: 0.5,
            kept: false,
            codec: CodecDesc::Identity,
            payload_len: 1,
        };
        cloud.send_gradient(now, g.clone(), vec![7]).unwrap();
        assert!(
            cloud.send_gradient(now, g.clone(), vec![7]).is_err(),
            "answered twice"
        );
        let reply = cloud.poll_transmit().unwrap();
        // The device missed it and resends step 3: the cached reply goes out again.
        cloud.handle_message(now, Envelope::Activations(Box::new(a.clone()), vec![9]));
        assert_eq!(cloud.poll_event(), None);
        assert_eq!(cloud.poll_transmit(), Some(reply));
        // A step older than the last answered one is stale.
        a.step = 2;
        cloud.handle_message(now, Envelope::Activations(Box::new(a), vec![9]));
        assert_eq!(cloud.poll_event(), None);
        assert_eq!(
            cloud.stats(),
            super::super::split::SplitStats {
                resent: 1,
                ignored: 2
            }
        );
    }

    /// Issue 30 item 1: a ~30-byte "resend" (`cached`, no tensor, batch 1) of the step
    /// last answered must not make the cloud queue the whole cached gradient again: only
    /// a resend identical to the step it answered (message and tensor) gets the reply.
    #[test]
    fn only_a_true_resend_of_the_answered_step_gets_the_cached_reply() {
        let mut cloud = SplitCloud::new();
        let now = Instant::now();
        let mut a = Pair::activations(2);
        a.step = 5;
        let tensor = vec![1u8; 64];
        cloud.handle_message(
            now,
            Envelope::Activations(Box::new(a.clone()), tensor.clone()),
        );
        assert!(cloud.poll_event().is_some());
        let g = CutGradient {
            step: 5,
            loss: 0.5,
            kept: false,
            codec: CodecDesc::Identity,
            payload_len: 4096,
        };
        cloud.send_gradient(now, g, vec![7; 4096]).unwrap();
        let reply = cloud.poll_transmit().unwrap();
        let mut forged = a.clone();
        forged.cached = true;
        forged.payload_len = 0;
        forged.batch = 1;
        for (message, bytes) in [(forged, vec![]), (a.clone(), vec![2u8; 64])] {
            for _ in 0..100 {
                cloud.handle_message(
                    now,
                    Envelope::Activations(Box::new(message.clone()), bytes.clone()),
                );
            }
            assert_eq!(cloud.poll_transmit(), None, "a forged resend was answered");
            assert_eq!(cloud.poll_event(), None);
        }
        cloud.handle_message(now, Envelope::Activations(Box::new(a), tensor));
        assert_eq!(cloud.poll_transmit(), Some(reply));
    }

    /// Issue 30 item 1: a stalled reader resending one step as fast as the cloud reads
    /// (250k resends in a minute) costs the cloud the reading of every one. A device
    /// resends a step only on its timeouts and reconnects, so past
    /// [`MAX_STEP_REPEATS`] repeats of one step (resent, or ignored as stale or forged)
    /// the machine names the flood, for the hub to close the device; a new step starts
    /// the count afresh.
    #[test]
    fn one_step_repeated_past_the_cap_is_a_flood() {
        let mut cloud = SplitCloud::new();
        let now = Instant::now();
        let step = |n: u64| {
            let mut a = Pair::activations(2);
            a.step = n;
            Envelope::Activations(Box::new(a), vec![1u8; 64])
        };
        cloud.handle_message(now, step(5));
        assert!(cloud.poll_event().is_some());
        // Repeats while the step is computed count too.
        for _ in 0..MAX_STEP_REPEATS / 2 {
            cloud.handle_message(now, step(5));
        }
        let g = CutGradient {
            step: 5,
            loss: 0.5,
            kept: false,
            codec: CodecDesc::Identity,
            payload_len: 4,
        };
        cloud.send_gradient(now, g, vec![7; 4]).unwrap();
        for _ in MAX_STEP_REPEATS / 2..MAX_STEP_REPEATS {
            cloud.handle_message(now, step(5));
            assert_eq!(cloud.flood(), None);
        }
        cloud.handle_message(now, step(5));
        assert_eq!(
            cloud.flood(),
            Some(RepeatFlood {
                step: 5,
                repeats: MAX_STEP_REPEATS + 1
            })
        );
        assert!(cloud.flood().unwrap().to_string().contains("step 5"));
        cloud.handle_message(now, step(6));
        assert_eq!(cloud.flood(), None);
    }

    #[test]
    fn newer_steps_replace_one_not_yet_handed_out() {
        let mut cloud = SplitCloud::new();
        let now = Instant::now();
        for step in 0..100 {
            let mut a = Pair::activations(1);
            a.step = step;
            cloud.handle_message(now, Envelope::Activations(Box::new(a), vec![step as u8]));
        }
        // A device that floods steps holds one waiting step, the newest.
        match cloud.poll_event() {
            Some(CloudEvent::Activations { activations, .. }) => assert_eq!(activations.step, 99),
            other => panic!("expected step 99, got {other:?}"),
        }
        assert_eq!(cloud.poll_event(), None);
    }
}
