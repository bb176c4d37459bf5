//! A private instance of one emulator (moto, Azurite, fake-gcs-server, or a
//! second Swift proxy over the shared Swift) that a test may kill, pause and
//! restart without touching the shared servers other tests use.
//!
//! The command lines are `scripts/backends.sh`'s (`private` runs the server
//! in the foreground, `ready` waits for it and creates the bucket), so the
//! installs and flags live in one place. The instance listens on a free
//! loopback port and keeps its data in a temporary directory; both, and the
//! process, go away when the [`Instance`] is dropped (also on a panic).

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `scripts/backends.sh` of this checkout.
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/backends.sh");

/// How long a (re)started server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running (or stopped, between [`Instance::kill`] and
/// [`Instance::restart`]) private emulator.
pub struct Instance {
    driver: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Instance {
    /// Starts a private instance of the emulator for `driver` (`s3`,
    /// `azure`, `gcs`, `swift`) on a free loopback port and waits until its
    /// bucket or container exists.
    ///
    /// # Errors
    /// The emulator is not installed (`scripts/backends.sh install`), the
    /// shared Swift is not running (swift), or the server does not come up:
    /// the message says which, with the end of its log.
    pub fn start(driver: &str) -> Result<Instance, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("regstore-{driver}-instance-"))
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        std::fs::create_dir(dir.path().join("data"))
            .map_err(|e| format!("{}: {e}", dir.path().display()))?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free loopback port: {e}"))?
            .port();
        let mut instance = Instance {
            driver: driver.to_owned(),
            port,
            dir,
            child: None,
        };
        instance.restart()?;
        Ok(instance)
    }

    /// The emulator's endpoint as [`crate::backend::emulator_params_at`]
    /// takes it: the base URL, or Swift's TempAuth URL.
    pub fn endpoint(&self) -> String {
        let base = format!("http://127.0.0.1:{}", self.port);
        if self.driver == "swift" {
            format!("{base}/auth/v1.0")
        } else {
            base
        }
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM (its orderly shutdown), waiting up to
    /// 10 s before killing it.
    pub fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.signal_pid(child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Sends `signal` (a name for `kill -s`: `STOP`, `CONT`) to the server.
    ///
    /// # Errors
    /// The server is not running, or `kill` failed.
    pub fn signal(&self, signal: &str) -> Result<(), String> {
        let pid = self
            .pid()
            .ok_or_else(|| format!("{}: not running", self.driver))?;
        self.signal_pid(pid, signal)
    }

    fn signal_pid(&self, pid: u32, signal: &str) -> Result<(), String> {
        let status = Command::new("kill")
            .args(["-s", signal, &pid.to_string()])
            .status()
            .map_err(|e| format!("kill -s {signal} {pid}: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("kill -s {signal} {pid}: {status}"))
        }
    }

    /// Starts the server again (after [`Instance::kill`] or
    /// [`Instance::terminate`]) on the same port and data directory, and
    /// waits until it answers with its bucket there.
    ///
    /// # Errors
    /// As [`Instance::start`].
    pub fn restart(&mut self) -> Result<(), String> {
        self.respawn()?;
        self.ready()
    }

    /// The first half of [`Instance::restart`]: starts the server and
    /// waits until it accepts connections (before its bucket may exist: a
    /// restarted moto has none until [`Instance::ready`]).
    ///
    /// # Errors
    /// As [`Instance::start`].
    pub fn respawn(&mut self) -> Result<(), String> {
        self.kill();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("{}: {e}", self.log_path().display()))?;
        let err = log.try_clone().map_err(|e| format!("log: {e}"))?;
        let child = Command::new("bash")
            .arg(SCRIPT)
            .arg("private")
            .arg(&self.driver)
            .arg(self.port.to_string())
            .arg(self.dir.path().join("data"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("bash {SCRIPT}: {e}"))?;
        self.child = Some(child);
        self.wait_listening()
    }

    /// The second half of [`Instance::restart`]: waits until the server
    /// answers and creates its bucket or container if it is missing.
    ///
    /// # Errors
    /// As [`Instance::start`].
    pub fn ready(&self) -> Result<(), String> {
        let out = Command::new("bash")
            .arg(SCRIPT)
            .arg("ready")
            .arg(&self.driver)
            .arg(self.port.to_string())
            .output()
            .map_err(|e| format!("bash {SCRIPT}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{SCRIPT} ready {} {}: {}{}",
                self.driver,
                self.port,
                String::from_utf8_lossy(&out.stderr),
                self.log_tail()
            ))
        }
    }

    /// Waits until the port accepts connections; fails at once when the
    /// server exited (not installed, a bad flag).
    fn wait_listening(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                let driver = &self.driver;
                return Err(format!(
                    "private {driver} exited ({status}); not installed (scripts/backends.sh install {driver})?{}",
                    self.log_tail()
                ));
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "private {} not listening on {addr} after {START_TIMEOUT:?}{}",
                    self.driver,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// The last lines of the server's log, for an error message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("; its log ends:\n{tail}")
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}
