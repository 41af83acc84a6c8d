//! Answering first, working after: in `hermes up`, where every service shares the machine's
//! cores, the work that follows a delivery (the scheduler, the projector's fold, the notifier)
//! runs on a Tokio runtime of its own whose threads have a lower OS priority (nice
//! [`BACKGROUND_NICE`]) than the threads that answer HTTP (webhooks, the API, the pages) and the
//! runners'.
//!
//! Under a burst of deliveries, the cores then go to accepting them (GitHub gives up on a delivery
//! after 10 s) and the builds they made follow a moment later: nothing is lost, as every
//! delivery is on the stream before it is answered. On an idle machine a priority changes
//! nothing. The runners stay at the normal priority: their work only comes from the scheduler,
//! and their log lines must keep up with a build's own processes.
//!
//! Linux gives each thread its own nice value (`setpriority(PRIO_PROCESS, tid)`); elsewhere the
//! call may change the whole process or fail, and a failure only means no lower priority.

use std::sync::atomic::{AtomicBool, Ordering};

/// The nice value of the background threads (0 is the normal priority; 10 gives a thread about
/// a tenth of the CPU share of a normal one when both want the core).
pub const BACKGROUND_NICE: i32 = 10;

/// A runtime for the background services. Dropped anywhere, even inside the main runtime, it
/// stops without waiting for its tasks (they have been told to stop by then).
pub struct Background(Option<tokio::runtime::Runtime>);

impl Background {
    pub fn start() -> std::io::Result<Self> {
        let warned = std::sync::Arc::new(AtomicBool::new(false));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("hermes-background")
            .on_thread_start(move || {
                if let Err(e) = lower_this_thread()
                    && !warned.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(error = %e, "Cannot lower the background threads' priority; they run at the normal one.");
                }
            })
            .build()?;
        Ok(Self(Some(runtime)))
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        self.0
            .as_ref()
            .map(tokio::runtime::Runtime::handle)
            .expect("the runtime lives until drop")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`] (a thread already lower stays so).
pub fn lower_this_thread() -> std::io::Result<()> {
    if this_thread_nice()? >= BACKGROUND_NICE {
        return Ok(());
    }
    let tid = rustix::thread::gettid();
    rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE).map_err(std::io::Error::from)
}

/// The calling thread's nice value.
pub fn this_thread_nice() -> std::io::Result<i32> {
    let tid = rustix::thread::gettid();
    rustix::process::getpriority_process(Some(tid)).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_threads_run_at_a_lower_priority_and_others_do_not() {
        let before = this_thread_nice().expect("getpriority");
        let bg = Background::start().expect("runtime");
        let on_the_runtime = bg.handle().spawn(async {
            let worker = this_thread_nice().expect("getpriority");
            let blocking = tokio::task::spawn_blocking(|| this_thread_nice().expect("getpriority"))
                .await
                .expect("blocking task");
            (worker, blocking)
        });
        let (nice, blocking_nice) = bg.handle().block_on(on_the_runtime).expect("the task");
        assert_eq!(nice, BACKGROUND_NICE.max(before), "a worker thread");
        assert_eq!(
            blocking_nice,
            BACKGROUND_NICE.max(before),
            "a blocking thread"
        );
        assert_eq!(
            this_thread_nice().expect("getpriority"),
            before,
            "the caller's thread"
        );
        drop(bg);
    }
}
