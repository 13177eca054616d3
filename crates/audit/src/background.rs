//! Threads that work behind the actions rather than for them (sealing log files, indexing
//! records) run at a lower priority: on a busy host they take what the actions leave, instead
//! of preempting a user's notebook, or the proxy in front of it, for a scheduler slice at a
//! time.

/// Their nice value: they yield to the rest of the host, and still get about a tenth of a core
/// that another thread keeps busy, enough to keep up with a trail written flat out.
#[cfg(target_os = "linux")]
const NICE: i32 = 10;

/// Lowers the calling thread's priority (Linux keeps a nice value per thread, and `None`
/// names this one); `what` names the thread's work in the warning if it cannot.
pub(crate) fn lower_own_priority(what: &str) {
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::process::setpriority_process(None, NICE) {
        tracing::warn!(error = %err, "cannot lower the priority of the audit {what}; it competes with the actions it serves");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = what;
}
