//! What a running (or crashed) `weft up` made, in
//! `$WEFT_HOME/meshes/<name>/state.json` (`$WEFT_HOME` defaults to
//! `~/.weft`). Written before each thing is created, so whatever exists is
//! recorded: `weft down` and the next `weft up` clean up from it.

use std::path::PathBuf;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::network;
use super::process::{self, ProcRecord};

pub const STATE_FILE: &str = "state.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub name: String,
    pub dir: PathBuf,
    pub runner: Option<ProcRecord>,
    /// weftd's HTTP API, for `weft apply/get/delete/proxy-status`.
    pub api: Option<String>,
    /// weftd's API socket (no token needed; preferred by `weft`).
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// The admin token file for `api` over TCP.
    #[serde(default)]
    pub api_token_file: Option<PathBuf>,
    pub ingress: Vec<String>,
    pub processes: Vec<ProcRecord>,
    /// Pod namespaces first, the node last: deleted in this order.
    pub namespaces: Vec<String>,
    /// `/etc/netns/<ns>` directories.
    pub etc_dirs: Vec<PathBuf>,
    /// Where the sidecar's binary copy lives (outside `$WEFT_HOME`, which
    /// UID 1337 may not be able to reach).
    pub runtime_dir: Option<PathBuf>,
}

pub fn weft_home() -> PathBuf {
    if let Some(home) = std::env::var_os("WEFT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".weft")
}

pub fn run_dir(name: &str) -> PathBuf {
    weft_home().join("meshes").join(name)
}

impl State {
    pub fn load(name: &str) -> anyhow::Result<Option<State>> {
        let path = run_dir(name).join(STATE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}: not a weft up state file", path.display()))
    }

    /// Written whole to a temporary file, then renamed: a crash never
    /// leaves half a file.
    pub fn save(&self) -> anyhow::Result<()> {
        let dir = run_dir(&self.name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let staging = dir.join("state.json.next");
        std::fs::write(&staging, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("cannot write {}", staging.display()))?;
        std::fs::rename(&staging, dir.join(STATE_FILE))
            .with_context(|| format!("cannot write {}", dir.join(STATE_FILE).display()))
    }

    pub fn runner_alive(&self) -> bool {
        self.runner.as_ref().is_some_and(ProcRecord::alive)
    }

    /// Removes everything recorded, in reverse order of creation, then the
    /// state file. Safe to run again; returns what could not be removed.
    pub fn clean_up(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut processes = self.processes.clone();
        processes.reverse();
        process::stop_recorded(&processes);
        for netns in &self.namespaces {
            if !network::netns_exists(netns) {
                continue;
            }
            process::kill_pids(&network::netns_pids(netns));
            if let Err(err) = network::ip(&["netns", "del", netns]) {
                problems.push(err.to_string());
            }
        }
        let mut dirs = self.etc_dirs.clone();
        dirs.extend(self.runtime_dir.clone());
        for dir in dirs {
            if let Err(err) = std::fs::remove_dir_all(&dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("cannot remove {}: {err}", dir.display()));
            }
        }
        let file = run_dir(&self.name).join(STATE_FILE);
        if let Err(err) = std::fs::remove_file(&file)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            problems.push(format!("cannot remove {}: {err}", file.display()));
        }
        problems
    }
}

/// Meshes with a state file under `$WEFT_HOME` (running or left over).
pub fn recorded() -> Vec<State> {
    let Ok(entries) = std::fs::read_dir(weft_home().join("meshes")) else {
        return Vec::new();
    };
    let mut states: Vec<State> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            State::load(&name).ok().flatten()
        })
        .collect();
    states.sort_by(|a, b| a.name.cmp(&b.name));
    states
}

/// weftd's API (address, socket, token file) of the one running mesh;
/// `None` if there is none or more than one (then the user must say which
/// with `--weftd`).
pub fn running_api() -> Option<crate::client::Running> {
    let mut running = recorded().into_iter().filter(State::runner_alive);
    match (running.next(), running.next()) {
        (Some(only), None) => Some(crate::client::Running {
            api: only.api,
            socket: only.api_socket,
            token_file: only.api_token_file,
        }),
        _ => None,
    }
}
