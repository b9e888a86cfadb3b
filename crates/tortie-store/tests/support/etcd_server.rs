//! A throwaway single-member etcd on 127.0.0.1 for tests and benchmarks.
//!
//! Ports are picked by binding port 0; the data dir is a temp dir (on tmpfs when `/dev/shm`
//! exists, so fsync is cheap). Startup waits at most `STARTUP_TIMEOUT` for the cluster to
//! answer. Dropping the guard kills the process by its PID, reaps it, and removes the dir.

#![allow(
    dead_code,
    reason = "shared by test binaries and the bench, each using a subset"
)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tortie_store::StoreError;
use tortie_store::etcd::EtcdStore;

/// Where Debian's `etcd-server` installs the binary; `TORTIE_ETCD_BIN` overrides.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const START_ATTEMPTS: usize = 3;

/// A running etcd; killed on drop.
#[derive(Debug)]
pub struct EtcdServer {
    child: Child,
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`
    pub endpoint: String,
}

/// Where the etcd binary should be.
pub fn etcd_path() -> PathBuf {
    std::env::var_os("TORTIE_ETCD_BIN")
        .map_or_else(|| PathBuf::from(DEFAULT_ETCD_BIN), PathBuf::from)
}

/// The etcd binary to use, if present.
pub fn etcd_binary() -> Option<PathBuf> {
    let path = etcd_path();
    path.is_file().then_some(path)
}

/// Whether etcd tests must run (CI) rather than skip when etcd is missing.
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Starts etcd, or returns `None` (after saying why) when the binary is missing outside CI.
/// Panics when it is missing in CI or fails to start.
pub async fn start_or_skip(what: &str) -> Option<EtcdServer> {
    start_or_skip_in(what, temp_base()).await
}

/// Like [`start_or_skip`] with the data dir under `base` (e.g. a disk-backed dir for
/// benchmarks, where tmpfs would hide fsync cost).
pub async fn start_or_skip_in(what: &str, base: &Path) -> Option<EtcdServer> {
    let Some(bin) = etcd_binary() else {
        let msg = format!(
            "{what}: etcd binary not found at {} (install Debian's etcd-server or set \
             TORTIE_ETCD_BIN)",
            etcd_path().display()
        );
        assert!(!required(), "{msg}; CI=true requires etcd tests to run");
        eprintln!("skipping {msg}");
        return None;
    };
    let mut last_error = String::new();
    for _ in 0..START_ATTEMPTS {
        match EtcdServer::start(&bin, base).await {
            Ok(server) => return Some(server),
            // Most likely a port picked by another test in the meantime: try new ports.
            Err(e) => last_error = e,
        }
    }
    panic!("{what}: etcd did not start: {last_error}");
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("local addr").port()
}

fn temp_base() -> &'static Path {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm } else { Path::new("/tmp") }
}

impl EtcdServer {
    async fn start(bin: &Path, base: &Path) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("tortie-etcd-")
            .tempdir_in(base)
            .map_err(|e| format!("temp dir: {e}"))?;
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let log_err = log.try_clone().map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(bin)
            .arg("--name=tortie-test")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=tortie-test={peer_url}"))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut server = EtcdServer {
            child,
            dir,
            endpoint: client_url,
        };
        server.wait_healthy().await?;
        Ok(server)
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("etcd exited with {status}:\n{}", self.log()));
            }
            match self.connect(Duration::from_secs(1)).await {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "not healthy within {STARTUP_TIMEOUT:?}: {e}\n{}",
                        self.log()
                    ));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// A client store for this server.
    pub async fn connect(&self, timeout: Duration) -> Result<EtcdStore, StoreError> {
        EtcdStore::connect(std::slice::from_ref(&self.endpoint), timeout).await
    }

    /// The datastore URL of this server.
    pub fn url(&self) -> String {
        format!("etcd://{}", self.endpoint.trim_start_matches("http://"))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// Kills the server now (as a crash would).
    pub fn kill(&mut self) {
        // Child::kill sends SIGKILL to this child's PID only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}
