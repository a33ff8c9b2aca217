//! The MCP proxy's watchers on arbitrary traffic (both sides are untrusted): the SSE event
//! reader and the JSON-RPC observer never panic, and leave nothing pending once told the
//! server is gone. The first byte picks how the rest is cut into messages.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prometheus_client::registry::Registry;
use toolwatch_mcp::proxy::{Observer, ProxyMetrics, TargetNames};
use toolwatch_mcp::proxy_http::SseEvents;

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else { return };
    let mut reg = Registry::default();
    let mut o = Observer::new("t", "tcp", ProxyMetrics::register(&mut reg), TargetNames::new(4));
    // Lines alternate between client and server, as on a stdio pipe pair.
    for (i, line) in rest.split(|&b| b == b'\n').enumerate() {
        if (i + how as usize) % 2 == 0 {
            o.client_message(line);
        } else {
            o.server_message(line);
        }
    }
    // The same bytes as an SSE answer, cut every `how` bytes.
    let mut sse = SseEvents::default();
    for chunk in rest.chunks(how.max(1) as usize) {
        sse.feed(chunk, |event| o.server_message(event));
    }
    o.fail_pending("-32000");
    assert_eq!(o.pending_len(), 0);
});
