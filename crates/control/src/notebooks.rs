//! Notebook instances (SageMaker's model): a real Jupyter server (JupyterLab from the
//! `notebook` image) in a sandbox instance of its own, reachable only by the gateway through a
//! Unix socket, with an encrypted volume; and single-use presigned URLs bound to the
//! streaming session they were made for.
//!
//! The volume (`volume.rs`) is a disk of the notebook's size holding a gocryptfs directory,
//! mounted (FUSE) at `…/plain` only while the notebook runs and bound into its instance at
//! `/home/user/work`. Its password is a 256-bit data key from the key service, stored wrapped
//! by the notebook's KMS key: while the notebook is stopped, nothing of the volume is
//! plaintext on the host disk.

use std::sync::Arc;

use serde_json::Value;

use crate::core::actions::NotebooksAction;
use crate::core::error::ActionError;
use crate::core::pipeline::{Ctx, Pipeline};
use crate::instances::Instances;

mod admission;
mod gateway;
mod lifecycle;
mod repo;
mod server;
mod state;
mod urls;
mod volume;

pub use gateway::NotebookTarget;
pub(crate) use state::Notebooks;

impl Notebooks {
    pub(crate) fn new(pipeline: Pipeline, instances: Arc<Instances>) -> Notebooks {
        Notebooks { pipeline, instances, tokens: Default::default(), admission: Default::default() }
    }

    pub(crate) async fn dispatch(self: &Arc<Self>, ctx: &mut Ctx<'_>, action: NotebooksAction, input: Value) -> Result<Value, ActionError> {
        use NotebooksAction as A;
        match action {
            A::CreateNotebookInstance => lifecycle::create(self, ctx, input).await,
            A::DescribeNotebookInstance => lifecycle::describe(ctx, input).await,
            A::ListNotebookInstances => lifecycle::list(ctx, input).await,
            A::StartNotebookInstance => lifecycle::start(self, ctx, input).await,
            A::StopNotebookInstance => lifecycle::stop(self, ctx, input).await,
            A::UpdateNotebookInstance => lifecycle::update(self, ctx, input).await,
            A::DeleteNotebookInstance => lifecycle::delete(ctx, input).await,
            A::CreatePresignedNotebookInstanceUrl => urls::presign(ctx, input).await,
            A::RedeemPresignedNotebookInstanceUrl => urls::redeem(ctx, input).await,
        }
    }

    /// At a clean stop or start-up: every notebook stopped, its volume unmounted.
    pub(crate) async fn stop_all(&self) {
        server::stop_all(self).await
    }
}
