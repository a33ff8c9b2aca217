#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine (idempotent):
#   prometheus (2.42, Debian) — the real remote-write client in tests/e2e/prometheus_e2e.rs, the
#     reference in tests/e2e/promql_differential.rs, and promtool;
#   prometheus-alertmanager (0.25, Debian) — the real notification target in tests/e2e/alerting_e2e.rs;
#   the Python MCP client (PyPI mcp 2.3.0) — a real MCP client in tests/e2e/mcp_clients.rs;
#   openssl — a private CA and certificate for the https:// targets in tests/e2e/probes_e2e.rs.
# No service is started, so none needs stopping: a temporary policy-rc.d (exit 101) tells apt's
# maintainer scripts (invoke-rc.d, deb-systemd-invoke) not to start them. An existing policy-rc.d
# is left as it is. Nothing here stops or kills processes: on a host that already runs a
# Prometheus or Alertmanager, those are never touched (the tests start their own on free ports
# and stop them by PID).
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
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    # Removed however the install ends, so the host's services start normally afterwards.
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $SUDO apt-get update -qq || $SUDO apt-get update
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}"
fi
python3 -c 'import mcp' 2>/dev/null && [[ $(python3 -c 'import importlib.metadata as m; print(m.version("mcp"))') == 2.3.0 ]] \
  || python3 -m pip install --quiet --disable-pip-version-check "mcp==2.3.0"
echo "test deps: $(/usr/bin/prometheus --version 2>&1 | head -1); $(/usr/bin/prometheus-alertmanager --version 2>&1 | head -1)"
