//! Slowing a process down from the outside: SIGCONT for a short slice, SIGSTOP for the rest
//! of each period, so a sensor whose capture would ship in two seconds is still sending
//! while a fault goes on for minutes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Lets a paused process run `run` of every `period` on a thread; when dropped, it leaves
/// the process running (SIGCONT).
pub struct Pacer {
    pid: u32,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child process the test started; once it has exited and been
    // reaped the call fails (ESRCH), which ends nothing here.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

impl Pacer {
    pub fn start(pid: u32, run: Duration, period: Duration) -> Pacer {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let rest = period.saturating_sub(run);
        signal(pid, libc::SIGSTOP);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                signal(pid, libc::SIGCONT);
                std::thread::sleep(run);
                signal(pid, libc::SIGSTOP);
                std::thread::sleep(rest);
            }
        });
        Pacer { pid, stop, thread: Some(thread) }
    }
}

impl Drop for Pacer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        signal(self.pid, libc::SIGCONT);
    }
}
