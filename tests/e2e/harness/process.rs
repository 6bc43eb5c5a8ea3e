//! Stopping a server the harness started (nginx, php-fpm, PostgreSQL) the way it wants to be stopped:
//! its own shutdown signal to its pid, then SIGKILL if it is still there after a grace period.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Sends `signal` (e.g. `"-TERM"`, `"-INT"`) to `child`'s pid, waits up to `grace` for it to exit,
/// then kills it; reaps it either way. Only the pid this harness started is signalled.
pub fn stop_gracefully(mut child: Child, signal: &str, grace: Duration) {
    let _ = Command::new("kill")
        .arg(signal)
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    let _ = child.wait();
}
