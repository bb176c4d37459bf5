//! `blobdescriptor: redis`: the cache in a Redis database, shared by every
//! instance configured with the same `redis` section.
//!
//! # Keys
//! - `regstore::blob::<digest>`: a hash of `size` and `mediatype`;
//! - `regstore::repo::<name>::blob::<digest>`: `1` while `<name>` links
//!   `<digest>` (a membership counts only with its blob's hash).
//!
//! Keys never expire: as distribution documents, give Redis a `maxmemory`
//! and the `allkeys-lru` policy, which bounds the cache and drops the least
//! used entries first (a dropped entry is a miss, never a wrong answer).
//! Another application may share the database: every key starts with
//! `regstore::`.
//!
//! # Connection
//! One [`ConnectionManager`] per instance: a single multiplexed connection
//! (commands of all requests pipelined on it) that reconnects by itself.
//! A pool of connections (`deadpool-redis`) would add a dependency and buy
//! nothing for one-round-trip commands this small; so of `redis.pool` only
//! `maxactive` applies (commands in flight at once), and `maxidle` and
//! `idletimeout` have nothing to bound. The connection is made on first use,
//! so a Redis that is down at startup does not stop the registry.
//!
//! # Timeouts
//! `dialtimeout` bounds each connection attempt; `readtimeout` bounds each
//! answer; and each cache call as a whole is bounded by `writetimeout +
//! readtimeout`, so a Redis that accepts connections and never answers
//! holds a request at most that long. After a failure Redis is left alone
//! for [`BACKOFF`]: requests in that window go straight to the storage
//! (counted as cache errors) instead of each waiting for the timeout.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{CacheError, Descriptor};
use crate::config::RedisConfig;
use crate::registry::{Digest, RepoName};

/// How long Redis is not asked after a failure.
pub const BACKOFF: Duration = Duration::from_secs(1);

/// Keys deleted per `DEL` when forgetting many.
const DEL_BATCH: usize = 512;

/// The key of `d`'s descriptor.
pub fn blob_key(d: &Digest) -> String {
    format!("regstore::blob::{d}")
}

/// The key of `repo`'s membership of `d`.
pub fn member_key(repo: &RepoName, d: &Digest) -> String {
    format!("regstore::repo::{repo}::blob::{d}")
}

/// The Redis cache of one instance.
pub(super) struct RedisCache {
    connection: ConnectionManager,
    call_timeout: Duration,
    down_since: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// The client URL of `config`: `redis[s]://[user[:password]@]addr/db`.
fn url(config: &RedisConfig) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
    let scheme = if config.tls { "rediss" } else { "redis" };
    let auth = match (&config.username, &config.password) {
        (None, None) => String::new(),
        (Some(u), None) => format!("{}@", enc(u)),
        (u, Some(p)) => format!("{}:{}@", enc(u.as_deref().unwrap_or("")), enc(p)),
    };
    format!("{scheme}://{auth}{}/{}", config.addr, config.db)
}

impl RedisCache {
    /// A cache that connects to `config` on first use.
    ///
    /// # Errors
    /// `Redis` when the client refuses the settings.
    pub(super) fn new(config: &RedisConfig) -> Result<RedisCache, CacheError> {
        if config.tls {
            // rustls needs a process provider; the server's is ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(url(config))?;
        let mut manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.dial_timeout))
            .set_response_timeout(Some(config.read_timeout))
            .set_number_of_retries(2)
            .set_max_delay(BACKOFF);
        if let Some(n) = config.max_active {
            manager = manager.set_concurrency_limit(n);
        }
        let connection = ConnectionManager::new_lazy_with_config(client, manager)?;
        Ok(RedisCache {
            connection,
            call_timeout: config.write_timeout + config.read_timeout,
            down_since: Mutex::new(None),
        })
    }

    /// Runs `pipe` within the call timeout, unless Redis failed within
    /// [`BACKOFF`].
    async fn query<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, CacheError> {
        {
            let down = self
                .down_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if down.is_some_and(|t| t.elapsed() < BACKOFF) {
                return Err(CacheError::Backoff);
            }
        }
        let mut conn = self.connection.clone();
        let result =
            match tokio::time::timeout(self.call_timeout, pipe.query_async(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(CacheError::Redis(e)),
                Err(_) => Err(CacheError::Timeout(self.call_timeout)),
            };
        let mut down = self
            .down_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *down = match &result {
            // An error answer from a Redis that is up (a wrong type, ACL)
            // is no reason to leave it alone.
            Err(CacheError::Redis(e))
                if !(e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()) =>
            {
                None
            }
            Err(_) => Some(Instant::now()),
            Ok(_) => None,
        };
        result
    }

    pub(super) async fn descriptor(&self, d: &Digest) -> Result<Option<Descriptor>, CacheError> {
        let key = blob_key(d);
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET").arg(&key).arg("size").arg("mediatype");
        let ((size, media_type),): ((Option<String>, Option<String>),) = self.query(&pipe).await?;
        parse(&key, size, media_type)
    }

    pub(super) async fn member(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<Option<Descriptor>, CacheError> {
        let key = blob_key(d);
        let mut pipe = redis::pipe();
        pipe.cmd("EXISTS")
            .arg(member_key(repo, d))
            .cmd("HMGET")
            .arg(&key)
            .arg("size")
            .arg("mediatype");
        let (linked, (size, media_type)): (u64, (Option<String>, Option<String>)) =
            self.query(&pipe).await?;
        if linked == 0 {
            return Ok(None);
        }
        parse(&key, size, media_type)
    }

    pub(super) async fn set_descriptor(
        &self,
        d: &Digest,
        desc: &Descriptor,
    ) -> Result<(), CacheError> {
        let mut pipe = redis::pipe();
        hset(&mut pipe, d, desc);
        self.query::<()>(&pipe).await
    }

    pub(super) async fn add_member(
        &self,
        repo: &RepoName,
        d: &Digest,
        desc: &Descriptor,
    ) -> Result<(), CacheError> {
        let mut pipe = redis::pipe();
        hset(&mut pipe, d, desc);
        pipe.cmd("SET").arg(member_key(repo, d)).arg(1).ignore();
        self.query::<()>(&pipe).await
    }

    pub(super) async fn forget_members(
        &self,
        links: &[(RepoName, Digest)],
    ) -> Result<(), CacheError> {
        let keys: Vec<String> = links.iter().map(|(r, d)| member_key(r, d)).collect();
        self.delete(&keys).await
    }

    pub(super) async fn forget_descriptors(&self, digests: &[Digest]) -> Result<(), CacheError> {
        let keys: Vec<String> = digests.iter().map(blob_key).collect();
        self.delete(&keys).await
    }

    async fn delete(&self, keys: &[String]) -> Result<(), CacheError> {
        for batch in keys.chunks(DEL_BATCH) {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(batch).ignore();
            self.query::<()>(&pipe).await?;
        }
        Ok(())
    }
}

fn hset(pipe: &mut redis::Pipeline, d: &Digest, desc: &Descriptor) {
    pipe.cmd("HSET")
        .arg(blob_key(d))
        .arg("size")
        .arg(desc.size)
        .arg("mediatype")
        .arg(&desc.media_type)
        .ignore();
}

/// A descriptor from its hash's fields; an absent hash is `None`.
fn parse(
    key: &str,
    size: Option<String>,
    media_type: Option<String>,
) -> Result<Option<Descriptor>, CacheError> {
    let (Some(size), Some(media_type)) = (size, media_type) else {
        return Ok(None);
    };
    let size = size.parse().map_err(|_| CacheError::Corrupt {
        key: key.to_owned(),
        why: format!("size {size:?} is not a number"),
    })?;
    Ok(Some(Descriptor { size, media_type }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_encode_credentials_and_name_the_database() {
        let mut c = RedisConfig {
            addr: "r.example:6380".into(),
            username: None,
            password: None,
            db: 4,
            dial_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(1),
            max_active: None,
            tls: false,
        };
        assert_eq!(url(&c), "redis://r.example:6380/4");
        c.password = Some("p@ss:/w".into());
        assert_eq!(url(&c), "redis://:p%40ss%3A%2Fw@r.example:6380/4");
        c.username = Some("reg".into());
        c.tls = true;
        assert_eq!(url(&c), "rediss://reg:p%40ss%3A%2Fw@r.example:6380/4");
    }

    #[test]
    fn keys_are_namespaced() {
        let d = Digest::of(crate::registry::Algorithm::Sha256, b"");
        let r = RepoName::parse("a/b").unwrap();
        assert_eq!(blob_key(&d), format!("regstore::blob::{d}"));
        assert_eq!(
            member_key(&r, &d),
            format!("regstore::repo::a/b::blob::{d}")
        );
    }
}
