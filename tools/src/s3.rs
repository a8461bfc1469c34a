//! A real S3-compatible server for the tests of the S3 path and the chaos
//! runs: moto's server (`moto_server`, installed by `scripts/setup` with
//! `KEEL_SETUP=test`), started on a free loopback port with a fresh bucket,
//! and killed when dropped; and a proxy in front of it that injects the
//! object store's faults (errors, throttling, an outage, slow answers).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug)]
pub struct S3Server {
    addr: SocketAddr,
    bucket: String,
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts the server and creates a bucket.
    pub async fn start() -> anyhow::Result<S3Server> {
        let dir = tempfile::Builder::new().prefix("keel-s3").tempdir()?;
        let ip: std::net::IpAddr = "127.0.0.1".parse().expect("valid literal");
        let addr = crate::launcher::free_addrs(ip, 1, &[])?[0];
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let child = tokio::process::Command::new(crate::launcher::python_tool("moto_server"))
            .args(["-H", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start moto_server (scripts/setup installs it with pip: moto[server])")?;
        let server = S3Server { addr, bucket: format!("keel-{}", rand_suffix()), child, _dir: dir };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((status, _)) = server.request("PUT", &format!("/{}", server.bucket)).await {
                anyhow::ensure!(status == 200, "creating the bucket answered {status}");
                return Ok(server);
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "moto_server did not answer on {addr} in 30 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// How many objects the bucket holds.
    pub async fn object_count(&self) -> anyhow::Result<usize> {
        let (status, body) = self.request("GET", &format!("/{}?list-type=2", self.bucket)).await?;
        anyhow::ensure!(status == 200, "listing the bucket answered {status}: {body}");
        Ok(body.matches("<Key>").count())
    }

    /// One plain HTTP/1.1 request (moto does not check signatures).
    async fn request(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await?;
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.addr
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        let status = answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).context("no status line")?;
        let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
        Ok((status, body))
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Broker flags for the S3 backend at `endpoint` (moto's server, or the fault
/// proxy in front of it), then `extra`.
pub fn broker_args(endpoint: &str, bucket: &str, extra: &[&str]) -> Vec<String> {
    let s3 = [
        "--s3-bucket",
        bucket,
        "--s3-endpoint",
        endpoint,
        "--s3-path-style",
        "true",
        "--s3-region",
        "us-east-1",
        "--s3-access-key-id",
        "keel",
        "--s3-secret-access-key",
        "keel-secret",
    ];
    s3.iter().chain(extra).map(|arg| arg.to_string()).collect()
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}

/// What the fault proxy does to the requests it gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    /// Forward everything.
    None = 0,
    /// Answer every request 500 Internal Error.
    ServerError = 1,
    /// Answer every request 503 Slow Down (S3's throttling).
    Throttle = 2,
    /// Close every connection at once: the store is unreachable.
    Outage = 3,
    /// Forward everything, with the first byte of every answer held back
    /// `SLOW_ANSWER` (a store at its slowest, as S3 is in a bad minute).
    Slow = 4,
}

/// How long `Fault::Slow` holds back each answer.
pub const SLOW_ANSWER: Duration = Duration::from_millis(1500);

/// A small HTTP proxy in front of the S3 server that injects faults, since
/// the server cannot. Changing the fault closes every open connection, so
/// pooled keep-alive connections see the new behaviour too.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    fault: std::sync::Arc<std::sync::atomic::AtomicU8>,
    generation: tokio::sync::watch::Sender<u64>,
    /// The accepting task, which owns its connections' tasks: dropping the
    /// proxy aborts them all.
    _task: tokio::task::JoinSet<()>,
}

impl FaultProxy {
    /// A proxy on a free loopback port.
    pub async fn start(upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        FaultProxy::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), upstream).await
    }

    /// A proxy listening on `listen`.
    pub async fn start_on(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<FaultProxy> {
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("bind {listen}"))?;
        let addr = listener.local_addr()?;
        let fault = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(Fault::None as u8));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let mut task = tokio::task::JoinSet::new();
        task.spawn({
            let fault = fault.clone();
            let generation = generation.clone();
            async move {
                let mut connections = tokio::task::JoinSet::new();
                while let Ok((client, _)) = listener.accept().await {
                    let mode = fault.load(std::sync::atomic::Ordering::SeqCst);
                    let changed = generation.subscribe();
                    connections.spawn(serve(client, upstream, mode, changed));
                    // Forget the finished ones.
                    while connections.try_join_next().is_some() {}
                }
            }
        });
        Ok(FaultProxy { addr, fault, generation, _task: task })
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn set(&self, fault: Fault) {
        self.fault.store(fault as u8, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|generation| *generation += 1);
    }
}

async fn serve(
    mut client: tokio::net::TcpStream,
    upstream: SocketAddr,
    mode: u8,
    mut changed: tokio::sync::watch::Receiver<u64>,
) {
    let work = async {
        match mode {
            m if m == Fault::None as u8 => {
                let mut server = tokio::net::TcpStream::connect(upstream).await?;
                tokio::io::copy_bidirectional(&mut client, &mut server).await?;
            }
            m if m == Fault::Outage as u8 => {}
            m if m == Fault::Slow as u8 => {
                let mut server = tokio::net::TcpStream::connect(upstream).await?;
                forward_slowly(&mut client, &mut server).await?;
            }
            _ => {
                let (status, code) = if mode == Fault::Throttle as u8 {
                    ("503 Slow Down", "SlowDown")
                } else {
                    ("500 Internal Server Error", "InternalError")
                };
                while skip_request(&mut client).await? {
                    let body = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test</Message></Error>");
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    client.write_all(answer.as_bytes()).await?;
                }
            }
        }
        anyhow::Ok(())
    };
    tokio::select! {
        _ = work => {}
        _ = changed.changed() => {}
    }
}

/// Forwards both ways, holding back each answer's first byte `SLOW_ANSWER`:
/// the first bytes from the server after the client has sent anything.
async fn forward_slowly(client: &mut tokio::net::TcpStream, server: &mut tokio::net::TcpStream) -> anyhow::Result<()> {
    let asked = std::sync::atomic::AtomicBool::new(false);
    let (mut client_reads, mut client_writes) = client.split();
    let (mut server_reads, mut server_writes) = server.split();
    let up = async {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = client_reads.read(&mut buffer).await?;
            if n == 0 {
                return server_writes.shutdown().await;
            }
            asked.store(true, std::sync::atomic::Ordering::Relaxed);
            server_writes.write_all(&buffer[..n]).await?;
        }
    };
    let down = async {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let n = server_reads.read(&mut buffer).await?;
            if n == 0 {
                return client_writes.shutdown().await;
            }
            if asked.swap(false, std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(SLOW_ANSWER).await;
            }
            client_writes.write_all(&buffer[..n]).await?;
        }
    };
    tokio::try_join!(up, down)?;
    Ok(())
}

/// Reads one HTTP request (head, then a Content-Length body); false at EOF.
async fn skip_request(client: &mut tokio::net::TcpStream) -> anyhow::Result<bool> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(false);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let length: u64 = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0);
    tokio::io::copy(&mut (&mut *client).take(length), &mut tokio::io::sink()).await?;
    Ok(true)
}
