# worker_engine_golden_solo_test: engine_golden_test.cc built as one process without MPI
# (TPSERVE_GOLDEN_SOLO: comm/solo_communicator.h, tp = pp = 1). Included by tests/worker (the
# CPU run, in every full build) and tests/gpu (the CUDA run, also in the GPU-only tree, where
# it is the engine-level check the device machine can run); defined once, by the first.
if(NOT TARGET worker_engine_golden_solo_test)
  add_executable(worker_engine_golden_solo_test
                 ${PROJECT_SOURCE_DIR}/tests/worker/engine_golden_test.cc)
  target_compile_definitions(worker_engine_golden_solo_test PRIVATE TPSERVE_GOLDEN_SOLO)
  target_link_libraries(worker_engine_golden_solo_test PRIVATE tpserve_worker GTest::gtest)
  tpserve_target_options(worker_engine_golden_solo_test)
endif()
