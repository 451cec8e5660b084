# CUDA backend of kernels/ (included by kernels/CMakeLists.txt only when KVMESH_CUDA is ON).
#   kvmesh_kernels_cuda        the *.cu launchers (namespace kvmesh::kernels::cuda)
#   kvmesh_kernels_<op>_cuda_test  one GoogleTest per *_cuda_test.cc, ctest label "gpu"; each test
#                                  GTEST_SKIP()s when cuda::UsableDeviceCount() == 0
#   kvmesh_kernels_gpu_bench   plain main printing JSON (gpu_bench_main.cc)
file(GLOB _kvmesh_cu_srcs CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*.cu)
add_library(kvmesh_kernels_cuda STATIC ${_kvmesh_cu_srcs})
target_include_directories(kvmesh_kernels_cuda PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(kvmesh_kernels_cuda PUBLIC kvmesh_kernels CUDA::cudart CUDA::cublas)
# Host code of the .cu files gets the same warnings as the C++ code (-Werror when KVMESH_WERROR).
set(_kvmesh_cu_host_flags -Wall -Wextra)
if(KVMESH_WERROR)
  list(APPEND _kvmesh_cu_host_flags -Werror)
endif()
string(REPLACE ";" "," _kvmesh_cu_host_flags "${_kvmesh_cu_host_flags}")
target_compile_options(kvmesh_kernels_cuda PRIVATE
  $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=${_kvmesh_cu_host_flags}>
  $<$<COMPILE_LANGUAGE:CUDA>:-lineinfo>)
if(KVMESH_WERROR)  # nvcc's own front-end and ptxas warnings too
  target_compile_options(kvmesh_kernels_cuda PRIVATE
    $<$<COMPILE_LANGUAGE:CUDA>:--Werror=all-warnings>)
endif()
# CMake 3.25 does not know nvcc's C++20 flag (top-level CMAKE_CUDA_STANDARD 20); the .cu files need
# only C++17.
set_target_properties(kvmesh_kernels_cuda PROPERTIES CUDA_SEPARABLE_COMPILATION OFF
                      CUDA_STANDARD 17 CUDA_STANDARD_REQUIRED ON)

if(KVMESH_BUILD_TESTS)
  file(GLOB _kvmesh_cuda_tests CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/*_cuda_test.cc)
  foreach(t IN LISTS _kvmesh_cuda_tests)
    get_filename_component(_n ${t} NAME_WE)
    set(_exe kvmesh_kernels_${_n})
    add_executable(${_exe} ${t})
    target_link_libraries(${_exe} PRIVATE kvmesh_kernels_cuda kvmesh_kernels GTest::gtest_main)
    gtest_discover_tests(${_exe}
      DISCOVERY_MODE PRE_TEST
      WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
      PROPERTIES LABELS gpu)
  endforeach()
endif()

add_executable(kvmesh_kernels_gpu_bench ${CMAKE_CURRENT_SOURCE_DIR}/gpu_bench_main.cc)
target_link_libraries(kvmesh_kernels_gpu_bench PRIVATE kvmesh_kernels_cuda kvmesh_kernels
                      CUDA::cudart)
