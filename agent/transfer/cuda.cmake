# Same-node GPU transport (CUDA IPC), included by agent/transfer/CMakeLists.txt only when
# KVMESH_CUDA is ON (kvmesh_transfer's own glob excludes the cuda_* files).
#   kvmesh_transfer_cuda                             cuda_ipc_transport.cc: plain C++ on the CUDA
#                                                    runtime API (g++, no kernels)
#   kvmesh_transfer_cuda_ipc_transport_test          label unit: runs everywhere; checks the
#                                                    no-GPU error path and the address codec
#   kvmesh_transfer_cuda_ipc_transport_cuda_test     label gpu: two processes (the test re-executes
#                                                    itself as the exporting child); skips with no
#                                                    usable device
add_library(kvmesh_transfer_cuda STATIC ${CMAKE_CURRENT_SOURCE_DIR}/cuda_ipc_transport.cc)
target_include_directories(kvmesh_transfer_cuda PUBLIC ${PROJECT_SOURCE_DIR})
target_link_libraries(kvmesh_transfer_cuda
  PUBLIC kvmesh_transfer kvmesh_common
  PRIVATE CUDA::cudart kvmesh_kernels_cuda)

if(KVMESH_BUILD_TESTS)
  add_executable(kvmesh_transfer_cuda_ipc_transport_test
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda_ipc_transport_test.cc)
  target_link_libraries(kvmesh_transfer_cuda_ipc_transport_test PRIVATE
    kvmesh_transfer_cuda kvmesh_kernels_cuda GTest::gtest_main)
  gtest_discover_tests(kvmesh_transfer_cuda_ipc_transport_test
    DISCOVERY_MODE PRE_TEST
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS unit)

  # Own main(): the same binary is the exporting child process (KVMESH_CUDA_IPC_CHILD set).
  add_executable(kvmesh_transfer_cuda_ipc_transport_cuda_test
    ${CMAKE_CURRENT_SOURCE_DIR}/cuda_ipc_transport_cuda_test.cc)
  target_link_libraries(kvmesh_transfer_cuda_ipc_transport_cuda_test PRIVATE
    kvmesh_transfer_cuda kvmesh_transfer kvmesh_kernels_cuda GTest::gtest)
  gtest_discover_tests(kvmesh_transfer_cuda_ipc_transport_cuda_test
    DISCOVERY_MODE PRE_TEST
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    PROPERTIES LABELS gpu)
endif()
