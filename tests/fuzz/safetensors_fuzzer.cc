// libFuzzer target: ParseSafetensors on arbitrary bytes. Besides "no crash, no sanitizer
// report", an accepted file must satisfy every promise of the header's contract, checked here.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "model/safetensors.h"

namespace {

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckAccepted(const tpserve::SafetensorsHeader& h, std::string_view file) {
  Require(h.data_offset >= 8 && h.data_offset <= file.size());
  const uint64_t data_size = file.size() - h.data_offset;
  std::vector<const tpserve::TensorInfo*> used;
  for (size_t i = 0; i < h.tensors.size(); ++i) {
    const tpserve::TensorInfo& t = h.tensors[i];
    if (i > 0) Require(h.tensors[i - 1].name < t.name);
    Require(t.name != "__metadata__");
    Require(t.data_begin <= t.data_end && t.data_end <= data_size);
    const int64_t n = t.NumElements();
    Require(n >= 0);
    Require(t.data_end - t.data_begin == static_cast<uint64_t>(n) * tpserve::DTypeSize(t.dtype));
    if (n > 0) {
      // Touch the first and last byte so ASan sees any offset that escapes the input.
      volatile char first = file[h.data_offset + t.data_begin];
      volatile char last = file[h.data_offset + t.data_end - 1];
      (void)first;
      (void)last;
      used.push_back(&t);
    }
  }
  std::sort(used.begin(), used.end(),
            [](auto* a, auto* b) { return a->data_begin < b->data_begin; });
  for (size_t i = 1; i < used.size(); ++i) Require(used[i - 1]->data_end <= used[i]->data_begin);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<tpserve::SafetensorsHeader> h =
      tpserve::ParseSafetensors(file, "fuzz.safetensors");
  if (h.ok()) {
    CheckAccepted(*h, file);
  } else {
    Require(h.status().code() == absl::StatusCode::kInvalidArgument);
  }
  return 0;
}
