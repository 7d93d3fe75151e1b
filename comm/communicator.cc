#include "comm/communicator.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status.h"

namespace tpserve {
namespace {
// Room for one rank's error text in the agreement exchange; longer messages are cut.
constexpr size_t kMessageBytes = 1024;
}  // namespace

absl::Status AgreeOnStatus(Communicator& comm, const absl::Status& local) {
  int32_t failed = local.ok() ? 0 : 1;
  RETURN_IF_ERROR(comm.AllReduceMax(&failed, 1));
  if (failed == 0) return absl::OkStatus();

  // Fixed-size record per rank: 4 bytes of status code, then the message.
  std::vector<char> mine(kMessageBytes, 0);
  const int32_t code = static_cast<int32_t>(local.code());
  std::memcpy(mine.data(), &code, sizeof code);
  const absl::string_view text = local.message();
  std::memcpy(mine.data() + sizeof code, text.data(),
              std::min(text.size(), kMessageBytes - sizeof code - 1));
  std::vector<char> all(kMessageBytes * comm.size());
  RETURN_IF_ERROR(comm.AllGather(mine.data(), kMessageBytes, all.data()));
  for (int r = 0; r < comm.size(); ++r) {
    const char* rec = all.data() + r * kMessageBytes;
    int32_t rc;
    std::memcpy(&rc, rec, sizeof rc);
    if (rc == 0) continue;
    return absl::Status(static_cast<absl::StatusCode>(rc),
                        absl::StrCat("rank ", r, ": ", rec + sizeof rc));
  }
  return absl::InternalError("a rank reported failure but sent no error");
}

absl::Status BroadcastBytes(Communicator& comm, std::vector<uint8_t>& bytes, int root) {
  uint64_t n = bytes.size();
  RETURN_IF_ERROR(comm.Broadcast(&n, sizeof n, root));
  bytes.resize(n);
  if (n == 0) return absl::OkStatus();
  return comm.Broadcast(bytes.data(), n, root);
}

}  // namespace tpserve
