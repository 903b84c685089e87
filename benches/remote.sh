#!/usr/bin/env bash
# Throughput of the remote cache: `pipe push` and `pipe pull` of one stage's outs
# (SIZE_MB of random bytes in 8 large files plus 1,000 small ones) to a folder remote and
# to a real S3 API (moto's server on loopback), against what the same bytes cost to read
# and to hash on this machine (the physical limits a push or pull cannot beat: it reads
# or writes every byte and checks every blake3).
#
#   benches/remote.sh [WORKDIR]        # default /tmp/pipe-remote-bench
#
# Needs the moto venv the tests install (~/.cache/pipe/python/mlflow-3.17.2-s3; run
# `cargo test --release --test it -- remote::` once), or MOTO_PYTHON pointing at a Python
# with `moto[server]` and boto3.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
PIPE=${PIPE:-$here/target/release/pipe}
PY=${MOTO_PYTHON:-$HOME/.cache/pipe/python/mlflow-3.17.2-s3/bin/python}
SIZE_MB=${SIZE_MB:-512}
WORK=${1:-/tmp/pipe-remote-bench}
rm -rf "$WORK" && mkdir -p "$WORK"
cd "$WORK"

now() { date +%s.%N; }
rate() { python3 -c "import sys; mb, t = float(sys.argv[1]), float(sys.argv[2]); print(f'{t:7.2f} s  {mb / t:8.1f} MB/s')" "$1" "$2"; }
timed() { local t0; t0=$(now); "$@" >/dev/null; python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$(now)"; }

mkdir -p a
cat > a/pipe.yaml <<YAML
stages:
  make:
    cmd: >-
      python3 -c "import os; os.makedirs('out/small', exist_ok=True);
      [open(f'out/big{i}.bin', 'wb').write(os.urandom($SIZE_MB * 1048576 // 8)) for i in range(8)];
      [open(f'out/small/{i:04}.txt', 'wb').write(os.urandom(2048)) for i in range(1000)]"
    outs: [out]
YAML
(cd a && "$PIPE" run -q)
total_mb=$(du -sm a/out | cut -f1)
echo "outs: $total_mb MB in $(find a/out -type f | wc -l) files"

# The limits: reading the bytes from the page cache, and hashing them cold (pipe status
# with no stat cache hashes every file: blake3 on all cores, files mmapped).
cat a/out/big*.bin a/out/small/* > /dev/null
echo "read (page cache):   $(rate "$total_mb" "$(timed cat a/out/big0.bin a/out/big1.bin a/out/big2.bin a/out/big3.bin a/out/big4.bin a/out/big5.bin a/out/big6.bin a/out/big7.bin)")"
rm -f a/cache/v1/stat
echo "hash (pipe, cold):   $(rate "$total_mb" "$(timed "$PIPE" status -q --root a a/pipe.yaml)")"

# A second clone: the pipeline and its lock file, as git would bring them; its own cache.
clone() { rm -rf "$1" && mkdir -p "$1" && cp a/pipe.yaml a/*.lock "$1/"; }

# A folder remote (another disk on a real team; the same disk here).
echo "push (folder):       $(rate "$total_mb" "$(timed "$PIPE" push -q --root a --remote "$WORK/share" a/pipe.yaml)")"
clone b
echo "pull (folder):       $(rate "$total_mb" "$(timed "$PIPE" pull -q --root b --remote "$WORK/share" b/pipe.yaml)")"
cmp a/out/big7.bin b/out/big7.bin

# S3: moto's server on loopback.
port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
"$PY" -m moto.server -H 127.0.0.1 -p "$port" > moto.log 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null' EXIT
until python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null; do sleep 0.2; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1 AWS_ENDPOINT_URL=http://127.0.0.1:$port
"$PY" -c "import boto3; boto3.client('s3').create_bucket(Bucket='bench')"
# What the server itself takes: boto3 (the AWS SDK, 8 MB multipart parts on 10 threads)
# putting and getting the same files.
sdk() {
  "$PY" - "$1" <<'PY'
import boto3, glob, os, sys
s3 = boto3.client("s3")
files = sorted(glob.glob("a/out/big*.bin")) + sorted(glob.glob("a/out/small/*"))
for i, f in enumerate(files):
    if sys.argv[1] == "put":
        s3.upload_file(f, "bench", f"sdk/{i}")
    else:
        s3.download_file("bench", f"sdk/{i}", os.devnull)
PY
}
echo "boto3 put (S3, moto): $(rate "$total_mb" "$(timed sdk put)")"
echo "boto3 get (S3, moto): $(rate "$total_mb" "$(timed sdk get)")"
echo "push (S3, moto):     $(rate "$total_mb" "$(timed "$PIPE" push -q --root a --remote s3://bench/pipe a/pipe.yaml)")"
clone c
echo "pull (S3, moto):     $(rate "$total_mb" "$(timed "$PIPE" pull -q --root c --remote s3://bench/pipe c/pipe.yaml)")"
cmp a/out/big7.bin c/out/big7.bin
echo "push again (S3, nothing new): $(timed "$PIPE" push -q --root a --remote s3://bench/pipe a/pipe.yaml) s"
