//! `storage.cache` (distribution's `blobdescriptor`, and regstore's
//! `blobdescriptorsize`) and distribution's `redis` section: which
//! blob-descriptor cache the registry keeps ([`crate::cache`]).
//!
//! ```yaml
//! storage:
//!   cache:
//!     blobdescriptor: redis      # or inmemory; absent: no cache
//!     blobdescriptorsize: 10000  # inmemory: entries kept (LRU)
//! redis:
//!   addr: localhost:6379
//!   username: registry           # Redis 6 ACL user (distribution 3)
//!   password: asecret
//!   db: 0
//!   dialtimeout: 10ms
//!   readtimeout: 10ms
//!   writetimeout: 10ms
//!   pool:
//!     maxidle: 16
//!     maxactive: 64
//!     idletimeout: 300s
//!   tls:
//!     enabled: true
//! ```
//!
//! A `redis` section without `blobdescriptor: redis` is read (and checked)
//! but not used: nothing else in regstore talks to Redis.

use std::time::Duration;

use serde::Deserialize;

use super::value::{ConfigDuration, flag};

/// `storage.cache.blobdescriptorsize` when not given (distribution's default).
pub const DEFAULT_BLOB_DESCRIPTOR_SIZE: usize = 10_000;
/// `redis.dialtimeout` when not given (go-redis's, which distribution 3 uses).
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// `redis.readtimeout` when not given (go-redis's).
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(3);
/// `redis.writetimeout` when not given (go-redis's: the read timeout).
pub const DEFAULT_WRITE_TIMEOUT: Duration = DEFAULT_READ_TIMEOUT;

/// `storage.cache.blobdescriptor`, resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobCacheConfig {
    /// `inmemory`: a least-recently-used map of this many entries
    /// (descriptors and repository memberships together), per instance.
    InMemory {
        /// `blobdescriptorsize`.
        size: usize,
    },
    /// `redis`: shared by every instance that names the same Redis database.
    Redis(RedisConfig),
}

/// The `redis` section.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// `addr`: `host:port`.
    pub addr: String,
    /// `username` (Redis 6 ACL), if any.
    pub username: Option<String>,
    /// `password`, if any.
    pub password: Option<String>,
    /// `db`: the database number.
    pub db: u32,
    /// `dialtimeout`: connecting (TCP and TLS handshake, `AUTH`, `SELECT`).
    pub dial_timeout: Duration,
    /// `readtimeout`: waiting for an answer.
    pub read_timeout: Duration,
    /// `writetimeout`: sending a command.
    pub write_timeout: Duration,
    /// `pool.maxactive`: commands in flight at once on the connection
    /// (`None`: unbounded).
    pub max_active: Option<usize>,
    /// `tls.enabled`: connect with TLS (`rediss://`), verifying the server
    /// against the system's roots.
    pub tls: bool,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("addr", &self.addr)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "…"))
            .field("db", &self.db)
            .field("dial_timeout", &self.dial_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("max_active", &self.max_active)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `storage.cache`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct CacheSection {
    blobdescriptor: Option<String>,
    blobdescriptorsize: Option<usize>,
}

/// `redis`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(super) struct RedisSection {
    addr: Option<String>,
    username: Option<String>,
    password: Option<String>,
    db: Option<u32>,
    dialtimeout: Option<ConfigDuration>,
    readtimeout: Option<ConfigDuration>,
    writetimeout: Option<ConfigDuration>,
    pool: Pool,
    tls: Tls,
}

/// `redis.pool`. regstore keeps one multiplexed connection per instance
/// (see [`crate::cache`]), so only `maxactive` has a meaning; `maxidle` and
/// `idletimeout` are read and have nothing to bound.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Pool {
    maxidle: Option<usize>,
    maxactive: Option<usize>,
    idletimeout: Option<ConfigDuration>,
}

/// `redis.tls`: distribution 2.8's `enabled`; distribution 3's client
/// certificate and CA keys are refused (not supported yet).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Tls {
    #[serde(deserialize_with = "flag")]
    enabled: Option<bool>,
    certificate: Option<serde_json::Value>,
    key: Option<serde_json::Value>,
    clientcas: Option<serde_json::Value>,
}

/// The cache `storage.cache` asks for, with its Redis settings.
///
/// # Errors
/// An unknown `blobdescriptor`, a `blobdescriptorsize` of 0, `redis`
/// without `redis.addr`, a `redis.tls` key regstore cannot honour — each
/// message names the key.
pub(super) fn resolve(
    cache: CacheSection,
    redis: RedisSection,
) -> Result<Option<BlobCacheConfig>, String> {
    let redis = redis.resolve()?;
    match cache.blobdescriptor.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some("inmemory") => {
            let size = cache
                .blobdescriptorsize
                .unwrap_or(DEFAULT_BLOB_DESCRIPTOR_SIZE);
            if size == 0 {
                return Err(
                    "storage.cache.blobdescriptorsize: must be at least 1 (remove storage.cache to run without a cache)"
                        .into(),
                );
            }
            Ok(Some(BlobCacheConfig::InMemory { size }))
        }
        Some("redis") => redis.map(BlobCacheConfig::Redis).map(Some).ok_or_else(|| {
            "storage.cache.blobdescriptor: redis needs redis.addr (the Redis server's host:port)"
                .into()
        }),
        Some(other) => Err(format!(
            "storage.cache.blobdescriptor: unknown cache {other:?}: use inmemory or redis"
        )),
    }
}

impl RedisSection {
    /// `None` when there is no `addr`.
    fn resolve(self) -> Result<Option<RedisConfig>, String> {
        for (key, set) in [
            ("certificate", self.tls.certificate.is_some()),
            ("key", self.tls.key.is_some()),
            ("clientcas", self.tls.clientcas.is_some()),
        ] {
            if set {
                return Err(format!(
                    "redis.tls.{key} is not supported: regstore connects with tls.enabled and verifies Redis against the system's certificate authorities, without a client certificate"
                ));
            }
        }
        let Some(addr) = self
            .addr
            .map(|a| a.trim().to_owned())
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("redis.addr: {addr:?} is not host:port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("redis.addr: {addr:?} is not host:port"));
        }
        let nonzero = |key: &str, d: Option<ConfigDuration>, default: Duration| match d {
            None => Ok(default),
            Some(ConfigDuration(d)) if d.is_zero() => Err(format!(
                "redis.{key}: must be more than 0 (a cache call that may wait forever could hold requests)"
            )),
            Some(ConfigDuration(d)) => Ok(d),
        };
        let _ = (self.pool.maxidle, self.pool.idletimeout);
        Ok(Some(RedisConfig {
            addr,
            username: self.username.filter(|u| !u.is_empty()),
            password: self.password.filter(|p| !p.is_empty()),
            db: self.db.unwrap_or(0),
            dial_timeout: nonzero("dialtimeout", self.dialtimeout, DEFAULT_DIAL_TIMEOUT)?,
            read_timeout: nonzero("readtimeout", self.readtimeout, DEFAULT_READ_TIMEOUT)?,
            write_timeout: nonzero("writetimeout", self.writetimeout, DEFAULT_WRITE_TIMEOUT)?,
            max_active: self.pool.maxactive.filter(|n| *n > 0),
            tls: self.tls.enabled.unwrap_or(false),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use super::*;

    fn load(yaml: &str, env: &[(&str, &str)]) -> Result<Option<BlobCacheConfig>, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::from_yaml(
            &format!("version: 0.1\nstorage:\n  inmemory:\n{yaml}"),
            "t.yml",
            env,
        )
        .map(|c| c.blob_cache)
        .map_err(|e| e.to_string())
    }

    #[test]
    fn no_cache_unless_asked() {
        assert_eq!(load("", &[]), Ok(None));
        assert_eq!(load("redis:\n  addr: r:6379\n", &[]), Ok(None));
    }

    #[test]
    fn inmemory_with_distributions_default_size_or_the_given_one() {
        assert_eq!(
            load("  cache:\n    blobdescriptor: inmemory\n", &[]),
            Ok(Some(BlobCacheConfig::InMemory {
                size: DEFAULT_BLOB_DESCRIPTOR_SIZE
            }))
        );
        assert_eq!(
            load(
                "  cache:\n    blobdescriptor: inmemory\n    blobdescriptorsize: 50\n",
                &[]
            ),
            Ok(Some(BlobCacheConfig::InMemory { size: 50 }))
        );
        assert_eq!(
            load(
                "",
                &[
                    ("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR", "inmemory"),
                    ("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTORSIZE", "7")
                ]
            ),
            Ok(Some(BlobCacheConfig::InMemory { size: 7 }))
        );
    }

    #[test]
    fn redis_reads_distributions_keys() {
        let c = load(
            "  cache:\n    blobdescriptor: redis\nredis:\n  addr: localhost:6379\n  username: u\n  password: asecret\n  db: 3\n  dialtimeout: 10ms\n  readtimeout: 20ms\n  writetimeout: 30ms\n  pool:\n    maxidle: 16\n    maxactive: 64\n    idletimeout: 300s\n  tls:\n    enabled: true\n",
            &[],
        )
        .unwrap();
        let Some(BlobCacheConfig::Redis(r)) = c else {
            panic!("{c:?}")
        };
        assert_eq!(
            r,
            RedisConfig {
                addr: "localhost:6379".into(),
                username: Some("u".into()),
                password: Some("asecret".into()),
                db: 3,
                dial_timeout: Duration::from_millis(10),
                read_timeout: Duration::from_millis(20),
                write_timeout: Duration::from_millis(30),
                max_active: Some(64),
                tls: true,
            }
        );
        assert!(
            !format!("{r:?}").contains("asecret"),
            "the password is not shown"
        );
        let c = load(
            "",
            &[
                ("REGISTRY_STORAGE_CACHE_BLOBDESCRIPTOR", "redis"),
                ("REGISTRY_REDIS_ADDR", "127.0.0.1:19040"),
                ("REGISTRY_REDIS_DB", "9"),
            ],
        )
        .unwrap();
        let Some(BlobCacheConfig::Redis(r)) = c else {
            panic!("{c:?}")
        };
        assert_eq!((r.addr.as_str(), r.db), ("127.0.0.1:19040", 9));
        assert_eq!(
            (r.dial_timeout, r.read_timeout, r.write_timeout, r.tls),
            (
                DEFAULT_DIAL_TIMEOUT,
                DEFAULT_READ_TIMEOUT,
                DEFAULT_WRITE_TIMEOUT,
                false
            )
        );
    }

    #[test]
    fn unusable_settings_name_the_key() {
        for (yaml, says) in [
            (
                "  cache:\n    blobdescriptor: memcached\n",
                "storage.cache.blobdescriptor: unknown cache \"memcached\"",
            ),
            (
                "  cache:\n    blobdescriptor: redis\n",
                "storage.cache.blobdescriptor: redis needs redis.addr",
            ),
            (
                "  cache:\n    blobdescriptor: redis\nredis:\n  password: p\n",
                "redis needs redis.addr",
            ),
            (
                "  cache:\n    blobdescriptor: inmemory\n    blobdescriptorsize: 0\n",
                "storage.cache.blobdescriptorsize: must be at least 1",
            ),
            (
                "  cache:\n    blobdescriptor: inmemory\n    blobdescriptorsize: many\n",
                "storage.cache.blobdescriptorsize: invalid type",
            ),
            (
                "redis:\n  addr: r:6379\n  readtimeout: soon\n",
                "redis.readtimeout",
            ),
            (
                "redis:\n  addr: r:6379\n  dialtimeout: 0s\n",
                "redis.dialtimeout: must be more than 0",
            ),
            (
                "redis:\n  addr: nohost\n",
                "redis.addr: \"nohost\" is not host:port",
            ),
            ("redis:\n  addr: r:6379\n  db: -1\n", "redis.db"),
            (
                "redis:\n  addr: r:6379\n  tls:\n    certificate: /c.pem\n",
                "redis.tls.certificate is not supported",
            ),
            (
                "redis:\n  addr: r:6379\n  tls:\n    enabled: maybe\n",
                "redis.tls.enabled: must be true or false",
            ),
        ] {
            let e = load(yaml, &[]).unwrap_err();
            assert!(e.contains(says), "{yaml}: {e}");
        }
    }
}
