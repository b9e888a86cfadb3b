//! Network namespace handles and running code inside them.
//!
//! Invariant: no thread of the caller ever changes namespace. Work inside a namespace runs
//! on a dedicated, short-lived thread that enters it with `setns(2)` and then ends; there is
//! nothing to restore, so a failure half-way can never leave a thread in the wrong place.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, fstatfs};
use rtnetlink::sys::{AsyncSocket, TokioSocket, protocols::NETLINK_ROUTE};

use crate::Error;

/// Where `ip netns add NAME` puts named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace. Cloning shares the file descriptor, which keeps the namespace
/// alive even if its bind mount is removed.
#[derive(Debug, Clone)]
pub struct NetNs {
    file: Arc<File>,
    /// How the namespace was named, for messages.
    label: String,
}

impl NetNs {
    /// Opens a namespace by path (`/run/netns/NAME`, `/proc/PID/ns/net`, a CNI_NETNS value).
    /// Fails with [`Error::OpenNetns`] if the path cannot be opened and
    /// [`Error::NotANetns`] if it is not a namespace file.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, Error> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| Error::OpenNetns {
            path: path.to_path_buf(),
            source,
        })?;
        // Bind-mounted namespaces and /proc/PID/ns/net both open onto nsfs.
        let fs = fstatfs(&file).map_err(|e| Error::OpenNetns {
            path: path.to_path_buf(),
            source: e.into(),
        })?;
        if fs.filesystem_type() != NSFS_MAGIC {
            return Err(Error::NotANetns {
                path: path.to_path_buf(),
            });
        }
        Ok(NetNs {
            file: Arc::new(file),
            label: path.display().to_string(),
        })
    }

    /// Opens the named namespace `/run/netns/NAME`.
    pub fn named(name: &str) -> Result<NetNs, Error> {
        NetNs::open(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// The calling thread's namespace.
    pub fn current() -> Result<NetNs, Error> {
        let mut ns = NetNs::open("/proc/thread-self/ns/net")?;
        ns.label = "(current)".to_string();
        Ok(ns)
    }

    /// The path or name this handle was opened with, for messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The path of a named namespace, `/run/netns/NAME`.
    pub fn path_of(name: &str) -> PathBuf {
        Path::new(NETNS_RUN_DIR).join(name)
    }

    /// The raw descriptor, for netlink attributes such as `IFLA_NET_NS_FD`. Valid while
    /// `self` lives.
    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Whether two handles name the same namespace (same nsfs inode).
    pub fn same_as(&self, other: &NetNs) -> bool {
        use std::os::unix::fs::MetadataExt;
        match (self.file.metadata(), other.file.metadata()) {
            (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        }
    }

    /// Runs `f` on a dedicated thread that has entered this namespace and returns its result.
    /// The thread ends afterwards; the caller's thread never changes namespace. Blocks the
    /// calling thread until `f` returns, so keep `f` short when calling from async code.
    pub fn run<T, F>(&self, f: F) -> Result<T, Error>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name("tortie-netns".to_string())
                .spawn_scoped(s, || {
                    setns(self.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|source| {
                        Error::Setns {
                            netns: self.label.clone(),
                            source,
                        }
                    })?;
                    Ok(f())
                })
                .map_err(|source| Error::Spawn {
                    netns: self.label.clone(),
                    source,
                })?;
            handle.join().map_err(|_| Error::Panicked {
                netns: self.label.clone(),
            })?
        })
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// An rtnetlink handle whose socket lives in `ns`. The socket is created on a thread inside
/// the namespace; the connection is then driven by a task on the caller's tokio runtime,
/// which ends when every clone of the handle is dropped.
///
/// Must be called from within a tokio runtime (it panics otherwise, like `tokio::spawn`).
pub fn netlink_handle_in(ns: &NetNs) -> Result<rtnetlink::Handle, Error> {
    let (conn, handle, _) = rtnetlink::from_socket(route_socket_in(ns, 0)?);
    tokio::spawn(conn);
    Ok(handle)
}

/// A NETLINK_ROUTE socket made inside `ns` and registered with the caller's tokio runtime,
/// bound to the multicast `groups` (the legacy bitmask; 0 = none).
pub(crate) fn route_socket_in(ns: &NetNs, groups: u32) -> Result<TokioSocket, Error> {
    let rt = tokio::runtime::Handle::current();
    ns.run(|| {
        // Registering with the reactor needs the runtime entered on this thread.
        let _guard = rt.enter();
        let mut socket = TokioSocket::new(NETLINK_ROUTE)?;
        if groups != 0 {
            socket
                .socket_mut()
                .bind(&rtnetlink::sys::SocketAddr::new(0, groups))?;
        }
        Ok(socket)
    })?
    .map_err(|source| Error::Socket {
        netns: ns.label.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entering a namespace needs CAP_SYS_ADMIN: skip when not root, but fail under CI.
    fn root_or_skip() -> bool {
        crate::testing::root_or_skip("entering a network namespace")
    }

    #[test]
    fn current_namespace_runs_closures() {
        if !root_or_skip() {
            return;
        }
        let ns = NetNs::current().expect("open current netns");
        assert!(ns.same_as(&NetNs::current().expect("again")));
        let v = ns.run(|| 41 + 1).expect("run");
        assert_eq!(v, 42);
    }

    #[test]
    fn bad_paths_are_named() {
        let e = NetNs::open("/nonexistent/netns").unwrap_err();
        assert!(matches!(e, Error::OpenNetns { .. }), "{e:?}");
        assert!(e.to_string().contains("/nonexistent/netns"));
        let exe = std::env::current_exe().expect("exe");
        let e = NetNs::open(exe).unwrap_err();
        assert!(matches!(e, Error::NotANetns { .. }), "{e:?}");
    }

    #[test]
    fn panics_are_errors() {
        if !root_or_skip() {
            return;
        }
        let ns = NetNs::current().expect("open current netns");
        let r: Result<(), Error> = ns.run(|| panic!("boom"));
        assert!(matches!(r, Err(Error::Panicked { .. })));
    }
}
