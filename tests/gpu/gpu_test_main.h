// The main() of the GPU test programs: with a CUDA device every case runs; without one only
// the host-side cases named by `host_filter` run, and the exit code 77 makes ctest report the
// program as skipped rather than passed (a failing host case still fails it).
#pragma once

#include <gtest/gtest.h>

#include <cstdio>

namespace tpserve::testing {

inline int RunGpuTests(int argc, char** argv, const char* program, int devices,
                       const char* host_filter) {
  ::testing::InitGoogleTest(&argc, argv);
#ifdef GTEST_FLAG_GET
  const bool listing = GTEST_FLAG_GET(list_tests);
#else
  const bool listing = ::testing::GTEST_FLAG(list_tests);
#endif
  if (devices > 0 || listing) return RUN_ALL_TESTS();
  std::printf("%s: no CUDA device or driver: the GPU cases are SKIPPED; running only the "
              "host-side checks (%s).\n", program, host_filter);
#ifdef GTEST_FLAG_SET
  GTEST_FLAG_SET(filter, host_filter);
#else
  ::testing::GTEST_FLAG(filter) = host_filter;
#endif
  const int rc = RUN_ALL_TESTS();
  if (rc != 0) return rc;
  std::printf("%s: SKIPPED (no CUDA device); host-side checks passed.\n", program);
  return 77;
}

}  // namespace tpserve::testing
