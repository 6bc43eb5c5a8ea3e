//! Filesystem primitives for the state directory: atomic writes (temporary file, fsync, rename, fsync
//! of the folder), owner-only folders, symlink replacement, and reads that tell "missing" from "broken".

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use super::{io_err, StoreError, DIR_MODE, TMP_MARK};

/// Writes `bytes` to `path` so that readers see the old content or the new, never a part.
///
/// The bytes go to a uniquely named temporary file in the same folder (`.<name>.tmp-<pid>-<rand>`, so the
/// rename stays within one filesystem), created with `mode`, fsynced, renamed over `path`, and then the
/// folder is fsynced so the rename itself survives a crash. The folder must exist. On failure the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let name = path.file_name().ok_or_else(|| StoreError::Io {
        action: "write",
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let dir = parent_dir(path);
    let tmp = dir.join(format!(
        ".{}{TMP_MARK}{}-{:016x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u64>()
    ));
    let written = write_new_file(&tmp, bytes, mode)
        .and_then(|()| fs::rename(&tmp, path).map_err(io_err("rename temporary file over", path)));
    if written.is_err() {
        // Best effort: the error being returned is the interesting one.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// The folder holding `path` ("." for a bare file name).
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Creates `path` (which must not exist) with exactly `mode`, writes `bytes` and fsyncs it.
pub(super) fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("create", path))?;
    // The umask may have removed bits from `mode`; the mode must be exactly what was asked for.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions of", path))?;
    file.write_all(bytes).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("fsync", path))
}

/// Fsyncs a folder, making the creations, renames and removals in it durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Creates `dir` (and missing parents) with mode 0700, or makes an existing one 0700.
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let meta = fs::metadata(dir).map_err(io_err("inspect directory", dir))?;
    if !meta.is_dir() {
        return Err(StoreError::Io {
            action: "use directory",
            path: dir.to_owned(),
            source: io::Error::new(io::ErrorKind::NotADirectory, "not a directory"),
        });
    }
    // Keys live below; a folder others can list or enter (or one a umask narrowed) is set back to 0700.
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(io_err("set permissions of", dir))?;
    }
    Ok(())
}

/// Points `link` at `target` in one rename: a temporary link `<name>.tmp-<rand>` beside it is renamed over
/// it, so readers see the old target or the new, never a missing file. The caller fsyncs the folder.
pub(super) fn replace_symlink(target: &Path, link: &Path) -> Result<(), StoreError> {
    let name = link
        .file_name()
        .map(OsStr::to_string_lossy)
        .unwrap_or_default();
    let tmp = parent_dir(link).join(format!("{name}{TMP_MARK}{:016x}", rand::random::<u64>()));
    symlink(target, &tmp).map_err(io_err("create symlink", &tmp))?;
    if let Err(source) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("rename symlink over", link)(source));
    }
    Ok(())
}

/// Reads a file, mapping "not found" to `None`.
pub(super) fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io_err("read", path)(err)),
    }
}

/// Reads one PEM file of a version folder; a missing file means the version is not what certd wrote.
pub(super) fn read_version_file(path: &Path) -> Result<String, StoreError> {
    read_optional(path)?.ok_or_else(|| StoreError::Corrupt {
        path: path.to_owned(),
        reason: "missing from its version folder".into(),
    })
}

/// Reads a private key into memory that is wiped when dropped, including on the error paths.
pub(super) fn read_key_file(path: &Path) -> Result<Zeroizing<String>, StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: "missing from its version folder".into(),
            })
        }
        Err(err) => return Err(io_err("open", path)(err)),
    };
    // Sized up front so the buffer is not reallocated, which would leave unwiped copies behind.
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut bytes = Zeroizing::new(Vec::with_capacity(
        usize::try_from(len).unwrap_or(0).saturating_add(1),
    ));
    file.read_to_end(&mut bytes).map_err(io_err("read", path))?;
    match String::from_utf8(std::mem::take(&mut *bytes)) {
        Ok(text) => Ok(Zeroizing::new(text)),
        Err(err) => {
            err.into_bytes().zeroize();
            Err(StoreError::Corrupt {
                path: path.to_owned(),
                reason: "not UTF-8".into(),
            })
        }
    }
}
