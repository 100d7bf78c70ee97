//! Reading and writing credential files: private directories, secret files written whole
//! (temporary file, fsync, rename) so a crash never leaves half a key behind.

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::PkiError;

/// Mode of private keys and of files embedding one (kubeconfigs).
pub const SECRET_MODE: u32 = 0o600;
/// Mode of certificates and public keys.
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of the directories holding them.
pub const DIR_MODE: u32 = 0o700;

fn io_error(path: &Path, action: &'static str, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Creates `dir` (and parents) with mode 0700, and tightens it to 0700 when it already exists
/// wider, since it holds private keys.
pub fn ensure_private_dir(dir: &Path) -> Result<(), PkiError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| io_error(dir, "create directory", e))?;
    let meta = fs::metadata(dir).map_err(|e| io_error(dir, "stat directory", e))?;
    if meta.permissions().mode() & 0o777 != DIR_MODE {
        fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
            .map_err(|e| io_error(dir, "chmod directory", e))?;
    }
    Ok(())
}

/// Reads a file, `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(path, "read", e)),
    }
}

/// Replaces `path` with `contents`, created with `mode` from the first byte on (never briefly
/// world-readable), through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let tmp = temp_path(path);
    let result = (|| {
        // A temporary file left by a crash is ours to replace.
        let _ = fs::remove_file(&tmp);
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
            .map_err(|e| io_error(&tmp, "create", e))?;
        file.write_all(contents)
            .map_err(|e| io_error(&tmp, "write", e))?;
        file.sync_all().map_err(|e| io_error(&tmp, "fsync", e))?;
        fs::rename(&tmp, path).map_err(|e| io_error(path, "rename into place", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Makes the renames done in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), PkiError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, "fsync directory", e))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_and_dirs_get_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/pki");
        ensure_private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let key = dir.join("k.key");
        write_atomic(&key, b"one", SECRET_MODE).unwrap();
        write_atomic(&key, b"two", SECRET_MODE).unwrap();
        assert_eq!(fs::read(&key).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(!dir.join("k.key.tmp").exists());
        assert_eq!(read_optional(&dir.join("none")).unwrap(), None);
    }
}
