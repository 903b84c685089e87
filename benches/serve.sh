#!/usr/bin/env bash
# pipe serve against mlx_lm.server 0.32.2: same machine, same weights, one sitting, the
# same load (`pipe bench serve`: streamed greedy chat requests, fixed prompts and lengths,
# concurrency 1, 4 and 16). The servers run one after the other, never together.
#
# Needs the peer environment of the shared bench scripts (setup_peer.sh): a venv with
# mlx-lm 0.32.2 under $BENCH and SmolLM2-135M-Instruct converted to a float32 Hugging Face
# directory, which both servers load.
#
#   cargo build --release && benches/serve.sh
set -euo pipefail
BENCH=${BENCH:-${TMPDIR:-/tmp}/bench}
MODEL=${MODEL:-$BENCH/models/smollm2-hf}
PIPE=${PIPE:-target/release/pipe}
LOAD=${LOAD:---concurrency 1,4,16 --requests-per-client 2 --max-tokens 64}
PIPE_PORT=${PIPE_PORT:-18080}
PEER_PORT=${PEER_PORT:-18081}
# Both servers' MLX calls OpenBLAS. Its worker threads spin for a core between small
# products; on a busy 2-core machine one thread decoded a batch of 4 five times faster
# (BENCHMARKS.md). Both servers get the same setting.
export OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1}

wait_up() {
  for _ in $(seq 1200); do
    curl -sf "$1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server at $1 did not come up" >&2
  return 1
}

"$PIPE" serve --model "$MODEL" --port "$PIPE_PORT" 2>/dev/null &
pid=$!
trap 'kill "$pid" 2>/dev/null || true' EXIT
wait_up "http://127.0.0.1:$PIPE_PORT/health"
# shellcheck disable=SC2086 # LOAD is a list of arguments
"$PIPE" bench serve --url "http://127.0.0.1:$PIPE_PORT" --label pipe $LOAD
kill "$pid" && wait "$pid" 2>/dev/null || true

"$BENCH/venv/bin/python" -m mlx_lm server --model "$MODEL" --port "$PEER_PORT" 2>/dev/null &
pid=$!
wait_up "http://127.0.0.1:$PEER_PORT/v1/models"
# mlx_lm.server serves the model its requests name: name the one it loaded.
# shellcheck disable=SC2086
"$PIPE" bench serve --url "http://127.0.0.1:$PEER_PORT" --model "$MODEL" --label mlx_lm $LOAD
