//! The process exit codes every command returns, in one leaf module so the daemon, renewal and the
//! importers can name them without depending on `commands` (which uses all of them).

/// Everything succeeded.
pub const EXIT_OK: u8 = 0;
/// Some site failed; the others were tried.
pub const EXIT_SOME_FAILED: u8 = 1;
/// Nothing could be tried: the configuration, the state directory, the listener or the CA is at fault.
pub const EXIT_UNUSABLE: u8 = 2;
