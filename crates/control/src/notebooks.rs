//! Notebook instances (SageMaker's model): each notebook is a real Jupyter server (JupyterLab
//! from the `notebook` image) as the only program of a sandbox instance of its own, listening
//! on a Unix socket in a host directory bound into the instance, so the gateway reaches it with
//! no network path at all. Jupyter's token is made at each start, handed to the instance as a
//! file (never in a host process's environment or command line), held in memory here and
//! added by the gateway's proxy, so no browser ever sees it.
//!
//! Presigned notebook URLs are single-use rows, valid for five minutes and bound to the
//! streaming session they were made for (and, in a pixel session, to that session's
//! instance: `NotebookURLBoundToInstance`).
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
mod kernel;
mod lifecycle;
mod nodes;
mod repo;
mod server;
mod state;
mod urls;
mod volume;

pub use gateway::NotebookRecord;
pub use kernel::{
    Answer as KernelAnswer, Frame as KernelFrame, KernelAudit, Passage as KernelPassage, Refusal as KernelRefusal, V1_PROTOCOL, v1_frame,
};
pub(crate) use state::Notebooks;
pub use state::{NotebookTarget, Upstream};

impl Notebooks {
    pub(crate) fn new(pipeline: Pipeline, instances: Arc<Instances>) -> Notebooks {
        Notebooks {
            pipeline,
            instances,
            tokens: Default::default(),
            grants: Default::default(),
            admission: Default::default(),
            busy: Default::default(),
            wake: Default::default(),
        }
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
            A::DeleteNotebookInstance => lifecycle::delete(self, ctx, input).await,
            A::CreatePresignedNotebookInstanceUrl => urls::presign(ctx, input).await,
            A::RedeemPresignedNotebookInstanceUrl => urls::redeem(ctx, input).await,
        }
    }

    /// At a clean stop, start-up or rejoin: every notebook of this node stopped, its volume
    /// unmounted.
    pub(crate) async fn stop_all(&self) {
        server::stop_all(self).await
    }

    /// At start-up and after a rejoin: notebooks made before nodes existed become this node's.
    pub(crate) async fn adopt(&self) {
        if let Err(err) = repo::adopt(&self.pipeline.platform).await {
            tracing::warn!(error = %err, "cannot adopt the notebooks made before nodes existed");
        }
    }
}
