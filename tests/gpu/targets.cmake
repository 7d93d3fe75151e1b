# The GPU test programs, as functions over the libraries they test: tests/gpu builds them on
# the CUDA toolkit's runtime, tests/cuda_emulator on the CUDA emulator's (same sources).

# The backend-ops test: cuda_ops_test.cc holds the element-wise ops, the op-registry check and
# main(); the GEMM, attention and sampling cases live beside it (helpers in cuda_test_util.h).
# The sampling cases compare against the CPU sampler (worker/sampler.h, in tpserve_compute,
# which needs neither MPI nor the model library).
function(tpserve_add_cuda_ops_test name kernels_cuda)
  set(dir ${CMAKE_CURRENT_FUNCTION_LIST_DIR})
  add_executable(${name} ${dir}/cuda_ops_test.cc ${dir}/cuda_gemm_test.cc
                 ${dir}/cuda_attention_test.cc ${dir}/cuda_attention_tc_test.cc
                 ${dir}/cuda_rope_kv_test.cc ${dir}/cuda_sampling_test.cc)
  target_link_libraries(${name} PRIVATE ${kernels_cuda} tpserve_compute tpserve_kernels
                        GTest::gtest)
  tpserve_target_options(${name})
endfunction()

# CudaRankCompute against CpuRankCompute on a tiny random model built in the test.
function(tpserve_add_rank_compute_test name compute_cuda kernels_cuda)
  set(dir ${CMAKE_CURRENT_FUNCTION_LIST_DIR})
  add_executable(${name} ${dir}/rank_compute_test.cc ${dir}/rank_compute_parallel_test.cc)
  target_link_libraries(${name} PRIVATE ${compute_cuda} tpserve_compute ${kernels_cuda}
                        GTest::gtest)
  tpserve_target_options(${name})
endfunction()
