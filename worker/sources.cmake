# The sources of tpserve_worker (the Engine and the checkpoint loaders; relative to worker/),
# shared by worker/ and the CUDA emulator's build of the engine (tests/cuda_emulator).
set(TPSERVE_WORKER_SOURCES engine.cc local_generate.cc shard_weights.cc shard_weights_gguf.cc)
