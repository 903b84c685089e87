/* Forced into every mlx-c C++ translation unit on Linux (see toolchain.cmake).
 *
 * Two gaps between mlx-c 0.7 and a Debian 12 toolchain on x86-64:
 *  1. gcc 12's libstdc++ has no std::format, which mlx/c/private/io.h uses with plain
 *     "{}" placeholders only. A minimal stand-in covers exactly that.
 *  2. mlx/c/half.h declares float16_t/bfloat16_t only on aarch64, so the *_float16 accessors
 *     vanish and mlx-rs fails to link against them. MLX's own half types fill the gap.
 */
#ifndef PIPE_MLX_CXX_SHIM_H
#define PIPE_MLX_CXX_SHIM_H
#ifdef __cplusplus

#include <version>
#if !defined(__cpp_lib_format)
#include <sstream>
#include <string>
#include <string_view>
namespace std {
namespace pipe_shim {
inline void format_into(std::ostringstream& out, std::string_view fmt) { out << fmt; }
template <typename T, typename... Rest>
void format_into(std::ostringstream& out, std::string_view fmt, const T& value, const Rest&... rest) {
  auto at = fmt.find("{}");
  if (at == std::string_view::npos) { out << fmt; return; }
  out << fmt.substr(0, at) << value;
  format_into(out, fmt.substr(at + 2), rest...);
}
}  // namespace pipe_shim
template <typename... Args>
std::string format(std::string_view fmt, const Args&... args) {
  std::ostringstream out;
  pipe_shim::format_into(out, fmt, args...);
  return out.str();
}
}  // namespace std
#endif

#if !defined(__aarch64__) && !defined(__ARM_FEATURE_FP16_SCALAR_ARITHMETIC)
#include "mlx/types/half_types.h"
#define HAS_FLOAT16
#define HAS_BFLOAT16
typedef mlx::core::float16_t float16_t;
typedef mlx::core::bfloat16_t bfloat16_t;
#endif

#endif /* __cplusplus */
#endif
