//! Writes a set of files into a volume directory so that a reader always sees one complete
//! version, as the kubelet's AtomicWriter does for configMap, secret, downwardAPI and projected
//! volumes:
//!
//! ```text
//! <dir>/..2026_11_22_05_30_00.123456789/<files>   one timestamped directory per version
//! <dir>/..data -> ..2026_11_22_05_30_00.123456789 swapped with one rename(2)
//! <dir>/<top-level name> -> ..data/<top-level name>
//! ```
//!
//! A reader that opens `<dir>/key` resolves through `..data` at that moment, so it sees either
//! the old version or the new one, never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

/// The name of the symlink that points at the current version.
pub const DATA_DIR: &str = "..data";
const DATA_DIR_TMP: &str = "..data_tmp";

/// One file of a payload: its content and its permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The file's bytes.
    pub data: Vec<u8>,
    /// Permission bits, such as 0o644.
    pub mode: u32,
}

/// The files of one version, by relative path.
pub type Payload = BTreeMap<String, FileProjection>;

/// Checks that a payload path stays inside the volume: relative, not empty, no `..` element
/// and not starting with `..` (the writer's own names).
pub fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".to_string());
    }
    if path.starts_with("..") {
        return Err(format!("{path:?} must not start with '..'"));
    }
    let p = Path::new(path);
    if p.is_absolute() {
        return Err(format!("{path:?} must be a relative path"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{path:?} must not contain '..'"));
    }
    Ok(())
}

fn top_level(path: &str) -> &str {
    path.split('/').find(|s| !s.is_empty()).unwrap_or(path)
}

/// Reads back the version `..data` points at, to skip writing an unchanged payload.
fn current_payload(data_dir: &Path, payload: &Payload) -> Option<bool> {
    let mut seen = 0usize;
    for (path, file) in payload {
        let full = data_dir.join(path);
        let meta = fs::symlink_metadata(&full).ok()?;
        if !meta.is_file() || meta.permissions().mode() & 0o7777 != file.mode {
            return Some(false);
        }
        if fs::read(&full).ok()? != file.data {
            return Some(false);
        }
        seen += 1;
    }
    // Count the files on disk, so a key that went away is noticed.
    fn count(dir: &Path) -> io::Result<usize> {
        let mut n = 0;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                n += count(&entry.path())?;
            } else {
                n += 1;
            }
        }
        Ok(n)
    }
    Some(count(data_dir).ok()? == seen)
}

fn new_version_dir(dir: &Path) -> io::Result<PathBuf> {
    let stamp = chrono::Utc::now().format("..%Y_%m_%d_%H_%M_%S.%f");
    for attempt in 0..100u32 {
        let path = dir.join(format!("{stamp}{attempt}"));
        match fs::create_dir(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free version directory name",
    ))
}

fn write_files(version: &Path, payload: &Payload) -> io::Result<()> {
    for (path, file) in payload {
        let full = version.join(path);
        if let Some(parent) = full.parent() {
            fs::create_dir_all(parent)?;
        }
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)?;
        f.write_all(&file.data)?;
        // The umask must not narrow the mode the pod asked for.
        f.set_permissions(fs::Permissions::from_mode(file.mode))?;
        f.sync_all()?;
    }
    Ok(())
}

/// Writes `payload` into `dir` as the new current version. Returns whether anything changed:
/// an identical payload leaves the directory alone.
pub fn write(dir: &Path, payload: &Payload) -> io::Result<bool> {
    for path in payload.keys() {
        validate_path(path).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    }
    fs::create_dir_all(dir)?;
    let data_link = dir.join(DATA_DIR);
    let old_version = fs::read_link(&data_link).ok();
    if old_version.is_some() && current_payload(&data_link, payload) == Some(true) {
        return Ok(false);
    }

    let version = new_version_dir(dir)?;
    if let Err(e) = write_files(&version, payload) {
        let _ = fs::remove_dir_all(&version);
        return Err(e);
    }
    let version_name = version
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| version.clone());

    // The swap: a fresh symlink renamed over the old one is atomic.
    let tmp_link = dir.join(DATA_DIR_TMP);
    let _ = fs::remove_file(&tmp_link);
    symlink(&version_name, &tmp_link)?;
    fs::rename(&tmp_link, &data_link)?;

    // User-visible names: add the new ones, drop those the payload no longer has.
    let wanted: BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    for name in &wanted {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_DIR).join(name), &link)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("..") || wanted.contains(name.as_ref()) {
            continue;
        }
        if entry.file_type()?.is_symlink() {
            fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old_version {
        let old = dir.join(old);
        if old != version {
            fs::remove_dir_all(old)?;
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, mode: u32) -> FileProjection {
        FileProjection {
            data: data.as_bytes().to_vec(),
            mode,
        }
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn layout_modes_and_update_swap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("vol");
        let payload = Payload::from([
            ("a".to_string(), file("one", 0o644)),
            ("nested/b".to_string(), file("two", 0o400)),
        ]);
        assert!(write(&dir, &payload).unwrap());

        let first = versions(&dir);
        assert_eq!(first.len(), 1);
        assert_eq!(
            fs::read_link(dir.join(DATA_DIR)).unwrap(),
            PathBuf::from(&first[0])
        );
        assert_eq!(
            fs::read_link(dir.join("a")).unwrap(),
            PathBuf::from("..data/a")
        );
        assert_eq!(
            fs::read_link(dir.join("nested")).unwrap(),
            PathBuf::from("..data/nested")
        );
        assert_eq!(fs::read_to_string(dir.join("nested/b")).unwrap(), "two");
        let mode = |p: &str| fs::metadata(dir.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("a"), 0o644);
        assert_eq!(mode("nested/b"), 0o400);

        // Same payload: nothing is rewritten.
        assert!(!write(&dir, &payload).unwrap());
        assert_eq!(versions(&dir), first);

        // An update swaps the version, drops the removed key and the old directory.
        let updated = Payload::from([
            ("a".to_string(), file("uno", 0o600)),
            ("c".to_string(), file("tres", 0o644)),
        ]);
        assert!(write(&dir, &updated).unwrap());
        let second = versions(&dir);
        assert_eq!(second.len(), 1);
        assert_ne!(second, first);
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "uno");
        assert_eq!(mode("a"), 0o600);
        assert_eq!(fs::read_to_string(dir.join("c")).unwrap(), "tres");
        assert!(fs::symlink_metadata(dir.join("nested")).is_err());
    }

    #[test]
    fn paths_must_stay_inside() {
        assert!(validate_path("ok/file").is_ok());
        assert!(validate_path("../etc/passwd").is_err());
        assert!(validate_path("a/../../b").is_err());
        assert!(validate_path("/abs").is_err());
        assert!(validate_path("..data").is_err());
        assert!(validate_path("").is_err());
        // The volume sits one level down, so an escape would land in a directory of the
        // test's own rather than in a shared /tmp where anything may be called `x`.
        let tmp = tempfile::tempdir().unwrap();
        let volume = tmp.path().join("volume");
        fs::create_dir(&volume).unwrap();
        let bad = Payload::from([("../x".to_string(), file("x", 0o644))]);
        assert!(write(&volume, &bad).is_err());
        assert!(!tmp.path().join("x").exists());
    }
}
