// libFuzzer target: ParseGguf on arbitrary bytes, then ReadGgufRows of the first row of the
// first tensor when parsing succeeds. Besides "no crash, no sanitizer report", an accepted
// file must satisfy the promises of ParseGguf's contract, checked here.
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "model/gguf.h"
#include "model/gguf_dequant.h"

namespace {

void Require(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckAccepted(const tpserve::GgufFile& f, std::string_view file) {
  Require(f.version == 2 || f.version == 3);
  Require(f.alignment != 0 && (f.alignment & (f.alignment - 1)) == 0);
  Require(f.data_offset % f.alignment == 0);
  for (const tpserve::GgufTensorInfo& t : f.tensors) {
    Require(!t.dims.empty() && t.dims.size() <= 4);
    for (int64_t d : t.dims) Require(d >= 0);
    const std::optional<tpserve::GgmlTypeTraits> traits = tpserve::GetGgmlTypeTraits(t.type);
    Require(traits.has_value());
    Require(t.dims[0] % traits->block_elements == 0);
    Require((t.offset - f.data_offset) % f.alignment == 0);
    Require(t.offset >= f.data_offset && t.offset <= file.size() &&
            t.nbytes <= file.size() - t.offset);
    Require(t.nbytes == static_cast<uint64_t>(t.NumRows()) *
                            static_cast<uint64_t>(t.dims[0] / traits->block_elements) *
                            static_cast<uint64_t>(traits->block_bytes));
    if (t.nbytes > 0) {
      // Touch the first and last byte so ASan sees any offset that escapes the input.
      volatile char first = file[t.offset];
      volatile char last = file[t.offset + t.nbytes - 1];
      (void)first;
      (void)last;
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view file(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<tpserve::GgufFile> f = tpserve::ParseGguf(file, "fuzz.gguf");
  if (!f.ok()) {
    Require(f.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  CheckAccepted(*f, file);
  if (f->tensors.empty()) return 0;
  const tpserve::GgufTensorInfo& t = f->tensors[0];
  // A row's bytes are inside the file, so its element count is bounded by the input size.
  std::vector<float> row(t.NumRows() > 0 ? static_cast<size_t>(t.RowElements()) : 0);
  const absl::Status s = tpserve::ReadGgufRows(file, t, 0, 1, row.data());
  if (t.NumRows() > 0 && t.RowElements() > 0 && tpserve::CanDequantize(t.type)) {
    Require(s.ok());
  } else {
    Require(!s.ok() && s.code() == absl::StatusCode::kInvalidArgument);
  }
  return 0;
}
