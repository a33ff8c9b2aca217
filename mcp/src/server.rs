//! The MCP surface: tool definitions (descriptions, schemas, annotations), resources, prompts,
//! and the measuring of every request. The tools' work is in `tools.rs`.

use crate::telemetry::OperationLabels;
use crate::tools::*;
use crate::Backend;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::tool::ToolCallContext;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::{tool, tool_router, ErrorData as McpError, RoleServer, ServerHandler};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One MCP server instance (one per HTTP session, one for stdio) over the shared backend.
#[derive(Clone)]
pub struct ToolwatchMcp {
    b: Arc<Backend>,
    /// OpenTelemetry's `network.transport`: `tcp` for Streamable HTTP, `pipe` for stdio.
    transport: &'static str,
    tool_router: ToolRouter<Self>,
}

fn out<T>(r: ToolResult<T>) -> Result<Json<T>, CallToolResult> {
    r.map(Json).map_err(|e| CallToolResult::error(vec![ContentBlock::text(e.0)]))
}

const INSTRUCTIONS: &str = "toolwatch stores MCP tool telemetry (Prometheus data model) and answers PromQL. \
Start with tool_health for per-tool calls/s, error ratio and latency; list_metrics and label_values to discover \
what is stored; query/query_range for anything else; alerts and rules for what is firing; probe_status for \
servers probed from outside.";

#[tool_router]
impl ToolwatchMcp {
    pub fn new(b: Arc<Backend>, transport: &'static str) -> ToolwatchMcp {
        ToolwatchMcp { b, transport, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Evaluate a PromQL expression at one instant (default now). Returns Prometheus' result shape; \
large answers are cut to a budget with per-series summaries and a hint. \
Example: {\"query\": \"sum by (tool) (rate(mcp_tool_calls_total[5m]))\"}",
        annotations(title = "PromQL instant query", read_only_hint = true, open_world_hint = false)
    )]
    async fn query(
        &self,
        Parameters(a): Parameters<QueryArgs>,
        ct: CancellationToken,
    ) -> Result<Json<crate::budget::QueryOutput>, CallToolResult> {
        out(self.b.query(a, &ct).await)
    }

    #[tool(
        description = "Evaluate a PromQL expression over a time range (default the last hour; the step is chosen \
for about 120 points when omitted). Large answers are cut to a budget with per-series summaries. \
Example: {\"query\": \"histogram_quantile(0.95, sum by (le, tool) (rate(mcp_tool_latency_seconds_bucket[5m])))\", \"start\": \"now-6h\", \"step\": \"5m\"}",
        annotations(title = "PromQL range query", read_only_hint = true, open_world_hint = false)
    )]
    async fn query_range(
        &self,
        Parameters(a): Parameters<QueryRangeArgs>,
        ct: CancellationToken,
    ) -> Result<Json<crate::budget::QueryOutput>, CallToolResult> {
        out(self.b.query_range(a, &ct).await)
    }

    #[tool(
        description = "List stored metric names with type, help and unit (from remote-write metadata) and their \
series count; filter by substring or regex, paginate with cursor. Example: {\"filter\": \"mcp_tool\"}",
        annotations(title = "List metrics", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_metrics(
        &self,
        Parameters(a): Parameters<ListMetricsArgs>,
        ct: CancellationToken,
    ) -> Result<Json<ListMetricsOutput>, CallToolResult> {
        out(self.b.list_metrics(a, &ct).await)
    }

    #[tool(
        description = "List label names, optionally only of series matching selectors and within a time range. \
Example: {\"match\": [\"mcp_tool_calls_total\"]}",
        annotations(title = "Label names", read_only_hint = true, open_world_hint = false)
    )]
    async fn label_names(
        &self,
        Parameters(a): Parameters<LabelsArgs>,
        ct: CancellationToken,
    ) -> Result<Json<StringsOutput>, CallToolResult> {
        out(self.b.label_names(a, &ct).await)
    }

    #[tool(
        description = "List the values of one label, optionally only of series matching selectors and within a \
time range. Example: {\"label\": \"tool\", \"match\": [\"mcp_tool_calls_total\"]}",
        annotations(title = "Label values", read_only_hint = true, open_world_hint = false)
    )]
    async fn label_values(
        &self,
        Parameters(a): Parameters<LabelValuesArgs>,
        ct: CancellationToken,
    ) -> Result<Json<StringsOutput>, CallToolResult> {
        out(self.b.label_values(a, &ct).await)
    }

    #[tool(
        description = "List the label sets of series matching selectors. \
Example: {\"match\": [\"mcp_tool_calls_total{status=\\\"error\\\"}\"], \"limit\": 20}",
        annotations(title = "Find series", read_only_hint = true, open_world_hint = false)
    )]
    async fn series(
        &self,
        Parameters(a): Parameters<SeriesArgs>,
        ct: CancellationToken,
    ) -> Result<Json<SeriesOutput>, CallToolResult> {
        out(self.b.series(a, &ct).await)
    }

    #[tool(
        description = "Health of every MCP tool seen (or one): calls/s, error ratio, p50/p95/p99 latency over a \
window and the change against the window before, worst first. Reads mcp_tool_calls_total{tool,status} with \
mcp_tool_latency_seconds and OpenTelemetry's mcp_server_operation_duration_seconds{gen_ai_tool_name,error_type}. \
Example: {\"window\": \"1h\"} or {\"tool\": \"search\", \"window\": \"15m\"}",
        annotations(title = "Tool health", read_only_hint = true, open_world_hint = false)
    )]
    async fn tool_health(
        &self,
        Parameters(a): Parameters<ToolHealthArgs>,
        ct: CancellationToken,
    ) -> Result<Json<ToolHealthOutput>, CallToolResult> {
        out(self.b.tool_health(a, &ct).await)
    }

    #[tool(
        description = "Active alerts (pending and firing) with labels, annotations, activeAt and value. \
Example: {\"state\": \"firing\"}",
        annotations(title = "Active alerts", read_only_hint = true, open_world_hint = false)
    )]
    async fn alerts(&self, Parameters(a): Parameters<AlertsArgs>) -> Result<Json<AlertsOutput>, CallToolResult> {
        out(self.b.alerts(a))
    }

    #[tool(
        description = "Alerting and recording rule groups with each rule's query, health and last error. \
Example: {\"type\": \"alert\"}",
        annotations(title = "Rules", read_only_hint = true, open_world_hint = false)
    )]
    async fn rules(&self, Parameters(a): Parameters<RulesArgs>) -> Result<Json<RulesOutput>, CallToolResult> {
        out(self.b.rules(a))
    }

    #[tool(
        description = "Latest outside-in probe result per MCP server: state (up, down, auth_required, \
protocol_error, timeout), success, duration, tool count, schema changes, server info. \
Example: {\"target\": \"search\"}",
        annotations(title = "Probe status", read_only_hint = true, open_world_hint = false)
    )]
    async fn probe_status(
        &self,
        Parameters(a): Parameters<ProbeStatusArgs>,
        ct: CancellationToken,
    ) -> Result<Json<ProbeStatusOutput>, CallToolResult> {
        out(self.b.probe_status(a, &ct).await)
    }

    #[tool(
        description = "Storage cardinality: series count, top metrics, label names and label pairs by series. \
Example: {\"limit\": 5}",
        annotations(title = "TSDB status", read_only_hint = true, open_world_hint = false)
    )]
    async fn tsdb_status(
        &self,
        Parameters(a): Parameters<TsdbStatusArgs>,
        ct: CancellationToken,
    ) -> Result<Json<TsdbStatusOutput>, CallToolResult> {
        out(self.b.tsdb_status(a, &ct).await)
    }
}

impl ToolwatchMcp {
    /// Times one request and records it in OpenTelemetry's form; `outcome` classifies a
    /// successful response (a tool result with `isError` is a `tool_error`).
    async fn measured<T>(
        &self,
        method: &str,
        tool: &str,
        version: Option<ProtocolVersion>,
        fut: impl Future<Output = Result<T, McpError>>,
        outcome: impl Fn(&T) -> Option<&'static str>,
    ) -> Result<T, McpError> {
        let began = Instant::now();
        let r = fut.await;
        let error_type = match &r {
            Ok(v) => outcome(v).unwrap_or("").to_string(),
            Err(e) => e.code.0.to_string(),
        };
        self.b.metrics.observe(
            OperationLabels {
                mcp_method_name: method.to_string(),
                gen_ai_tool_name: tool.to_string(),
                error_type,
                // The client chooses this string (initialize's protocolVersion): bounded as the
                // proxy bounds it, so clients cannot grow the series count at will.
                mcp_protocol_version: version.map(|v| crate::proxy::version_label(v.as_str())).unwrap_or_default(),
                network_transport: self.transport.to_string(),
            },
            began.elapsed().as_secs_f64(),
        );
        r
    }

    fn resource_list(&self) -> Vec<Resource> {
        let mut v: Vec<Resource> = vec![
            serde_json::from_value(serde_json::json!({
                "uri": "toolwatch://metrics", "name": "metrics", "title": "Metric catalog",
                "description": "Every stored metric name with type, help, unit and series count (JSON)",
                "mimeType": "application/json"
            }))
            .expect("resource"),
            serde_json::from_value(serde_json::json!({
                "uri": "toolwatch://alerts", "name": "alerts", "title": "Active alerts",
                "description": "Pending and firing alerts (JSON)", "mimeType": "application/json"
            }))
            .expect("resource"),
        ];
        for f in self.b.rules.as_ref().map(|r| r.rule_files()).unwrap_or_default() {
            let name = f.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            v.push(
                serde_json::from_value(serde_json::json!({
                    "uri": format!("toolwatch://rules/{name}"), "name": format!("rules/{name}"),
                    "title": format!("Rule file {name}"), "description": format!("Rule file {}", f.display()),
                    "mimeType": "application/yaml"
                }))
                .expect("resource"),
            );
        }
        v
    }

    async fn read(&self, uri: &str, ct: &CancellationToken) -> Result<ReadResourceResult, McpError> {
        let json = |v: serde_json::Value| {
            ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                uri: uri.to_string(),
                mime_type: Some("application/json".into()),
                text: serde_json::to_string_pretty(&v).unwrap_or_default(),
                meta: None,
            }])
        };
        let failed = |e: ToolError| McpError::internal_error(e.0, None);
        if uri == "toolwatch://metrics" {
            let m = self
                .b
                .list_metrics(ListMetricsArgs { filter: None, regex: false, limit: Some(1000), cursor: None }, ct)
                .await
                .map_err(failed)?;
            return Ok(json(serde_json::to_value(m).unwrap_or_default()));
        }
        if uri == "toolwatch://alerts" {
            let a = self.b.alerts(AlertsArgs { state: None }).map_err(failed)?;
            return Ok(json(serde_json::to_value(a).unwrap_or_default()));
        }
        if let Some(name) = uri.strip_prefix("toolwatch://metric/") {
            let filter = format!("^{}$", regex::escape(name));
            let m = self
                .b
                .list_metrics(ListMetricsArgs { filter: Some(filter), regex: true, limit: Some(1), cursor: None }, ct)
                .await
                .map_err(failed)?;
            let Some(info) = m.metrics.into_iter().next() else {
                return Err(McpError::resource_not_found(format!("no metric named {name:?}"), None));
            };
            let labels = self
                .b
                .label_names(
                    LabelsArgs {
                        matchers: vec![format!("{{__name__={:?}}}", name)],
                        start: None,
                        end: None,
                        limit: Some(100),
                    },
                    ct,
                )
                .await
                .map_err(failed)?;
            return Ok(json(serde_json::json!({"metric": info, "labels": labels.values})));
        }
        if let Some(name) = uri.strip_prefix("toolwatch://rules/") {
            let files = self.b.rules.as_ref().map(|r| r.rule_files()).unwrap_or_default();
            if let Some(f) = files.iter().find(|f| f.file_name().is_some_and(|n| n.to_string_lossy() == name)) {
                let text = std::fs::read_to_string(f).map_err(|e| McpError::internal_error(e.to_string(), None))?;
                return Ok(ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
                    uri: uri.to_string(),
                    mime_type: Some("application/yaml".into()),
                    text,
                    meta: None,
                }]));
            }
        }
        Err(McpError::resource_not_found(
            format!("unknown resource {uri:?}; resources/list shows what exists, and toolwatch://metric/{{name}} reads one metric"),
            None,
        ))
    }

    fn prompt_list() -> Vec<Prompt> {
        serde_json::from_value(serde_json::json!([
            {"name": "investigate_alert", "title": "Investigate an alert",
             "description": "Walk through an alert: its rule, current value, the tools involved and their recent health",
             "arguments": [{"name": "alertname", "description": "The alert's name, e.g. MCPToolErrorRateHigh", "required": true}]},
            {"name": "tool_health_report", "title": "Tool health report",
             "description": "A short report on every MCP tool's calls, errors and latency over a window",
             "arguments": [{"name": "window", "description": "Window length, e.g. 1h (default 1h)", "required": false}]},
            {"name": "slow_tool", "title": "Why is this tool slow?",
             "description": "Investigate one tool's latency: quantiles over time, error share, and what changed",
             "arguments": [{"name": "tool", "description": "The tool name, e.g. search", "required": true}]}
        ]))
        .expect("prompts")
    }

    fn prompt(
        &self,
        name: &str,
        args: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<GetPromptResult, McpError> {
        let arg = |k: &str| args.get(k).and_then(|v| v.as_str()).map(str::to_string);
        let need = |k: &str| {
            arg(k).ok_or_else(|| McpError::invalid_params(format!("prompt {name} needs argument {k:?}"), None))
        };
        let text = match name {
            "investigate_alert" => {
                let alert = need("alertname")?;
                let rule = self.b.rules.as_ref().and_then(|r| {
                    let v = r.rules_json(Some("alert")).ok()?;
                    v["groups"]
                        .as_array()?
                        .iter()
                        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                        .find(|r| r["name"] == alert.as_str())
                });
                let rule_text = match &rule {
                    Some(r) => format!(
                        "Its rule: `{}` (for {}s), state {}, health {}. Active instances:\n{}",
                        r["query"].as_str().unwrap_or(""),
                        r["duration"],
                        r["state"].as_str().unwrap_or(""),
                        r["health"].as_str().unwrap_or(""),
                        serde_json::to_string_pretty(&r["alerts"]).unwrap_or_default()
                    ),
                    None => {
                        format!("No alerting rule named {alert:?} is loaded; call the rules tool to see which are.")
                    }
                };
                format!(
                    "Investigate the alert {alert:?}.\n{rule_text}\n\nSteps: 1) call alerts to see its labels and value; \
                     2) run its query with query_range over the last hour to see when it started; 3) call tool_health \
                     (window 15m) for the tools and targets in its labels; 4) check probe_status for the target; \
                     5) summarize cause, impact and what to do next."
                )
            }
            "tool_health_report" => {
                let window = arg("window").unwrap_or_else(|| "1h".into());
                format!(
                    "Write a short health report of the MCP tools over the last {window}. Call tool_health with \
                     window {window:?}; for the worst three tools run query_range on their error ratio and p95 latency; \
                     call alerts for anything firing. Report per tool: calls/s, error ratio, p95, and the change \
                     against the previous {window}, worst first."
                )
            }
            "slow_tool" => {
                let tool = need("tool")?;
                format!(
                    "Find out why the MCP tool {tool:?} is slow. Call tool_health with tool {tool:?} and window 1h; \
                     run query_range with histogram_quantile(0.95, sum by (le) (rate(mcp_tool_latency_seconds_bucket{{tool={tool:?}}}[5m]))) \
                     (or mcp_server_operation_duration_seconds_bucket{{gen_ai_tool_name={tool:?}}}) over 6h; compare \
                     with its call rate and error ratio over the same range; say when it got slower and what changed."
                )
            }
            other => {
                return Err(McpError::invalid_params(
                    format!("unknown prompt {other:?}; prompts: investigate_alert, tool_health_report, slow_tool"),
                    None,
                ))
            }
        };
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)]))
    }
}

/// rmcp reports arguments that do not fit a tool's input schema as a tool error; toolwatch
/// answers them as the JSON-RPC error -32602 (invalid params), as it does for unknown tools, so
/// a client sees at once that the request, not the data, was wrong.
fn malformed_arguments_as_protocol_error(
    tool: &str,
    r: Result<CallToolResponse, McpError>,
) -> Result<CallToolResponse, McpError> {
    if let Ok(CallToolResponse::Complete(c)) = &r {
        let text = c.content.first().and_then(|b| b.as_text()).map(|t| t.text.as_str()).unwrap_or("");
        if c.is_error == Some(true) && text.starts_with("failed to deserialize parameters:") {
            return Err(McpError::invalid_params(
                format!("invalid arguments for tool {tool:?}: {text}; see the tool's inputSchema (tools/list)"),
                None,
            ));
        }
    }
    r
}

fn tool_outcome(r: &CallToolResponse) -> Option<&'static str> {
    match r {
        CallToolResponse::Complete(r) if r.is_error == Some(true) => Some("tool_error"),
        _ => None,
    }
}

impl ServerHandler for ToolwatchMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().enable_prompts().build())
            .with_server_info(
                Implementation::new("toolwatch", self.b.version)
                    .with_description("Time-series store and alerting engine for MCP telemetry"),
            )
            .with_instructions(INSTRUCTIONS)
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        let v = Some(request.protocol_version.clone());
        self.measured(
            "initialize",
            "",
            v,
            async {
                context.peer.set_peer_info(request.clone());
                self.negotiate_initialize(&request)
            },
            |_| None,
        )
        .await
    }

    async fn discover(&self, context: RequestContext<RoleServer>) -> Result<DiscoverResult, McpError> {
        let v = context.protocol_version();
        self.measured(
            "server/discover",
            "",
            v,
            async {
                Ok(DiscoverResult::from_server_info(self.supported_protocol_versions().into_owned(), self.get_info()))
            },
            |_| None,
        )
        .await
    }

    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), McpError> {
        self.measured("ping", "", context.protocol_version(), async { Ok(()) }, |_| None).await
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let v = context.protocol_version();
        let modern = v.as_ref().is_some_and(|v| *v >= ProtocolVersion::V_2026_07_28);
        self.measured(
            "tools/list",
            "",
            v,
            async {
                let mut tools = self.tool_router.list_all();
                // Deterministic order, as the 2026-07-28 revision asks of tools/list.
                tools.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(ListToolsResult {
                    result_type: Some(ResultType::COMPLETE),
                    tools,
                    meta: None,
                    next_cursor: None,
                    ttl_ms: modern.then_some(0),
                    cache_scope: modern.then_some(CacheScope::Public),
                })
            },
            |_| None,
        )
        .await
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tool_router.get(name).cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let v = context.protocol_version();
        let name = request.name.to_string();
        // Only names of real tools become label values: unknown names from clients must not
        // grow the series count.
        let label = if self.tool_router.has_route(&name) { name.clone() } else { "_unknown".to_string() };
        let ct = context.ct.clone();
        let timeout = self.b.opts.tool_timeout + std::time::Duration::from_secs(1);
        self.measured(
            "tools/call",
            &label,
            v,
            async {
                let tcc = ToolCallContext::new(self, request, context);
                let r = tokio::select! {
                    r = tokio::time::timeout(timeout, self.tool_router.call(tcc)) => r.unwrap_or_else(|_| {
                        Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                            "tool {name:?} ran past mcp.tool_timeout ({:?}); narrow the request", self.b.opts.tool_timeout
                        ))]).into())
                    }),
                    _ = ct.cancelled() => Err(McpError::internal_error("request canceled", None)),
                };
                malformed_arguments_as_protocol_error(&name, r)
            },
            tool_outcome,
        )
        .await
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        self.measured(
            "resources/list",
            "",
            context.protocol_version(),
            async { Ok(ListResourcesResult::with_all_items(self.resource_list())) },
            |_| None,
        )
        .await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        self.measured(
            "resources/templates/list",
            "",
            context.protocol_version(),
            async {
                let t: ResourceTemplate = serde_json::from_value(serde_json::json!({
                    "uriTemplate": "toolwatch://metric/{name}", "name": "metric", "title": "One metric",
                    "description": "A metric's type, help, unit, series count and label names (JSON)",
                    "mimeType": "application/json"
                }))
                .expect("template");
                Ok(ListResourceTemplatesResult::with_all_items(vec![t]))
            },
            |_| None,
        )
        .await
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let ct = context.ct.clone();
        self.measured(
            "resources/read",
            "",
            context.protocol_version(),
            async { self.read(&request.uri, &ct).await.map(ReadResourceResponse::from) },
            |_| None,
        )
        .await
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        self.measured(
            "prompts/list",
            "",
            context.protocol_version(),
            async { Ok(ListPromptsResult::with_all_items(Self::prompt_list())) },
            |_| None,
        )
        .await
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        self.measured(
            "prompts/get",
            "",
            context.protocol_version(),
            async {
                let args = request.arguments.clone().unwrap_or_default();
                self.prompt(&request.name, &args).map(GetPromptResponse::from)
            },
            |_| None,
        )
        .await
    }
}
