//! Servers as child processes on loopback ports: `regstore serve` (and
//! whatever else a benchmark compares it with), started, waited for,
//! measured (peak RSS) and killed when dropped.
//!
//! Used by `server-bench` and by the load tool ([`crate::load`]).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be run, or its log file not created.
    #[error("cannot start {name}: {source}")]
    Start {
        /// The server's name.
        name: String,
        /// Why.
        source: std::io::Error,
    },
    /// It ran but did not answer its readiness URL in time.
    #[error("{name} did not answer {url} within 30 s")]
    NotReady {
        /// The server's name.
        name: String,
        /// The URL asked.
        url: String,
    },
    /// No HTTP client could be built to ask it.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A server process, killed (and reaped) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    /// The name it was started as (log file name, messages).
    pub name: &'static str,
}

impl Proc {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its peak resident set (`VmHWM`) in KiB, `None` once it has exited
    /// or where `/proc` does not tell.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        status_kib(self.pid(), "VmHWM")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value in KiB of the line `key:` (`VmHWM`, `VmRSS`) of
/// `/proc/<pid>/status`; `None` when the process or the line is absent.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| {
            l.strip_prefix(key)
                .is_some_and(|rest| rest.starts_with(':'))
        })
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// A loopback TCP port free at the time of asking (15999 if none could be
/// bound, which then fails where it is used).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(15999)
}

/// Waits up to 30 s for `url` to answer a success or 401 (up, and asking
/// for credentials).
///
/// # Errors
/// [`ProcessError::NotReady`] after 30 s; [`ProcessError::Client`].
pub async fn wait_ready(url: &str, name: &str) -> Result<(), ProcessError> {
    let client = regstore_testenv::backend::http_client().build()?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(r) = client.get(url).send().await
            && (r.status().is_success() || r.status() == reqwest::StatusCode::UNAUTHORIZED)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ProcessError::NotReady {
        name: name.to_owned(),
        url: url.to_owned(),
    })
}

/// Starts `cmd` as the server `name`; its stderr goes to
/// `$SERVER_BENCH_LOGS/<name>.log` when that variable names a directory,
/// else nowhere.
///
/// # Errors
/// [`ProcessError::Start`].
pub fn spawn(name: &'static str, cmd: &mut Command) -> Result<Proc, ProcessError> {
    let failed = |source| ProcessError::Start {
        name: name.to_owned(),
        source,
    };
    let stderr = match std::env::var_os("SERVER_BENCH_LOGS") {
        Some(dir) => std::fs::File::create(Path::new(&dir).join(format!("{name}.log")))
            .map(Stdio::from)
            .map_err(failed)?,
        None => Stdio::null(),
    };
    let child = cmd
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(failed)?;
    Ok(Proc { child, name })
}

/// Starts the `regstore` binary at `regstore` as `regstore serve` (named
/// `name`) on a free loopback port, with the config file `config` if given
/// and, if `root` is given, the filesystem driver at `root` (an environment
/// override, so it wins over the config's storage); waits until `/v2/`
/// answers. Returns the process and its base URL `http://127.0.0.1:<port>`.
///
/// # Errors
/// [`ProcessError`]: it could not be run or did not answer within 30 s.
pub async fn serve_regstore(
    regstore: &Path,
    name: &'static str,
    root: Option<&Path>,
    config: Option<&Path>,
) -> Result<(Proc, String), ProcessError> {
    let port = free_port();
    let mut cmd = Command::new(regstore);
    cmd.arg("serve");
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    if let Some(root) = root {
        cmd.env("REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", root);
    }
    let p = spawn(
        name,
        cmd.env("REGISTRY_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "REGSTORE_LOG",
                if std::env::var_os("SERVER_BENCH_LOGS").is_some() {
                    "info"
                } else {
                    "warn"
                },
            ),
    )?;
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base}/v2/"), p.name).await?;
    Ok((p, base))
}

/// The start of a `regstore serve` config for measuring: the filesystem
/// driver at `root`, no access log (one line per request would cost more
/// than what is measured).
pub fn quiet_config(root: &Path) -> String {
    format!(
        "version: 0.1\nlog:\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
        root.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_kib_reads_this_process() {
        let pid = std::process::id();
        let rss = status_kib(pid, "VmRSS").expect("VmRSS of this process");
        let hwm = status_kib(pid, "VmHWM").expect("VmHWM of this process");
        assert!(rss > 0 && hwm >= rss, "VmRSS {rss} KiB, VmHWM {hwm} KiB");
        // `VmHWM` must not match a longer key that starts with it.
        assert_eq!(status_kib(pid, "Vm"), None);
    }
}
