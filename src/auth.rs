//! The HTTP guard in front of every endpoint: bearer tokens with scopes (when any are
//! configured), the browser rule (a page of another site cannot change state) and a per-client
//! rate limit (when one is set). Each route's `Access` is declared where it is mounted
//! (src/server.rs), never guessed from its path. Errors name what was missing or which limit
//! was hit; secrets never reach a log line or a response.

use crate::config::Scope;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
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
    /// `mcp.allowed_hosts`: the `Host` names a browser request that changes state may carry
    /// (a page that rebinds its own name to this address is same-origin to itself).
    pub allowed_hosts: Vec<String>,
}

/// What a route needs, declared where it is mounted: a token with one scope (when tokens are
/// configured), or nothing at all (liveness and readiness, which probes call without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Open,
    Scoped(Scope),
}

impl Access {
    /// As `toolwatch routes` prints it: `open`, `read`, `write`, `admin`, `proxy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Open => "open",
            Access::Scoped(s) => s.as_str(),
        }
    }
}

/// Why the request comes from a web page of another site, if it does. A browser sends `Origin`
/// with every POST and `Sec-Fetch-Site` with every request; clients that are not browsers
/// (Prometheus, curl, SDKs) send neither and pass. An `Origin` is the server's own when its host
/// and port are the request's `Host` (the scheme's default port when one omits it) and that host
/// is in `allowed_hosts` (when the list is not empty): a page whose name was rebound to this
/// address (DNS rebinding) is same-origin to itself, but its `Host` is its own name. Any other
/// `Origin`, `null` included, is foreign. `mcp.allowed_origins` is not consulted: it says which
/// pages may use the read-only `/mcp`, and by default admits every port of localhost.
pub fn cross_site(headers: &HeaderMap, uri: &Uri, allowed_hosts: &[String]) -> Option<String> {
    if headers.get("sec-fetch-site").is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"cross-site")) {
        return Some("Sec-Fetch-Site: cross-site".into());
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = String::from_utf8_lossy(origin.as_bytes()).trim().to_string();
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.authority().map(|a| a.as_str().to_string()));
    match host {
        Some(host) if same_origin(&origin, &host) => {
            if host_allowed(&host, allowed_hosts) {
                None
            } else {
                Some(format!("Host {host:?} is not in mcp.allowed_hosts"))
            }
        }
        _ => Some(format!("Origin {origin:?} is not this server's")),
    }
}

/// As `/mcp` checks `Host`: an entry without a port allows every port; an empty list, any host.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    use axum::http::uri::Authority;
    if allowed.is_empty() {
        return true;
    }
    let Ok(auth) = host.parse::<Authority>() else { return false };
    let bare = |h: &str| h.trim_matches(['[', ']']).to_ascii_lowercase();
    let name = bare(auth.host());
    allowed.iter().any(|a| match a.parse::<Authority>() {
        Ok(x) => bare(x.host()) == name && x.port_u16().is_none_or(|p| Some(p) == auth.port_u16()),
        Err(_) => bare(a) == name,
    })
}

fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let authority = authority.trim_end_matches('/');
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let split = |a: &str| -> (String, String) {
        let a = a.trim().trim_end_matches('/').to_ascii_lowercase();
        match a.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                (h.to_string(), p.to_string())
            }
            _ => (a, default_port.to_string()),
        }
    };
    !authority.contains(['/', '@']) && split(authority) == split(host)
}

/// A 403 in Prometheus' error form.
fn forbidden(msg: String) -> Response {
    let body = serde_json::json!({"status": "error", "errorType": "forbidden", "error": msg});
    (StatusCode::FORBIDDEN, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
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
    /// the time taken does not depend on which matched). A header that is not
    /// `Bearer <token>` is refused as such, never compared as an empty secret.
    fn authenticate(&self, req: &Request) -> Result<&Token, Response> {
        let Some(v) = req.headers().get(header::AUTHORIZATION) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="toolwatch""#),
                "authentication required: send Authorization: Bearer <token>".into(),
            ));
        };
        let Some(presented) = bearer(v) else {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="toolwatch", error="invalid_request""#),
                "malformed Authorization header: send Authorization: Bearer <token>".into(),
            ));
        };
        let mut found = None;
        for t in &self.tokens {
            if ct_eq(t.secret.as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        match found {
            Some(t) => Ok(t),
            None => Err(error(
                StatusCode::UNAUTHORIZED,
                Some(r#"Bearer realm="toolwatch", error="invalid_token""#),
                "invalid bearer token".into(),
            )),
        }
    }
}

/// The token of a `Bearer <token>` header (scheme case-insensitive, RFC 7235); `None` for any
/// other scheme, no token, or bytes that are not text.
fn bearer(v: &HeaderValue) -> Option<&str> {
    let (scheme, token) = v.to_str().ok()?.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The guard of one mounted router: `access` is what its routes declared (see
/// `server::Mount`).
pub async fn guard(
    State((g, access)): State<(Arc<Guard>, Access)>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path().to_string();
    let mut client = peer.ip().to_string();
    // A web page in the user's browser must not change state: it can POST to any address the
    // browser reaches, loopback included, with no token when none are configured. Checked
    // whether or not tokens are configured, for simplicity: with tokens a page of another site
    // cannot send Authorization without a CORS preflight (which toolwatch never grants), so the
    // check costs nothing there. `/mcp` and `/proxy/*` check Origin themselves, against
    // `mcp.allowed_origins`.
    if matches!(access, Access::Scoped(Scope::Write | Scope::Admin)) {
        if let Some(why) = cross_site(req.headers(), req.uri(), &g.allowed_hosts) {
            return forbidden(format!(
                "cross-site request refused: {why}; a web page of another site cannot change state \
                 (write, push, probes, flush, reload). Send it from a client that is not a browser"
            ));
        }
    }
    if let Access::Scoped(need) = access {
        if !g.tokens.is_empty() && !g.open_paths.iter().any(|p| *p == path) {
            let t = match g.authenticate(&req) {
                Ok(t) => t,
                Err(r) => return r,
            };
            if !t.scopes.contains(&need) {
                let scope = need.as_str();
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
    fn only_bearer_headers_carry_a_token() {
        let b = |s: &str| bearer(&HeaderValue::from_str(s).unwrap()).map(str::to_string);
        assert_eq!(b("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(b("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(b("Basic YWxhZGRpbjpvcGVuc2VzYW1l"), None);
        assert_eq!(b("Bearer"), None);
        assert_eq!(b("Bearer   "), None);
        assert_eq!(b("abc"), None);
    }

    #[test]
    fn foreign_origins_and_cross_site_fetches() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
            }
            m
        };
        let uri: Uri = "/api/v1/write".parse().unwrap();
        let cross_site_ = |h: &HeaderMap, u: &Uri| cross_site(h, u, &[]);
        let host = ("host", "127.0.0.1:9201");
        assert!(cross_site_(&h(&[host]), &uri).is_none(), "no Origin: not a browser");
        assert!(cross_site_(&h(&[host, ("origin", "http://127.0.0.1:9201")]), &uri).is_none());
        assert!(cross_site_(&h(&[host, ("sec-fetch-site", "same-origin")]), &uri).is_none());
        assert!(cross_site_(&h(&[("host", "Example.com"), ("origin", "http://example.com")]), &uri).is_none());
        assert!(cross_site_(&h(&[("host", "example.com"), ("origin", "https://example.com:443")]), &uri).is_none());
        assert!(cross_site_(&h(&[("host", "[::1]:9201"), ("origin", "http://[::1]:9201")]), &uri).is_none());
        for bad in ["http://evil.example", "http://127.0.0.1:9202", "null", "http://localhost:9201", "file://"] {
            assert!(cross_site_(&h(&[host, ("origin", bad)]), &uri).is_some(), "{bad}");
        }
        assert!(cross_site_(&h(&[host, ("sec-fetch-site", "cross-site")]), &uri).is_some());
        assert!(cross_site_(&h(&[("origin", "http://127.0.0.1:9201")]), &uri).is_some(), "no Host to compare");
        // DNS rebinding: the page's own name now points here; its Host is not one of ours.
        let local = ["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        let rebound = h(&[("host", "evil.example:9201"), ("origin", "http://evil.example:9201")]);
        assert!(cross_site(&rebound, &uri, &local).is_some());
        assert!(cross_site(&rebound, &uri, &[]).is_none(), "no allowed_hosts: any host");
        let own = h(&[host, ("origin", "http://127.0.0.1:9201")]);
        assert!(cross_site(&own, &uri, &local).is_none());
        let v6 = h(&[("host", "[::1]:9201"), ("origin", "http://[::1]:9201")]);
        assert!(cross_site(&v6, &uri, &local).is_none());
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
