//! Test helpers: the services `scripts/test.sh` started (read from the environment; a test
//! run without them fails, it never skips), the real `mongokeep` binary run in a temporary
//! folder, and private `mongod` / Garage instances for tests that stop a server.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use mongokeep::storage::s3::S3Store;
use mongokeep::storage::{S3Settings, Storage};

/// The shared services.
pub struct Services {
    pub rs_uri: String,
    pub standalone_uri: String,
    pub s3_endpoint: String,
    pub s3_region: String,
    pub s3_bucket: String,
    pub s3_access_key: String,
    pub s3_secret_key: String,
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: the integration tests need the real services; run them with `scripts/test.sh`")
    })
}

pub fn services() -> Services {
    Services {
        rs_uri: var("MONGOKEEP_TEST_RS_URI"),
        standalone_uri: var("MONGOKEEP_TEST_STANDALONE_URI"),
        s3_endpoint: var("MONGOKEEP_TEST_S3_ENDPOINT"),
        s3_region: var("MONGOKEEP_TEST_S3_REGION"),
        s3_bucket: var("MONGOKEEP_TEST_S3_BUCKET"),
        s3_access_key: var("MONGOKEEP_TEST_S3_ACCESS_KEY"),
        s3_secret_key: var("MONGOKEEP_TEST_S3_SECRET_KEY"),
    }
}

/// A name unique to this test process and call: databases and S3 prefixes.
pub fn unique(label: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{label}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The mongokeep binary cargo built for these tests.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mongokeep"))
}

/// An S3 endpoint and credentials (the shared Garage or a private one).
#[derive(Clone, Debug)]
pub struct S3Target {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl Services {
    pub fn s3(&self) -> S3Target {
        S3Target {
            endpoint: self.s3_endpoint.clone(),
            region: self.s3_region.clone(),
            bucket: self.s3_bucket.clone(),
            access_key: self.s3_access_key.clone(),
            secret_key: self.s3_secret_key.clone(),
        }
    }
}

impl S3Target {
    /// A store on `prefix`, built with the same code the binary uses.
    pub async fn store(&self, prefix: &str) -> Arc<S3Store> {
        let settings = S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: Some(self.region.clone()),
            path_style: true,
            max_attempts: 2,
            static_credentials: Some((self.access_key.clone(), self.secret_key.clone())),
            ..Default::default()
        };
        Arc::new(S3Store::new(&self.bucket, prefix, &settings).await)
    }

    pub fn repo_url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }
}

/// One run of the binary.
pub struct Run {
    pub cmd: Command,
}

/// What a run printed and how it ended.
#[derive(Debug)]
pub struct Done {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Done {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "expected exit {code}, got {}:\n{}",
            self.code,
            self.all()
        );
        self
    }
}

impl From<Output> for Done {
    fn from(o: Output) -> Self {
        Done {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

/// The binary in `cwd`, with a clean environment: no AWS or MongoDB settings leak in from
/// the developer's shell, and the AWS chain never probes the EC2 metadata address.
pub fn mongokeep(cwd: &Path) -> Run {
    let mut cmd = Command::new(bin());
    cmd.current_dir(cwd);
    for (k, _) in std::env::vars() {
        if k.starts_with("AWS_") || k.starts_with("MONGOKEEP_") || k == "MONGODB_URI" {
            cmd.env_remove(k);
        }
    }
    cmd.env("AWS_EC2_METADATA_DISABLED", "true");
    cmd.env("HOME", cwd);
    Run { cmd }
}

impl Run {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.cmd.env(k, v);
        self
    }
    /// S3 flags and credentials for `target`.
    pub fn s3(self, t: &S3Target) -> Self {
        self.env("AWS_ACCESS_KEY_ID", &t.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &t.secret_key)
            .env("MONGOKEEP_S3_ENDPOINT", &t.endpoint)
            .env("MONGOKEEP_S3_REGION", &t.region)
            .env("MONGOKEEP_S3_PATH_STYLE", "true")
    }
    pub fn run(mut self) -> Done {
        self.cmd.output().expect("the mongokeep binary runs").into()
    }
    pub fn spawn(mut self) -> std::process::Child {
        self.cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("the mongokeep binary starts")
    }
}

pub async fn client(uri: &str) -> mongodb::Client {
    mongodb::Client::with_uri_str(uri)
        .await
        .expect("test client")
}

/// A free port on 127.0.0.1 (bind to 0, read it, release it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/services.sh")
}

fn kill_pidfile(pidfile: &Path) {
    if let Ok(pid) = std::fs::read_to_string(pidfile) {
        let pid = pid.trim();
        let _ = Command::new("kill")
            .args(["-9", pid])
            .stderr(std::process::Stdio::null())
            .status();
        // Wait until it is gone so the port is free for a restart.
        for _ in 0..100 {
            let alive = Command::new("kill")
                .args(["-0", pid])
                .stderr(std::process::Stdio::null())
                .status();
            if !alive.map(|s| s.success()).unwrap_or(false) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(pidfile);
    }
}

/// A mongod of this test's own, killed on drop.
pub struct PrivateMongod {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub uri: String,
}

impl PrivateMongod {
    pub fn start(replset: bool) -> Self {
        Self::start_with(if replset { &["--replset"] } else { &[] })
    }

    /// Start with `scripts/services.sh mongod-start` flags (`--replset`, `--auth`,
    /// `--fast-ttl`, `--test-commands`).
    pub fn start_with(flags: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        Self::launch(dir, port, flags)
    }

    fn launch(dir: tempfile::TempDir, port: u16, flags: &[&str]) -> Self {
        let out = Command::new("bash")
            .arg(script())
            .arg("mongod-start")
            .arg(dir.path())
            .arg(port.to_string())
            .args(flags)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "private mongod did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let uri = if flags.contains(&"--replset") {
            format!("mongodb://127.0.0.1:{port}/?replicaSet=rs0&serverSelectionTimeoutMS=3000")
        } else {
            format!("mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=3000")
        };
        Self { dir, port, uri }
    }

    /// Start a standalone mongod again on the same data and port after [`PrivateMongod::kill`].
    pub fn restart(&self) {
        let out = Command::new("bash")
            .arg(script())
            .arg("mongod-start")
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "private mongod did not restart: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn kill(&self) {
        kill_pidfile(&self.dir.path().join("pid"));
    }
}

impl Drop for PrivateMongod {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Garage of this test's own, killed on drop.
pub struct PrivateGarage {
    pub dir: tempfile::TempDir,
    pub target: S3Target,
}

impl PrivateGarage {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (s3, rpc, admin) = (free_port(), free_port(), free_port());
        let out = Command::new("bash")
            .arg(script())
            .args([
                "garage-start",
                dir.path().to_str().unwrap(),
                &s3.to_string(),
                &rpc.to_string(),
                &admin.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "private garage did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let keys = std::fs::read_to_string(dir.path().join("keys")).unwrap();
        let get = |k: &str| {
            keys.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing in keys"))
                .to_string()
        };
        let target = S3Target {
            endpoint: format!("http://127.0.0.1:{s3}"),
            region: "garage".into(),
            bucket: "mongokeep-test".into(),
            access_key: get("MONGOKEEP_TEST_S3_ACCESS_KEY"),
            secret_key: get("MONGOKEEP_TEST_S3_SECRET_KEY"),
        };
        Self { dir, target }
    }

    pub fn kill(&self) {
        kill_pidfile(&self.dir.path().join("pid"));
    }

    /// Start again on the same data, config and keys.
    // The new server is stopped through its pid file (`kill`, and on drop), like the
    // first one that `services.sh` started; the test process reaps it when it exits.
    #[allow(clippy::zombie_processes)]
    pub fn restart(&self) {
        let garage = var("MONGOKEEP_TEST_GARAGE");
        let log = std::fs::File::create(self.dir.path().join("log2")).unwrap();
        let child = Command::new(garage)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        std::fs::write(self.dir.path().join("pid"), child.id().to_string()).unwrap();
        let port: u16 = self
            .target
            .endpoint
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("garage did not come back");
    }
}

impl Drop for PrivateGarage {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every object key under `prefix` in `store`.
pub async fn keys(store: &dyn Storage, prefix: &str) -> Vec<String> {
    store
        .list(prefix)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect()
}

/// Send SIGTERM to a spawned mongokeep (as Ctrl-C or a service manager's stop would).
pub fn sigterm(child: &std::process::Child) {
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "could not signal process {}", child.id());
}

/// Poll `ready` every 5 ms until it holds, while `child` runs: the moment a test stops a
/// run at. Panics if `child` ends first or two minutes pass.
pub async fn wait_while_running<F, Fut>(child: &mut std::process::Child, what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = std::time::Instant::now();
    while !ready().await {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before {what}");
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no {what} within two minutes"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
