#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent):
#   prometheus (2.42, Debian) — the real remote-write client in tests/prometheus_e2e.rs, the
#     reference in tests/promql_differential.rs, and promtool;
#   prometheus-alertmanager (0.25, Debian) — the real notification target in tests/alerting_e2e.rs;
#   the Python MCP client (PyPI mcp 2.3.0) — a real MCP client in tests/mcp_clients.rs;
#   openssl — a private CA and certificate for the https:// targets in tests/probes_e2e.rs.
# Services are never left running: a temporary policy-rc.d stops apt from starting them.
set -euo pipefail
command -v cargo >/dev/null || { echo "cargo is required (rustup.rs)" >&2; exit 1; }
PKGS=(prometheus prometheus-alertmanager openssl)
need=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if ((${#need[@]})); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  created=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    created=1
  fi
  $SUDO apt-get update -qq || $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
  ((created)) && $SUDO rm -f /usr/sbin/policy-rc.d
  for s in prometheus prometheus-node-exporter prometheus-alertmanager; do
    [[ -x "/etc/init.d/$s" ]] && { $SUDO /etc/init.d/"$s" stop >/dev/null 2>&1 || true; }
  done
  pkill -u prometheus -x prometheus 2>/dev/null || true
  pkill -u prometheus -f prometheus-node-exporter 2>/dev/null || true
  pkill -u prometheus -f prometheus-alertmanager 2>/dev/null || true
fi
python3 -c 'import mcp' 2>/dev/null && [[ $(python3 -c 'import importlib.metadata as m; print(m.version("mcp"))') == 2.3.0 ]] \
  || python3 -m pip install --quiet --disable-pip-version-check "mcp==2.3.0"
echo "test deps: $(/usr/bin/prometheus --version 2>&1 | head -1); $(/usr/bin/prometheus-alertmanager --version 2>&1 | head -1)"
