# The sources of tpserve_kernels_cuda (relative to kernels/cuda), shared by kernels/ and the
# CUDA emulator's build of the same files (tests/cuda_emulator).
set(TPSERVE_KERNELS_CUDA_SOURCES
  attention_decode.cu
  attention_internal.cc
  attention_prefill.cu
  attention_prefill_tc.cu
  cuda_ops.cc
  cuda_status.cc
  device_query.cc
  device_runtime.cc
  embedding.cu
  gather_rows.cu
  gemm_skinny.cu
  gemm.cc
  kv_cache.cu
  rms_norm.cu
  rope.cu
  sampling.cu
  swiglu.cu
)
