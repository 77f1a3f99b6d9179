//! The hub's admissions: a device's Hello decided at once, or after its slow work (a top
//! to build) on the admission thread, one building and one waiting per device.

use super::{AdmitReply, Hub, isolated};
use crate::app::{AdmitJob, Admitted, CloudApp, Refused};
use crate::workers::Admission;

impl<A: CloudApp> Hub<A> {
    /// Admits or refuses a device's Hello: decided now, or once its slow work ran on
    /// the admission thread. One device has at most one admission building and one
    /// waiting for it (a newer Hello replaces the waiting one, which is refused), so a
    /// device reconnecting in a loop queues no more work than that.
    pub(super) fn admit(&mut self, admission: Admission) {
        let node = admission.hello.node.clone();
        if let Some(waiting) = self.building.get_mut(&node) {
            if let Some(older) = waiting.replace(admission) {
                let reason = "replaced by a newer connection of this device".to_string();
                let _ = older.reply.send(Err(Refused::Unserved(reason)));
            }
            return;
        }
        let app = &mut self.app;
        match isolated(&node, "admitting", || app.admit_job(&admission.hello)) {
            Ok(AdmitJob::Decided(verdict)) => {
                self.admitted(&admission.hello, verdict, admission.reply);
            }
            Ok(AdmitJob::Build(job)) => {
                self.building.insert(node, None);
                self.workers.run_admission(admission, job);
            }
            Err(failure) => self.admitted(&admission.hello, Err(failure.into()), admission.reply),
        }
    }

    /// Sends the application's verdict on `hello` to its connection.
    pub(super) fn admitted(
        &mut self,
        hello: &tandem_runtime::wire::Hello,
        verdict: Result<Admitted, Refused>,
        reply: AdmitReply,
    ) {
        let process = hello.plan.process;
        if verdict.is_ok()
            && process != 0
            && self.processes.insert(hello.node.clone(), process) != Some(process)
        {
            // A restarted device numbers its steps afresh: an old step cache would take
            // them for stale resends.
            self.split.remove(&hello.node);
        }
        let _ = reply.send(verdict);
    }
}
