//! The one error type of this crate, with the errno of kernel failures.

use std::path::PathBuf;

/// A namespace, netlink or sysctl failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The namespace path could not be opened (missing, no permission).
    #[error("cannot open network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The path exists but is not a network namespace.
    #[error("{path} is not a network namespace")]
    NotANetns { path: PathBuf },
    /// `setns` failed on the namespace thread.
    #[error("cannot enter network namespace {netns}")]
    Setns {
        netns: String,
        #[source]
        source: nix::Error,
    },
    /// The namespace thread could not be started.
    #[error("cannot start a thread for network namespace {netns}")]
    Spawn {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    /// The closure run inside a namespace panicked.
    #[error("the thread running in network namespace {netns} panicked")]
    Panicked { netns: String },
    /// The netlink socket could not be created.
    #[error("cannot open a netlink socket in network namespace {netns}")]
    Socket {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed; `what` names the request.
    #[error("netlink: {what}")]
    Netlink {
        what: String,
        #[source]
        source: rtnetlink::Error,
    },
    /// A batched request ([`crate::batch::RouteSocket`]) got no answer: it could not be sent,
    /// its answer was lost (`ENOBUFS`) or did not come in time. Its outcome is unknown.
    #[error("netlink: {what}: no answer")]
    Unanswered {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A sysctl could not be read or written.
    #[error("sysctl {path}")]
    Sysctl {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A value handed to this crate cannot be expressed (bad route, bad MAC...).
    #[error("invalid {what}: {reason}")]
    Invalid { what: String, reason: String },
}

impl Error {
    pub(crate) fn netlink(what: impl Into<String>, source: rtnetlink::Error) -> Self {
        Error::Netlink {
            what: what.into(),
            source,
        }
    }

    /// The positive errno of a kernel failure (netlink NACK, setns, sysctl I/O), if any.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::Netlink {
                source: rtnetlink::Error::NetlinkError(m),
                ..
            } => m.code.map(|c| -c.get()),
            Error::Setns { source, .. } => Some(*source as i32),
            Error::OpenNetns { source, .. }
            | Error::Spawn { source, .. }
            | Error::Socket { source, .. }
            | Error::Sysctl { source, .. }
            | Error::Unanswered { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }

    /// The object does not exist (ENOENT, ENODEV, ESRCH, EADDRNOTAVAIL).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno().map(nix::errno::Errno::from_raw),
            Some(
                nix::errno::Errno::ENOENT
                    | nix::errno::Errno::ENODEV
                    | nix::errno::Errno::ESRCH
                    | nix::errno::Errno::EADDRNOTAVAIL
            )
        )
    }

    /// The object already exists (EEXIST).
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(nix::errno::Errno::EEXIST as i32)
    }
}
