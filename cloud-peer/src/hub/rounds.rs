//! The hub's federated rounds: a round's end handed to the application's commit (on a
//! worker), its results sent once committed, the next round started when enough devices
//! are connected, and the run's end told to every joined device.

use super::{Hub, isolated, send};
use crate::app::{CloudApp, RoundOutcome};
use std::time::Instant;
use tandem_runtime::session::fl::{CoordinatorEvent, RoundCoordinator};
use tandem_runtime::wire::NodeName;
use tracing::{info, warn};

impl<A: CloudApp> Hub<A> {
    /// Once the application's run is over (and no commit is under way, so the last
    /// round's results are queued): every joined device is closed with `Normal` and the
    /// run's last line after what it was sent, and the server is told if it stops then.
    pub(super) fn check_over(&mut self) {
        if !self.may_be_over || self.over.is_some() || self.committing.is_some() {
            return;
        }
        self.may_be_over = false;
        let app = &self.app;
        let Ok(Some(line)) = isolated("federated learning", "ending the run of", || app.run_over())
        else {
            return;
        };
        info!("{line}");
        for node in &self.joined {
            if let Some((_, outbox)) = self.connections.get(node) {
                outbox.finish(&line);
            }
        }
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(line.clone());
        }
        self.over = Some(line);
    }

    pub(super) fn poll_round(&mut self, now: Instant) {
        if let Some(round) = &mut self.round {
            round.handle_timeout(now);
            // The app commits an ended round (on a worker) before any device hears its
            // result: a device told "committed" can rely on the cloud having it.
            while let Some(event) = round.poll_event() {
                let outcome = match event {
                    CoordinatorEvent::Committed { round, updates } => {
                        info!(round, updates = updates.len(), "round committed");
                        RoundOutcome::Committed { round, updates }
                    }
                    CoordinatorEvent::Aborted { round, delivered } => {
                        warn!(round, received = delivered.len(), "round aborted");
                        RoundOutcome::Aborted { round, delivered }
                    }
                    CoordinatorEvent::Refused { from, reason } => {
                        warn!(node = %from, ?reason, "update refused");
                        continue;
                    }
                    _ => continue,
                };
                let number = outcome.round();
                let app = &mut self.app;
                match isolated("federated learning", "ending a round of", || {
                    app.round_job(outcome)
                }) {
                    Ok(job) => {
                        self.committing = Some(number);
                        self.workers.run_round(number, job);
                    }
                    Err(_) => self.rounds_over = true,
                }
            }
            if self.committing.is_none() {
                while let Some(out) = round.poll_transmit() {
                    send(&self.connections, &out.to, out.envelope);
                }
            }
        }
        // Results of an ended round are still resent to devices that repeat their
        // update, until the next round replaces it.
        let idle = self.committing.is_none() && self.round.as_ref().is_none_or(|r| r.is_ended());
        if !idle || self.rounds_over || self.joined.is_empty() {
            return;
        }
        let quorum = self.app.quorum();
        let app = &mut self.app;
        let available: Vec<NodeName> = self
            .joined
            .iter()
            .filter(|n| self.connections.contains_key(*n))
            .cloned()
            .collect();
        if available.len() >= quorum.participants.max(1) {
            let round = self.next_round;
            let tasks = isolated("federated learning", "starting a round of", || {
                let participants = app.participants(&available);
                app.round_tasks(round, &participants)
            });
            let Ok(Some(assignments)) = tasks else {
                self.rounds_over = true;
                info!("no more rounds");
                return;
            };
            let Some(first) = assignments.first() else {
                warn!(round, "the application assigned the round to no device");
                return;
            };
            let (number, deadline_ms) = (first.task.round, first.task.deadline_ms);
            self.next_round += 1;
            info!(
                round = number,
                participants = assignments.len(),
                "round started"
            );
            self.round = Some(RoundCoordinator::start_each(
                now,
                number,
                deadline_ms,
                assignments,
                quorum.min_updates,
            ));
            // Route the new round's tasks now.
            self.poll_round(now);
        }
    }
}
