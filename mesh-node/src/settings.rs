//! The settings of `mesh-node run`: the command-line flags (CONTRACT §3), the TOML file they
//! override, the defaults that serve on one machine, merged and checked into [`Settings`]. It
//! reads and validates; it must not start anything.
//!
//! Every flag `--foo-bar` has the file key `foo_bar` (`--seed`, repeatable, is `seeds`, a
//! list); a few settings exist only in the file (`api_token`, `advertise_addr`,
//! `max_clock_drift_ms`, `max_body_bytes`, `gossip_timers`, `cluster_size`,
//! `shutdown_timeout_ms`, `replicated_sync_ms`). Unknown keys are refused, so a typo does not
//! silently fall back to a default.

use crate::certs;
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default HTTP listen address (CONTRACT §2).
pub const DEFAULT_HTTP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7080);
/// Default gossip (QUIC) address.
pub const DEFAULT_GOSSIP_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7946);
/// Default node id.
pub const DEFAULT_NODE_ID: &str = "node-1";
/// Default region.
pub const DEFAULT_REGION: &str = "local";
/// Default request body limit of the HTTP API: 1 MiB (CONTRACT §2).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;
/// Default bound on a graceful shutdown's wait for in-flight HTTP requests.
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The flags of `mesh-node run`. Each one overrides the same setting of the `--config` file.
#[derive(Clone, Debug, Default, clap::Args)]
#[command(after_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    /// TOML file with the node's settings (keys are the flag names with '_' for '-';
    /// `seeds` is a list; file-only keys: api_token, advertise_addr, max_clock_drift_ms,
    /// max_body_bytes, gossip_timers, cluster_size, shutdown_timeout_ms, replicated_sync_ms).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The node id, 1 to 63 characters of A-Z, a-z, 0-9 and '-'; with TLS it must be the
    /// name in the certificate [default: node-1].
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// The region this node runs in (same characters as node ids) [default: local].
    #[arg(long, value_name = "NAME")]
    pub region: Option<String>,
    /// UDP address for gossip (QUIC) [default: 127.0.0.1:7946].
    #[arg(long, value_name = "ADDR")]
    pub gossip_addr: Option<SocketAddr>,
    /// TCP address of the HTTP API [default: 127.0.0.1:7080].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Gossip address (HOST:PORT) of a node to join through; repeat for several. Replaces
    /// the file's `seeds`. Peers remembered in the data directory are tried too.
    #[arg(long = "seed", value_name = "ADDR")]
    pub seeds: Vec<String>,
    /// Data directory, created if missing; one node per directory [default:
    /// mesh-data/NODE_ID].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// This node's certificate (PEM), as written by `mesh-node certs`.
    #[arg(long, value_name = "F")]
    pub tls_cert: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, value_name = "F")]
    pub tls_key: Option<PathBuf>,
    /// The cluster CA certificate (PEM) every peer must be signed by.
    #[arg(long, value_name = "F")]
    pub tls_ca: Option<PathBuf>,
    /// Run without TLS: peers are NOT authenticated. Local development only; without TLS
    /// files the node refuses to start unless this is given.
    #[arg(long)]
    pub insecure_dev: bool,
    /// Kafka brokers to ingest from. Not built in this version: giving it is an error
    /// (exit status 2).
    #[arg(long, value_name = "LIST")]
    pub kafka_brokers: Option<String>,
    /// Kafka topic to ingest from. Not built in this version: giving it is an error
    /// (exit status 2).
    #[arg(long, value_name = "T")]
    pub kafka_topic: Option<String>,
}

const RUN_AFTER_HELP: &str = "\
Without TLS files the node refuses to start unless --insecure-dev is given.
Kafka ingestion (--kafka-brokers, --kafka-topic) is not built in this version.
The HTTP API answers on --http-addr (CONTRACT §2); with `api_token = \"...\"` in the config
file every route but /health needs `Authorization: Bearer <token>`.
SIGTERM or SIGINT stops the node gracefully: no new requests, in-flight writes finish, the node
leaves the membership and exits 0.
Exit status: 0 after a clean stop, 2 on bad flags or configuration, 1 on any other failure.";

/// How fast the gossip timers run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GossipTimers {
    /// Across regions: the `gossip::Config::wan` preset.
    #[default]
    Wan,
    /// Within one data centre: `gossip::Config::lan`.
    Lan,
    /// On one machine (tests, demos): [`crate::loopback_gossip_config`]; it probes so often
    /// that it would flood a real network.
    Loopback,
}

impl GossipTimers {
    /// The gossip configuration of this preset for a cluster of about `cluster_size` nodes.
    pub fn config(self, cluster_size: u32) -> gossip::Config {
        match self {
            GossipTimers::Wan => gossip::Config::wan(cluster_size),
            GossipTimers::Lan => gossip::Config::lan(cluster_size),
            GossipTimers::Loopback => crate::loopback_gossip_config(cluster_size),
        }
    }
}

/// The TOML configuration file: every key optional, unknown keys refused.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsFile {
    /// See [`RunArgs::node_id`].
    pub node_id: Option<String>,
    /// See [`RunArgs::region`].
    pub region: Option<String>,
    /// See [`RunArgs::gossip_addr`].
    pub gossip_addr: Option<SocketAddr>,
    /// The address peers reach this node at, when not the bound one (needed when
    /// `gossip_addr` is `0.0.0.0:PORT`).
    pub advertise_addr: Option<SocketAddr>,
    /// See [`RunArgs::http_addr`].
    pub http_addr: Option<SocketAddr>,
    /// See [`RunArgs::seeds`].
    pub seeds: Option<Vec<String>>,
    /// See [`RunArgs::data_dir`]; a relative path is relative to the config file's directory.
    pub data_dir: Option<PathBuf>,
    /// See [`RunArgs::tls_cert`]; relative to the config file's directory.
    pub tls_cert: Option<PathBuf>,
    /// See [`RunArgs::tls_key`]; relative to the config file's directory.
    pub tls_key: Option<PathBuf>,
    /// See [`RunArgs::tls_ca`]; relative to the config file's directory.
    pub tls_ca: Option<PathBuf>,
    /// See [`RunArgs::insecure_dev`].
    pub insecure_dev: Option<bool>,
    /// See [`RunArgs::kafka_brokers`].
    pub kafka_brokers: Option<String>,
    /// See [`RunArgs::kafka_topic`].
    pub kafka_topic: Option<String>,
    /// When set, every HTTP route but `/health` needs `Authorization: Bearer <api_token>`.
    pub api_token: Option<String>,
    /// How far ahead of this node's clock a remote HLC stamp may be (CONTRACT §1, default 500).
    pub max_clock_drift_ms: Option<u64>,
    /// Largest HTTP request body accepted (default 1 MiB); larger ones get a 413.
    pub max_body_bytes: Option<usize>,
    /// `wan` (default), `lan` or `loopback` gossip timers.
    pub gossip_timers: Option<GossipTimers>,
    /// Expected cluster size, which sizes the gossip fan-outs (default: seeds + 1).
    pub cluster_size: Option<u32>,
    /// Bound on a graceful shutdown's wait for in-flight HTTP requests (default 10000).
    pub shutdown_timeout_ms: Option<u64>,
    /// How long deltas received from peers may stay committed non-durably, in ms (default
    /// 500; 0 makes every commit durable). Local writes are always durable when acknowledged.
    pub replicated_sync_ms: Option<u64>,
}

/// Where the node's TLS identity is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate.
    pub cert: PathBuf,
    /// The node's private key.
    pub key: PathBuf,
    /// The cluster CA.
    pub ca: PathBuf,
}

/// The settings of a node, complete and checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// The node id.
    pub node_id: String,
    /// The region.
    pub region: String,
    /// UDP address to bind for gossip.
    pub gossip_addr: SocketAddr,
    /// The address peers reach this node at, if not the bound one.
    pub advertise_addr: Option<SocketAddr>,
    /// TCP address of the HTTP API.
    pub http_addr: SocketAddr,
    /// Gossip addresses of nodes to join through (`HOST:PORT`, resolved at start).
    pub seeds: Vec<String>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Mutual TLS files; `None` only with `insecure_dev`.
    pub tls: Option<TlsFiles>,
    /// Whether to run without peer authentication.
    pub insecure_dev: bool,
    /// The HTTP API's bearer token, if any.
    pub api_token: Option<String>,
    /// How far ahead of this node's clock a remote stamp may be.
    pub max_clock_drift_ms: Option<u64>,
    /// Largest HTTP request body accepted.
    pub max_body_bytes: usize,
    /// Gossip timer preset.
    pub gossip_timers: GossipTimers,
    /// Expected cluster size, if given.
    pub cluster_size: Option<u32>,
    /// Bound on the wait for in-flight HTTP requests at shutdown.
    pub shutdown_timeout: Duration,
    /// How long received deltas may stay committed non-durably, if not the default
    /// (see [`crate::MeshBuilder::replicated_sync`]).
    pub replicated_sync: Option<Duration>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("node_id", &self.node_id)
            .field("region", &self.region)
            .field("gossip_addr", &self.gossip_addr)
            .field("advertise_addr", &self.advertise_addr)
            .field("http_addr", &self.http_addr)
            .field("seeds", &self.seeds)
            .field("data_dir", &self.data_dir)
            .field("tls", &self.tls)
            .field("insecure_dev", &self.insecure_dev)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("max_clock_drift_ms", &self.max_clock_drift_ms)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("gossip_timers", &self.gossip_timers)
            .field("cluster_size", &self.cluster_size)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("replicated_sync", &self.replicated_sync)
            .finish()
    }
}

/// Why the settings were refused; each message is one line naming the problem.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML or has a bad key or value.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What and where, on one line.
        message: String,
    },
    /// A setting has a bad value.
    #[error("{setting}: {message}")]
    Invalid {
        /// The flag or key.
        setting: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Neither TLS files nor `--insecure-dev`.
    #[error(
        "no TLS files: give --tls-cert, --tls-key and --tls-ca (see `mesh-node certs`), or \
         --insecure-dev for local development only"
    )]
    NoTls,
    /// Kafka was asked for.
    #[error("{0} given, but Kafka ingestion is not built in this version of mesh-node; remove it")]
    KafkaNotBuilt(&'static str),
}

fn invalid(setting: &'static str, message: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        setting,
        message: message.into(),
    }
}

/// Reads a TOML config file.
pub fn read_file(path: &Path) -> Result<SettingsFile, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_file(path, &text)
}

/// Parses the text of a TOML config file (`path` names it in errors).
pub fn parse_file(path: &Path, text: &str) -> Result<SettingsFile, SettingsError> {
    toml::from_str(text).map_err(|e| {
        let message = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
        let message = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let line = text[..start].matches('\n').count() + 1;
                let source = text.lines().nth(line - 1).unwrap_or("").trim();
                format!("line {line}: {message} (in `{source}`)")
            }
            None => message,
        };
        SettingsError::Parse {
            path: path.to_owned(),
            message,
        }
    })
}

/// Resolves a path from the config file against the file's directory.
fn relative_to(base: Option<&Path>, p: PathBuf) -> PathBuf {
    match base {
        Some(dir) if p.is_relative() => dir.join(p),
        _ => p,
    }
}

impl Settings {
    /// Reads `args.config` if given, applies the flags over it and the defaults under both,
    /// and checks the result.
    pub fn resolve(args: &RunArgs) -> Result<Settings, SettingsError> {
        let file = match &args.config {
            Some(path) => read_file(path)?,
            None => SettingsFile::default(),
        };
        let base = args
            .config
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_path_buf);
        Settings::merge(args, file, base.as_deref())
    }

    /// Applies the flags over `file` (whose relative paths are resolved against `base`) and
    /// the defaults under both, and checks the result.
    pub fn merge(
        args: &RunArgs,
        file: SettingsFile,
        base: Option<&Path>,
    ) -> Result<Settings, SettingsError> {
        if args.kafka_brokers.is_some() || file.kafka_brokers.is_some() {
            return Err(SettingsError::KafkaNotBuilt("--kafka-brokers"));
        }
        if args.kafka_topic.is_some() || file.kafka_topic.is_some() {
            return Err(SettingsError::KafkaNotBuilt("--kafka-topic"));
        }
        let node_id = args
            .node_id
            .clone()
            .or(file.node_id)
            .unwrap_or_else(|| DEFAULT_NODE_ID.to_owned());
        certs::validate_node_id(&node_id).map_err(|e| invalid("node_id", e.to_string()))?;
        let region = args
            .region
            .clone()
            .or(file.region)
            .unwrap_or_else(|| DEFAULT_REGION.to_owned());
        certs::validate_node_id(&region).map_err(|e| {
            invalid(
                "region",
                e.to_string()
                    .replacen("invalid node id", "invalid region", 1),
            )
        })?;
        let gossip_addr = args
            .gossip_addr
            .or(file.gossip_addr)
            .unwrap_or(DEFAULT_GOSSIP_ADDR);
        let http_addr = args
            .http_addr
            .or(file.http_addr)
            .unwrap_or(DEFAULT_HTTP_ADDR);
        let seeds = if args.seeds.is_empty() {
            file.seeds.unwrap_or_default()
        } else {
            args.seeds.clone()
        };
        for seed in &seeds {
            check_seed(seed)?;
        }
        let data_dir = match (&args.data_dir, file.data_dir) {
            (Some(dir), _) => dir.clone(),
            (None, Some(dir)) => relative_to(base, dir),
            (None, None) => PathBuf::from("mesh-data").join(&node_id),
        };
        let pick = |flag: &Option<PathBuf>, key: Option<PathBuf>| match flag {
            Some(p) => Some(p.clone()),
            None => key.map(|p| relative_to(base, p)),
        };
        let cert = pick(&args.tls_cert, file.tls_cert);
        let key = pick(&args.tls_key, file.tls_key);
        let ca = pick(&args.tls_ca, file.tls_ca);
        let insecure_dev = args.insecure_dev || file.insecure_dev.unwrap_or(false);
        let tls = match (cert, key, ca) {
            (Some(cert), Some(key), Some(ca)) => Some(TlsFiles { cert, key, ca }),
            (None, None, None) => None,
            (cert, key, _) => {
                let missing = if cert.is_none() {
                    "--tls-cert"
                } else if key.is_none() {
                    "--tls-key"
                } else {
                    "--tls-ca"
                };
                return Err(invalid(
                    "tls",
                    format!("--tls-cert, --tls-key and --tls-ca go together: {missing} is missing"),
                ));
            }
        };
        if tls.is_some() && insecure_dev {
            return Err(invalid(
                "insecure_dev",
                "TLS files and --insecure-dev were both given: choose one",
            ));
        }
        if tls.is_none() && !insecure_dev {
            return Err(SettingsError::NoTls);
        }
        let api_token = file.api_token;
        if let Some(token) = &api_token
            && (token.is_empty() || token.chars().any(|c| c.is_control() || c == ' '))
        {
            return Err(invalid(
                "api_token",
                "must be non-empty, without spaces or control characters",
            ));
        }
        let max_body_bytes = file.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if max_body_bytes == 0 {
            return Err(invalid("max_body_bytes", "must be at least 1"));
        }
        if file.cluster_size == Some(0) {
            return Err(invalid("cluster_size", "must be at least 1"));
        }
        Ok(Settings {
            node_id,
            region,
            gossip_addr,
            advertise_addr: file.advertise_addr,
            http_addr,
            seeds,
            data_dir,
            tls,
            insecure_dev,
            api_token,
            max_clock_drift_ms: file.max_clock_drift_ms,
            max_body_bytes,
            gossip_timers: file.gossip_timers.unwrap_or_default(),
            cluster_size: file.cluster_size,
            shutdown_timeout: file
                .shutdown_timeout_ms
                .map_or(DEFAULT_SHUTDOWN_TIMEOUT, Duration::from_millis),
            replicated_sync: file.replicated_sync_ms.map(Duration::from_millis),
        })
    }

    /// The gossip configuration these settings ask for.
    pub fn gossip_config(&self) -> gossip::Config {
        let size = self
            .cluster_size
            .unwrap_or_else(|| u32::try_from(self.seeds.len() + 1).unwrap_or(u32::MAX));
        self.gossip_timers.config(size)
    }

    /// Resolves the seeds to socket addresses (a name may give several; all are tried).
    pub fn resolve_seeds(&self) -> Result<Vec<SocketAddr>, SettingsError> {
        let mut out = Vec::new();
        for seed in &self.seeds {
            let addrs = seed
                .to_socket_addrs()
                .map_err(|e| invalid("seed", format!("{seed:?}: {e}")))?;
            out.extend(addrs);
        }
        Ok(out)
    }
}

/// Checks the shape of a seed (`HOST:PORT`) without resolving it.
fn check_seed(seed: &str) -> Result<(), SettingsError> {
    if seed.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || invalid("seed", format!("{seed:?} is not HOST:PORT"));
    let (host, port) = seed.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> RunArgs {
        RunArgs {
            insecure_dev: true,
            ..RunArgs::default()
        }
    }

    #[test]
    fn defaults_serve_on_one_machine() {
        let s = Settings::merge(&args(), SettingsFile::default(), None).expect("defaults");
        assert_eq!(s.node_id, DEFAULT_NODE_ID);
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:7080");
        assert_eq!(s.gossip_addr.to_string(), "127.0.0.1:7946");
        assert_eq!(s.data_dir, PathBuf::from("mesh-data/node-1"));
        assert_eq!(s.max_body_bytes, 1 << 20);
        assert!(s.tls.is_none());
    }

    #[test]
    fn flags_override_the_file_and_file_paths_are_relative_to_it() {
        let file = parse_file(
            Path::new("c.toml"),
            "node_id = \"a\"\nregion = \"r1\"\ndata_dir = \"d\"\nseeds = [\"127.0.0.1:1\"]\n\
             insecure_dev = true\ngossip_timers = \"loopback\"\n",
        )
        .expect("parse");
        let mut flags = RunArgs {
            node_id: Some("b".into()),
            seeds: vec!["localhost:2".into()],
            ..RunArgs::default()
        };
        let s = Settings::merge(&flags, file.clone(), Some(Path::new("/etc/mesh"))).expect("ok");
        assert_eq!(s.node_id, "b");
        assert_eq!(s.region, "r1");
        assert_eq!(s.data_dir, PathBuf::from("/etc/mesh/d"));
        assert_eq!(s.seeds, vec!["localhost:2".to_owned()]);
        assert_eq!(s.gossip_timers, GossipTimers::Loopback);
        flags.data_dir = Some("x".into());
        let s = Settings::merge(&flags, file, Some(Path::new("/etc/mesh"))).expect("ok");
        assert_eq!(s.data_dir, PathBuf::from("x"));
    }

    #[test]
    fn bad_settings_are_one_line_errors_naming_the_problem() {
        let cases: Vec<(RunArgs, &str, &str)> = vec![
            (RunArgs::default(), "", "no TLS files"),
            (
                RunArgs {
                    tls_cert: Some("c".into()),
                    ..RunArgs::default()
                },
                "",
                "--tls-key is missing",
            ),
            (
                RunArgs {
                    node_id: Some("bad id".into()),
                    ..args()
                },
                "",
                "node_id",
            ),
            (args(), "nodeid = \"x\"", "unknown field `nodeid`"),
            (args(), "http_addr = 7", "line 1"),
            (args(), "seeds = [\"nope\"]", "\"nope\" is not HOST:PORT"),
            (
                RunArgs {
                    kafka_brokers: Some("k:9092".into()),
                    ..args()
                },
                "",
                "--kafka-brokers given",
            ),
            (args(), "api_token = \"\"", "api_token"),
        ];
        for (flags, text, expected) in cases {
            let err = parse_file(Path::new("c.toml"), text)
                .and_then(|file| Settings::merge(&flags, file, None))
                .expect_err(expected)
                .to_string();
            assert!(err.contains(expected), "{err:?} lacks {expected:?}");
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }

    #[test]
    fn the_token_is_not_printed() {
        let file = parse_file(Path::new("c"), "api_token = \"s3cret\"").expect("parse");
        let s = Settings::merge(&args(), file, None).expect("ok");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
