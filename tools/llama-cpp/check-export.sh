#!/usr/bin/env bash
# Exports a trained adapter with `pipe export gguf` three ways and asks llama.cpp for the
# greedy continuation of PROMPT with each file: fused f16, fused q8_0, and the f16 base
# with the adapter alone (--lora-only) given to llama.cpp as --lora.
#
#   tools/llama-cpp/check-export.sh PIPE ADAPTER_DIR PROMPT [OUT_DIR]
#
# Prints one line per file: the file, its size and llama.cpp's continuation.
set -euo pipefail
pipe="$1" adapter="$2" prompt="$3" out="${4:-$(mktemp -d)}"
bin="$("$(dirname "$0")/build.sh")"
mkdir -p "$out"
"$pipe" export gguf --type f16 --out "$out/base.f16.gguf" >&2
"$pipe" export gguf --adapter "$adapter" --type f16 --out "$out/fused.f16.gguf" >&2
"$pipe" export gguf --adapter "$adapter" --type q8_0 --out "$out/fused.q8_0.gguf" >&2
"$pipe" export gguf --adapter "$adapter" --lora-only --out "$out/adapter.gguf" >&2
show() {
    local label="$1"
    shift
    local text
    text="$("$bin/reference" "$@" --top 1 --generate 16 "$prompt" |
        python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["text"]))')"
    printf '%-32s %s\n' "$label" "$text"
}
show "base f16" "$out/base.f16.gguf"
show "fused f16" "$out/fused.f16.gguf"
show "fused q8_0" "$out/fused.q8_0.gguf"
show "base f16 + --lora adapter.gguf" "$out/base.f16.gguf" --lora "$out/adapter.gguf"
ls -l "$out"/*.gguf >&2
