#!/usr/bin/env bash
# bench/peer_floor.py beside node-oidc-provider, exactly as ../shared/peer-bench/run.sh sets
# the broker beside it (the same pinning, load generator and modes): the floor ratio, the
# most any Python service on uvicorn and cryptography reaches against the peer on this
# machine. Run from the project root after `make` has built .venv and run.sh has installed
# the peer once:   bash bench/peer_floor.sh [SECONDS=8] [CONCURRENCY=32]
set -euo pipefail
secs=${1:-8}; conc=${2:-32}
work=$HOME/.cache/peer-bench
[[ -d $work/node_modules ]] || { echo "run ../shared/peer-bench/run.sh once first" >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p=$(port); pp=$(port); dd=$(mktemp -d)
taskset -c 0 .venv/bin/python bench/peer_floor.py --port "$p" >"$dd/floor.log" 2>&1 & b=$!
(cd "$work" && exec taskset -c 0 node peer.mjs --port "$pp" >"$dd/peer.log" 2>&1) & n=$!
trap 'kill $b $n 2>/dev/null; rm -rf "$dd"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p/jwks.json" >/dev/null && curl -sf "http://127.0.0.1:$pp/jwks.json" >/dev/null && break; sleep 0.2; done
printf '%-8s %10s %10s %18s %18s %7s\n' mode floor/s peer/s "floor p50/p99" "peer p50/p99" ratio
for mode in refresh cc jwks; do
  rb=$(cd "$work" && taskset -c 1 node load.mjs --issuer "http://127.0.0.1:$p" --mode "$mode" --concurrency "$conc" --seconds "$secs")
  rp=$(cd "$work" && taskset -c 1 node load.mjs --issuer "http://127.0.0.1:$pp" --mode "$mode" --concurrency "$conc" --seconds "$secs")
  python3 - "$mode" "$rb" "$rp" <<'PY'
import json, sys
m, b, p = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
r = b["rps"] / p["rps"] if p["rps"] else 0
print(f"{m:<8} {b['rps']:>10} {p['rps']:>10} {b['p50_ms'] + '/' + b['p99_ms']:>18} {p['p50_ms'] + '/' + p['p99_ms']:>18} {r:>7.2f}" + ("" if b["errors"] == p["errors"] == 0 else f"  errors floor {b['errors']} peer {p['errors']}"))
PY
done
