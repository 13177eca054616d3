//! Streaming's in-memory state, which every part of the service shares: the engine, the
//! actions and the live connections. It sits below the rest of `streaming` so that each of them
//! can hold it without importing another.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;

use crate::core::pipeline::Pipeline;
use crate::core::platform::Platform;
use crate::core::store::now_millis;
use crate::instances::Instances;

/// In-memory state of streaming: what the engine and the live connections share.
pub(crate) struct Streaming {
    pub(super) pipeline: Pipeline,
    pub instances: Arc<Instances>,
    /// Wakes the engine (a session queued, an instance freed, a fleet changed).
    pub wake: tokio::sync::Notify,
    /// Serializes handing instances to sessions.
    pub assignment: tokio::sync::Mutex<()>,
    /// Sessions with a live connection or a listener: their event channel and input clock.
    pub live: Mutex<HashMap<String, Live>>,
    /// Launches in flight per fleet, so the engine does not start the same capacity twice.
    pub launching: Mutex<HashMap<String, usize>>,
    /// ON_DEMAND sessions whose instance is starting.
    pub starting: Mutex<HashSet<String>>,
    /// Sessions being ended in the background.
    pub ending: Mutex<HashSet<String>>,
    /// Set at a clean stop: the engine starts nothing more.
    pub stopping: std::sync::atomic::AtomicBool,
}

impl Streaming {
    pub(crate) fn new(pipeline: Pipeline, instances: Arc<Instances>) -> Streaming {
        Streaming {
            pipeline,
            instances,
            wake: Default::default(),
            assignment: Default::default(),
            live: Default::default(),
            launching: Default::default(),
            starting: Default::default(),
            ending: Default::default(),
            stopping: Default::default(),
        }
    }
}

/// A session's live side: its event channel and the time of its user's last input.
pub(crate) struct Live {
    pub connections: usize,
    pub last_input: i64,
    pub events: tokio::sync::broadcast::Sender<Value>,
    pub warned: Vec<&'static str>,
}

impl Live {
    pub(super) fn new() -> Live {
        Live { connections: 0, last_input: now_millis(), events: tokio::sync::broadcast::channel(32).0, warned: Vec::new() }
    }
}

/// Milliseconds of `seconds` of a session timeout (scaled down only in tests).
pub(crate) fn scaled_ms(plane: &Platform, seconds: i64) -> i64 {
    seconds * i64::from(plane.spec.timeout_scale_ms)
}
