//! How the store's background threads (the checkpointer, the imager) start,
//! step aside for the loop, and are joined.
//!
//! They run beside the reactor, often on the same core (a server pinned to one
//! CPU, or more busy threads than cores). At the same priority the scheduler
//! lets them run for a whole slice, about 4 ms, while the loop waits with its
//! requests; at the lowest priority the loop's wake-up takes the core back at
//! once and, when both want it, gets about 98% of it. Neither thread's work is
//! urgent to the millisecond: a checkpoint that runs late lets the WAL grow
//! toward its bound, where the loop copies the rest itself (`checkpointer`), and
//! a late image only means a longer replay after a crash (`imager`).
//! docs/BENCHMARKS.md ("Tail latency against Redis") has the figures.

use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;

/// The nice value the background threads take (the lowest priority).
const NICE: i32 = 19;

/// Starts the thread `name` running `run`; a failure to start is a store error,
/// as the store's other failures to open are.
pub(super) fn spawn(
    name: &str,
    run: impl FnOnce() + Send + 'static,
) -> rusqlite::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(|e| {
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
                Some(format!("cannot start the {name} thread: {e}")),
            )
        })
}

/// Tells the thread `name` to stop (sets `stop`, wakes it through `wake`) and
/// waits for it to end, if it still runs; a panic in it is logged, as the stop
/// goes on either way.
pub(super) fn stop(
    stop: &Mutex<bool>,
    wake: &Condvar,
    thread: &mut Option<JoinHandle<()>>,
    name: &str,
) {
    if let Ok(mut stop) = stop.lock() {
        *stop = true;
    }
    wake.notify_all();
    if let Some(thread) = thread.take()
        && thread.join().is_err()
    {
        log::error!("the {name} thread panicked");
    }
}

/// Lowers the calling thread's priority to the lowest (`NICE`). On Linux the
/// nice value belongs to the thread, so the loop keeps its own; elsewhere it
/// would belong to the whole process, and nothing is changed.
pub(super) fn step_aside(thread: &str) {
    #[cfg(target_os = "linux")]
    {
        // PRIO_PROCESS with no pid is the calling thread on Linux; raising one's
        // own nice value needs no privilege.
        match rustix::process::setpriority_process(None, NICE) {
            Ok(()) => log::debug!("{thread}: nice {NICE}"),
            Err(e) => {
                log::info!("{thread}: cannot lower its priority ({e}); it runs at the loop's")
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = thread;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's nice value (field 19 of its stat line).
    fn own_nice() -> i32 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").expect("the thread's stat");
        let after_name = &stat[stat.rfind(')').expect("a stat line") + 2..];
        after_name
            .split(' ')
            .nth(16)
            .expect("field 19")
            .parse()
            .expect("a number")
    }

    #[test]
    fn only_the_calling_thread_steps_aside() {
        let before = own_nice();
        let other = std::thread::spawn(|| {
            step_aside("test");
            own_nice()
        })
        .join()
        .expect("the thread");
        assert_eq!(other, NICE);
        assert_eq!(own_nice(), before);
    }
}
