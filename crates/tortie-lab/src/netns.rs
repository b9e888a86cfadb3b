//! Named network namespaces: listing them, identifying them, and running code inside one.
//!
//! Code runs inside a namespace on a dedicated thread that enters it through [`NetnsGuard`]
//! and ends when the closure returns, so no other thread of the process ever changes
//! namespace. Sockets made inside the closure stay in that namespace after it returns.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

use crate::state::NETNS_DIR;

/// Errors entering a namespace.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the thread running in network namespace {path} panicked")]
    Panicked { path: PathBuf },
}

/// The path `ip netns` gives a named namespace.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// The current thread's network namespace, entered on creation and left on drop.
#[derive(Debug)]
pub struct NetnsGuard {
    original: File,
}

impl NetnsGuard {
    /// Moves the current thread into the namespace at `target`.
    pub fn enter(target: &Path) -> Result<NetnsGuard, NetnsError> {
        let here = Path::new("/proc/thread-self/ns/net");
        let original = File::open(here).map_err(|source| NetnsError::Open {
            path: here.to_path_buf(),
            source,
        })?;
        let ns = File::open(target).map_err(|source| NetnsError::Open {
            path: target.to_path_buf(),
            source,
        })?;
        setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter {
            path: target.to_path_buf(),
            source,
        })?;
        Ok(NetnsGuard { original })
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // Only fails if the original namespace vanished; the thread is dedicated and about to
        // end, so nothing else can observe the wrong namespace.
        let _ = setns(&self.original, CloneFlags::CLONE_NEWNET);
    }
}

/// Runs `f` on a new thread inside the named namespace and returns its result.
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    run_at(&path(name), f)
}

/// Like [`run_in`] with the namespace given by path.
pub fn run_at<T: Send>(target: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    std::thread::scope(|s| {
        s.spawn(move || {
            let _guard = NetnsGuard::enter(target)?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(NetnsError::Panicked {
                path: target.to_path_buf(),
            })
        })
    })
}

/// Names of every namespace in `/run/netns` starting with `prefix`, sorted.
pub fn list_with_prefix(prefix: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    out.sort();
    out
}

/// Whether a namespace with this name exists.
pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// The kernel identity (device, inode) of the namespace at `path`; the same for
/// `/run/netns/NAME` and `/proc/PID/ns/net` of every process inside it.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino()))
}

/// Writes a sysctl under `/proc/sys` (e.g. `net/ipv4/ip_forward`) from inside the namespace.
pub fn write_sysctl(name: &str, key: &str, value: &str) -> Result<(), SysctlError> {
    let file = Path::new("/proc/sys").join(key);
    run_in(name, || std::fs::write(&file, value))
        .map_err(SysctlError::Netns)?
        .map_err(|source| SysctlError::Write {
            netns: name.to_string(),
            key: key.to_string(),
            source,
        })
}

/// Errors setting a sysctl in a namespace.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error(transparent)]
    Netns(NetnsError),
    #[error("cannot set {key} in network namespace {netns}")]
    Write {
        netns: String,
        key: String,
        #[source]
        source: io::Error,
    },
}
