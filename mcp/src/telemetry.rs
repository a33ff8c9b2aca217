//! The MCP server's own telemetry, in OpenTelemetry's MCP conventions (Prometheus form), so
//! `tool_health` can answer about toolwatch's own tools like any other server's.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// OpenTelemetry's `mcp.server.operation.duration` attributes. Empty values are dropped when the
/// series is stored, as Prometheus drops empty labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub mcp_method_name: String,
    pub gen_ai_tool_name: String,
    pub error_type: String,
    pub mcp_protocol_version: String,
    pub network_transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolCallLabels {
    pub tool: String,
    pub status: String,
}

/// The bucket bounds OpenTelemetry's MCP conventions recommend.
pub const BUCKETS: [f64; 14] = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

#[derive(Clone)]
pub struct McpMetrics {
    pub operations: Family<OperationLabels, Histogram>,
    pub tool_calls: Family<ToolCallLabels, Counter>,
}

impl McpMetrics {
    pub fn register(registry: &mut Registry) -> McpMetrics {
        let operations =
            Family::<OperationLabels, Histogram>::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied()));
        let tool_calls = Family::<ToolCallLabels, Counter>::default();
        registry.register(
            "mcp_server_operation_duration_seconds",
            "Duration of MCP requests served by toolwatch (OpenTelemetry mcp.server.operation.duration)",
            operations.clone(),
        );
        registry.register(
            "toolwatch_mcp_tool_calls",
            "MCP tool calls served by toolwatch, by outcome",
            tool_calls.clone(),
        );
        McpMetrics { operations, tool_calls }
    }

    /// For callers that do not expose the metrics anywhere (tests, one-off servers).
    pub fn unregistered() -> McpMetrics {
        McpMetrics::register(&mut Registry::default())
    }

    pub fn observe(&self, labels: OperationLabels, seconds: f64) {
        if !labels.gen_ai_tool_name.is_empty() {
            let status = match labels.error_type.as_str() {
                "" => "ok",
                "tool_error" => "tool_error",
                _ => "error",
            };
            self.tool_calls
                .get_or_create(&ToolCallLabels { tool: labels.gen_ai_tool_name.clone(), status: status.into() })
                .inc();
        }
        self.operations.get_or_create(&labels).observe(seconds);
    }
}
