# The sources of tpserve_compute_cuda (relative to worker/cuda), shared by worker/cuda and the
# CUDA emulator's build of the same files (tests/cuda_emulator).
set(TPSERVE_COMPUTE_CUDA_SOURCES cuda_rank_compute.cc create_checks.cc stage_link.cc)
