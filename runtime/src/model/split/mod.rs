//! Split fine-tuning of MiniLM: the device trains (or freezes) the bottom layers, the
//! cloud trains the top and a classifier, and only the cut tensor and its gradient
//! cross the link, encoded by a [`LinkCodec`].

mod code_cache;
mod halves;
mod order;
pub mod position;
mod schedule;
pub mod shared_top;
pub mod snapshot;
mod spec;
mod step_link;
pub mod tokens;
mod top_trainer;

pub use halves::{Bottom, Top, split};
pub use schedule::LrSchedule;
pub use spec::{CutForm, LinkCodec, Mode, SftWeight, TopTraining};
pub use step_link::StepLink;
pub mod cloud;
pub mod device;
pub mod run;
#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
