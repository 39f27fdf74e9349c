//! Running a Weft binary (`weft`) as a user does, and finding the binaries
//! cargo builds next to each other.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one run of a command showed the user.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `binary args…` with no stdin and without `WEFT_ADDR` from the
/// caller's environment (a developer's setting must not redirect tests).
pub fn run(binary: &Path, args: &[&str]) -> Run {
    let output = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .env_remove("WEFT_ADDR")
        .output()
        .unwrap_or_else(|err| panic!("run {}: {err}", binary.display()));
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The binary `name` in the directory of `next_to` (cargo puts a
/// workspace's binaries side by side); panics with the build command when
/// it has not been built.
pub fn sibling(next_to: &str, name: &str) -> PathBuf {
    let path = Path::new(next_to).with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p weft-control -p weft-proxy` (or cargo test --workspace)",
        path.display()
    );
    path
}
