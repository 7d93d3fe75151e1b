#include "comm/solo_communicator.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace tpserve {
namespace {

absl::Status NoPeer(const char* what, int peer) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " with peer ", peer, ": a group of one process has no other rank"));
}

}  // namespace

absl::Status SoloCommunicator::AllReduceSum(float* data, size_t count) {
  if (data == nullptr && count > 0) return absl::InvalidArgumentError("all-reduce: null data");
  return absl::OkStatus();
}

absl::Status SoloCommunicator::AllReduceMax(int32_t* data, size_t count) {
  if (data == nullptr && count > 0) return absl::InvalidArgumentError("all-reduce: null data");
  return absl::OkStatus();
}

absl::Status SoloCommunicator::AllGather(const void* send, size_t bytes, void* recv) {
  if (bytes == 0) return absl::OkStatus();
  if (send == nullptr || recv == nullptr) {
    return absl::InvalidArgumentError("all-gather: null buffer");
  }
  if (send != recv) std::memmove(recv, send, bytes);
  return absl::OkStatus();
}

absl::Status SoloCommunicator::Broadcast(void* data, size_t bytes, int root) {
  if (root != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("broadcast from rank ", root, ": a group of one process has only rank 0"));
  }
  return absl::OkStatus();
}

absl::Status SoloCommunicator::Send(const void*, size_t, int peer, int) {
  return NoPeer("send", peer);
}
absl::Status SoloCommunicator::Recv(void*, size_t, int peer, int) { return NoPeer("recv", peer); }
absl::Status SoloCommunicator::SendAsync(std::vector<uint8_t>, int peer, int) {
  return NoPeer("send", peer);
}
absl::Status SoloCommunicator::FlushSends() { return absl::OkStatus(); }
absl::StatusOr<bool> SoloCommunicator::Probe(int peer, int) {
  if (peer != 0) return NoPeer("probe", peer);
  return false;
}
absl::StatusOr<std::vector<uint8_t>> SoloCommunicator::RecvAny(int peer, int) {
  return NoPeer("recv", peer);
}

absl::StatusOr<std::unique_ptr<Communicator>> SoloCommunicator::Split(int, int) {
  return std::unique_ptr<Communicator>(new SoloCommunicator());
}

void SoloCommunicator::Abort(int code) { std::_Exit(code); }

}  // namespace tpserve
