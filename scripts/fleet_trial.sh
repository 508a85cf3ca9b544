#!/usr/bin/env bash
# A one-machine fleet trial on loopback only: a head and two `x86-cpu` nodes, `fleet status`, a refused
# TensorRT join, `fleet deploy` of a bundle (a row per node), a sharded deploy, and a node killed mid-run.
# Every process is started in its own session and stopped by process group id (never `ray stop`).
#   bash scripts/fleet_trial.sh [BUNDLE]      (default /tmp/fleet-demo, made by `edgerep deploy ... --out`)
set -uo pipefail
cd "$(dirname "$0")/.."
BUNDLE=${1:-/tmp/fleet-demo}
ER=(.venv/bin/python -m edgerep)
T=$(mktemp -d /tmp/erf-XXXX)
PORT=$(.venv/bin/python -c "from edgerep.fleet.local import free_port; print(free_port())")
ADDR=127.0.0.1:$PORT
NODE=(--node-ip-address 127.0.0.1 --temp-dir "$T" --object-store-mb 100 --block)
PIDS=()
stop() { for p in "${PIDS[@]}"; do kill -TERM -- "-$p" 2>/dev/null; done; sleep 5
         for p in "${PIDS[@]}"; do kill -KILL -- "-$p" 2>/dev/null; done; rm -rf "$T"; }
trap stop EXIT
nodes() { .venv/bin/python - "$ADDR" <<'PY'
import sys
from edgerep.fleet import cluster
print(sum(1 for n in cluster.list_nodes(cluster.connect(sys.argv[1])) if n.alive and n.targets))
PY
}
run() { echo; echo "\$ edgerep $*"; "${ER[@]}" "$@"; echo "(exit $?)"; }

echo "\$ edgerep fleet up --port $PORT --node-ip-address 127.0.0.1 ... --block &"
setsid "${ER[@]}" fleet up --port "$PORT" "${NODE[@]}" > "$T/head.log" 2>&1 & PIDS+=($!)
until .venv/bin/python -c "from edgerep.fleet.cluster import reachable; import sys; sys.exit(0 if reachable('127.0.0.1', $PORT) else 1)"; do sleep 0.5; done
for i in 1 2; do
  echo "\$ edgerep fleet join --address $ADDR --target x86-cpu --num-cpus 1 ... --block &"
  setsid "${ER[@]}" fleet join --address "$ADDR" --target x86-cpu --num-cpus 1 "${NODE[@]}" > "$T/node$i.log" 2>&1 & PIDS+=($!)
  until [ "$(nodes)" -ge "$i" ]; do sleep 1; done
done
run fleet join --address "$ADDR" --target dgpu --temp-dir "$T"
run fleet status --address "$ADDR"
run fleet deploy "$BUNDLE" --address "$ADDR" --out "$T/out" --force
run fleet deploy "$BUNDLE" --address "$ADDR" --out "$T/out-shard" --force --shard
echo; echo "\$ edgerep fleet deploy $BUNDLE --address $ADDR --out $T/out-kill --bench-seconds 3 &   # then: kill node 2"
"${ER[@]}" fleet deploy "$BUNDLE" --address "$ADDR" --out "$T/out-kill" --force --bench-seconds 3 > "$T/kill.out" 2>&1 &
DEPLOY=$!
RAYLET2=$(pgrep -g "${PIDS[2]}" -f raylet/raylet | head -1)
until pgrep -P "$RAYLET2" -f "ray::run_job" >/dev/null; do sleep 0.2; done
echo "\$ kill -KILL -- -${PIDS[2]}    # node 2's process group, while its fleet job runs"
kill -KILL -- "-${PIDS[2]}"
wait "$DEPLOY"; echo "(exit $?)"; cat "$T/kill.out"
