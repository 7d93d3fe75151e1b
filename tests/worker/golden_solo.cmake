# worker_engine_golden_solo_test: engine_golden_test.cc built as one process without MPI
# (TPSERVE_GOLDEN_SOLO: comm/solo_communicator.h, tp = pp = 1). Included by tests/worker (the
# CPU run, in every full build) and tests/gpu (the CUDA run, also in the GPU-only tree, where
# it is the engine-level check the device machine can run); defined once, by the first.
# The CUDA runs' band for tiny-mistral-hd64 (bf16 activations around an fp32 residual): logits
# within 2% of the row's largest |logit| (the CUDA emulator, with the same bf16 roundings,
# measured under 1%; not yet measured on a GPU); greedy tokens compared where HF's margin is at
# least 0.1 logits (twice that error at the model's largest |logit|, 4.5), which leaves 7 of
# the golden tokens before each sequence's first near tie, of which 5 must be compared.
set(TPSERVE_CUDA_GOLDEN_BAND --tolerance 0.02 --min_margin 0.1 --min_compared 5)

# The CUDA run of the solo test: test `name` runs `program` on tiny-mistral-hd64 in that band
# (tests/gpu on a GPU, tests/cuda_emulator on the emulator).
function(tpserve_add_cuda_golden_solo_test name program)
  add_test(NAME ${name}
           COMMAND ${program} --model ${PROJECT_SOURCE_DIR}/tests/data/tiny-mistral-hd64
                   --tp 1 --pp 1 --block_size 4 --kv_num_blocks 4096 --backend cuda
                   ${TPSERVE_CUDA_GOLDEN_BAND})
endfunction()

if(NOT TARGET worker_engine_golden_solo_test)
  add_executable(worker_engine_golden_solo_test
                 ${PROJECT_SOURCE_DIR}/tests/worker/engine_golden_test.cc)
  target_compile_definitions(worker_engine_golden_solo_test PRIVATE TPSERVE_GOLDEN_SOLO)
  target_link_libraries(worker_engine_golden_solo_test PRIVATE tpserve_worker GTest::gtest)
  tpserve_target_options(worker_engine_golden_solo_test)
endif()
