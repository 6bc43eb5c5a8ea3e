//! The renewal scheduler's heartbeat (`<root>/scheduler.json`): when `certd run`'s scheduler last
//! completed a pass, written by the daemon and read by `certd status` (another process) to tell a
//! stuck or dead scheduler from a healthy one.

use std::path::Path;

use time::OffsetDateTime;

use super::{read_optional, write_atomic, Store, StoreError, FILE_MODE};

/// What the daemon's scheduler last recorded about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SchedulerHeartbeat {
    /// The daemon's process id (compared with the lock holder's, to know the daemon still runs).
    pub pid: u32,
    /// When this daemon's scheduler was first started.
    #[serde(with = "time::serde::rfc3339")]
    pub started: OffsetDateTime,
    /// When it last completed a pass (planned, renewed what was due); `None` before the first.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_run: Option<OffsetDateTime>,
    /// How often it ended abnormally and was started again.
    #[serde(default)]
    pub restarts: u64,
}

impl Store {
    /// Saves the scheduler's heartbeat (JSON, atomically, 0600). Precondition: the caller holds the
    /// [`StateLock`](super::StateLock).
    pub fn save_scheduler_heartbeat(
        &self,
        heartbeat: &SchedulerHeartbeat,
    ) -> Result<(), StoreError> {
        let path = self.layout.scheduler_file();
        let mut json =
            serde_json::to_string_pretty(heartbeat).map_err(|err| StoreError::Corrupt {
                path: path.clone(),
                reason: format!("cannot encode the scheduler heartbeat: {err}"),
            })?;
        json.push('\n');
        write_atomic(&path, json.as_bytes(), FILE_MODE)
    }

    /// The scheduler's last heartbeat, or `None` when no daemon ever wrote one.
    pub fn scheduler_heartbeat(&self) -> Result<Option<SchedulerHeartbeat>, StoreError> {
        let path = self.layout.scheduler_file();
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|err| StoreError::Corrupt {
                path,
                reason: format!("not a scheduler heartbeat: {err}"),
            })
    }

    /// The pid of the process holding the state directory's lock, if one does.
    ///
    /// Reads the pid the holder wrote into the lock file and checks that the process still runs (the
    /// pid stays in the file after its holder exits). It takes no lock, not even a shared one for a
    /// moment: that would make a daemon starting at that very moment fail to get its own.
    pub fn lock_holder(&self) -> Option<u32> {
        let text = read_optional(&self.layout.lock_file()).ok()??;
        let pid: u32 = text.trim().parse().ok()?;
        process_runs(pid).then_some(pid)
    }
}

/// Whether process `pid` exists. Without a `/proc` to ask, assumed so.
fn process_runs(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn the_heartbeat_round_trips_and_the_lock_holder_is_this_process() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.scheduler_heartbeat().unwrap(), None);
        assert_eq!(store.lock_holder(), None, "nobody locked it yet");
        let lock = store.lock().unwrap();
        assert_eq!(store.lock_holder(), Some(std::process::id()));
        let heartbeat = SchedulerHeartbeat {
            pid: std::process::id(),
            started: datetime!(2026-06-01 12:00 UTC),
            last_run: Some(datetime!(2026-06-01 12:30 UTC)),
            restarts: 2,
        };
        store.save_scheduler_heartbeat(&heartbeat).unwrap();
        assert_eq!(store.scheduler_heartbeat().unwrap(), Some(heartbeat));
        let mode = std::fs::metadata(dir.path().join("scheduler.json"))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        drop(lock);
        // A pid that cannot be running (above the kernel's pid_max limit of 2^22).
        std::fs::write(dir.path().join("lock"), "99999999\n").unwrap();
        assert_eq!(store.lock_holder(), None);
    }
}
