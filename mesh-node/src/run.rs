//! `mesh-node run`: a node served over HTTP until SIGTERM or SIGINT. It wires the settings,
//! the [`Mesh`], the HTTP API and the metrics together and orders the stop; it holds no API,
//! protocol or storage logic.
//!
//! Start-up binds the HTTP listener first (a busy port fails before the store is opened), then
//! starts the mesh, then prints one ready line on the given output. A stop signal then:
//! 1. turns every new request into a 503 and stops accepting connections,
//! 2. waits (at most `shutdown_timeout`) for the requests in flight, so every write that was
//!    accepted is answered,
//! 3. shuts the mesh down: queued writes commit, the node leaves the membership, the transport
//!    flushes and the store closes.
//!
//! A second signal during the stop exits at once with status 1 (acknowledged writes are
//! already durable).

use crate::Mesh;
use crate::certs::TlsIdentity;
use crate::error::StartError;
use crate::http::{self, ApiConfig};
use crate::metrics::NodeMetrics;
use crate::settings::{Settings, SettingsError};
use crate::shutdown::{Draining, StopSignals};
use axum::serve::ListenerExt;
use std::io::Write;
use std::sync::Arc;

/// Why `run` failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The settings are wrong (exit status 2).
    #[error("{0}")]
    Config(String),
    /// Something failed at start or while serving (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl RunError {
    /// The process exit status for this error: 2 for bad configuration, 1 otherwise
    /// (CONTRACT §3).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Config(_) => 2,
            RunError::Failed(_) => 1,
        }
    }
}

impl From<SettingsError> for RunError {
    fn from(e: SettingsError) -> Self {
        RunError::Config(e.to_string())
    }
}

impl From<StartError> for RunError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Config(m) => RunError::Config(m),
            e @ StartError::Tls(_) => RunError::Config(e.to_string()),
            other => RunError::Failed(other.to_string()),
        }
    }
}

fn failed(what: &str) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |e| RunError::Failed(format!("{what}: {e}"))
}

/// Runs a node with `settings` until a stop signal; prints the ready line and the stop line
/// on `out`. Must be called within a multi-threaded tokio runtime.
pub async fn run(settings: Settings, out: &mut (dyn Write + Send)) -> Result<(), RunError> {
    let identity = match &settings.tls {
        Some(files) => Some(
            TlsIdentity::load(&files.cert, &files.key, &files.ca)
                .map_err(|e| RunError::Config(format!("tls: {e}")))?,
        ),
        None => None,
    };
    let seeds = settings.resolve_seeds()?;
    let mut signals = StopSignals::install().map_err(failed("signal handlers"))?;

    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(failed(&format!(
            "http: cannot listen on {}",
            settings.http_addr
        )))?;
    let http_addr = listener.local_addr().map_err(failed("http"))?;

    let mut builder = Mesh::builder()
        .node_id(&settings.node_id)
        .region(&settings.region)
        .gossip_addr(settings.gossip_addr)
        .data_dir(&settings.data_dir)
        .seeds(seeds)
        .gossip_config(settings.gossip_config());
    if let Some(addr) = settings.advertise_addr {
        builder = builder.advertise_addr(addr);
    }
    if let Some(ms) = settings.max_clock_drift_ms {
        builder = builder.max_clock_drift_ms(ms);
    }
    if let Some(bound) = settings.replicated_sync {
        builder = builder.replicated_sync(bound);
    }
    builder = match identity {
        Some(identity) => builder.tls(identity),
        None => builder.insecure_dev(),
    };
    let mesh = builder.start().await?;

    let metrics = Arc::new(NodeMetrics::new(&settings.data_dir));
    let observer = tokio::spawn({
        let (metrics, mesh) = (metrics.clone(), mesh.clone());
        async move { metrics.observe_replication(&mesh).await }
    });
    let draining = Draining::new();
    let config = ApiConfig {
        api_token: settings.api_token.clone(),
        max_body_bytes: settings.max_body_bytes,
    };
    let app = http::router(mesh.clone(), config, metrics, draining.clone());
    // Answers are small and written whole: do not let Nagle hold them back.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let draining = draining.clone();
        async move { draining.started().await }
    });
    let mut server = std::pin::pin!(server.into_future());

    let ready = writeln!(
        out,
        "node {} (region {}) ready: HTTP API on http://{http_addr}, gossip on {}, data in {}{}",
        settings.node_id,
        settings.region,
        mesh.local_addr(),
        settings.data_dir.display(),
        if settings.insecure_dev {
            " (INSECURE: peers are not authenticated)"
        } else {
            ""
        }
    )
    .and_then(|()| out.flush());
    if let Err(e) = ready {
        tracing::warn!(error = %e, "cannot print the ready line");
    }

    let served = tokio::select! {
        result = &mut server => Some(result),
        signal = signals.recv() => {
            tracing::info!(%signal, "stopping: draining HTTP requests");
            None
        }
    };
    if let Some(result) = served {
        // The server stopped by itself: an accept error it could not recover from.
        draining.start();
        mesh.shutdown().await;
        observer.abort();
        let reason = match result {
            Ok(()) => "the HTTP server stopped".to_owned(),
            Err(e) => format!("the HTTP server failed: {e}"),
        };
        return Err(RunError::Failed(reason));
    }

    draining.start();
    tokio::spawn(async move {
        let signal = signals.recv().await;
        eprintln!("mesh-node: second {signal} during shutdown: exiting now");
        std::process::exit(1);
    });
    match tokio::time::timeout(settings.shutdown_timeout, &mut server).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server error while draining"),
        Err(_) => tracing::warn!(
            timeout = ?settings.shutdown_timeout,
            "requests still in flight after the shutdown timeout: closing them"
        ),
    }
    mesh.shutdown().await;
    observer.abort();
    let _ = writeln!(out, "node {} stopped", settings.node_id).and_then(|()| out.flush());
    Ok(())
}
