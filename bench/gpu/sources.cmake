# The sources of tpserve_gpu_bench (relative to bench/gpu), shared by bench/gpu and the CUDA
# emulator's smoke run of the benchmark (tests/cuda_emulator).
set(TPSERVE_GPU_BENCH_SOURCES gpu_bench.cc attention_kernels.cc decode_gemms.cc event_timing.cc
    random_weights.cc step_timing.cc fill.cu)
