#!/usr/bin/env bash
# Prepares a Linux machine to build pipe against MLX's CPU backend. Idempotent: a second run
# checks and exits. On macOS it does nothing (mlx-rs builds MLX with Metal from source there).
#
# What it touches:
#   - system packages cmake, libclang-dev, g++, libopenblas0-pthread, python3-pip and
#     python3-venv (installed with apt-get when running as root, otherwise it stops and says
#     what to install); libclang is checked the way bindgen loads it (libclang_probe.py);
#   - <repo>/.mlx-linux/ (gitignored): the mlx-cpu==0.32.2 wheel, sha256-checked, unpacked,
#     with Debian's OpenBLAS in place of the wheel's bundled reference BLAS (13x faster matmul);
#   - <repo>/.cargo/config.toml (gitignored): the Linux build layer, written here so that it
#     exists on Linux only and a Mac build is the stock mlx-rs one.
#
#   tools/mlx-linux/setup.sh                 # set up (OpenBLAS)
#   tools/mlx-linux/setup.sh --blas reference # bundled netlib BLAS, for benchmarks only
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tools/mlx-linux"
cargo_config="$root/.cargo/config.toml"
layer_mark="# Written by tools/mlx-linux/setup.sh"

if [ "$(uname -s)" != "Linux" ]; then
  # A layer copied over from a Linux checkout would change the Mac build: take it away.
  if [ -f "$cargo_config" ] && head -n 1 "$cargo_config" | grep -qF "$layer_mark"; then
    rm -f "$cargo_config"
    echo "pipe setup: removed the Linux build layer ($cargo_config)"
  fi
  echo "pipe setup: not Linux, nothing to do"
  exit 0
fi

MLX_CPU_VERSION=0.32.2
MLX_CPU_WHEEL=mlx_cpu-0.32.2-py3-none-manylinux_2_35_x86_64.whl
MLX_CPU_SHA256=fc5d31b90fc4f457b2f9614ed45651a567d22a6a11a03d114a90a4e10bdd8878
BUNDLED_BLAS=libblas-bd8a282c.so.3.10.0
OPENBLAS=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3

blas=openblas
while [ $# -gt 0 ]; do
  case "$1" in
    --blas) blas="${2:?--blas needs openblas or reference}"; shift 2 ;;
    -h | --help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "pipe setup: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
done
case "$blas" in openblas | reference) ;; *) echo "pipe setup: --blas must be openblas or reference" >&2; exit 2 ;; esac

[ "$(uname -m)" = "x86_64" ] || {
  echo "pipe setup: only x86-64 Linux is supported (the mlx-cpu wheel pinned here is x86-64)" >&2
  exit 1
}

dest="$root/.mlx-linux"

# --- system packages -------------------------------------------------------------------
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v c++ >/dev/null || missing+=(g++)
# bindgen's libclang: found where and as bindgen finds it, and able to parse a header.
libclang_ok() { command -v python3 >/dev/null && python3 "$here/libclang_probe.py" >/dev/null 2>&1; }
libclang_ok || missing+=(libclang-dev)
[ "$blas" = reference ] || [ -e "$OPENBLAS" ] || missing+=(libopenblas0-pthread)
command -v python3 >/dev/null || missing+=(python3)
python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
# The mlx-lm compatibility test installs mlx-lm into a virtual environment.
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "pipe setup: installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "pipe setup: missing system packages: ${missing[*]}" >&2
    echo "  install them as root:  apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
if ! why="$(python3 "$here/libclang_probe.py" 2>&1 >/dev/null)"; then
  echo "pipe setup: bindgen will not find a working libclang: $why" >&2
  echo "  install libclang-dev, or set LIBCLANG_PATH to the folder of a libclang.so" >&2
  exit 1
fi

# --- the MLX wheel ---------------------------------------------------------------------
wheel_dir="$dest/wheel"
stamp="$dest/.installed-$MLX_CPU_VERSION"
if [ ! -f "$stamp" ]; then
  mkdir -p "$dest/download"
  whl="$dest/download/$MLX_CPU_WHEEL"
  if [ ! -f "$whl" ] || ! echo "$MLX_CPU_SHA256  $whl" | sha256sum -c --status; then
    echo "pipe setup: downloading mlx-cpu==$MLX_CPU_VERSION from PyPI"
    rm -f "$whl"
    if ! python3 -m pip download --quiet --no-deps --only-binary :all: \
      --platform manylinux_2_35_x86_64 --python-version 3.11 \
      "mlx-cpu==$MLX_CPU_VERSION" -d "$dest/download"; then
      echo "pipe setup: pip could not download mlx-cpu==$MLX_CPU_VERSION; is PyPI reachable?" >&2
      exit 1
    fi
  fi
  if ! echo "$MLX_CPU_SHA256  $whl" | sha256sum -c --status; then
    echo "pipe setup: sha256 mismatch for $whl (expected $MLX_CPU_SHA256); refusing to use it" >&2
    exit 1
  fi
  rm -rf "$wheel_dir.tmp"
  python3 -m zipfile -e "$whl" "$wheel_dir.tmp"
  cp "$wheel_dir.tmp/mlx_cpu.libs/$BUNDLED_BLAS" "$wheel_dir.tmp/mlx_cpu.libs/$BUNDLED_BLAS.reference"
  rm -rf "$wheel_dir"
  mv "$wheel_dir.tmp" "$wheel_dir"
  touch "$stamp"
fi

# --- BLAS ------------------------------------------------------------------------------
# libmlx.so loads the BLAS by this exact file name through its rpath, so swapping the file
# is enough; the reference copy stays beside it for benchmarks.
target="$wheel_dir/mlx_cpu.libs/$BUNDLED_BLAS"
want="$OPENBLAS"
[ "$blas" = reference ] && want="$wheel_dir/mlx_cpu.libs/$BUNDLED_BLAS.reference"
if [ "$(readlink "$target" 2>/dev/null)" != "$want" ]; then
  ln -sfn "$want" "$target"
  echo "pipe setup: BLAS is now $blas ($want)"
fi
# --- the cargo configuration ----------------------------------------------------------
# Why each entry exists: tools/mlx-linux/README.md. Paths are relative to the checkout, so
# a moved checkout keeps working.
layer="$layer_mark (Linux only); not tracked, rewritten by each run.
# It points mlx-sys at the prebuilt MLX in .mlx-linux/. Why each entry: tools/mlx-linux/README.md.

[build]
rustc-wrapper = \"tools/mlx-linux/rustc-wrapper\"

[env]
CMAKE_TOOLCHAIN_FILE = { value = \"tools/mlx-linux/toolchain.cmake\", relative = true }
# clang (bindgen) finds the forced-include header through C_INCLUDE_PATH; gcc compiling
# mlx-c's C++ ignores that variable.
C_INCLUDE_PATH = { value = \"tools/mlx-linux/include\", relative = true }
\"BINDGEN_EXTRA_CLANG_ARGS_x86_64-unknown-linux-gnu\" = \"-include pipe_mlx_bindgen_shim.h\"
# Read by crates/mlx/build.rs, which stops a Linux build that lacks this layer.
PIPE_MLX_LINUX_LAYER = { value = \"tools/mlx-linux\", relative = true }"
if [ ! -f "$cargo_config" ] || [ "$(cat "$cargo_config")" != "$layer" ]; then
  mkdir -p "$(dirname "$cargo_config")"
  printf '%s\n' "$layer" >"$cargo_config.tmp"
  mv "$cargo_config.tmp" "$cargo_config"
  echo "pipe setup: wrote the Linux build layer to $cargo_config"
  # A build tried before this layer existed left mlx-sys's CMake cache configured without
  # its toolchain file, and CMake keeps a cached toolchain: start mlx-sys's build afresh.
  for stale in "${CARGO_TARGET_DIR:-$root/target}"/*/build/mlx-sys-*; do
    [ -e "$stale" ] || continue
    rm -rf "$stale"
    echo "pipe setup: removed $stale (built without this layer)"
  done
fi
if [ -n "${RUSTC_WRAPPER:-}" ]; then
  echo "pipe setup: warning: RUSTC_WRAPPER=$RUSTC_WRAPPER replaces tools/mlx-linux/rustc-wrapper, which the Linux build needs; unset it to build pipe" >&2
fi
echo "pipe setup: MLX $MLX_CPU_VERSION (CPU) ready in $dest, BLAS $blas"
