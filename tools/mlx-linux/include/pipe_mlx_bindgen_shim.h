/* Forced into bindgen's parse of the mlx-c headers on x86-64 Linux only (cargo's [env],
 * BINDGEN_EXTRA_CLANG_ARGS_x86_64-unknown-linux-gnu). mlx-rs expects bindgen to emit
 * `float16_t = __BindgenFloat16` and `bfloat16_t = u16`; clang 14 rejects _Float16 on x86,
 * so __fp16 and a plain 16-bit integer give exactly those bindings. */
#ifndef PIPE_MLX_BINDGEN_SHIM_H
#define PIPE_MLX_BINDGEN_SHIM_H
#if defined(__linux__) && !defined(__aarch64__) && !defined(__cplusplus)
#define HAS_FLOAT16
#define HAS_BFLOAT16
typedef __fp16 float16_t;
typedef unsigned short bfloat16_t;
#endif
#endif
