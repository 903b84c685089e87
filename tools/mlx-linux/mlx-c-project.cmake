# Included by toolchain.cmake into mlx-c's project only. SHELL: keeps CMake from merging
# the repeated -include flag away.
add_compile_options("SHELL:-include ${CMAKE_CURRENT_LIST_DIR}/include/pipe_mlx_cxx_shim.h")
