//! `weft down [NAME]`: stops a running `weft up` (SIGTERM to its runner,
//! which tears down in order) and removes whatever a crashed one left, as
//! recorded in its state file.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::process;
use super::state::{self, State};

/// The runner's own teardown: every process's grace period, then
/// namespaces. Past this, down finishes the job itself.
const RUNNER_TIMEOUT: Duration = Duration::from_secs(30);

pub fn down(name: Option<String>) -> ExitCode {
    let state = match pick(name) {
        Ok(state) => state,
        Err(message) => {
            note!("weft down: {message}");
            return ExitCode::FAILURE;
        }
    };
    let name = state.name.clone();
    if let Some(runner) = state.runner.as_ref().filter(|r| r.alive()) {
        note!(
            "weft down: stopping mesh {name:?} (weft up, pid {})",
            runner.pid
        );
        let pid = Pid::from_raw(i32::try_from(runner.pid).unwrap_or(i32::MAX));
        if let Err(err) = kill(pid, Signal::SIGTERM) {
            note!(
                "weft down: cannot signal weft up (pid {}): {err}; run it as the user that started the mesh (e.g. with sudo)",
                runner.pid
            );
            return ExitCode::FAILURE;
        }
        let deadline = Instant::now() + RUNNER_TIMEOUT;
        while runner.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        if runner.alive() {
            note!("weft down: weft up did not stop within {RUNNER_TIMEOUT:?}; killing it");
            let _ = kill(pid, Signal::SIGKILL);
            process::stop_recorded(std::slice::from_ref(runner));
        }
    }
    // Whatever the runner did not remove (or everything, if it crashed).
    let leftover = match State::load(&name) {
        Ok(leftover) => leftover,
        Err(err) => {
            note!("weft down: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(leftover) = leftover {
        note!("weft down: removing what mesh {name:?} left behind");
        let problems = leftover.clean_up();
        if !problems.is_empty() {
            for problem in problems {
                note!("weft down: {problem}");
            }
            return ExitCode::FAILURE;
        }
    }
    println!("weft down: mesh {name:?} stopped");
    ExitCode::SUCCESS
}

/// The named mesh, or the only one recorded.
fn pick(name: Option<String>) -> Result<State, String> {
    let home = state::weft_home().join("meshes");
    if let Some(name) = name {
        return match State::load(&name) {
            Ok(Some(state)) => Ok(state),
            Ok(None) => Err(format!(
                "no mesh named {name:?} is running (nothing recorded in {})",
                home.display()
            )),
            Err(err) => Err(format!("{err:#}")),
        };
    }
    let mut all = state::recorded();
    match all.len() {
        0 => Err(format!(
            "no mesh is running (nothing recorded in {})",
            home.display()
        )),
        1 => Ok(all.remove(0)),
        _ => Err(format!(
            "several meshes are recorded ({}); name one: `weft down NAME`",
            all.iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}
