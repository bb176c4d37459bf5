//! The pull-through cache (distribution's `proxy`): what a registry in
//! proxy mode fetches from its upstream registry, and how.

pub mod fetch;
