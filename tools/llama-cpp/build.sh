#!/usr/bin/env bash
# Builds llama.cpp (the copy vendored in PyPI's llama-cpp-python sdist, pinned below) for
# the CPU, and the small `reference` program beside this script against its library.
# Prints the folder holding `reference`, `llama-completion` and `llama-perplexity`.
# Needs cmake and a C++17 compiler (tools/mlx-linux/setup.sh installs cmake). It takes
# about ten minutes on 2 cores, once: the build is kept in the user cache.
set -euo pipefail

VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
here="$(cd "$(dirname "$0")" && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/pipe/llama.cpp-$VERSION"
jobs="${JOBS:-$(nproc)}"
mkdir -p "$cache"
if [ ! -d "$cache/src" ]; then
    python3 -m pip download --quiet --no-deps --no-binary :all: \
        "llama-cpp-python==$VERSION" -d "$cache/download" >&2
    archive="$cache/download/llama_cpp_python-$VERSION.tar.gz"
    echo "$SHA256  $archive" | sha256sum --check --quiet >&2
    tar -xzf "$archive" -C "$cache/download"
    mv "$cache/download/llama_cpp_python-$VERSION/vendor/llama.cpp" "$cache/src"
    rm -rf "$cache/download"
fi
cmake -S "$cache/src" -B "$cache/build" -DCMAKE_BUILD_TYPE=Release \
    -DBUILD_SHARED_LIBS=OFF -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$cache/build" -j "$jobs" --target llama-completion llama-perplexity >&2
bin="$cache/build/bin"
c++ -std=c++17 -O2 -I"$cache/src/include" -I"$cache/src/ggml/include" \
    "$here/reference.cpp" -o "$bin/reference" \
    -L"$cache/build/src" -L"$cache/build/ggml/src" \
    -Wl,--start-group -lllama -lggml -lggml-base -lggml-cpu -Wl,--end-group \
    -lpthread -fopenmp
echo "$bin"
