//! Processes `weft up` starts: each in its own process group (so a Ctrl-C
//! in the terminal reaches only the runner, which then stops them in
//! order), output appended to a log file, stopped by PID with SIGTERM and,
//! after a grace period, SIGKILL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use super::pod::PodView;

/// How long a process gets between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
/// The longest wait before restarting a process that exited.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A process as the state file remembers it. The start time (from
/// `/proc/PID/stat`) tells a reused PID from ours.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcRecord {
    pub label: String,
    pub pid: u32,
    pub start_time: u64,
}

impl ProcRecord {
    pub fn of_self(label: &str) -> Self {
        let pid = std::process::id();
        Self {
            label: label.to_string(),
            pid,
            start_time: start_time(pid).unwrap_or(0),
        }
    }

    /// Still running, and still the process we started.
    pub fn alive(&self) -> bool {
        start_time(self.pid).is_some_and(|t| t == self.start_time)
    }
}

/// How to start a process (again).
#[derive(Debug, Clone)]
pub struct Spec {
    pub label: String,
    pub argv: Vec<String>,
    /// Added to the runner's environment.
    pub env: Vec<(String, String)>,
    /// Ignored with a `view`, which has its own.
    pub cwd: PathBuf,
    /// Output is appended: restarts continue the same log.
    pub log: PathBuf,
    /// A pod's process: its namespaces and user (none for weftd).
    pub view: Option<PodView>,
}

/// A child of this runner, restarted with backoff when it exits (as a
/// Kubernetes pod's containers are).
pub struct Proc {
    pub record: ProcRecord,
    pub spec: Spec,
    child: Child,
    started: Instant,
    restarts: u32,
    /// Set while it is down and waiting for its next start.
    restart_at: Option<Instant>,
}

/// What [`Proc::keep_alive`] did.
pub enum Change {
    Exited { status: String, delay: Duration },
    Restarted { old: ProcRecord },
    RestartFailed(String),
}

pub fn spawn(spec: Spec) -> anyhow::Result<Proc> {
    let (child, record) = start(&spec)?;
    Ok(Proc {
        record,
        spec,
        child,
        started: Instant::now(),
        restarts: 0,
        restart_at: None,
    })
}

fn start(spec: &Spec) -> anyhow::Result<(Child, ProcRecord)> {
    let (program, args) = spec.argv.split_first().context("empty command")?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .with_context(|| format!("cannot open {}", spec.log.display()))?;
    let mut command = Command::new(program);
    match &spec.view {
        Some(view) => view.apply(&mut command)?,
        None => {
            command.current_dir(&spec.cwd);
        }
    }
    let child = command
        .args(args)
        // Plain log files, no colour codes (tracing-subscriber honours it).
        .env("NO_COLOR", "1")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(0)
        .spawn()
        .with_context(|| format!("{}: cannot start {program}", spec.label))?;
    let pid = child.id().context("child exited at once")?;
    let record = ProcRecord {
        label: spec.label.clone(),
        pid,
        start_time: start_time(pid).unwrap_or(0),
    };
    Ok((child, record))
}

impl Proc {
    /// `Some(status text)` once it has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            Ok(None) => None,
            Err(err) => Some(err.to_string()),
        }
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.spec.log, 20)
    }

    /// Down, and due to start again at the next [`Proc::keep_alive`].
    pub fn restart_due(&self) -> bool {
        self.restart_at.is_some_and(|at| Instant::now() >= at)
    }

    /// Called periodically while the mesh runs: notices an exit, then
    /// restarts after 1 s, 2 s, 4 s ... up to 30 s (from 1 s again after a
    /// run of a minute or more).
    pub fn keep_alive(&mut self) -> Option<Change> {
        let now = Instant::now();
        match self.restart_at {
            None => {
                let status = self.exited()?;
                if self.started.elapsed() > Duration::from_secs(60) {
                    self.restarts = 0;
                }
                let delay = Duration::from_secs(1 << self.restarts.min(5)).min(MAX_BACKOFF);
                self.restart_at = Some(now + delay);
                Some(Change::Exited { status, delay })
            }
            Some(at) if now >= at => {
                self.restarts = self.restarts.saturating_add(1);
                match start(&self.spec) {
                    Ok((child, record)) => {
                        self.restart_at = None;
                        self.child = child;
                        self.started = now;
                        let old = std::mem::replace(&mut self.record, record);
                        Some(Change::Restarted { old })
                    }
                    Err(err) => {
                        self.restart_at = Some(now + MAX_BACKOFF);
                        Some(Change::RestartFailed(format!("{err:#}")))
                    }
                }
            }
            Some(_) => None,
        }
    }
}

/// Stops children: SIGTERM to each group, then SIGKILL to what is left
/// after the grace period; waits for (and reaps) every one.
pub async fn stop(procs: &mut [Proc]) {
    for proc in procs.iter_mut() {
        if proc.exited().is_none() {
            signal_group(proc.record.pid, Signal::SIGTERM);
        }
    }
    let deadline = tokio::time::Instant::now() + GRACE;
    for proc in procs.iter_mut() {
        if tokio::time::timeout_at(deadline, proc.child.wait())
            .await
            .is_err()
        {
            signal_group(proc.record.pid, Signal::SIGKILL);
            let _ = proc.child.wait().await;
        }
    }
}

/// Stops processes a crashed runner left (not our children: only polled).
pub fn stop_recorded(records: &[ProcRecord]) {
    let alive: Vec<&ProcRecord> = records.iter().filter(|r| r.alive()).collect();
    for record in &alive {
        signal_group(record.pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while alive.iter().any(|r| r.alive()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for record in alive.iter().filter(|r| r.alive()) {
        signal_group(record.pid, Signal::SIGKILL);
    }
}

/// Kills processes found inside a namespace being deleted (strays a
/// recorded process left behind).
pub fn kill_pids(pids: &[i32]) {
    for &pid in pids {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Every process we start leads its own group (`process_group(0)`), so the
/// group id is its PID; children it forked go with it.
fn signal_group(pid: u32, signal: Signal) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = killpg(Pid::from_raw(pid), signal);
    }
}

/// Field 22 of `/proc/PID/stat`: start time in clock ticks since boot.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields resume after ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let state = rest.split_whitespace().next()?;
    if state == "Z" {
        return None;
    }
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The last `lines` lines of a log file.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = all[all.len().saturating_sub(lines)..].join("\n");
    format!("--- last lines of {} ---\n{tail}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_knows_its_own_process() {
        let me = ProcRecord::of_self("test");
        assert!(me.alive());
        let reused = ProcRecord {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!reused.alive());
    }
}
