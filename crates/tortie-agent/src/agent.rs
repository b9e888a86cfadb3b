//! Starting and stopping the agent: the [`Agent`] handle owns the main loop and the HTTP
//! server; [`run`] is `tortie agent`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tortie_store::Store;

use crate::config::AgentConfig;
use crate::dataplane::{NetlinkDataplane, NodeDataplane};
use crate::http::{self, HealthView};
use crate::main_loop::{self, AgentStatus, Wiring};
use crate::metrics::Metrics;
use crate::node::NodeRegistration;
use crate::policy_dataplane::{NoPolicy, PolicyDataplane};
use crate::policy_log::{PolicyLog, PolicyLogConfig};

/// How long connecting to the datastore may take at startup.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`Agent::shutdown`] waits for the tasks to finish.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A running agent. Dropping it stops the tasks (routes stay in place); prefer
/// [`Agent::shutdown`] to also learn how the main loop ended.
#[derive(Debug)]
pub struct Agent {
    health_addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: watch::Receiver<Result<(), String>>,
    shutdown_tx: watch::Sender<bool>,
    main: Option<JoinHandle<anyhow::Result<()>>>,
    http: Option<JoinHandle<std::io::Result<()>>>,
    /// The NFLOG listener for Log rules; stops when dropped.
    policy_log: Option<PolicyLog>,
    /// The host interface watch ([`crate::host_interfaces::watch`]), when configured.
    interface_watch: Option<JoinHandle<()>>,
}

impl Agent {
    /// Binds the health endpoint and starts the agent over `store` and `dataplane`.
    pub async fn start(
        config: AgentConfig,
        store: Arc<dyn Store>,
        dataplane: Box<dyn NodeDataplane>,
    ) -> anyhow::Result<Agent> {
        Self::start_with_policy(config, store, dataplane, Box::new(NoPolicy)).await
    }

    /// [`Agent::start`] with a policy dataplane.
    pub async fn start_with_policy(
        config: AgentConfig,
        store: Arc<dyn Store>,
        dataplane: Box<dyn NodeDataplane>,
        policy: Box<dyn PolicyDataplane>,
    ) -> anyhow::Result<Agent> {
        config.validate()?;
        let listener = TcpListener::bind(config.health_listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.health_listen))?;
        let health_addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
        let (readiness_tx, readiness) = watch::channel(Err("starting".to_string()));
        let (heartbeat_tx, heartbeat) = watch::channel(Instant::now());
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (status_tx, status) = watch::channel(AgentStatus::default());
        let (bgp_tx, bgp) = watch::channel(crate::bgp::BgpView::default());
        let (host_interfaces_tx, host_interfaces) = watch::channel(None);
        // Without a watch the sender is dropped here, which tells the main loop not to wait.
        let interface_watch = config.watch_host_interfaces.then(|| {
            tokio::spawn(crate::host_interfaces::watch(
                config.host_netns.clone(),
                host_interfaces_tx,
            ))
        });
        let view = HealthView {
            readiness: readiness.clone(),
            heartbeat,
            metrics: metrics.clone(),
            status,
            bgp,
        };
        let mut http_shutdown = shutdown.clone();
        let http = tokio::spawn(http::serve(listener, view, async move {
            let _ = http_shutdown.wait_for(|stop| *stop).await;
        }));
        let wiring = Wiring {
            store,
            dataplane,
            policy,
            status_tx,
            registration: NodeRegistration {
                name: config.node.clone(),
                ipv4: config.node_ip,
                ipv6: config.node_ipv6,
            },
            resync_interval: config.resync_interval,
            metrics: metrics.clone(),
            readiness_tx,
            heartbeat_tx,
            shutdown,
            routing: config.routing,
            host_netns: config.host_netns.clone(),
            bgp_tx,
            secrets_namespace: config.secrets_namespace.clone(),
            host_interfaces,
        };
        let main = tokio::spawn(main_loop::run(wiring));
        tracing::info!(node = %config.node, health = %health_addr, "agent started");
        Ok(Agent {
            health_addr,
            metrics,
            readiness,
            shutdown_tx,
            main: Some(main),
            http: Some(http),
            policy_log: None,
            interface_watch,
        })
    }

    /// Starts writing packets of Log rules in the namespace at `host_netns` (the agent's own
    /// when `None`) as `tortie::policy_log` events. Policy does not depend on it: when the
    /// listener cannot start, this warns once and the agent goes on without it.
    pub async fn start_policy_log(&mut self, host_netns: Option<&std::path::Path>) {
        let config = PolicyLogConfig::new(host_netns);
        let group = config.group;
        let metrics = self.metrics.clone();
        // Opening the socket enters the namespace on a thread of its own: blocking.
        match tokio::task::spawn_blocking(move || PolicyLog::start(config, metrics)).await {
            Ok(Ok(listener)) => {
                tracing::info!(group, "writing packets of Log rules as policy log events");
                self.policy_log = Some(listener);
            }
            Ok(Err(e)) => tracing::warn!(
                group,
                error = %crate::dataplane::error_chain(&e),
                "cannot listen for packets of Log rules; they will not be logged"
            ),
            Err(e) => tracing::warn!(error = %e, "starting the policy log listener panicked"),
        }
    }

    /// Where `/liveness`, `/readiness` and `/metrics` are served.
    pub fn health_addr(&self) -> SocketAddr {
        self.health_addr
    }

    /// The agent's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The current readiness: `Ok` or why not.
    pub fn readiness(&self) -> Result<(), String> {
        self.readiness.borrow().clone()
    }

    /// Waits until the agent is ready or `timeout` passes; returns the last status.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let mut rx = self.readiness.clone();
        match tokio::time::timeout(timeout, rx.wait_for(Result::is_ok)).await {
            Ok(Ok(_)) => Ok(()),
            _ => self.readiness(),
        }
    }

    /// Resolves when the main loop has ended on its own (an error, or the loop panicked).
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        match self.main.as_mut() {
            Some(main) => {
                let r = main.await;
                self.main = None;
                r.context("agent main loop panicked")?
            }
            None => std::future::pending().await,
        }
    }

    /// Stops the agent, leaving every route in place, and reports how the main loop ended.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown_tx.send_replace(true);
        drop(self.policy_log.take());
        if let Some(w) = self.interface_watch.take() {
            w.abort();
        }
        let main = self.main.take();
        let http = self.http.take();
        let joined = tokio::time::timeout(SHUTDOWN_TIMEOUT, async move {
            let main = match main {
                Some(m) => m.await.context("agent main loop panicked")?,
                None => Ok(()),
            };
            if let Some(h) = http {
                h.await
                    .context("health server panicked")?
                    .context("health server failed")?;
            }
            main
        })
        .await;
        joined.unwrap_or_else(|_| {
            anyhow::bail!("agent did not stop within {}s", SHUTDOWN_TIMEOUT.as_secs())
        })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
        if let Some(m) = self.main.take() {
            m.abort();
        }
        if let Some(h) = self.http.take() {
            h.abort();
        }
        if let Some(w) = self.interface_watch.take() {
            w.abort();
        }
    }
}

/// `tortie agent`: runs until SIGTERM or ctrl-c, then stops without touching routes.
pub async fn run(config: AgentConfig) -> anyhow::Result<()> {
    config.validate()?;
    let store =
        match tokio::time::timeout(CONNECT_TIMEOUT, tortie_store::connect(&config.datastore)).await
        {
            Ok(r) => r.with_context(|| format!("cannot open datastore {}", config.datastore))?,
            Err(_) => anyhow::bail!(
                "datastore {} did not answer within {}s",
                config.datastore,
                CONNECT_TIMEOUT.as_secs()
            ),
        };
    let dataplane = NetlinkDataplane::open(config.host_netns.as_deref())
        .map_err(|e| anyhow::anyhow!(crate::dataplane::error_chain(&e)))?;
    let policy = crate::policy_dataplane::NftPolicy::new(config.host_netns.as_deref());
    let host_netns = config.host_netns.clone();
    let mut agent =
        Agent::start_with_policy(config, store, Box::new(dataplane), Box::new(policy)).await?;
    agent.start_policy_log(host_netns.as_deref()).await;
    tokio::select! {
        signal = termination() => {
            let name = signal?;
            tracing::info!(signal = name, "shutting down");
            agent.shutdown().await
        }
        ended = agent.stopped() => ended.and_then(|()| anyhow::bail!("agent main loop ended")),
    }
}

/// Waits for SIGTERM or SIGINT; returns the signal's name.
async fn termination() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").context("cannot watch SIGINT"),
    }
}
