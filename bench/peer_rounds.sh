#!/usr/bin/env bash
# The peer bench in rounds: the broker demo, bench/peer_stack_floor.py (Starlette and Authlib
# with nothing of the broker's own), bench/peer_floor.py (bare uvicorn) and
# node-oidc-provider, pinned and loaded exactly as ../shared/peer-bench/run.sh does (servers on CPU 0, its undici
# load generator on CPU 1), but measured in ROUNDS short rounds whose order rotates, and
# summed up by the median of each round's ratios.
#
# Why: on a shared machine the speed of CPU 0 drifts by up to 2x within a minute, so one
# broker window beside one peer window 8 s later gives ratios anywhere from 0.6 to 1.5 for
# the same code. Ratios taken within one round (four windows a few seconds apart) and
# their median over rounds move far less. run.sh stays the reference; this is how to tell
# whether a change moved the ratio at all.
#
# Run from the project root after `make` has built .venv and run.sh has installed the peer
# once:   bash bench/peer_rounds.sh [ROUNDS=7] [SECONDS=4] [CONCURRENCY=32] [MODES="refresh cc jwks"]
# With STACK_DURABLE=1 the stack floor keeps its refresh tokens in SQLite and writes an
# access and an audit line per request (`peer_stack_floor.py --durable --log`).
set -euo pipefail
rounds=${1:-7}; secs=${2:-4}; conc=${3:-32}; modes=${4:-refresh cc jwks}
work=$HOME/.cache/peer-bench
[[ -d $work/node_modules ]] || { echo "run ../shared/peer-bench/run.sh once first" >&2; exit 1; }
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p=$(port); q=$(port); s=$(port); f=$(port); pp=$(port); dd=$(mktemp -d)
taskset -c 0 .venv/bin/token-broker demo --host 127.0.0.1 --port "$p" --shotgrid-port "$q" \
  --data-dir "$dd/data" >"$dd/broker.log" 2>&1 & b=$!
stack_args=()
[[ ${STACK_DURABLE:-0} == 1 ]] && stack_args=(--durable "$dd/stack.db" --log "$dd/stack-lines.log")
taskset -c 0 .venv/bin/python bench/peer_stack_floor.py --port "$s" "${stack_args[@]}" \
  >"$dd/stack.log" 2>&1 & st=$!
taskset -c 0 .venv/bin/python bench/peer_floor.py --port "$f" >"$dd/floor.log" 2>&1 & fl=$!
(cd "$work" && exec taskset -c 0 node peer.mjs --port "$pp" >"$dd/peer.log" 2>&1) & n=$!
trap 'kill $b $st $fl $n 2>/dev/null; rm -rf "$dd"' EXIT
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$p/jwks.json" >/dev/null && curl -sf "http://127.0.0.1:$s/jwks.json" >/dev/null \
    && curl -sf "http://127.0.0.1:$f/jwks.json" >/dev/null \
    && curl -sf "http://127.0.0.1:$pp/jwks.json" >/dev/null && break
  sleep 0.2
done
declare -A port_of=([broker]=$p [stack]=$s [floor]=$f [peer]=$pp)
order=(broker stack floor peer)
out=$dd/rounds.jsonl
for r in $(seq 1 "$rounds"); do
  for mode in $modes; do
    for who in "${order[@]}"; do
      rps=$(cd "$work" && taskset -c 1 node load.mjs --issuer "http://127.0.0.1:${port_of[$who]}" \
        --mode "$mode" --concurrency "$conc" --seconds "$secs")
      printf '{"round":%d,"mode":"%s","who":"%s","result":%s}\n' "$r" "$mode" "$who" "$rps" >>"$out"
    done
  done
  order=("${order[@]:1}" "${order[0]}")  # rotate: nobody is always measured first
done
python3 - "$out" <<'PY'
import json, statistics, sys
from collections import defaultdict
runs = defaultdict(dict)
errors = defaultdict(int)
for line in open(sys.argv[1]):
    row = json.loads(line)
    runs[(row["mode"], row["round"])][row["who"]] = row["result"]["rps"]
    errors[row["who"]] += row["result"]["errors"]
modes = list(dict.fromkeys(mode for mode, _ in runs))
who = ("broker", "stack", "floor")
print(f"{'mode':<8} {'round':>5} {'broker/s':>9} {'stack/s':>9} {'floor/s':>9} {'peer/s':>9}"
      f" {'b/peer':>7} {'s/peer':>7} {'f/peer':>7}")
summary = []
for mode in modes:
    ratios = defaultdict(list)
    for (m, rnd), got in sorted(runs.items()):
        if m != mode:
            continue
        peer = got["peer"]
        for w in who:
            ratios[w].append(got[w] / peer)
        ratios["b/s"].append(got["broker"] / got["stack"])
        print(f"{mode:<8} {rnd:>5} " + " ".join(f"{got[w]:>9.0f}" for w in (*who, "peer")) + " "
              + " ".join(f"{got[w] / peer:>7.2f}" for w in who))
    med = {k: statistics.median(v) for k, v in ratios.items()}
    summary.append(
        f"{mode:<8} median / peer: broker {med['broker']:.2f} (range {min(ratios['broker']):.2f}-"
        f"{max(ratios['broker']):.2f}), stack floor {med['stack']:.2f}, floor {med['floor']:.2f};"
        f" broker / stack floor {med['b/s']:.2f}"
    )
print("\n".join(summary))
if any(errors.values()):
    print("errors:", dict(errors))
PY
