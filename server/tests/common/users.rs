//! htpasswd users for auth tests: the file, and clients that log in.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::Api;

/// An htpasswd file with `users` (bcrypt cost 6: cheap for tests, still a
/// real bcrypt check).
pub fn write_htpasswd(path: &std::path::Path, users: &[(&str, &str)]) {
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 6).expect("bcrypt")))
        .collect();
    std::fs::write(path, text).expect("write htpasswd");
}

/// A client of `base` that sends Basic credentials with every request.
pub fn as_user(base: &str, user: &str, password: &str) -> Api {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    with_authorization(base, &format!("Basic {token}"))
}

/// A client of `base` that sends `Authorization: <value>` with every
/// request (Basic credentials, a bearer token).
pub fn with_authorization(base: &str, value: &str) -> Api {
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header"));
    Api {
        base: base.to_owned(),
        client: super::client_builder()
            .default_headers(headers)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client"),
    }
}
