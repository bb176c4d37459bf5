//! Pull-through cache (distribution's `proxy:` section): the client of the
//! upstream registry ([`upstream`]).

pub mod upstream;
