# CMake toolchain file that the Linux build layer (.cargo/config.toml, written by setup.sh
# on Linux only) hands to mlx-sys's CMake build of mlx-c. It builds mlx-c against the
# prebuilt MLX from the mlx-cpu wheel (unpacked by setup.sh) instead of fetching MLX from
# GitHub, and forces the C++ shim into mlx-c's own sources.
get_filename_component(_pipe_root "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)
set(_pipe_mlx_dir "${_pipe_root}/.mlx-linux/wheel/mlx/share/cmake/MLX")
if(NOT EXISTS "${_pipe_mlx_dir}/MLXConfig.cmake")
  message(FATAL_ERROR "pipe: MLX for Linux is not set up. Run tools/mlx-linux/setup.sh first.")
endif()
set(MLX_C_USE_SYSTEM_MLX ON CACHE BOOL "" FORCE)
set(MLX_C_BUILD_EXAMPLES OFF CACHE BOOL "" FORCE)
set(MLX_DIR "${_pipe_mlx_dir}" CACHE PATH "" FORCE)
# mlx-c's CMake project is named mlx.data; this hook runs inside it only, not inside
# CMake's try_compile probes (which CMAKE_PROJECT_INCLUDE would break).
set(CMAKE_PROJECT_mlx.data_INCLUDE "${CMAKE_CURRENT_LIST_DIR}/mlx-c-project.cmake" CACHE FILEPATH "" FORCE)
