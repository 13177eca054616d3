//! The deploy service's state, apart from its actions so that the deploy and the destroy (each
//! in a file of its own) and the facade in `deploy.rs` all read it from one place.

use std::sync::Arc;

use model::spec::Spec;

use super::apply::{self, Applier};
use crate::core::caller::Caller;
use crate::core::pipeline::Pipeline;
use crate::streaming::Streaming;

/// The deploy service: one deploy or destroy at a time, its steps run through the pipeline.
pub(crate) struct Deploy {
    pipeline: Pipeline,
    /// One deploy or destroy at a time.
    pub(super) deploying: tokio::sync::Mutex<()>,
    steps: tokio::sync::mpsc::UnboundedSender<apply::Step>,
    /// Woken once a deploy changed the fleets.
    pub(super) streaming: Arc<Streaming>,
}

impl Deploy {
    pub(crate) fn new(pipeline: Pipeline, streaming: Arc<Streaming>) -> Deploy {
        let steps = apply::start_step_runner(pipeline.clone());
        Deploy { pipeline, deploying: Default::default(), steps, streaming }
    }

    /// Applies resources in `caller`'s name, each step through the pipeline.
    pub(super) fn applier<'a>(&'a self, caller: Caller, source_ip: &str, desired: &'a Spec) -> Applier<'a> {
        Applier { control: &self.pipeline, steps: &self.steps, caller, source_ip: source_ip.to_owned(), desired }
    }
}
