// The NCCL DeviceCommunicator (comm/nccl/nccl_communicator.h) in one process, the only NCCL
// test that runs on a machine with one GPU and no MPI. The host communicator that bootstraps
// NCCL is written here: a group of one rank (rank 0 of 1), or a group that claims a second
// rank which never comes (rank 0 of 2), to prove that a missing peer ends in
// DeadlineExceeded within the init timeout instead of a hang.
//  1. NcclHostChecks (no GPU needed): the NCCL and CUDA code -> Status mapping, argument
//     checks of CreateNcclCommunicator, and a device this process cannot use.
//  2. NcclGpu (one GPU): init of a group of one; all-reduce (bf16, fp32) and all-gather on a
//     group of one leave/copy data bit for bit; bad arguments are InvalidArgument and leave
//     the communicator usable; an all-reduce captured in a CUDA graph; the init timeout.
// Without a CUDA device main() runs part 1 only and exits with 77, which ctest reports as
// skipped (tests/gpu/CMakeLists.txt: SKIP_RETURN_CODE 77). The multi-rank path (2 ranks over
// MPI) is tests/comm/nccl_mpi_test.cc.
#include "comm/nccl/nccl_communicator.h"
#include "tests/gpu/gpu_test_main.h"

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "comm/communicator.h"
#include "comm/nccl/nccl_status.h"
#include "common/dtype.h"
#include "kernels/cuda/cuda_status.h"

namespace tpserve {
namespace {

using kernels::cuda::CudaDeviceCount;
using kernels::cuda::DeviceBuffer;

#define ASSERT_OK(expr)                                       \
  do {                                                        \
    const absl::Status nccl_test_status_ = (expr);            \
    ASSERT_TRUE(nccl_test_status_.ok()) << nccl_test_status_; \
  } while (0)

// A host group living in this process: rank 0 of `claimed_size`. With claimed_size 1 it is a
// correct group of one. With more, the other ranks are absent: collectives return at once as
// if they had contributed nothing (all-reduce keeps this rank's values, all-gather leaves
// zeros, which AgreeOnStatus reads as "OK"), so CreateNcclCommunicator reaches the NCCL init,
// which then waits for ranks that never call it.
class InProcessGroup final : public Communicator {
 public:
  explicit InProcessGroup(int claimed_size) : size_(claimed_size) {}

  int rank() const override { return 0; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, size_t count) override { return absl::OkStatus(); }
  absl::Status AllReduceMax(int32_t* data, size_t count) override { return absl::OkStatus(); }
  absl::Status AllGather(const void* send, size_t bytes, void* recv) override {
    std::memset(recv, 0, bytes * static_cast<size_t>(size_));
    std::memcpy(recv, send, bytes);
    return absl::OkStatus();
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    if (root != 0) return absl::InvalidArgumentError("only rank 0 lives in this process");
    return absl::OkStatus();
  }
  absl::Status Send(const void*, size_t, int, int) override { return Unimplemented(); }
  absl::Status Recv(void*, size_t, int, int) override { return Unimplemented(); }
  absl::Status SendAsync(std::vector<uint8_t>, int, int) override { return Unimplemented(); }
  absl::Status FlushSends() override { return absl::OkStatus(); }
  absl::StatusOr<bool> Probe(int, int) override { return Unimplemented(); }
  absl::StatusOr<std::vector<uint8_t>> RecvAny(int, int) override { return Unimplemented(); }
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int, int) override { return Unimplemented(); }
  [[noreturn]] void Abort(int code) override { std::_Exit(code); }

 private:
  static absl::Status Unimplemented() {
    return absl::UnimplementedError("not needed by CreateNcclCommunicator");
  }
  const int size_;
};

// ============================== 1. host checks ==============================

TEST(NcclHostChecks, ThisBuildHasNccl) { EXPECT_TRUE(NcclAvailable()); }

TEST(NcclHostChecks, NcclResultsMapToTheirStatusCodes) {
  // ncclResult_t values, fixed by NCCL's ABI (nccl.h stays out of tests).
  const struct {
    int result;
    absl::StatusCode code;
  } cases[] = {
      {0, absl::StatusCode::kOk},               // ncclSuccess
      {1, absl::StatusCode::kUnavailable},      // ncclUnhandledCudaError
      {2, absl::StatusCode::kUnavailable},      // ncclSystemError
      {3, absl::StatusCode::kInternal},         // ncclInternalError
      {4, absl::StatusCode::kInvalidArgument},  // ncclInvalidArgument
      {5, absl::StatusCode::kInvalidArgument},  // ncclInvalidUsage
      {6, absl::StatusCode::kUnavailable},      // ncclRemoteError
      {7, absl::StatusCode::kInternal},         // ncclInProgress is not an outcome
      {1234, absl::StatusCode::kInternal},      // unknown
  };
  for (const auto& c : cases) {
    const absl::Status s = NcclResultToStatus(c.result, "NCCL thing");
    EXPECT_EQ(s.code(), c.code) << c.result << ": " << s;
    if (!s.ok()) {
      EXPECT_TRUE(absl::StartsWith(s.message(), "NCCL thing: ")) << s;
      EXPECT_GT(s.message().size(), std::string("NCCL thing: ").size()) << s;
    }
  }
}

TEST(NcclHostChecks, CudaResultsMapToTheirStatusCodes) {
  EXPECT_TRUE(CudaResultToStatus(cudaSuccess, "x").ok());
  const absl::Status invalid = CudaResultToStatus(cudaErrorInvalidDevice, "cudaSetDevice(9)");
  EXPECT_EQ(invalid.code(), absl::StatusCode::kInvalidArgument) << invalid;
  EXPECT_TRUE(absl::StrContains(invalid.message(), "cudaSetDevice(9): cudaErrorInvalidDevice"))
      << invalid;
  EXPECT_EQ(CudaResultToStatus(cudaErrorMemoryAllocation, "x").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(CudaResultToStatus(cudaErrorNoDevice, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(CudaResultToStatus(cudaErrorInsufficientDriver, "x").code(),
            absl::StatusCode::kUnavailable);
}

TEST(NcclHostChecks, BadArgumentsAreInvalidArgumentOnEveryRank) {
  InProcessGroup group(1);
  absl::StatusOr<std::unique_ptr<DeviceCommunicator>> negative_device =
      CreateNcclCommunicator(group, -1, absl::Seconds(5));
  EXPECT_EQ(negative_device.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(negative_device.status().message(),
            "rank 0: NCCL init of rank 0 of 1 on device -1: negative device");
  absl::StatusOr<std::unique_ptr<DeviceCommunicator>> no_time =
      CreateNcclCommunicator(group, 0, absl::ZeroDuration());
  EXPECT_EQ(no_time.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(no_time.status().message(), "is not positive")) << no_time.status();
}

// NCCL would let these override the communicator's config (blocking, resource sharing), which
// the implementation relies on: refused by name before any CUDA or NCCL call.
TEST(NcclHostChecks, OverridingEnvironmentVariablesAreRefusedByName) {
  InProcessGroup group(1);
  for (const char* name : {"NCCL_COMM_BLOCKING", "NCCL_COMM_SPLIT_SHARE_RESOURCES"}) {
    ASSERT_EQ(std::getenv(name), nullptr) << name << " is set in the test's environment";
    ASSERT_EQ(setenv(name, "1", 1), 0);
    absl::StatusOr<std::unique_ptr<DeviceCommunicator>> comm =
        CreateNcclCommunicator(group, 0, absl::Seconds(5));
    unsetenv(name);
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition) << comm.status();
    EXPECT_TRUE(absl::StrContains(comm.status().message(), absl::StrCat(name, "=1")))
        << comm.status();
  }
}

// Device `count` does not exist: without a GPU (or driver) that is device 0 and the error is
// Unavailable; with n GPUs it is device n, an invalid ordinal. Either way an error, at once.
TEST(NcclHostChecks, ADeviceThisProcessCannotUseIsAnErrorNotACrash) {
  const int count = CudaDeviceCount();
  InProcessGroup group(1);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<DeviceCommunicator>> comm =
      CreateNcclCommunicator(group, count, absl::Seconds(30));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  ASSERT_FALSE(comm.ok());
  EXPECT_EQ(comm.status().code(),
            count == 0 ? absl::StatusCode::kUnavailable : absl::StatusCode::kInvalidArgument)
      << comm.status();
  EXPECT_TRUE(
      absl::StrContains(comm.status().message(), "cudaSetDevice(" + std::to_string(count) + ")"))
      << comm.status();
}

// ============================== 2. one GPU ==============================

// A group of one on device 0 and a non-blocking stream of that device.
class NcclGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<DeviceCommunicator>> comm =
        CreateNcclCommunicator(group_, 0, absl::Seconds(60));
    ASSERT_TRUE(comm.ok()) << comm.status();
    comm_ = std::move(*comm);
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), cudaSuccess);
  }
  void TearDown() override {
    comm_.reset();
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }
  absl::Status Sync() { return kernels::cuda::SynchronizeStream(kernels::cuda::Stream{stream_}); }

  InProcessGroup group_{1};
  std::unique_ptr<DeviceCommunicator> comm_;
  cudaStream_t stream_ = nullptr;
};

// Values with many distinct bit patterns (signs, fractions, a subnormal-free range).
std::vector<float> Pattern(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i % 97) * 0.375f - 17.25f;
  return v;
}

TEST_F(NcclGpu, AGroupOfOneInitialises) {
  EXPECT_EQ(comm_->rank(), 0);
  EXPECT_EQ(comm_->size(), 1);
}

TEST_F(NcclGpu, AllReduceSumOfOneRankLeavesFp32DataUnchanged) {
  const std::vector<float> host = Pattern(1000);
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(host.size() * sizeof(float));
  ASSERT_TRUE(buf.ok()) << buf.status();
  ASSERT_OK(buf->CopyFromHost(host.data(), host.size() * sizeof(float)));
  ASSERT_OK(comm_->AllReduceSum(buf->data(), host.size(), DeviceDType::kF32, stream_));
  ASSERT_OK(Sync());
  std::vector<float> got(host.size(), -1.0f);
  ASSERT_OK(buf->CopyToHost(got.data(), got.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(got.data(), host.data(), host.size() * sizeof(float)));
}

TEST_F(NcclGpu, AllReduceSumOfOneRankLeavesBf16DataUnchanged) {
  const std::vector<float> f = Pattern(777);
  std::vector<uint16_t> host(f.size());
  for (size_t i = 0; i < f.size(); ++i) host[i] = F32ToBf16(f[i]);
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(host.size() * sizeof(uint16_t));
  ASSERT_TRUE(buf.ok()) << buf.status();
  ASSERT_OK(buf->CopyFromHost(host.data(), host.size() * sizeof(uint16_t)));
  ASSERT_OK(comm_->AllReduceSum(buf->data(), host.size(), DeviceDType::kBf16, stream_));
  ASSERT_OK(Sync());
  std::vector<uint16_t> got(host.size(), 0xffff);
  ASSERT_OK(buf->CopyToHost(got.data(), got.size() * sizeof(uint16_t)));
  EXPECT_EQ(got, host);
  // Nothing to reduce is fine too.
  EXPECT_TRUE(comm_->AllReduceSum(buf->data(), 0, DeviceDType::kBf16, stream_).ok());
}

TEST_F(NcclGpu, AllGatherOfOneRankCopiesSendIntoRecvAndNothingElse) {
  constexpr size_t kBytes = 37;  // odd, so no alignment is assumed
  constexpr size_t kGuard = 64;
  std::vector<uint8_t> send(kBytes);
  for (size_t i = 0; i < kBytes; ++i) send[i] = static_cast<uint8_t>(3 * i + 1);
  std::vector<uint8_t> recv_init(kBytes + kGuard, 0xee);
  absl::StatusOr<DeviceBuffer> send_buf = DeviceBuffer::Allocate(kBytes);
  absl::StatusOr<DeviceBuffer> recv_buf = DeviceBuffer::Allocate(recv_init.size());
  ASSERT_TRUE(send_buf.ok() && recv_buf.ok());
  ASSERT_OK(send_buf->CopyFromHost(send.data(), kBytes));
  ASSERT_OK(recv_buf->CopyFromHost(recv_init.data(), recv_init.size()));
  ASSERT_OK(comm_->AllGather(send_buf->data(), kBytes, recv_buf->data(), stream_));
  ASSERT_OK(Sync());
  std::vector<uint8_t> got(recv_init.size());
  ASSERT_OK(recv_buf->CopyToHost(got.data(), got.size()));
  EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + kBytes), send);
  EXPECT_EQ(std::vector<uint8_t>(got.begin() + kBytes, got.end()),
            std::vector<uint8_t>(kGuard, 0xee))
      << "all-gather wrote past size() * bytes";
}

TEST_F(NcclGpu, BadArgumentsAreInvalidArgumentAndLeaveTheCommunicatorUsable) {
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(256);
  ASSERT_TRUE(buf.ok());
  const auto kInvalid = absl::StatusCode::kInvalidArgument;
  EXPECT_EQ(comm_->AllReduceSum(nullptr, 4, DeviceDType::kF32, stream_).code(), kInvalid);
  EXPECT_EQ(comm_->AllGather(nullptr, 4, buf->data(), stream_).code(), kInvalid);
  EXPECT_EQ(comm_->AllGather(buf->data(), 4, nullptr, stream_).code(), kInvalid);
  // In a group of one every peer is either this rank or out of range.
  for (int peer : {0, 1, -1}) {
    EXPECT_EQ(comm_->Send(buf->data(), 16, peer, stream_).code(), kInvalid) << peer;
    EXPECT_EQ(comm_->Recv(buf->data(), 16, peer, stream_).code(), kInvalid) << peer;
  }
  EXPECT_EQ(comm_->Send(nullptr, 16, 0, stream_).code(), kInvalid);
  const absl::Status self = comm_->Send(buf->data(), 16, 0, stream_);
  EXPECT_TRUE(absl::StrContains(self.message(), "is this rank")) << self;
  const absl::Status range = comm_->Recv(buf->data(), 16, 3, stream_);
  EXPECT_TRUE(absl::StrContains(range.message(), "peer 3 is not a rank")) << range;
  // Nothing was enqueued and the communicator still works.
  ASSERT_OK(comm_->AllReduceSum(buf->data(), 64, DeviceDType::kF32, stream_));
  ASSERT_OK(Sync());
}

// The worker runs its decode step as a CUDA graph, the all-reduces included.
TEST_F(NcclGpu, AllReduceInsideACapturedCudaGraph) {
  const std::vector<float> host = Pattern(4096);
  absl::StatusOr<DeviceBuffer> buf = DeviceBuffer::Allocate(host.size() * sizeof(float));
  ASSERT_TRUE(buf.ok());
  ASSERT_OK(buf->CopyFromHost(host.data(), host.size() * sizeof(float)));
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  const absl::Status reduce =
      comm_->AllReduceSum(buf->data(), host.size(), DeviceDType::kF32, stream_);
  ASSERT_EQ(cudaStreamEndCapture(stream_, &graph), cudaSuccess);
  ASSERT_OK(reduce);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  for (int i = 0; i < 3; ++i) ASSERT_EQ(cudaGraphLaunch(exec, stream_), cudaSuccess);
  ASSERT_OK(Sync());
  (void)cudaGraphExecDestroy(exec);
  (void)cudaGraphDestroy(graph);
  std::vector<float> got(host.size());
  ASSERT_OK(buf->CopyToHost(got.data(), got.size() * sizeof(float)));
  EXPECT_EQ(0, std::memcmp(got.data(), host.data(), host.size() * sizeof(float)));
}

// Rank 0 of a claimed group of 2 whose rank 1 never starts: NCCL's init waits for it, and
// CreateNcclCommunicator must give up at the 2 s deadline (DeadlineExceeded, the init
// aborted) rather than hang. The call runs on a thread so that a hang fails the test with a
// message instead of stalling it until ctest's timeout. Runs last (it leaves NCCL's bootstrap
// thread of that init waiting for the absent rank).
TEST(NcclGpuTimeout, InitWithAnAbsentPeerEndsInDeadlineExceededNotAHang) {
  // Shared with the thread, which may outlive this test if it hangs.
  auto group = std::make_shared<InProcessGroup>(2);
  auto result = std::make_shared<std::promise<absl::Status>>();
  std::future<absl::Status> done = result->get_future();
  const absl::Time start = absl::Now();
  std::thread([group, result] {
    absl::StatusOr<std::unique_ptr<DeviceCommunicator>> comm =
        CreateNcclCommunicator(*group, 0, absl::Seconds(2));
    result->set_value(comm.status());
  }).detach();
  if (done.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
    std::fprintf(stderr,
                 "FAILED: CreateNcclCommunicator with a 2 s timeout and an absent peer has not "
                 "returned after 30 s (a hang in the init or in ncclCommAbort)\n");
    std::fflush(stderr);
    std::_Exit(1);  // the thread is stuck inside NCCL: no orderly way out
  }
  const absl::Duration elapsed = absl::Now() - start;
  const absl::Status status = done.get();
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_TRUE(absl::StrContains(
      status.message(), "rank 0: NCCL init of rank 0 of 2 on device 0 did not finish within 2s"))
      << status;
  EXPECT_GE(elapsed, absl::Milliseconds(1900)) << "gave up before the deadline";
  EXPECT_LT(elapsed, absl::Seconds(10)) << "took " << absl::FormatDuration(elapsed);
  std::printf("nccl_communicator_test: absent peer -> %s after %s\n",
              std::string(absl::StatusCodeToString(status.code())).c_str(),
              absl::FormatDuration(elapsed).c_str());
}

}  // namespace
}  // namespace tpserve

int main(int argc, char** argv) {
  const int devices = tpserve::kernels::cuda::CudaDeviceCount();
  if (devices > 0) {
    const absl::StatusOr<std::string> desc = tpserve::kernels::cuda::CudaDeviceDescription(0);
    std::printf("nccl_communicator_test: device 0 of %d: %s\n", devices,
                desc.ok() ? desc->c_str() : std::string(desc.status().message()).c_str());
  }
  return tpserve::testing::RunGpuTests(argc, argv, "nccl_communicator_test", devices,
                                       "NcclHostChecks.*");
}
