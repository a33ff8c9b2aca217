"""Drives toolwatch's MCP server with the Python `mcp` client (PyPI mcp 2.3).

usage: mcp_client.py MODE URL             (Streamable HTTP; MODE is legacy or auto)
       mcp_client.py MODE -- CMD ARGS...  (stdio: launches CMD)
Exits non-zero with the reason when anything an agent relies on is wrong.
"""
import asyncio
import json
import sys

from mcp import Client
from mcp.client.stdio import StdioServerParameters

TOOLS = ["alerts", "label_names", "label_values", "list_metrics", "probe_status", "query", "query_range",
         "rules", "series", "tool_health", "tsdb_status"]


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}", file=sys.stderr)
        sys.exit(1)


async def main(mode, server):
    async with Client(server, mode=mode) as c:
        tools = (await c.list_tools()).tools
        check(sorted(t.name for t in tools) == TOOLS, f"tool names: {[t.name for t in tools]}")
        for t in tools:
            check(t.annotations is not None and t.annotations.read_only_hint is True, f"{t.name} read-only")
            check(t.output_schema is not None, f"{t.name} outputSchema")

        r = await c.call_tool("query", {"query": "sum by (tool) (rate(mcp_tool_calls_total{job=\"demo\"}[5m]))"})
        check(not r.is_error, f"query failed: {r.content}")
        tools_seen = sorted(x["metric"]["tool"] for x in r.structured_content["result"])
        check(tools_seen == ["fetch", "search"], f"query result {r.structured_content}")
        check(json.loads(r.content[0].text) == r.structured_content, "text block repeats structuredContent")

        r = await c.call_tool("query_range", {"query": "mcp_tool_calls_total", "start": "now-10m"})
        check(not r.is_error and r.structured_content["result_type"] == "matrix", f"query_range {r.content}")

        r = await c.call_tool("query", {"query": "sum(rate(mcp_tool_calls_total[5m]"})
        check(r.is_error and "Hint" in r.content[0].text, f"bad PromQL: {r.content}")

        r = await c.call_tool("query", {"query": "mcp_tool_call_total"})
        check(r.is_error and "mcp_tool_calls_total" in r.content[0].text, f"unknown metric: {r.content}")

        r = await c.call_tool("tool_health", {"window": "5m"})
        check(not r.is_error, f"tool_health {r.content}")
        health = {t["tool"]: t for t in r.structured_content["tools"] if t["source"] == "mcp_tool_calls_total"}
        check(abs(health["search"]["current"]["error_ratio"] - 0.25) < 1e-9, f"search error ratio {health}")

        for name, args in [("list_metrics", {"filter": "mcp"}), ("label_names", {}), ("label_values", {"label": "tool"}),
                           ("series", {"match": ["mcp_tool_calls_total"]}), ("alerts", {}), ("rules", {}),
                           ("probe_status", {}), ("tsdb_status", {})]:
            r = await c.call_tool(name, args)
            check(not r.is_error and r.structured_content is not None, f"{name}: {r.content}")

        try:
            await c.call_tool("no_such_tool", {})
            check(False, "unknown tool must be a JSON-RPC error")
        except Exception as e:  # the client raises for JSON-RPC errors
            check("not found" in str(e) or "-32602" in str(e), f"unknown tool error: {e!r}")

        res = (await c.list_resources()).resources
        check("toolwatch://metrics" in [str(x.uri) for x in res], f"resources {res}")
        body = await c.read_resource("toolwatch://metrics")
        check("mcp_tool_calls_total" in body.contents[0].text, "metric catalog")
        prompts = sorted(p.name for p in (await c.list_prompts()).prompts)
        check(prompts == ["investigate_alert", "slow_tool", "tool_health_report"], f"prompts {prompts}")
        p = await c.get_prompt("slow_tool", {"tool": "search"})
        check("search" in p.messages[0].content.text, "prompt text")
    print(f"OK {mode}")


if __name__ == "__main__":
    mode = sys.argv[1]
    if sys.argv[2] == "--":
        server = StdioServerParameters(command=sys.argv[3], args=sys.argv[4:])
    else:
        server = sys.argv[2]
    asyncio.run(main(mode, server))
