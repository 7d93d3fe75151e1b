// comm/nccl is wired as CMake found it: NcclAvailable() says what TPSERVE_HAVE_NCCL said at
// configure time, and without NCCL CreateNcclCommunicator fails with FailedPrecondition and a
// message that says why, touching no rank. Needs no GPU and no MPI.
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <vector>

#include "comm/nccl/nccl_communicator.h"

#ifndef TPSERVE_EXPECT_NCCL
#error "tests/comm/CMakeLists.txt defines TPSERVE_EXPECT_NCCL from TPSERVE_HAVE_NCCL"
#endif

namespace tpserve {
namespace {

// A group any use of which is a failure: the stub must not communicate.
class UntouchableGroup final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 2; }
  absl::Status AllReduceSum(float*, size_t) override { return Touched(); }
  absl::Status AllReduceMax(int32_t*, size_t) override { return Touched(); }
  absl::Status AllGather(const void*, size_t, void*) override { return Touched(); }
  absl::Status Broadcast(void*, size_t, int) override { return Touched(); }
  absl::Status Send(const void*, size_t, int, int) override { return Touched(); }
  absl::Status Recv(void*, size_t, int, int) override { return Touched(); }
  absl::Status SendAsync(std::vector<uint8_t>, int, int) override { return Touched(); }
  absl::Status FlushSends() override { return Touched(); }
  absl::StatusOr<bool> Probe(int, int) override { return Touched(); }
  absl::StatusOr<std::vector<uint8_t>> RecvAny(int, int) override { return Touched(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int, int) override { return Touched(); }
  [[noreturn]] void Abort(int code) override { std::abort(); }

  bool touched = false;

 private:
  absl::Status Touched() {
    touched = true;
    return absl::InternalError("the group was used");
  }
};

TEST(NcclBuildTest, NcclAvailableSaysWhatCMakeFound) {
  EXPECT_EQ(NcclAvailable(), TPSERVE_EXPECT_NCCL != 0);
}

TEST(NcclBuildTest, WithoutNcclCreationFailsWithFailedPreconditionAndNoCommunication) {
  if (TPSERVE_EXPECT_NCCL) GTEST_SKIP() << "built with NCCL: tests/gpu and tests/comm cover it";
  UntouchableGroup group;
  absl::StatusOr<std::unique_ptr<DeviceCommunicator>> comm =
      CreateNcclCommunicator(group, 0, absl::Seconds(1));
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(comm.status().message(),
            "tpserve was built without NCCL (no CUDA toolkit or nccl.h found at configure time)");
  EXPECT_FALSE(group.touched);
}

}  // namespace
}  // namespace tpserve
