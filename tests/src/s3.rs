//! A real S3-compatible server for the tests of the S3 path: moto's server
//! (`moto_server`, installed by `scripts/setup`), started on a free loopback
//! port with a fresh bucket, and killed when dropped.

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
        let addr = keel_tools::launcher::free_addrs(ip, 1, &[])?[0];
        let log = std::fs::File::create(dir.path().join("moto.log"))?;
        let child = tokio::process::Command::new("moto_server")
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

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}
