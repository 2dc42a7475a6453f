//! A throwaway S3 API server for tests and benchmarks: `python3 -m moto.server` on a free
//! loopback port, with one bucket, stopped when dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const STARTUP: Duration = Duration::from_secs(60);

/// A running moto server.
#[derive(Debug)]
pub struct MotoServer {
    child: Child,
    port: u16,
    bucket: String,
}

impl MotoServer {
    /// Starts moto (installing it with pip first when python3 lacks it) and creates `bucket`.
    /// `Err` says why it could not start.
    pub fn start(bucket: &str) -> Result<Self, String> {
        ensure_installed()?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run python3: {e}"))?;
        let mut server = Self {
            child,
            port,
            bucket: bucket.to_string(),
        };
        server.wait_ready()?;
        server.create_bucket()?;
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{}", self.bucket, prefix.trim_matches('/'))
    }

    /// Store options for [`crate::DatasetStore::open_with_options`]: the endpoint and dummy
    /// credentials (requests are signed as with a real S3).
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_access_key_id", "fourm-test".into()),
            ("aws_secret_access_key", "fourm-test-secret".into()),
            ("aws_region", "us-east-1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// The same settings as environment variables, for a child process.
    pub fn env(&self) -> Vec<(String, String)> {
        self.options()
            .into_iter()
            .map(|(k, v)| {
                let k = if k == "aws_endpoint" {
                    "AWS_ENDPOINT_URL".to_string()
                } else {
                    k.to_uppercase()
                };
                (k, v)
            })
            .collect()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "python3 -m moto.server exited with {status} (is moto installed?)"
                ));
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("moto did not listen within {STARTUP:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn create_bucket(&self) -> Result<(), String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .map_err(|e| format!("cannot connect to moto: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        let request = format!(
            "PUT /{} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.bucket, self.port
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("cannot create the bucket: {e}"))?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .map_err(|e| format!("cannot create the bucket: {e}"))?;
        let status = response.lines().next().unwrap_or("");
        if status.contains(" 200") {
            Ok(())
        } else {
            Err(format!("creating the bucket: {status}"))
        }
    }
}

/// Installs moto's server (`pip install 'moto[server]'`) unless python3 already has it.
fn ensure_installed() -> Result<(), String> {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            let has = |_: ()| {
                Command::new("python3")
                    .args(["-c", "import moto.server"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            if has(()) {
                return Ok(());
            }
            eprintln!("moto is not installed: pip install --user 'moto[server]'");
            let status = Command::new("python3")
                .args(["-m", "pip", "install", "--quiet", "--user", "moto[server]"])
                .status()
                .map_err(|e| format!("cannot run pip: {e}"))?;
            if status.success() && has(()) {
                Ok(())
            } else {
                Err(format!("installing moto with pip failed ({status})"))
            }
        })
        .clone()
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
