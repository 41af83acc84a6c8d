//! Starting a `nats-server` with JetStream: for `hermes up` when no server is reachable, and for
//! tests, which each start their own.
//!
//! The binary is `$HERMES_NATS_SERVER` when set, else `nats-server` on `PATH`. The project pins and
//! installs a version with `scripts/install-nats-server` (see README).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// The largest message Hermes asks of a server it starts: a 25 MiB webhook body and its headers.
pub const MAX_PAYLOAD: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "cannot start nats-server ({bin}): {source}; install it with scripts/install-nats-server or set HERMES_NATS_SERVER"
    )]
    Spawn { bin: String, source: std::io::Error },
    #[error("nats-server did not come up within {0:?}: {1}")]
    NotReady(Duration, String),
    #[error("I/O in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A running `nats-server`, stopped (SIGTERM, then SIGKILL) by [`NatsServer::stop`] or on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    url: String,
    port: u16,
    dir: PathBuf,
    /// Configuration beyond a single node's (a cluster block), kept for restarts.
    extra: String,
}

impl NatsServer {
    /// Starts a server storing JetStream data under `dir/jetstream`, listening on `127.0.0.1:port`
    /// (`port` 0 picks a free one).
    pub async fn start(dir: &Path, port: u16) -> Result<Self, ServerError> {
        Self::start_with(dir, port, String::new()).await
    }

    /// Starts a server with `extra` configuration (e.g. a `cluster` block).
    pub async fn start_with(dir: &Path, port: u16, extra: String) -> Result<Self, ServerError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| ServerError::Io { path, source }
        };
        tokio::fs::create_dir_all(dir).await.map_err(io(dir))?;
        let dir = tokio::fs::canonicalize(dir).await.map_err(io(dir))?;
        let ports_dir = dir.join("ports");
        // A stale ports file of an earlier run must not be mistaken for this one's.
        if let Err(e) = tokio::fs::remove_dir_all(&ports_dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(ServerError::Io {
                path: ports_dir,
                source: e,
            });
        }
        tokio::fs::create_dir_all(&ports_dir)
            .await
            .map_err(io(&ports_dir))?;
        let listen = if port == 0 {
            "-1".to_owned()
        } else {
            port.to_string()
        };
        let conf = format!(
            "listen: \"127.0.0.1:{listen}\"\nmax_payload: {MAX_PAYLOAD}\nports_file_dir: {:?}\njetstream {{\n  store_dir: {:?}\n}}\n{extra}",
            ports_dir.display().to_string(),
            dir.join("jetstream").display().to_string(),
        );
        let conf_path = dir.join("nats-server.conf");
        tokio::fs::write(&conf_path, conf)
            .await
            .map_err(io(&conf_path))?;
        let log_path = dir.join("nats-server.log");
        let log = std::fs::File::create(&log_path).map_err(io(&log_path))?;
        let bin = binary();
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(io(&log_path))?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ServerError::Spawn {
                bin: bin.display().to_string(),
                source,
            })?;
        let mut server = Self {
            child: Some(child),
            url: String::new(),
            port: 0,
            dir,
            extra,
        };
        server.port = server
            .wait_ready(&ports_dir, Duration::from_secs(20))
            .await?;
        server.url = format!("nats://127.0.0.1:{}", server.port);
        Ok(server)
    }

    async fn wait_ready(&mut self, ports_dir: &Path, within: Duration) -> Result<u16, ServerError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let log =
                    std::fs::read_to_string(self.dir.join("nats-server.log")).unwrap_or_default();
                return Err(ServerError::NotReady(
                    within,
                    format!("exited with {status}: {log}"),
                ));
            }
            if let Some(port) = read_port(ports_dir).await
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return Ok(port);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServerError::NotReady(within, "no client port".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Stops the server: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Some(pid) = child.id() {
            if let Err(e) = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await
            {
                tracing::debug!(error = %e, "kill -TERM failed.");
            }
            if tokio::time::timeout(grace, child.wait()).await.is_ok() {
                return;
            }
        }
        if let Err(e) = child.kill().await {
            tracing::debug!(error = %e, "Killing nats-server failed.");
        }
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = child.kill().await
        {
            tracing::debug!(error = %e, "Killing nats-server failed.");
        }
    }

    /// Starts the server again on the same port and store, after [`stop`](Self::stop) or [`kill`](Self::kill).
    pub async fn restart(&mut self) -> Result<(), ServerError> {
        self.stop(Duration::from_secs(5)).await;
        let again = Self::start_with(&self.dir, self.port, self.extra.clone()).await?;
        *self = again;
        Ok(())
    }
}

/// A JetStream cluster of `nats-server` processes on 127.0.0.1 (for tests and benchmarks): each
/// node its own store under `dir/n<i>`, client and route ports fixed for its life, so that a
/// node killed and started again rejoins as itself.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream has a meta leader (at most `within`).
    pub async fn start(dir: &Path, size: usize, within: Duration) -> Result<Self, ServerError> {
        let free = || -> Result<u16, ServerError> {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|source| ServerError::Io {
                    path: dir.to_owned(),
                    source,
                })
        };
        let clients = (0..size).map(|_| free()).collect::<Result<Vec<_>, _>>()?;
        let routes = (0..size).map(|_| free()).collect::<Result<Vec<_>, _>>()?;
        let route_list = routes
            .iter()
            .map(|p| format!("nats-route://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::with_capacity(size);
        for i in 0..size {
            let extra = format!(
                "server_name: n{i}\ncluster {{\n  name: hermes\n  listen: \"127.0.0.1:{}\"\n  routes: [{route_list}]\n}}\n",
                routes[i]
            );
            nodes
                .push(NatsServer::start_with(&dir.join(format!("n{i}")), clients[i], extra).await?);
        }
        let cluster = Self { nodes };
        cluster.wait_for_leader(within).await?;
        Ok(cluster)
    }

    /// Waits until JetStream answers on the cluster (a meta leader is elected).
    pub async fn wait_for_leader(&self, within: Duration) -> Result<(), ServerError> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let servers = crate::bus::server_list(&self.urls())
                .map_err(|e| ServerError::NotReady(within, e.to_string()))?;
            if let Ok(client) = async_nats::connect(servers).await {
                let js = async_nats::jetstream::new(client);
                if js.query_account().await.is_ok() {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServerError::NotReady(
                    within,
                    "no JetStream meta leader".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every node's client URL, comma-separated: a `NATS_URL`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.port != 0)
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The `nats-server` binary to run.
pub fn binary() -> PathBuf {
    std::env::var_os("HERMES_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("nats-server"))
}

async fn read_port(ports_dir: &Path) -> Option<u16> {
    let mut entries = tokio::fs::read_dir(ports_dir).await.ok()?;
    if let Ok(Some(entry)) = entries.next_entry().await {
        let text = tokio::fs::read_to_string(entry.path()).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let url = v.get("nats")?.get(0)?.as_str()?;
        return url.rsplit(':').next()?.parse().ok();
    }
    None
}

/// True when something accepts TCP connections at the first server of a NATS URL.
pub async fn reachable(url: &str) -> bool {
    let first = url.split(',').next().unwrap_or(url).trim();
    let hostport = first.split("://").last().unwrap_or(first);
    let hostport = hostport.rsplit('@').next().unwrap_or(hostport);
    matches!(
        tokio::time::timeout(
            Duration::from_secs(1),
            tokio::net::TcpStream::connect(hostport)
        )
        .await,
        Ok(Ok(_))
    )
}
