//! Reloading the config file when it changes.
//!
//! The file is polled (size, mtime, inode, then content) rather than watched
//! with inotify: polling sees editors' rename-over writes, bind-mounted
//! ConfigMaps and network filesystems alike, and costs one `stat` a tick.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{ConfigError, parse_config};
use weft_proto::proxy::v1::ProxyConfig;

/// Reads and parses the file; errors name the file.
pub fn read_config(path: &Path) -> Result<ProxyConfig, ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| ConfigError::new(&name, format!("cannot read: {err}")))?;
    parse_config(&text, &name)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: meta.len(),
        modified: meta.modified().ok(),
        inode: meta.ino(),
    })
}

/// Calls `on_change` with each new version of the file's content, forever.
/// The file's state when this starts counts as seen.
pub async fn watch_file(
    path: PathBuf,
    interval: Duration,
    mut on_change: impl FnMut(Result<ProxyConfig, ConfigError>),
) {
    let mut seen_print = fingerprint(&path);
    let mut seen_text = std::fs::read(&path).ok();
    loop {
        tokio::time::sleep(interval).await;
        let print = fingerprint(&path);
        if print.is_none() || print == seen_print {
            continue;
        }
        seen_print = print;
        let text = std::fs::read(&path).ok();
        if text.is_none() || text == seen_text {
            continue;
        }
        seen_text = text;
        on_change(read_config(&path));
    }
}
