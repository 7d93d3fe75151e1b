// Runs under mpirun with 2 ranks, each on the GPU numbered by its node-local rank: the
// multi-rank NCCL path of comm/nccl (CreateNcclCommunicator bootstrapped over MPI, then
// all-reduce in bf16 and fp32, all-gather, send/recv between ranks 0 and 1, and a rank's bad
// argument reported by every rank). Every rank runs every test (they are collective); only
// rank 0 prints. When some node has fewer CUDA devices than ranks on it (no GPU, or one GPU
// for two ranks: NCCL refuses two ranks on one device) every rank exits with 77, which ctest
// reports as skipped (tests/comm/CMakeLists.txt: SKIP_RETURN_CODE 77).
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/time.h"
#include "comm/mpi/mpi_communicator.h"
#include "comm/nccl/nccl_communicator.h"
#include "common/dtype.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve {
namespace {

using kernels::cuda::DeviceBuffer;

Communicator* g_world = nullptr;
DeviceCommunicator* g_comm = nullptr;
cudaStream_t g_stream = nullptr;
int g_device = 0;

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const absl::Status mpi_test_status_ = (expr);           \
    ASSERT_TRUE(mpi_test_status_.ok()) << mpi_test_status_; \
  } while (0)

absl::Status Sync() { return kernels::cuda::SynchronizeStream(kernels::cuda::Stream{g_stream}); }

// Element i of rank r: (r + 1) * (i % 7 + 1); summed over n ranks: n(n+1)/2 * (i % 7 + 1).
// Small integers, exact in bf16 and fp32 whatever the order of the sum.
float Contribution(int rank, size_t i) { return static_cast<float>((rank + 1) * (i % 7 + 1)); }
float ExpectedSum(int n, size_t i) { return static_cast<float>(n * (n + 1) / 2 * (i % 7 + 1)); }

TEST(NcclMpiTest, TheCommunicatorHasTheGroupsRanks) {
  EXPECT_EQ(g_comm->rank(), g_world->rank());
  EXPECT_EQ(g_comm->size(), g_world->size());
}

TEST(NcclMpiTest, AllReduceSumsFp32AcrossRanks) {
  const int r = g_world->rank(), n = g_world->size();
  std::vector<float> host(1031);
  for (size_t i = 0; i < host.size(); ++i) host[i] = Contribution(r, i);
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(host.size() * sizeof(float));
  ASSERT_TRUE(buf.ok()) << buf.status();
  ASSERT_OK(buf->CopyFromHost(host.data(), host.size() * sizeof(float)));
  ASSERT_OK(g_comm->AllReduceSum(buf->data(), host.size(), DeviceDType::kF32, g_stream));
  ASSERT_OK(Sync());
  ASSERT_OK(buf->CopyToHost(host.data(), host.size() * sizeof(float)));
  for (size_t i = 0; i < host.size(); ++i) ASSERT_EQ(host[i], ExpectedSum(n, i)) << i;
  // With 2 ranks the first element is 1 + 2.
  if (n == 2) EXPECT_EQ(host[0], 3.0f);
}

TEST(NcclMpiTest, AllReduceSumsBf16AcrossRanks) {
  const int r = g_world->rank(), n = g_world->size();
  std::vector<uint16_t> host(517);
  for (size_t i = 0; i < host.size(); ++i) host[i] = F32ToBf16(Contribution(r, i));
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(host.size() * sizeof(uint16_t));
  ASSERT_TRUE(buf.ok()) << buf.status();
  ASSERT_OK(buf->CopyFromHost(host.data(), host.size() * sizeof(uint16_t)));
  ASSERT_OK(g_comm->AllReduceSum(buf->data(), host.size(), DeviceDType::kBf16, g_stream));
  ASSERT_OK(Sync());
  ASSERT_OK(buf->CopyToHost(host.data(), host.size() * sizeof(uint16_t)));
  for (size_t i = 0; i < host.size(); ++i) ASSERT_EQ(Bf16ToF32(host[i]), ExpectedSum(n, i)) << i;
}

TEST(NcclMpiTest, AllGatherOrdersByRank) {
  const int r = g_world->rank(), n = g_world->size();
  constexpr size_t kBytes = 13;
  std::vector<uint8_t> mine(kBytes);
  for (size_t i = 0; i < kBytes; ++i) mine[i] = static_cast<uint8_t>(40 * r + i);
  absl::StatusOr<DeviceBuffer> send = DeviceBuffer::Allocate(kBytes);
  absl::StatusOr<DeviceBuffer> recv = DeviceBuffer::Allocate(kBytes * n);
  ASSERT_TRUE(send.ok() && recv.ok());
  ASSERT_OK(send->CopyFromHost(mine.data(), kBytes));
  ASSERT_OK(g_comm->AllGather(send->data(), kBytes, recv->data(), g_stream));
  ASSERT_OK(Sync());
  std::vector<uint8_t> all(kBytes * n);
  ASSERT_OK(recv->CopyToHost(all.data(), all.size()));
  for (int q = 0; q < n; ++q) {
    for (size_t i = 0; i < kBytes; ++i) {
      ASSERT_EQ(all[q * kBytes + i], static_cast<uint8_t>(40 * q + i)) << q << " " << i;
    }
  }
}

TEST(NcclMpiTest, SendAndRecvMoveBytesBetweenRanks0And1BothWays) {
  const int r = g_world->rank();
  constexpr size_t kBytes = 4099;
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(kBytes);
  ASSERT_TRUE(buf.ok());
  std::vector<uint8_t> host(kBytes);
  for (int from : {0, 1}) {
    const int to = 1 - from;
    if (r == from) {
      for (size_t i = 0; i < kBytes; ++i) host[i] = static_cast<uint8_t>(7 * i + from);
      ASSERT_OK(buf->CopyFromHost(host.data(), kBytes));
      ASSERT_OK(g_comm->Send(buf->data(), kBytes, to, g_stream));
      ASSERT_OK(Sync());
    } else if (r == to) {
      std::vector<uint8_t> zeros(kBytes, 0);
      ASSERT_OK(buf->CopyFromHost(zeros.data(), kBytes));
      ASSERT_OK(g_comm->Recv(buf->data(), kBytes, from, g_stream));
      ASSERT_OK(Sync());
      ASSERT_OK(buf->CopyToHost(host.data(), kBytes));
      for (size_t i = 0; i < kBytes; ++i) {
        ASSERT_EQ(host[i], static_cast<uint8_t>(7 * i + from)) << "from " << from << " at " << i;
      }
    }
  }
}

// Rank 1 asks for device -1: every rank, rank 0 included, gets rank 1's InvalidArgument at
// once (the ranks agree before the NCCL init), none waits for the init timeout.
TEST(NcclMpiTest, OneRanksBadArgumentFailsEveryRankAtOnce) {
  const int device = g_world->rank() == 1 ? -1 : g_device;
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<DeviceCommunicator>> comm =
      CreateNcclCommunicator(*g_world, device, absl::Seconds(60));
  EXPECT_LT(absl::Now() - start, absl::Seconds(20));
  EXPECT_EQ(comm.status().code(), absl::StatusCode::kInvalidArgument) << comm.status();
  EXPECT_TRUE(absl::StartsWith(comm.status().message(), "rank 1: NCCL init of rank 1 of "))
      << comm.status();
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  auto mpi = tpserve::MpiRuntime::Create(&argc, &argv);
  if (!mpi.ok()) return 2;
  std::unique_ptr<tpserve::Communicator> world = (*mpi)->World();
  tpserve::g_world = world.get();
  const bool leader = world->rank() == 0;
  if (!leader) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }

  absl::StatusOr<tpserve::NodePlacement> placement = tpserve::NodeLocalPlacement();
  const absl::Status placed = tpserve::AgreeOnStatus(*world, placement.status());
  if (!placed.ok()) {
    if (leader) std::fprintf(stderr, "nccl_mpi_test: %s\n", placed.ToString().c_str());
    return 1;
  }
  // Skipped on every rank alike when any node lacks a GPU per rank.
  const int devices = tpserve::kernels::cuda::CudaDeviceCount();
  int32_t lacking = devices < placement->local_size ? 1 : 0;
  if (!world->AllReduceMax(&lacking, 1).ok()) return 1;
  if (lacking != 0) {
    std::printf("nccl_mpi_test: rank %d: %d CUDA device(s) for %d rank(s) on its node%s\n",
                world->rank(), devices, placement->local_size,
                leader ? "; SKIPPED on every rank (needs one GPU per rank)" : "");
    return 77;
  }
  if (world->size() < 2) {
    if (leader) std::fprintf(stderr, "nccl_mpi_test: needs at least 2 ranks (mpirun -np 2)\n");
    return 1;
  }

  tpserve::g_device = placement->local_rank;
  absl::StatusOr<std::unique_ptr<tpserve::DeviceCommunicator>> comm =
      tpserve::CreateNcclCommunicator(*world, tpserve::g_device, absl::Seconds(60));
  if (!comm.ok()) {
    if (leader) std::fprintf(stderr, "nccl_mpi_test: %s\n", comm.status().ToString().c_str());
    return 1;
  }
  tpserve::g_comm = comm->get();
  if (cudaStreamCreateWithFlags(&tpserve::g_stream, cudaStreamNonBlocking) != cudaSuccess) {
    std::fprintf(stderr, "nccl_mpi_test: rank %d: cudaStreamCreateWithFlags failed\n",
                 world->rank());
    return 1;
  }
  int rc = RUN_ALL_TESTS();
  int32_t any = rc;
  if (!world->AllReduceMax(&any, 1).ok()) any = 1;
  comm->reset();  // every rank finalises the communicator before MPI ends
  (void)cudaStreamDestroy(tpserve::g_stream);
  return any;
}
