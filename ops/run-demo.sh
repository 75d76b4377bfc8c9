#!/usr/bin/env bash
# Sets everything up and runs the main job on the bundled default models: builds the engine,
# uses the Redis named in the config (or starts a private redis-server when none answers
# there), starts `weaver-engine --workers 2` on ops/weaver.conf, enqueues a few embed and
# generate jobs, prints their results and stops everything it started.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash ops/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" >/dev/null
bin=build/weaver-engine
conf=ops/weaver.conf
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

port=$(awk '/^redis/,/};/' "$conf" | sed -n 's/^[[:space:]]*port[[:space:]]*=[[:space:]]*\([0-9]*\).*/\1/p')
if ! redis-cli -p "$port" ping >/dev/null 2>&1; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  echo "demo: no Redis on the configured port; starting a private redis-server on $port"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$tmp" --save "" --appendonly no >/dev/null &
  pids+=($!)
  until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  sed "s/^\([[:space:]]*port[[:space:]]*=[[:space:]]*\)[0-9]*;/\1$port;/" "$conf" > "$tmp/weaver.conf"
  conf=$tmp/weaver.conf
fi
$bin check-config --config "$conf"
$bin --config "$conf" --workers 2 > "$tmp/engine.log" 2>&1 &
pids+=($!)
until grep -q "ready:" "$tmp/engine.log"; do
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$tmp/engine.log"; exit 1; }
  sleep 0.2
done
echo "demo: engine ready; enqueueing sample jobs"
cat > "$tmp/embed.jsonl" <<'JOBS'
{"id": "demo-embed-1", "texts": ["A man is eating food.", "A man is eating a piece of bread."]}
{"id": "demo-embed-2", "text": "The new movie is awesome.", "dimensions": 8}
JOBS
cat > "$tmp/generate.jsonl" <<'JOBS'
{"id": "demo-gen-1", "messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 32}
{"id": "demo-gen-2", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0.8, "seed": 7}
JOBS
$bin enqueue embed --config "$conf" --input "$tmp/embed.jsonl" --wait --timeout 120 |
  python3 -c 'import json,sys
for line in sys.stdin:
    r = json.loads(line); v = r.get("embeddings") or [[]]
    print("%s: %s, %d vectors of dim %s, first values %s" % (r["id"], r["status"], len(v), r.get("dim"), [round(x, 4) for x in v[0][:4]]) if r["status"] == "ok" else "%s: error: %s" % (r["id"], r.get("error")))'
$bin enqueue generate --config "$conf" --input "$tmp/generate.jsonl" --wait --timeout 300 |
  python3 -c 'import json,sys
for line in sys.stdin:
    r = json.loads(line)
    print("%s: %s (%s) %r" % (r["id"], r["status"], r.get("finish_reason", r.get("error")), r.get("text", "")))'
$bin status --config "$conf"
echo "demo: done"
