//! Shared helpers of the tests that run `mesh-node` as a real process: start a node and read
//! its ready line, talk HTTP to it, signal and kill it, with every wait bounded.

#![allow(dead_code)]

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Upper bound for anything that should happen on loopback.
pub const WAIT: Duration = Duration::from_secs(30);

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mesh-node")
}

/// Runs `mesh-node ARGS` to completion (bounded); returns status, stdout and stderr.
pub fn run_to_end(args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mesh-node");
    let deadline = Instant::now() + WAIT;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mesh-node {args:?} did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config file in `dir` with short gossip timers for a loopback cluster, plus `extra` lines.
pub fn loopback_config(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "gossip_timers = \"loopback\"\ncluster_size = 3\nshutdown_timeout_ms = 5000\n{extra}\n"
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// A running `mesh-node run` process.
pub struct Node {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// The HTTP API's address, from the ready line.
    pub http: SocketAddr,
    /// The gossip address, from the ready line.
    pub gossip: SocketAddr,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
}

/// Text between `start` and the next `end` in `line`.
fn between<'a>(line: &'a str, start: &str, end: char) -> Option<&'a str> {
    let from = line.find(start)? + start.len();
    let rest = &line[from..];
    Some(rest.split(end).next().unwrap_or(rest))
}

impl Node {
    /// Starts `mesh-node run ARGS` and waits for its ready line; its log goes to `log`.
    pub fn start(args: &[String], log: &Path) -> Node {
        Self::try_start(args, log).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`start`](Self::start), but returns the exit status and log if it does not
    /// become ready.
    pub fn try_start(args: &[String], log: &Path) -> Result<Node, String> {
        let stderr = std::fs::File::create(log).expect("log file");
        let mut child = Command::new(bin())
            .arg("run")
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn mesh-node run");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + WAIT;
        loop {
            match lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.contains(" ready: ") => {
                    let http = between(&line, "http://", ',').and_then(|s| s.parse().ok());
                    let gossip = between(&line, "gossip on ", ',').and_then(|s| s.parse().ok());
                    let (Some(http), Some(gossip)) = (http, gossip) else {
                        let _ = child.kill();
                        let _ = child.wait();
                        return Err(format!("unparsable ready line: {line}"));
                    };
                    return Ok(Node {
                        child,
                        lines,
                        http,
                        gossip,
                        log: log.to_owned(),
                    });
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().expect("wait");
                    let log = std::fs::read_to_string(log).unwrap_or_default();
                    return Err(format!(
                        "mesh-node exited with {status} before ready:\n{log}"
                    ));
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!(
                    "mesh-node exited with {status} before ready:\n{log}"
                ));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("mesh-node not ready within {WAIT:?}"));
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Kills the process with SIGKILL (`kill -9`) and reaps it.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit; returns its status and the rest of stdout.
    pub fn wait_exit(mut self) -> (ExitStatus, Vec<String>) {
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "mesh-node did not exit within {WAIT:?}; log in {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let rest = self.lines.try_iter().collect();
        (status, rest)
    }

    /// An HTTP client for this node.
    pub fn client(&self) -> Client {
        Client {
            addr: self.http,
            token: None,
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An answer of the HTTP API.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers.
    pub headers: hyper::HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` field of a JSON error body (panics if absent).
    pub fn error(&self) -> String {
        let json = self.json();
        json.get("error")
            .and_then(|e| e.as_str())
            .unwrap_or_else(|| panic!("no error field in {json}"))
            .to_owned()
    }
}

/// A small HTTP/1.1 client: one connection per request, bounded by [`WAIT`].
#[derive(Debug, Clone)]
pub struct Client {
    /// The node's HTTP address.
    pub addr: SocketAddr,
    /// Bearer token to send, if any.
    pub token: Option<String>,
}

impl Client {
    /// This client with a bearer token.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    /// Sends a request; `Err` on a connection failure or timeout.
    pub async fn try_send(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Response, String> {
        let fut = async {
            let stream = tokio::net::TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect: {e}"))?;
            let io = hyper_util::rt::TokioIo::new(stream);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, self.addr.to_string());
            if body.is_some() {
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            if let Some(token) = &self.token {
                req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let req = req
                .body(Full::new(Bytes::from(body.unwrap_or_default())))
                .map_err(|e| format!("request: {e}"))?;
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("send: {e}"))?;
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes()
                .to_vec();
            Ok(Response {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(WAIT, fut)
            .await
            .map_err(|_| format!("{method} {path}: timed out"))?
    }

    /// Sends a request; panics on a connection failure.
    pub async fn send(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Response {
        self.try_send(method, path, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.send("GET", path, None).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> Response {
        self.send("DELETE", path, None).await
    }

    /// `method path` with a JSON body.
    pub async fn json(&self, method: &str, path: &str, body: serde_json::Value) -> Response {
        self.send(method, path, Some(body.to_string().into_bytes()))
            .await
    }

    /// `method path` with a raw body.
    pub async fn raw(&self, method: &str, path: &str, body: &str) -> Response {
        self.send(method, path, Some(body.as_bytes().to_vec()))
            .await
    }
}

/// Polls `check` every 50 ms until it returns true, failing the test after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Flags for a node on loopback with OS-chosen ports.
pub fn loopback_flags(node_id: &str, data_dir: &Path) -> Vec<String> {
    vec![
        "--node-id".into(),
        node_id.into(),
        "--http-addr".into(),
        "127.0.0.1:0".into(),
        "--gossip-addr".into(),
        "127.0.0.1:0".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ]
}

/// `--tls-cert/--tls-key/--tls-ca` for node `id` with certificates in `certs`.
pub fn tls_flags(certs: &Path, id: &str) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        certs.join(format!("{id}.pem")).display().to_string(),
        "--tls-key".into(),
        certs.join(format!("{id}.key")).display().to_string(),
        "--tls-ca".into(),
        certs.join("ca.pem").display().to_string(),
    ]
}
