//! URLs made fit to log and to show: user-info, query string and fragment dropped.
//!
//! It lives in the lowest crate because every crate that prints a configured URL needs it:
//! ingest (the prober's targets), alerting (Alertmanagers and webhooks), mcp (proxy upstreams)
//! and the binary. Such URLs often carry a secret (`https://user:pass@host/hook?token=…`).

/// `scheme://user:pass@host:port/path?query#fragment` → `scheme://host:port/path`. Text that is
/// not quite a URL is treated the same way: anything from `?` or `#` on is dropped, and so is
/// everything up to the last `@` of the part before the first `/` after the scheme.
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let cut = url.find(['?', '#']).map_or(url, |i| &url[..i]);
    let (scheme, rest) = match cut.find("://") {
        Some(i) => cut.split_at(i + 3),
        None => ("", cut),
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn secrets_are_dropped() {
        assert_eq!(
            redact_url("https://user:pa%40ss@hooks.example:8443/a/b?token=s3cret#x"),
            "https://hooks.example:8443/a/b"
        );
        assert_eq!(redact_url("http://127.0.0.1:9093/api/v2/alerts"), "http://127.0.0.1:9093/api/v2/alerts");
        assert_eq!(redact_url("http://tok@host"), "http://host");
        assert_eq!(redact_url("host:80/x?y"), "host:80/x");
        assert_eq!(redact_url(""), "");
    }
}
