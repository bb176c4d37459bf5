//! Random names and contents, as distribution's suite draws them.

use bytes::{Bytes, BytesMut};

/// A small fast PRNG (SplitMix64): test data only, never security.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator seeded from the clock and a counter, different per call.
    pub fn from_entropy() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Rng(nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Bytes {
        let mut b = BytesMut::zeroed(len);
        self.fill(&mut b);
        b.freeze()
    }

    /// A file name of `len` characters from `a-z0-9`, with `-` now and then
    /// (never first, last, or twice in a row), like distribution's.
    pub fn filename(&mut self, len: usize) -> String {
        const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut s = String::with_capacity(len);
        let mut was_sep = true;
        for i in 0..len {
            if !was_sep && i + 1 < len && self.below(4) == 0 {
                s.push('-');
                was_sep = true;
            } else {
                s.push(CHARS[self.below(CHARS.len() as u64) as usize] as char);
                was_sep = false;
            }
        }
        s
    }

    /// An absolute path of `len` characters made of random segments.
    pub fn path(&mut self, len: usize) -> String {
        let mut p = String::from("/");
        while p.len() < len {
            let chunk = self.below((len - p.len()) as u64) as usize + 1;
            p.push_str(&self.filename(chunk));
            match len.saturating_sub(p.len()) {
                0 => {}
                1 => {
                    let last = self.filename(1);
                    p.push_str(&last);
                }
                _ => p.push('/'),
            }
        }
        p
    }
}

/// First segment of `path` as an absolute path (`/a/b/c` → `/a`).
pub fn first_part(path: &str) -> String {
    match path.trim_start_matches('/').split('/').next() {
        Some(first) if !first.is_empty() => format!("/{first}"),
        _ => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_paths_are_valid_and_of_the_asked_length() {
        let mut rng = Rng::new(7);
        for _ in 0..500 {
            let p = rng.path(32);
            assert_eq!(p.len(), 32, "{p}");
            regstore_core::StoragePath::parse(&p).unwrap();
        }
        assert_eq!(first_part("/ab/c/d"), "/ab");
    }
}
