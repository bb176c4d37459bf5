//! Retrying a request to a backend: one backoff policy and one loop, for the
//! drivers that talk HTTP themselves (gcs's JSON API, swift, the s3 part
//! copy). `object_store` retries its own requests; this is for the rest.
//!
//! - [`Backoff`]: how many attempts, the first wait, the growth factor, the
//!   jitter ([`Jitter::Full`] or [`Jitter::Equal`], as in AWS's
//!   "Exponential Backoff and Jitter"), the longest single wait and the
//!   longest time retries may take in all. A delay the server asked for
//!   (`Retry-After`) replaces the computed one, capped like it.
//! - [`retry`]: runs attempts until one is final, the attempts are spent or
//!   the time is up; the caller's attempt says which ([`Verdict`]).
//! - [`retry_after`]: a `Retry-After` value (delta-seconds or HTTP-date).
//!
//! Nothing here knows HTTP types: drivers pass the header's text and their
//! own idea of a retryable answer (see [`is_retryable_status`]).

use std::future::Future;
use std::time::{Duration, Instant, SystemTime};

/// How a computed wait is randomized, so that clients that failed together
/// do not retry together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// The computed wait exactly (tests, or a single client).
    None,
    /// Anywhere from zero to the computed wait.
    Full,
    /// Half the computed wait, plus up to the other half.
    Equal,
}

/// A bounded exponential backoff: the wait before retry `n` is
/// `first * factor^(n-1)`, capped at `cap`, then jittered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// The (unjittered) wait before the first retry.
    pub first: Duration,
    /// Each further wait is this many times the previous one.
    pub factor: u32,
    /// The longest single wait, a server's `Retry-After` included.
    pub cap: Duration,
    /// How waits are randomized.
    pub jitter: Jitter,
    /// No retry starts once this long has passed since the first attempt
    /// (or would start after it, counting the wait).
    pub budget: Duration,
}

impl Backoff {
    /// `attempts` attempts, waiting `first`, then four times longer each
    /// time, with full jitter, no wait above 10 s, all within 30 s.
    pub const fn new(attempts: u32, first: Duration) -> Self {
        Backoff {
            attempts,
            first,
            factor: 4,
            cap: Duration::from_secs(10),
            jitter: Jitter::Full,
            budget: Duration::from_secs(30),
        }
    }

    /// The same with another growth factor.
    pub const fn factor(mut self, factor: u32) -> Self {
        self.factor = factor;
        self
    }

    /// The same with another longest single wait.
    pub const fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// The same with another jitter.
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The same with another time budget.
    pub const fn budget(mut self, budget: Duration) -> Self {
        self.budget = budget;
        self
    }

    /// The wait before retry `retry` (1: after the first attempt failed).
    /// `server` is the delay the server asked for, which is taken instead of
    /// the computed one (capped at [`Backoff::cap`]); `draw` is a random
    /// number in `0.0..1.0` for the jitter.
    pub fn delay(&self, retry: u32, server: Option<Duration>, draw: f64) -> Duration {
        if let Some(asked) = server {
            return asked.min(self.cap);
        }
        let growth = self
            .factor
            .max(1)
            .checked_pow(retry.saturating_sub(1))
            .unwrap_or(u32::MAX);
        let full = self.first.saturating_mul(growth).min(self.cap);
        let draw = draw.clamp(0.0, 1.0);
        match self.jitter {
            Jitter::None => full,
            Jitter::Full => full.mul_f64(draw),
            Jitter::Equal => full / 2 + (full / 2).mul_f64(draw),
        }
    }

    /// The attempts of one operation under this policy.
    pub fn start(&self) -> Attempts {
        self.start_with(fastrand::f64)
    }

    /// [`Backoff::start`] with another source of random numbers in
    /// `0.0..1.0` (tests make it fixed).
    pub fn start_with(&self, random: fn() -> f64) -> Attempts {
        Attempts {
            policy: *self,
            made: 1,
            started: Instant::now(),
            random,
        }
    }
}

/// Attempts made so far under a [`Backoff`]; the first is under way.
#[derive(Debug)]
pub struct Attempts {
    policy: Backoff,
    made: u32,
    started: Instant,
    random: fn() -> f64,
}

impl Attempts {
    /// Which attempt is under way (1 for the first).
    pub fn number(&self) -> u32 {
        self.made
    }

    /// Whether the attempt under way is the last one the count allows.
    pub fn is_last(&self) -> bool {
        self.made >= self.policy.attempts
    }

    /// After the attempt under way failed retryably: how long to wait before
    /// the next one (counted as made), or `None` when the attempts are spent
    /// or the wait would end past the time budget.
    pub fn next_delay(&mut self, server: Option<Duration>) -> Option<Duration> {
        if self.is_last() {
            return None;
        }
        let wait = self.policy.delay(self.made, server, (self.random)());
        if self.started.elapsed().saturating_add(wait) > self.policy.budget {
            return None;
        }
        self.made += 1;
        Some(wait)
    }
}

/// What one attempt came to.
#[derive(Debug)]
pub enum Verdict<T> {
    /// Final: success, or a failure that repeating would not change.
    Done(T),
    /// Worth another attempt. `last` is the answer if there is none;
    /// `after` is the server's delay (`Retry-After`), `why` goes to the log.
    Retry {
        /// What to return when no attempt is left.
        last: T,
        /// The delay the server asked for, if any.
        after: Option<Duration>,
        /// Why the attempt is repeated (`HTTP 503`, a network error).
        why: String,
    },
}

/// Runs `attempt` (given the attempt's number, from 1) until it is
/// [`Verdict::Done`], or its attempts or time under `policy` are spent, in
/// which case the last answer is returned. `what` names the operation in
/// the debug log of each retry.
pub async fn retry<T, F, Fut>(policy: &Backoff, what: &str, mut attempt: F) -> T
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Verdict<T>>,
{
    let mut attempts = policy.start();
    loop {
        match attempt(attempts.number()).await {
            Verdict::Done(answer) => return answer,
            Verdict::Retry { last, after, why } => {
                let number = attempts.number();
                let Some(wait) = attempts.next_delay(after) else {
                    return last;
                };
                tracing::debug!(what, attempt = number, error = %why, ?wait, "retried");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Whether an HTTP status is worth retrying: a server error (5xx) or
/// 429 Too Many Requests. Backends add their own (Swift's 498).
pub fn is_retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// The delay a `Retry-After` header value asks for, from now.
pub fn retry_after(value: &str) -> Option<Duration> {
    parse_retry_after(value, SystemTime::now())
}

/// The delay a `Retry-After` header value asks for at `now`: delta-seconds
/// (`120`) or an HTTP-date (`Wed, 21 Oct 2015 07:28:00 GMT`, or the two
/// obsolete forms RFC 9110 still accepts); a date past is no delay. `None`
/// for anything else.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> Backoff {
        Backoff::new(5, 100 * MS).cap(Duration::from_secs(2))
    }

    #[test]
    fn waits_grow_by_the_factor_up_to_the_cap() {
        let p = policy().jitter(Jitter::None);
        let waits: Vec<_> = (1..=4).map(|n| p.delay(n, None, 0.5)).collect();
        assert_eq!(waits, [100 * MS, 400 * MS, 1600 * MS, 2000 * MS]);
        assert_eq!(p.delay(u32::MAX, None, 0.5), 2000 * MS, "no overflow");
    }

    #[test]
    fn full_jitter_stays_between_zero_and_the_wait() {
        let p = policy().jitter(Jitter::Full);
        assert_eq!(p.delay(2, None, 0.0), Duration::ZERO);
        assert_eq!(p.delay(2, None, 0.25), 100 * MS);
        assert!(p.delay(2, None, 0.999_999) <= 400 * MS);
        assert_eq!(p.delay(2, None, 7.0), 400 * MS, "a draw is clamped");
        for _ in 0..1000 {
            let d = p.delay(3, None, fastrand::f64());
            assert!(d <= 1600 * MS, "{d:?}");
        }
    }

    #[test]
    fn equal_jitter_keeps_half_the_wait() {
        let p = policy().jitter(Jitter::Equal);
        assert_eq!(p.delay(2, None, 0.0), 200 * MS);
        assert_eq!(p.delay(2, None, 0.5), 300 * MS);
        for _ in 0..1000 {
            let d = p.delay(2, None, fastrand::f64());
            assert!((200 * MS..=400 * MS).contains(&d), "{d:?}");
        }
    }

    #[test]
    fn the_servers_delay_is_honoured_and_capped() {
        let p = policy();
        assert_eq!(p.delay(1, Some(Duration::from_secs(1)), 0.0), 1000 * MS);
        assert_eq!(p.delay(1, Some(Duration::ZERO), 0.9), Duration::ZERO);
        assert_eq!(
            p.delay(1, Some(Duration::from_secs(3600)), 0.0),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn attempts_are_bounded_in_count() {
        let mut a = policy().start_with(|| 0.5);
        assert_eq!(a.number(), 1);
        let mut waits = 0;
        while a.next_delay(None).is_some() {
            waits += 1;
        }
        assert_eq!(waits, 4, "five attempts: four waits between them");
        assert_eq!(a.number(), 5);
        assert!(a.is_last());
        assert_eq!(Backoff::new(1, MS).start().next_delay(None), None);
    }

    #[test]
    fn attempts_are_bounded_in_time() {
        let p = policy().budget(Duration::from_secs(1));
        let mut a = p.start_with(|| 1.0);
        // 100 ms, 400 ms: within the second; then 1.6 s would end past it.
        assert_eq!(a.next_delay(None), Some(100 * MS));
        assert_eq!(a.next_delay(None), Some(400 * MS));
        let mut b = p.start_with(|| 0.0);
        assert_eq!(b.next_delay(Some(Duration::from_millis(1500))), None);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_returns_the_last_answer_when_attempts_are_spent() {
        let p = Backoff::new(3, MS);
        let mut seen = Vec::new();
        let answer = retry(&p, "test", |n| {
            seen.push(n);
            async move {
                Verdict::Retry {
                    last: n,
                    after: None,
                    why: "HTTP 503".into(),
                }
            }
        })
        .await;
        assert_eq!(answer, 3);
        assert_eq!(seen, [1, 2, 3]);
        let done = retry(&p, "test", |n| async move {
            if n == 2 {
                Verdict::Done("ok")
            } else {
                Verdict::Retry {
                    last: "failed",
                    after: Some(Duration::from_secs(1)),
                    why: "HTTP 429".into(),
                }
            }
        })
        .await;
        assert_eq!(done, "ok");
    }

    #[test]
    fn retry_after_takes_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 2015-10-21 07:28:00
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wednesday, 21-Oct-15 07:29:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date past is no delay"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }

    #[test]
    fn retryable_statuses() {
        assert!(is_retryable_status(503));
        assert!(is_retryable_status(429));
        assert!(!is_retryable_status(404));
        assert!(!is_retryable_status(401));
    }
}
