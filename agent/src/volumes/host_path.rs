//! hostPath volumes: the `type` checks the kubelet makes before a container may mount a path of
//! the host, creating it for the `...OrCreate` types.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// Checks (and for `DirectoryOrCreate` / `FileOrCreate` creates) `path` according to the
/// hostPath `type`. Errors read like the kubelet's: `/data is not a directory (type Directory)`.
pub fn check(path: &Path, kind: &str) -> Result<(), String> {
    let shown = path.display();
    let not = |what: &str| format!("{shown} is not {what} (type {kind})");
    let stat = || fs::metadata(path);
    match kind {
        // No type: nothing is checked, as for the kubelet; a missing path becomes a directory,
        // which is what containerd and CRI-O make of it under a kubelet.
        "" => {
            if fs::symlink_metadata(path).is_err() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(|e| format!("cannot create directory {shown}: {e}"))?;
            }
            Ok(())
        }
        "DirectoryOrCreate" => {
            if fs::symlink_metadata(path).is_err() {
                fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(path)
                    .map_err(|e| format!("cannot create directory {shown}: {e}"))?;
            }
            match stat() {
                Ok(m) if m.is_dir() => Ok(()),
                _ => Err(not("a directory")),
            }
        }
        "Directory" => match stat() {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(not("a directory")),
            Err(e) => Err(missing(path, kind, e)),
        },
        "FileOrCreate" => {
            if fs::symlink_metadata(path).is_err() {
                // Like the kubelet, only the file is created: a missing parent directory is an
                // error, not something to make up.
                fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o644)
                    .open(path)
                    .map_err(|e| format!("cannot create file {shown}: {e}"))?;
            }
            match stat() {
                Ok(m) if m.is_file() => Ok(()),
                _ => Err(not("a file")),
            }
        }
        "File" => match stat() {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(not("a file")),
            Err(e) => Err(missing(path, kind, e)),
        },
        "Socket" => match stat() {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            Ok(_) => Err(not("a socket")),
            Err(e) => Err(missing(path, kind, e)),
        },
        "CharDevice" => match stat() {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            Ok(_) => Err(not("a character device")),
            Err(e) => Err(missing(path, kind, e)),
        },
        "BlockDevice" => match stat() {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            Ok(_) => Err(not("a block device")),
            Err(e) => Err(missing(path, kind, e)),
        },
        other => Err(format!("unknown hostPath type {other:?}")),
    }
}

fn missing(path: &Path, kind: &str, e: io::Error) -> String {
    if e.kind() == io::ErrorKind::NotFound {
        format!("{} does not exist (type {kind})", path.display())
    } else {
        format!("cannot stat {}: {e} (type {kind})", path.display())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn every_type() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("dir");
        let file = tmp.path().join("file");
        let sock = tmp.path().join("sock");
        fs::create_dir(&dir).unwrap();
        fs::write(&file, "x").unwrap();
        let _listener = UnixListener::bind(&sock).unwrap();
        let null = Path::new("/dev/null");
        let absent = tmp.path().join("absent");

        let untyped = tmp.path().join("untyped");
        assert!(check(&untyped, "").is_ok());
        assert!(
            untyped.is_dir(),
            "an untyped missing path becomes a directory"
        );
        assert!(check(&file, "").is_ok(), "an untyped file is left as it is");
        assert!(file.is_file());
        assert!(check(&dir, "Directory").is_ok());
        assert_eq!(
            check(&file, "Directory").unwrap_err(),
            format!("{} is not a directory (type Directory)", file.display())
        );
        assert!(
            check(&absent, "Directory")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(check(&file, "File").is_ok());
        assert!(check(&dir, "File").unwrap_err().contains("is not a file"));
        assert!(check(&sock, "Socket").is_ok());
        assert!(check(&file, "Socket").unwrap_err().contains("not a socket"));
        assert!(check(null, "CharDevice").is_ok());
        assert!(check(&file, "CharDevice").is_err());
        assert!(check(null, "BlockDevice").is_err());
        assert!(check(&sock, "BlockDevice").is_err());
        assert!(check(&dir, "Bogus").is_err());

        let made = tmp.path().join("made/deep");
        check(&made, "DirectoryOrCreate").unwrap();
        let mode = fs::metadata(&made).unwrap().permissions().mode() & 0o777;
        assert!(fs::metadata(&made).unwrap().is_dir());
        assert_eq!(mode & !0o022, 0o755 & !0o022);
        assert!(check(&file, "DirectoryOrCreate").is_err());

        let new_file = tmp.path().join("new-file");
        check(&new_file, "FileOrCreate").unwrap();
        assert!(fs::metadata(&new_file).unwrap().is_file());
        assert!(check(&dir, "FileOrCreate").is_err());
        // The parent of a FileOrCreate path must exist.
        let orphan = tmp.path().join("no-parent/file");
        assert!(check(&orphan, "FileOrCreate").is_err());
        assert!(!tmp.path().join("no-parent").exists());
    }
}
