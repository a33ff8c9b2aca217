#!/usr/bin/env bash
# Ingest side by side in one run: VictoriaMetrics (Debian 1.79) and toolwatch, each fed by the
# shared rwload generator (../shared/peers/rwload) with the same scenarios, interleaved per run.
# Prints samples/s, CPU-seconds per 1M samples and peak RSS per peer and scenario.
#   bash benches/scripts/ingest_side_by_side.sh [RUNS]        (needs ../shared/peers/setup.sh once)
# bench.py itself also verifies through /api/v1/query, which toolwatch does not serve yet.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="$ROOT/../shared/peers"
RUNS="${1:-2}"
RWLOAD="${RWLOAD:-$PEERS/rwload/target/release/rwload}"
[[ -x "$RWLOAD" ]] || (cd "$PEERS/rwload" && cargo build --release --quiet)
(cd "$ROOT" && cargo build --release --quiet --bin toolwatch)
TW="$ROOT/target/release/toolwatch"
WORK=$(mktemp -d /tmp/tw-side-by-side.XXXX)
printf '%-16s %-12s %4s %14s %14s %10s\n' peer scenario run samples/s cpu-s/1M rss-MiB
for sc in 10000x120 100000x30; do
  series=${sc%x*}; steps=${sc#*x}
  for run in $(seq 1 "$RUNS"); do
    for peer in victoria-metrics toolwatch; do
      dir="$WORK/$peer-$sc-$run"; port=$((19400 + RANDOM % 500))
      if [[ $peer == toolwatch ]]; then
        "$TW" --listen "127.0.0.1:$port" --data-dir "$dir" 2>"$dir.log" & pid=$!
        until curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null; do sleep 0.1; done
      else
        pid=$("$PEERS/start_peer.sh" victoria-metrics "$port" "$dir" 2>/dev/null | tail -1)
      fi
      out=$("$RWLOAD" --url "http://127.0.0.1:$port/api/v1/write" --series "$series" --samples-per-series "$steps" --peer-pid "$pid" 2>&1)
      sps=$(grep -o 'samples_per_s=[0-9]*' <<<"$out" | cut -d= -f2)
      cpu=$(grep -o '[0-9.]* cpu-s per 1M' <<<"$out" | cut -d' ' -f1)
      rss=$(grep -o 'VmHWM=[0-9.]*' <<<"$out" | cut -d= -f2)
      printf '%-16s %-12s %4s %14s %14s %10s\n' "$peer" "$sc" "$run" "$sps" "$cpu" "$rss"
      if [[ $peer == toolwatch ]]; then kill "$pid"; wait "$pid" 2>/dev/null || true; else "$PEERS/stop_peer.sh" "$pid" >/dev/null; fi
    done
  done
done
rm -rf "$WORK"
