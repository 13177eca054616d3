//! Threads that work behind the actions rather than for them (sealing log files, indexing
//! records) run at a lower priority: on a busy host they take what the actions leave, instead
//! of preempting a user's notebook, or the proxy in front of it, for a scheduler slice at a
//! time. One whose work someone waits for is raised back meanwhile ([`Priority::hurry`]).

/// How much lower: they yield to the rest of the host, and still get about a tenth of a core
/// that another thread keeps busy, enough to keep up with a trail written flat out.
#[cfg(target_os = "linux")]
const LOWER_BY: i32 = 10;

/// The calling thread's priority, lowered (Linux keeps a nice value per thread, and `None`
/// names this one).
pub(crate) struct Priority {
    /// The nice value the thread started with (the server's), and the lowered one.
    #[cfg(target_os = "linux")]
    nice: (i32, i32),
    lowered: bool,
    /// Lowering failed: the thread keeps the server's priority, and nothing more is tried.
    unchanged: bool,
    what: &'static str,
}

impl Priority {
    /// Lowers the calling thread's priority by `LOWER_BY` from the server's (never above it,
    /// whatever nice value the server was started at); `what` names the thread's work in the
    /// warning if it cannot.
    pub(crate) fn lower(what: &'static str) -> Priority {
        #[cfg(target_os = "linux")]
        {
            let base = rustix::process::getpriority_process(None).unwrap_or(0);
            let mut priority = Priority { nice: (base, (base + LOWER_BY).min(19)), lowered: false, unchanged: false, what };
            priority.set(true);
            priority
        }
        #[cfg(not(target_os = "linux"))]
        Priority { lowered: false, unchanged: true, what }
    }

    /// Raises the thread back to the server's priority while `waited_for`, and lowers it again
    /// once not (raising needs the privilege the server runs with; without it the thread stays
    /// lowered).
    pub(crate) fn hurry(&mut self, waited_for: bool) {
        if !self.unchanged && waited_for == self.lowered {
            self.set(!waited_for);
        }
    }

    #[cfg(target_os = "linux")]
    fn set(&mut self, lowered: bool) {
        let nice = if lowered { self.nice.1 } else { self.nice.0 };
        match rustix::process::setpriority_process(None, nice) {
            Ok(()) => self.lowered = lowered,
            // A raise refused leaves it lowered.
            Err(_) if !lowered => {}
            Err(err) => {
                self.unchanged = true;
                tracing::warn!(error = %err, "cannot lower the priority of the audit {}; it competes with the actions it serves", self.what);
            }
        }
    }

    #[cfg(not(target_os = "linux"))]
    fn set(&mut self, lowered: bool) {
        let _ = (lowered, self.what);
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Lowered by ten from where the thread started, raised back while its work is waited
    /// for (as root, which the server runs as), lowered again after.
    #[test]
    fn a_background_thread_is_lowered_and_raised_while_waited_for() {
        std::thread::spawn(|| {
            let nice = || rustix::process::getpriority_process(None).expect("nice");
            let base = nice();
            let mut priority = Priority::lower("test");
            assert_eq!(nice(), (base + LOWER_BY).min(19));
            priority.hurry(true);
            if rustix::process::geteuid().is_root() {
                assert_eq!(nice(), base);
            }
            priority.hurry(false);
            assert_eq!(nice(), (base + LOWER_BY).min(19));
        })
        .join()
        .expect("the thread");
    }
}
