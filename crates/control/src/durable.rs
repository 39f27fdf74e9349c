//! Writes that survive a crash: the whole new content or the whole old one,
//! never a torn file, and never a rename the disk forgot.
//!
//! Every file weftd keeps (resources, registrations, keys, token lists) goes
//! through here. A write is: a temporary file in the same directory,
//! `fsync`ed, renamed over the target, then the directory `fsync`ed so the
//! rename itself is on disk.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Who may read a file weftd writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Secrets (keys, credentials): owner only, 0600.
    Private,
    /// Anything another local user may read (a root certificate), 0644.
    Public,
}

impl Mode {
    fn bits(self) -> u32 {
        match self {
            Mode::Private => 0o600,
            Mode::Public => 0o644,
        }
    }
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write(path: &Path, bytes: &[u8], mode: Mode) -> io::Result<()> {
    let dir = parent(path)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{}: not a file path", path.display())))?;
    let staging = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode.bits())
            .open(&staging)?;
        // An existing staging file keeps its old mode through `open`.
        file.set_permissions(std::fs::Permissions::from_mode(mode.bits()))?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    if let Err(err) = written {
        let _ = std::fs::remove_file(&staging);
        return Err(err);
    }
    std::fs::rename(&staging, path)?;
    sync_dir(dir)
}

/// Makes `dir` (and missing parents) readable by its owner only (0700),
/// tightening an existing one.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// `fsync` on a directory: makes the renames and removals in it durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent(path: &Path) -> io::Result<&Path> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => Ok(dir),
        Some(_) => Ok(Path::new(".")),
        None => Err(io::Error::other(format!(
            "{}: has no directory",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_with_the_asked_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        write(&path, b"first", Mode::Private).expect("write");
        write(&path, b"second", Mode::Private).expect("rewrite");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no staging file left: {leftovers:?}");
    }

    #[test]
    fn private_dirs_are_tightened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inner = dir.path().join("ca");
        std::fs::create_dir(&inner).expect("mkdir");
        std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&inner).expect("private");
        let mode = std::fs::metadata(&inner)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
