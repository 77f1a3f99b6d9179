//! The split fine-tuning step protocol, both sides.
//!
//! The device sends one step's [`Activations`] at a time and waits for that step's
//! [`CutGradient`]; if it does not arrive by the step deadline, the device resends the
//! same step (same step number) with exponential backoff, up to a retry limit. The cloud
//! hands each step to the application exactly once, answers a resent step from a cache
//! of its last reply, and ignores stale steps. So on a lossy link or across a reconnect
//! nothing is lost and nothing is trained twice.

use super::Envelope;
use crate::wire::{Activations, CutGradient};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Retry policy of the device side.
#[derive(Clone, Debug, PartialEq)]
pub struct SplitConfig {
    /// Time to wait for a step's gradient before the first resend.
    pub step_timeout: Duration,
    /// Each further wait is this many times longer.
    pub backoff: f64,
    /// Resends before the step is given up.
    pub max_retries: u32,
}

impl Default for SplitConfig {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(5),
            backoff: 2.0,
            max_retries: 5,
        }
    }
}

/// Why the device side refused a call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SplitError {
    /// A step is still waiting for its gradient; only one is in flight at a time.
    #[error("step {0} is still in flight")]
    StepInFlight(u64),
    /// The gradient answers a step the cloud was not asked to compute.
    #[error("no pending step {0} to answer")]
    NotPending(u64),
}

/// What the device application must act on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum DeviceEvent {
    /// The gradient of a step arrived (`gradient.step`, with the cloud's loss): run the
    /// backward pass of the bottom layers.
    Gradient {
        /// The gradient message.
        gradient: CutGradient,
        /// Its encoded tensor.
        tensor: Vec<u8>,
    },
    /// `step` got no answer after every retry: the link or the cloud is gone.
    StepFailed {
        /// The step.
        step: u64,
        /// Times it was sent.
        attempts: u32,
    },
}

/// Counters, for tests and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Messages sent again after a timeout (device) or answered from the cache (cloud).
    pub resent: u64,
    /// Messages ignored as duplicates or for stale steps.
    pub ignored: u64,
}

struct InFlight {
    step: u64,
    envelope: Envelope,
    attempts: u32,
    deadline: Instant,
}

/// The device side of split steps.
pub struct SplitDevice {
    config: SplitConfig,
    next_step: u64,
    in_flight: Option<InFlight>,
    outbox: VecDeque<Envelope>,
    events: VecDeque<DeviceEvent>,
    stats: SplitStats,
}

impl SplitDevice {
    /// A device whose first step will be `first_step` (resume from a checkpoint by
    /// passing the next untrained step).
    pub fn new(config: SplitConfig, first_step: u64) -> Self {
        Self {
            config,
            next_step: first_step,
            in_flight: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: SplitStats::default(),
        }
    }

    /// The step the next [`SplitDevice::send_step`] will use.
    pub fn next_step(&self) -> u64 {
        self.next_step
    }

    /// Counters so far.
    pub fn stats(&self) -> SplitStats {
        self.stats
    }

    /// Sends one batch's activations; its `step` field is set here. Returns the step.
    pub fn send_step(
        &mut self,
        now: Instant,
        mut activations: Activations,
        tensor: Vec<u8>,
    ) -> Result<u64, SplitError> {
        if let Some(in_flight) = &self.in_flight {
            return Err(SplitError::StepInFlight(in_flight.step));
        }
        let step = self.next_step;
        activations.step = step;
        let envelope = Envelope::Activations(Box::new(activations), tensor);
        self.outbox.push_back(envelope.clone());
        self.in_flight = Some(InFlight {
            step,
            envelope,
            attempts: 1,
            deadline: now + self.config.step_timeout,
        });
        self.next_step += 1;
        Ok(step)
    }

    /// A message from the cloud.
    pub fn handle_message(&mut self, _now: Instant, envelope: Envelope) {
        let Envelope::CutGradient(gradient, tensor) = envelope else {
            self.stats.ignored += 1;
            return;
        };
        match &self.in_flight {
            Some(in_flight) if in_flight.step == gradient.step => {
                self.in_flight = None;
                self.events
                    .push_back(DeviceEvent::Gradient { gradient, tensor });
            }
            // A duplicate answer to a resent step, or an answer to a step given up.
            _ => self.stats.ignored += 1,
        }
    }

    /// The connection was re-established: resend the step in flight at once.
    pub fn handle_reconnect(&mut self, now: Instant) {
        if let Some(in_flight) = &mut self.in_flight {
            self.outbox.push_back(in_flight.envelope.clone());
            in_flight.deadline = now + self.config.step_timeout;
            self.stats.resent += 1;
        }
    }

    /// Time passed: resend or give up the step in flight if its deadline is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(in_flight) = &mut self.in_flight else {
            return;
        };
        if now < in_flight.deadline {
            return;
        }
        if in_flight.attempts > self.config.max_retries {
            let (step, attempts) = (in_flight.step, in_flight.attempts);
            self.in_flight = None;
            self.events
                .push_back(DeviceEvent::StepFailed { step, attempts });
            return;
        }
        let wait = self
            .config
            .step_timeout
            .mul_f64(self.config.backoff.max(1.0).powi(in_flight.attempts as i32));
        in_flight.attempts += 1;
        in_flight.deadline = now + wait;
        self.outbox.push_back(in_flight.envelope.clone());
        self.stats.resent += 1;
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    /// When [`SplitDevice::handle_timeout`] must be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.in_flight.as_ref().map(|f| f.deadline)
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<DeviceEvent> {
        self.events.pop_front()
    }
}

/// What the cloud application must act on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CloudEvent {
    /// New activations: run the top layers and answer with
    /// [`SplitCloud::send_gradient`] for this step. Emitted once per step.
    Activations {
        /// The activations message.
        activations: Box<Activations>,
        /// Its encoded tensor.
        tensor: Vec<u8>,
    },
}

/// What identifies a step's request: its message, its tensor's length and a checksum of
/// samples of the tensor (all of it up to 64 KiB; 16 windows of 4 KiB beyond, so the hub
/// hashes at most 64 KiB a step), so that only a resend of the same step gets its cached
/// reply. A forged resend that matches it is as long as the request that asked for the
/// reply: it earns the device its own step's reply for a full step's bytes, never a large
/// reply for a short message. FNV is enough for that (its checksum guards nothing else).
#[derive(Clone, Debug, PartialEq)]
struct Asked {
    activations: Box<Activations>,
    tensor_sum: u64,
    tensor_len: usize,
}

/// Bytes of a tensor [`Asked`] hashes at most, in windows of [`SAMPLE_WINDOW`].
const SAMPLED: usize = 64 << 10;
const SAMPLE_WINDOW: usize = 4 << 10;

impl Asked {
    fn of(activations: &Activations, tensor: &[u8]) -> Self {
        let tensor_sum = if tensor.len() <= SAMPLED {
            crate::fnv::fnv1a64(tensor)
        } else {
            let windows = SAMPLED / SAMPLE_WINDOW;
            let stride = (tensor.len() - SAMPLE_WINDOW) / (windows - 1);
            (0..windows).fold(crate::fnv::fnv1a64(b""), |sum, i| {
                let at = i * stride;
                crate::fnv::extend(sum, &tensor[at..at + SAMPLE_WINDOW])
            })
        };
        Self {
            activations: Box::new(activations.clone()),
            tensor_sum,
            tensor_len: tensor.len(),
        }
    }
}

/// Repeats of one step (resent, or ignored as stale or forged) the cloud takes before it
/// names a flood ([`SplitCloud::flood`]). An honest device repeats a step only on its
/// timeouts ([`SplitConfig::max_retries`], 5 by default) and reconnects.
pub const MAX_STEP_REPEATS: u32 = 64;

/// A device repeated one step more than [`MAX_STEP_REPEATS`] times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "step {step} was sent {repeats} times over (a device resends a step only on a timeout or a reconnect)"
)]
pub struct RepeatFlood {
    /// The step repeated.
    pub step: u64,
    /// Its repeats so far.
    pub repeats: u32,
}

/// The cloud side of split steps for one device.
pub struct SplitCloud {
    /// The step handed to the application and not yet answered, and what asked for it.
    pending: Option<(u64, Asked)>,
    /// The last answered step, what asked for it and its reply, resent when the device
    /// repeats the step exactly (anything else of that step is ignored: a short forged
    /// "resend" must not make the cloud send a large reply again).
    last_reply: Option<(u64, Asked, Envelope)>,
    outbox: VecDeque<Envelope>,
    events: VecDeque<CloudEvent>,
    stats: SplitStats,
    /// The newest step, and the messages since that did not advance past it.
    repeats: (u64, u32),
}

impl Default for SplitCloud {
    fn default() -> Self {
        Self::new()
    }
}

impl SplitCloud {
    /// A cloud side with no history.
    pub fn new() -> Self {
        Self {
            pending: None,
            last_reply: None,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stats: SplitStats::default(),
            repeats: (0, 0),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> SplitStats {
        self.stats
    }

    /// The device repeated its newest step past [`MAX_STEP_REPEATS`]: it is flooding the
    /// cloud with bytes it must read (the hub closes it).
    pub fn flood(&self) -> Option<RepeatFlood> {
        let (step, repeats) = self.repeats;
        (repeats > MAX_STEP_REPEATS).then_some(RepeatFlood { step, repeats })
    }

    /// A message from the device.
    pub fn handle_message(&mut self, _now: Instant, envelope: Envelope) {
        let Envelope::Activations(activations, tensor) = envelope else {
            self.stats.ignored += 1;
            return;
        };
        let step = activations.step;
        let (newest, repeats) = &mut self.repeats;
        if step > *newest || self.pending.is_none() && self.last_reply.is_none() {
            (*newest, *repeats) = (step, 0);
        } else {
            *repeats = repeats.saturating_add(1);
        }
        if let Some((answered, asked, reply)) = &self.last_reply {
            if step == *answered {
                if *asked == Asked::of(&activations, &tensor) {
                    // The device missed our answer: resend it, do not train again.
                    self.outbox.push_back(reply.clone());
                    self.stats.resent += 1;
                } else {
                    self.stats.ignored += 1;
                }
                return;
            }
            if step < *answered {
                self.stats.ignored += 1;
                return;
            }
        }
        if let Some((pending, _)) = &self.pending
            && step <= *pending
        {
            // A resend of the step being computed (or an older one).
            self.stats.ignored += 1;
            return;
        }
        // A newer step supersedes a pending one: the device gave that one up, and
        // answering it now returns `NotPending`. One not yet handed to the application
        // is dropped, so a device holds at most one waiting step here, however fast it
        // sends.
        self.pending = Some((step, Asked::of(&activations, &tensor)));
        self.events.clear();
        self.events.push_back(CloudEvent::Activations {
            activations,
            tensor,
        });
    }

    /// The application's answer for the pending step.
    pub fn send_gradient(
        &mut self,
        _now: Instant,
        gradient: CutGradient,
        tensor: Vec<u8>,
    ) -> Result<(), SplitError> {
        let asked = match self.pending.take() {
            Some((step, asked)) if step == gradient.step => asked,
            other => {
                self.pending = other;
                return Err(SplitError::NotPending(gradient.step));
            }
        };
        let step = gradient.step;
        let reply = Envelope::CutGradient(gradient, tensor);
        self.last_reply = Some((step, asked, reply.clone()));
        self.outbox.push_back(reply);
        Ok(())
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    /// The cloud side has no timers of its own (the device drives retries).
    pub fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    /// The next event for the application.
    pub fn poll_event(&mut self) -> Option<CloudEvent> {
        self.events.pop_front()
    }

    /// The next event for the application, left in place.
    pub fn peek_event(&self) -> Option<&CloudEvent> {
        self.events.front()
    }
}
