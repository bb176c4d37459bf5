//! `auth.htpasswd`: users and bcrypt hashes from an Apache htpasswd file,
//! as distribution reads it.
//!
//! - Only bcrypt entries (`$2y$`, `$2b$`, `$2a$`; `htpasswd -B`) are
//!   accepted; any other line stops startup naming its number.
//! - The file is read again when its modification time or size changes
//!   (looked at most once a second); a file that became unreadable or
//!   broken keeps the users last read, with an error in the log.
//! - A missing file is created with one user `docker` and a random
//!   password, which [`Htpasswd::open`] returns so that startup can print
//!   it once (distribution's behaviour).
//! - A check costs one bcrypt verification (tens of milliseconds at cost
//!   10): it runs on the blocking pool, at most [`PARALLEL_CHECKS`] at a
//!   time, so a flood of wrong passwords queues behind that limit instead of
//!   taking the async workers other clients need. An unknown user is
//!   checked against a dummy hash, so timing does not tell which users
//!   exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::Semaphore;

/// bcrypt checks that may run at once.
pub const PARALLEL_CHECKS: usize = 4;

/// How often the file's modification time is looked at.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// What the user list was read from: modification time and size.
type Stamp = Option<(SystemTime, u64)>;

/// The user list of one htpasswd file.
#[derive(Debug)]
pub struct Htpasswd {
    path: PathBuf,
    state: Mutex<Loaded>,
    checks: Semaphore,
    /// Compared against for unknown users.
    dummy: String,
}

#[derive(Debug)]
struct Loaded {
    users: Arc<HashMap<String, String>>,
    stamp: Stamp,
    looked: Instant,
    /// Bumped on every reload; cached credentials of older generations are
    /// not trusted.
    generation: u64,
}

impl Htpasswd {
    /// Reads `path`, creating it with a user `docker` if it does not exist.
    /// Returns the list and, when the file was created, the password to
    /// show once.
    ///
    /// # Errors
    /// The file cannot be read or created, or a line is not `user:bcrypt`
    /// (the message names the file and line, and what to change).
    pub fn open(path: &Path) -> Result<(Htpasswd, Option<String>), String> {
        let created = if path.exists() {
            None
        } else {
            Some(provision(path)?)
        };
        let (users, stamp) = read(path)?;
        let dummy = bcrypt::hash("regstore dummy password", bcrypt::DEFAULT_COST)
            .map_err(|e| format!("bcrypt: {e}"))?;
        Ok((
            Htpasswd {
                path: path.to_owned(),
                state: Mutex::new(Loaded {
                    users: Arc::new(users),
                    stamp,
                    looked: Instant::now(),
                    generation: 0,
                }),
                checks: Semaphore::new(PARALLEL_CHECKS),
                dummy,
            },
            created,
        ))
    }

    /// The current generation of the list, reading the file again first if
    /// it changed.
    pub fn generation(&self) -> u64 {
        self.current().1
    }

    /// Whether `password` is `user`'s.
    pub async fn verify(&self, user: &str, password: &str) -> bool {
        let (users, _) = self.current();
        let (hash, known) = match users.get(user) {
            Some(h) => (h.clone(), true),
            None => (self.dummy.clone(), false),
        };
        let Ok(_permit) = self.checks.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or(false);
        ok && known
    }

    /// The users and generation, after reading the file again if it changed
    /// since the last look (at most once per [`RELOAD_CHECK`]).
    fn current(&self) -> (Arc<HashMap<String, String>>, u64) {
        let mut s = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        if s.looked.elapsed() >= RELOAD_CHECK {
            s.looked = Instant::now();
            let stamp = stamp_of(&self.path);
            if stamp != s.stamp {
                match read(&self.path) {
                    Ok((users, stamp)) => {
                        tracing::info!(path = %self.path.display(), users = users.len(), "htpasswd read again");
                        s.users = Arc::new(users);
                        s.stamp = stamp;
                        s.generation += 1;
                    }
                    Err(e) => {
                        tracing::error!("{e}; keeping the users read before");
                        s.stamp = stamp;
                    }
                }
            }
        }
        (s.users.clone(), s.generation)
    }
}

fn stamp_of(path: &Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<(HashMap<String, String>, Stamp), String> {
    let stamp = stamp_of(path);
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read htpasswd file {}: {e}", path.display()))?;
    Ok((parse(&text, path)?, stamp))
}

/// `user:hash` lines; blank lines and `#` comments are skipped.
fn parse(text: &str, path: &Path) -> Result<HashMap<String, String>, String> {
    let mut users = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let n = i + 1;
        let Some((user, hash)) = line.split_once(':') else {
            return Err(format!(
                "htpasswd file {} line {n}: not `user:hash`",
                path.display()
            ));
        };
        if !["$2y$", "$2b$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
            return Err(format!(
                "htpasswd file {} line {n} (user {user:?}): only bcrypt hashes are accepted, as in distribution; make the entry with `htpasswd -B`",
                path.display()
            ));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// Creates `path` with the user `docker` and a random password; returns
/// the password.
fn provision(path: &Path) -> Result<String, String> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let hash = bcrypt::hash(&password, bcrypt::DEFAULT_COST).map_err(|e| format!("bcrypt: {e}"))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            format!(
                "cannot create the directory of htpasswd file {}: {e}",
                path.display()
            )
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .map_err(|e| format!("cannot create htpasswd file {}: {e}", path.display()))?;
    std::io::Write::write_all(&mut file, format!("docker:{hash}\n").as_bytes())
        .map_err(|e| format!("cannot write htpasswd file {}: {e}", path.display()))?;
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_bcrypt_lines_are_read() {
        let p = Path::new("/x/htpasswd");
        let users = parse("# users\n\nalice:$2y$05$abc\nbob:$2b$05$def\n", p).unwrap();
        assert_eq!(users.len(), 2);
        let e = parse(
            "alice:$2y$05$abc\ncarol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n",
            p,
        )
        .unwrap_err();
        assert!(
            e.contains("line 2") && e.contains("\"carol\"") && e.contains("htpasswd -B"),
            "{e}"
        );
        let e = parse("nocolon\n", p).unwrap_err();
        assert!(e.contains("line 1: not `user:hash`"), "{e}");
    }

    #[tokio::test]
    async fn a_missing_file_is_provisioned_and_a_changed_one_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth/htpasswd");
        let (h, password) = Htpasswd::open(&path).unwrap();
        let password = password.expect("a password for the new user");
        assert!(h.verify("docker", &password).await);
        assert!(!h.verify("docker", "wrong").await);
        assert!(!h.verify("nobody", &password).await);
        let (_, again) = Htpasswd::open(&path).unwrap();
        assert!(again.is_none(), "an existing file is not provisioned again");

        let hash = bcrypt::hash("s3cret", 4).unwrap();
        std::fs::write(&path, format!("alice:{hash}\n")).unwrap();
        // Looked at most once a second.
        std::thread::sleep(RELOAD_CHECK);
        assert!(h.verify("alice", "s3cret").await);
        assert!(!h.verify("docker", &password).await, "the old user is gone");
        assert_eq!(h.generation(), 1);
    }
}
