//! The HTTP guard in front of every endpoint: bearer tokens with scopes (when any are
//! configured) and a per-client rate limit (when one is set). Errors name what was missing or
//! which limit was hit; secrets never reach a log line or a response.

use crate::config::Scope;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub struct Token {
    pub name: String,
    pub secret: String,
    pub scopes: Vec<Scope>,
}

pub struct Guard {
    pub tokens: Vec<Token>,
    pub open_paths: Vec<String>,
    pub rate: Option<RateLimiter>,
}

/// The scope a request needs, by what it does: writing data, administering the server, or
/// reading (everything else, `/mcp` included — its tools are read-only).
pub fn required_scope(path: &str) -> Scope {
    match path {
        "/api/v1/write" | "/api/v1/probes" => Scope::Write,
        "/-/reload" => Scope::Admin,
        p if p.starts_with("/api/v1/admin/") => Scope::Admin,
        _ => Scope::Read,
    }
}

/// Compares in time independent of where the first difference is, so response timing does
/// not reveal how much of a guessed token was right. (Four lines; not worth a dependency.)
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, challenge: Option<&str>, msg: String) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": "unauthorized", "error": msg});
    let mut r = (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response();
    if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(c).ok()) {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
    }
    r
}

impl Guard {
    /// The token the request presents, checked against every configured one (all of them, so
    /// the time taken does not depend on which matched).
    fn authenticate(&self, req: &Request) -> Result<Option<&Token>, Response> {
        let Some(v) = req.headers().get(header::AUTHORIZATION) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="toolwatch""#),
                "authentication required: send Authorization: Bearer <token>".into(),
            ));
        };
        let presented = v.to_str().ok().and_then(|s| s.strip_prefix("Bearer ").or_else(|| s.strip_prefix("bearer ")));
        let presented = presented.map(str::trim).unwrap_or("");
        let mut found = None;
        for t in &self.tokens {
            if ct_eq(t.secret.as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        match found {
            Some(t) => Ok(Some(t)),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="toolwatch", error="invalid_token""#),
                "invalid bearer token".into(),
            )),
        }
    }
}

pub async fn guard(
    State(g): State<Arc<Guard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let mut client = peer.ip().to_string();
    if !g.tokens.is_empty() && !g.open_paths.iter().any(|p| *p == path) {
        let token = match g.authenticate(&req) {
            Ok(t) => t,
            Err(r) => return r,
        };
        if let Some(t) = token {
            let need = required_scope(&path);
            if !t.scopes.contains(&need) {
                let scope = format!("{need:?}").to_lowercase();
                return error(
                    StatusCode::FORBIDDEN,
                    Some(&format!(r#"Bearer realm="toolwatch", error="insufficient_scope", scope="{scope}""#)),
                    format!("token {:?} lacks the {scope:?} scope needed for {path}", t.name),
                );
            }
            client = format!("token:{}", t.name);
        }
    }
    if let Some(rl) = &g.rate {
        if let Err(wait) = rl.take(&client) {
            let body = serde_json::json!({
                "status": "error",
                "errorType": "too_many_requests",
                "error": format!(
                    "rate limit exceeded for {client}: http.rate_limit.requests_per_second={} (burst {}); retry in {:.1}s",
                    rl.per_second, rl.burst, wait
                ),
            });
            let retry = (wait.ceil() as u64).max(1).to_string();
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::CONTENT_TYPE, "application/json".to_string()), (header::RETRY_AFTER, retry)],
                body.to_string(),
            )
                .into_response();
        }
    }
    next.run(req).await
}

/// A token bucket per client. The map is locked only to update one bucket; clients idle for
/// long are dropped when the map grows, so it cannot grow without bound.
pub struct RateLimiter {
    pub per_second: f64,
    pub burst: u32,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: u32) -> RateLimiter {
        RateLimiter { per_second, burst: burst.max(1), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one request's token, or says how many seconds until one is available.
    pub fn take(&self, client: &str) -> Result<(), f64> {
        let now = Instant::now();
        let cap = self.burst as f64;
        let mut m = self.buckets.lock();
        if m.len() > 10_000 {
            let full = cap / self.per_second;
            m.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() < full);
        }
        let (tokens, last) = m.entry(client.to_string()).or_insert((cap, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second).min(cap);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *tokens) / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_by_path() {
        assert_eq!(required_scope("/api/v1/write"), Scope::Write);
        assert_eq!(required_scope("/api/v1/probes"), Scope::Write);
        assert_eq!(required_scope("/api/v1/admin/flush"), Scope::Admin);
        assert_eq!(required_scope("/-/reload"), Scope::Admin);
        assert_eq!(required_scope("/api/v1/query"), Scope::Read);
        assert_eq!(required_scope("/mcp"), Scope::Read);
    }

    #[test]
    fn equal_only_when_equal() {
        assert!(ct_eq(b"secret", b"secret"));
        assert!(!ct_eq(b"secret", b"secreT"));
        assert!(!ct_eq(b"secret", b"secret2"));
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let rl = RateLimiter::new(1000.0, 2);
        assert!(rl.take("a").is_ok() && rl.take("a").is_ok());
        let wait = rl.take("a").unwrap_err();
        assert!(wait > 0.0 && wait <= 0.001, "{wait}");
        assert!(rl.take("b").is_ok(), "clients have their own buckets");
        std::thread::sleep(std::time::Duration::from_millis(3));
        assert!(rl.take("a").is_ok());
    }
}
