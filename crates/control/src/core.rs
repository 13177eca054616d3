//! The core every service stands on: the pipeline's types, the registries, the stores.
//! It imports no other module of this crate.

pub(crate) mod actions;
pub(crate) mod blobs;
pub(crate) mod caller;
pub(crate) mod clock;
pub(crate) mod codec;
pub(crate) mod error;
pub(crate) mod feed;
pub(crate) mod keyring;
pub(crate) mod metrics;
pub(crate) mod node;
pub(crate) mod pipeline;
pub(crate) mod platform;
pub(crate) mod recorded;
pub(crate) mod redaction;
pub(crate) mod store;
