//! The pull-through cache (distribution's `proxy:` section), being built:
//! the client of the upstream registry ([`upstream`]) and single-flight
//! blob fetches that store while they stream ([`fetch`]). Serving requests
//! through them, tag revalidation and ttl expiry come next; until then a
//! config with `proxy:` still stops startup.

pub mod fetch;
pub mod upstream;
