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
}

impl NatsServer {
    /// Starts a server storing JetStream data under `dir/jetstream`, listening on `127.0.0.1:port`
    /// (`port` 0 picks a free one).
    pub async fn start(dir: &Path, port: u16) -> Result<Self, ServerError> {
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
            "listen: \"127.0.0.1:{listen}\"\nmax_payload: {MAX_PAYLOAD}\nports_file_dir: {:?}\njetstream {{\n  store_dir: {:?}\n}}\n",
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
        let again = Self::start(&self.dir, self.port).await?;
        *self = again;
        Ok(())
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
