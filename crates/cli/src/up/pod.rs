//! What a pod's processes (its sidecar, its app) run inside: the pod's
//! network namespace, a mount namespace of their own that shows them only
//! their pod's files, and an unprivileged user (the sidecar 1337, the app
//! its workload's UID). Set up in the child between fork and exec, with
//! nix's system calls, so a process restarted by the supervisor gets the
//! same view again.
//!
//! The view (host paths on the left):
//! - `/run/weft` is an empty tmpfs holding only, for mesh NAME,
//!   `/run/weft/NAME/pods/<pod>` (this pod's directory; other pods' and
//!   other meshes' are not there), `/run/weft/NAME/bin` (the directory of
//!   `weft`, read-only: `weft-proxy` and `${WEFT_BIN_DIR}`) and
//!   `/run/weft/NAME/mesh` (the mesh directory, read-only: `${MESH_DIR}`
//!   and the app's working directory). Binding them there, rather than
//!   using their host paths, means a home directory closed to other users
//!   does not keep an unprivileged app from its own code.
//! - `$WEFT_HOME` (weftd's state and CA keys, logs, every mesh's state
//!   file) is covered by an empty read-only tmpfs.
//! - `/etc/hosts` and `/etc/resolv.conf` are the pod's, as `ip netns exec`
//!   binds them.
//!
//! Mount propagation is made private first, so nothing mounted here
//! reaches the host (or comes back from it). The tmpfs is built at
//! `/run/weft/NAME/stage` and then moved over `/run/weft`: once `/run/weft`
//! is covered its old contents cannot be bound any more.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid, chdir, mkdir, setgroups, setresgid, setresuid};
use tokio::process::Command;

use super::plan::{PROXY_UID, Plan, Pod, Role};

/// How a pod's process is confined: plain data, kept in its `Spec` so a
/// restart builds the same view.
#[derive(Debug, Clone)]
pub struct PodView {
    pub netns: String,
    /// `/run/weft/NAME` (the same path inside and outside the view).
    pub runtime_dir: PathBuf,
    /// `/run/weft/NAME/pods/<pod>`.
    pub pod_dir: PathBuf,
    /// Host directories shown read-only at `runtime_dir/bin` and `/mesh`.
    pub bin_dir: PathBuf,
    pub mesh_dir: PathBuf,
    /// Covered by an empty tmpfs.
    pub hide: Vec<PathBuf>,
    pub uid: u32,
    pub gid: u32,
    /// The working directory, a path inside the view.
    pub cwd: PathBuf,
}

impl PodView {
    /// The view of `pod`'s sidecar (`app: false`) or app.
    pub fn of(plan: &Plan, pod: &Pod, app: bool) -> Self {
        let (uid, gid, cwd) = match (&pod.role, app) {
            (Role::Workload { run_as, .. }, true) => (run_as.0, run_as.1, plan.view_mesh_dir()),
            _ => (PROXY_UID, PROXY_UID, PathBuf::from("/")),
        };
        // Mounted over as a path: its real one, symlinks resolved.
        let weft_home = super::state::weft_home();
        let weft_home = std::fs::canonicalize(&weft_home).unwrap_or(weft_home);
        Self {
            netns: pod.netns.clone(),
            runtime_dir: plan.runtime_dir.clone(),
            pod_dir: plan.pod_dir(pod),
            bin_dir: plan.bin_dir.clone(),
            mesh_dir: plan.dir.clone(),
            hide: hidden_paths(&weft_home),
            uid,
            gid,
            cwd,
        }
    }

    /// Makes `command` start inside this view. Everything the child needs
    /// is prepared here, before the fork: between fork and exec it only
    /// makes system calls.
    pub fn apply(&self, command: &mut Command) -> anyhow::Result<()> {
        let netns = File::open(Path::new("/var/run/netns").join(&self.netns))
            .with_context(|| format!("cannot open network namespace {}", self.netns))?;
        let steps = self.steps()?;
        let (uid, gid) = (Uid::from_raw(self.uid), Gid::from_raw(self.gid));
        let cwd = c_path(&self.cwd)?;
        let child = move || -> std::io::Result<()> {
            let fail = |step: &'static [u8], errno: Errno| {
                // Only the errno reaches the parent: name the step in the
                // process's log (stderr is already the log file).
                let _ = nix::unistd::write(std::io::stderr(), b"weft up: pod view: ");
                let _ = nix::unistd::write(std::io::stderr(), step);
                let _ = nix::unistd::write(std::io::stderr(), b" failed\n");
                std::io::Error::from(errno)
            };
            setns(&netns, CloneFlags::CLONE_NEWNET)
                .map_err(|e| fail(b"entering the network namespace", e))?;
            unshare(CloneFlags::CLONE_NEWNS)
                .map_err(|e| fail(b"unsharing the mount namespace", e))?;
            for step in &steps {
                step.run().map_err(|e| fail(step.what, e))?;
            }
            nix::sys::prctl::set_no_new_privs().map_err(|e| fail(b"no_new_privs", e))?;
            setgroups(&[]).map_err(|e| fail(b"clearing groups", e))?;
            setresgid(gid, gid, gid).map_err(|e| fail(b"setting the GID", e))?;
            setresuid(uid, uid, uid).map_err(|e| fail(b"setting the UID", e))?;
            chdir(cwd.as_c_str()).map_err(|e| fail(b"entering the working directory", e))?;
            Ok(())
        };
        // SAFETY: the closure only makes system calls (no allocation, no
        // locks) on data prepared before the fork.
        unsafe {
            command.pre_exec(child);
        }
        Ok(())
    }

    /// The mounts, in order.
    fn steps(&self) -> anyhow::Result<Vec<Step>> {
        let stage = self.runtime_dir.join("stage");
        let root = self
            .runtime_dir
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent", self.runtime_dir.display()))?;
        let under_stage = |path: &Path| -> anyhow::Result<PathBuf> {
            let rest = path
                .strip_prefix(root)
                .with_context(|| format!("{} is not under {}", path.display(), root.display()))?;
            Ok(stage.join(rest))
        };
        let private = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let read_only = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | private;
        let mut steps = vec![
            Step::mount(
                b"making mounts private",
                None,
                "/",
                None,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None,
            )?,
            Step::mount(
                b"mounting the staging tmpfs",
                Some(Path::new("tmpfs")),
                &stage,
                Some("tmpfs"),
                private,
                Some("mode=0755,size=64k"),
            )?,
        ];
        let pod_dir = under_stage(&self.pod_dir)?;
        let bin = under_stage(&self.runtime_dir.join("bin"))?;
        let mesh = under_stage(&self.runtime_dir.join("mesh"))?;
        // Parents first.
        let mut dirs: Vec<PathBuf> = pod_dir
            .ancestors()
            .take_while(|dir| *dir != stage)
            .map(Path::to_path_buf)
            .collect();
        dirs.reverse();
        dirs.extend([bin.clone(), mesh.clone()]);
        for dir in dirs {
            steps.push(Step::mkdir(&dir)?);
        }
        steps.push(Step::mount(
            b"binding the pod directory",
            Some(self.pod_dir.as_path()),
            &pod_dir,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )?);
        for (what, source, target) in [
            (&b"binding the binaries"[..], &self.bin_dir, &bin),
            (&b"binding the mesh directory"[..], &self.mesh_dir, &mesh),
        ] {
            steps.push(Step::mount(
                what,
                Some(source.as_path()),
                target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?);
            steps.push(Step::mount(
                b"making a bind read-only",
                None,
                target,
                None,
                read_only,
                None,
            )?);
        }
        steps.push(Step::mount(
            b"moving the view over /run/weft",
            Some(stage.as_path()),
            root,
            None,
            MsFlags::MS_MOVE,
            None,
        )?);
        for hidden in &self.hide {
            steps.push(Step::mount(
                b"hiding weft's state",
                Some(Path::new("tmpfs")),
                hidden,
                Some("tmpfs"),
                private | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY,
                Some("mode=0755,size=4k"),
            )?);
        }
        let etc = super::network::etc_dir(&self.netns);
        for name in ["hosts", "resolv.conf"] {
            steps.push(Step::mount(
                b"binding the pod's /etc files",
                Some(etc.join(name).as_path()),
                Path::new("/etc").join(name),
                None,
                MsFlags::MS_BIND,
                None,
            )?);
        }
        Ok(steps)
    }
}

/// What to hide from pods: `$WEFT_HOME`, or only its `meshes` directory if
/// it holds system directories (a `$WEFT_HOME` of `/` would hide `/usr`).
fn hidden_paths(home: &Path) -> Vec<PathBuf> {
    let system = [
        "/run", "/usr", "/etc", "/bin", "/lib", "/lib64", "/sbin", "/proc",
    ];
    if system.iter().any(|dir| Path::new(dir).starts_with(home)) {
        vec![home.join("meshes")]
    } else {
        vec![home.to_path_buf()]
    }
}

/// One system call of the view's set-up, its arguments ready.
struct Step {
    what: &'static [u8],
    call: Call,
}

enum Call {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: MsFlags,
        data: Option<CString>,
    },
    Mkdir(CString),
}

impl Step {
    fn mount(
        what: &'static [u8],
        source: Option<&Path>,
        target: impl AsRef<Path>,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            what,
            call: Call::Mount {
                source: source.map(c_path).transpose()?,
                target: c_path(target.as_ref())?,
                fstype: fstype.map(CString::new).transpose()?,
                flags,
                data: data.map(CString::new).transpose()?,
            },
        })
    }

    fn mkdir(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            what: b"making a mount point",
            call: Call::Mkdir(c_path(path)?),
        })
    }

    fn run(&self) -> nix::Result<()> {
        match &self.call {
            Call::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => mount(
                source.as_deref(),
                target.as_c_str(),
                fstype.as_deref(),
                *flags,
                data.as_deref(),
            ),
            Call::Mkdir(path) => match mkdir(path.as_c_str(), Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(err) => Err(err),
            },
        }
    }
}

fn c_path(path: &Path) -> anyhow::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("{} holds a NUL byte", path.display()))
}

/// On the host: `/run/weft/NAME/{stage,pods/<pod>/{sidecar,app}}`. The
/// pod directory is root's (0755); `sidecar/` is the sidecar's alone
/// (1337, 0700) and `app/` the app's (its UID, 0700, its `$HOME`).
/// `pods/` itself is root's 0700: nothing on the host lists the pods'
/// credentials but root.
pub fn make_dirs(plan: &Plan) -> anyhow::Result<()> {
    let root = &plan.runtime_dir;
    let pods = root.join("pods");
    for (dir, mode) in [
        (root.parent().unwrap_or(root), 0o755),
        (root.as_path(), 0o755),
        (&root.join("stage"), 0o755),
        (&pods, 0o700),
    ] {
        make_dir(dir, mode, None)?;
    }
    for pod in &plan.pods {
        let dir = plan.pod_dir(pod);
        make_dir(&dir, 0o755, None)?;
        make_dir(&dir.join("sidecar"), 0o700, Some((PROXY_UID, PROXY_UID)))?;
        if let Role::Workload { run_as, .. } = &pod.role {
            make_dir(&dir.join("app"), 0o700, Some(*run_as))?;
        }
    }
    Ok(())
}

fn make_dir(dir: &Path, mode: u32, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    if let Some((uid, gid)) = owner {
        chown(dir, Some(uid), Some(gid))
            .with_context(|| format!("cannot give {} to UID {uid}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// Writes `bytes` to `path` for the sidecar alone: UID 1337, mode 0400.
/// Staged beside it and renamed over it, so a reader sees the old file or
/// the new one, never half of one.
pub fn write_sidecar_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let staging = path.with_extension("next");
    std::fs::write(&staging, bytes)
        .with_context(|| format!("cannot write {}", staging.display()))?;
    chown(&staging, Some(PROXY_UID), Some(PROXY_UID))
        .with_context(|| format!("cannot give {} to UID {PROXY_UID}", staging.display()))?;
    std::fs::set_permissions(&staging, std::fs::Permissions::from_mode(0o400))
        .with_context(|| format!("cannot restrict {}", staging.display()))?;
    std::fs::rename(&staging, path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weft_home_is_hidden_unless_it_holds_the_system() {
        assert_eq!(
            hidden_paths(Path::new("/root/.weft")),
            [PathBuf::from("/root/.weft")]
        );
        assert_eq!(hidden_paths(Path::new("/")), [PathBuf::from("/meshes")]);
    }

    #[test]
    fn the_view_is_staged_then_moved_over_the_runtime_root() {
        let view = PodView {
            netns: "weft-m-a-0".into(),
            runtime_dir: "/run/weft/m".into(),
            pod_dir: "/run/weft/m/pods/a-0".into(),
            bin_dir: "/home/u/weft/target/release".into(),
            mesh_dir: "/home/u/weft/examples/x".into(),
            hide: vec!["/root/.weft".into()],
            uid: 20000,
            gid: 20000,
            cwd: "/run/weft/m/mesh".into(),
        };
        let steps = view.steps().expect("steps");
        let calls: Vec<String> = steps
            .iter()
            .map(|step| match &step.call {
                Call::Mount { source, target, .. } => format!(
                    "{} -> {}",
                    source
                        .as_deref()
                        .map_or("-".into(), |s| s.to_string_lossy()),
                    target.to_string_lossy()
                ),
                Call::Mkdir(path) => format!("mkdir {}", path.to_string_lossy()),
            })
            .collect();
        let at = |needle: &str| {
            calls
                .iter()
                .position(|c| c == needle)
                .unwrap_or_else(|| panic!("{needle} not in {calls:#?}"))
        };
        assert_eq!(at("- -> /"), 0, "propagation made private first");
        let staged = at("tmpfs -> /run/weft/m/stage");
        let pod = at("/run/weft/m/pods/a-0 -> /run/weft/m/stage/m/pods/a-0");
        let moved = at("/run/weft/m/stage -> /run/weft");
        let hidden = at("tmpfs -> /root/.weft");
        assert!(staged < at("mkdir /run/weft/m/stage/m/pods") && pod < moved && moved < hidden);
        at("/home/u/weft/target/release -> /run/weft/m/stage/m/bin");
        at("/etc/netns/weft-m-a-0/hosts -> /etc/hosts");
    }
}
