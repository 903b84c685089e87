#!/usr/bin/env bash
# Times the pipeline engine on the benchmark tree (benches/make_tree.py): a one-stage
# pipeline depends on the whole 2 GB / 10,000-file directory.
#
#   benches/engine.sh [WORKDIR]      # default /tmp/pipe-bench; needs hyperfine
#
# Scenarios (page cache warm, like the DVC figures in BENCHMARKS.md):
#   cold        first run: empty cache, no stat cache, no lock file
#   status      warm `pipe status`
#   noop        `pipe run` with nothing to do
#   incremental `pipe run` after changing one small file (to content never seen before)
#   revert      `pipe run` after changing it back (outs come from the run cache)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PIPE=${PIPE:-$here/target/release/pipe}
WORK=${1:-/tmp/pipe-bench}
RUNS=${RUNS:-10}
mkdir -p "$WORK"
cd "$WORK"
[ -d data ] || python3 "$here/benches/make_tree.py" data
cat > pipe.yaml <<'YAML'
stages:
  scan:
    cmd: ls data | wc -l > summary.txt
    deps: [data]
    outs: [summary.txt]
YAML
victim=data/d000/f00.bin
[ -f victim.orig ] || cp "$victim" victim.orig
# Warm the page cache.
cat $(find data -type f) > /dev/null

export PIPE victim
hyperfine --runs "$RUNS" --warmup 1 --export-markdown results.md \
  --command-name cold --prepare 'rm -rf cache pipe.lock summary.txt' "$PIPE run -q" \
  --command-name status --prepare "cp victim.orig $victim && $PIPE run -q" "$PIPE status -q" \
  --command-name noop --prepare "$PIPE run -q" "$PIPE run -q" \
  --command-name incremental --prepare "cp victim.orig $victim && $PIPE run -q && rm -f $victim && head -c 2000 /dev/urandom > $victim" "$PIPE run -q" \
  --command-name revert --prepare "rm -f $victim && echo changed > $victim && $PIPE run -q && rm -f $victim && cp victim.orig $victim" "$PIPE run -q"
cat results.md
