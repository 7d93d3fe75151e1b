// The GGUF file format (llama.cpp / ggml), versions 2 and 3, little-endian (layer: model; no
// compute). Parsing only: the header, typed metadata and tensor descriptions. Dequantisation of
// the tensor data lives in model/gguf_dequant.h.
//
// A file is: "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata
// key/values, the tensor infos, padding to `general.alignment` (default 32), then the data
// section; each tensor's offset is relative to the data section and a multiple of the alignment.
//
// Threading: parsed values are immutable; reading them from many threads is safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/mapped_file.h"

namespace tpserve {

// ggml tensor types, numbered as ggml numbers them (the numbers are the file format).
enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ5_0 = 6,
  kQ5_1 = 7,
  kQ8_0 = 8,
  kQ2_K = 10,
  kQ3_K = 11,
  kQ4_K = 12,
  kQ5_K = 13,
  kQ6_K = 14,
  kQ8_K = 15,
  kIQ2_XXS = 16,
  kIQ2_XS = 17,
  kIQ3_XXS = 18,
  kIQ1_S = 19,
  kIQ4_NL = 20,
  kIQ3_S = 21,
  kIQ2_S = 22,
  kIQ4_XS = 23,
  kI8 = 24,
  kI16 = 25,
  kI32 = 26,
  kI64 = 27,
  kF64 = 28,
  kIQ1_M = 29,
  kBF16 = 30,
  kTQ1_0 = 34,
  kTQ2_0 = 35,
  kMXFP4 = 39,
};

// Storage geometry of a ggml type: `block_elements` consecutive elements of a row are stored
// in `block_bytes` bytes. std::nullopt for a number ggml does not define for files.
struct GgmlTypeTraits {
  const char* name;
  int64_t block_elements;
  int64_t block_bytes;
};
std::optional<GgmlTypeTraits> GetGgmlTypeTraits(GgmlType type);

// One metadata value. Scalars keep their GGUF type; arrays keep their element type (also when
// empty), and may nest. Copyable value type.
class GgufValue {
 public:
  // GGUF value type numbers (the file format).
  enum class Type : uint32_t {
    kUint8 = 0,
    kInt8 = 1,
    kUint16 = 2,
    kInt16 = 3,
    kUint32 = 4,
    kInt32 = 5,
    kFloat32 = 6,
    kBool = 7,
    kString = 8,
    kArray = 9,
    kUint64 = 10,
    kInt64 = 11,
    kFloat64 = 12,
  };

  GgufValue() = default;
  static GgufValue Unsigned(Type type, uint64_t v);  // kUint8/16/32/64
  static GgufValue Signed(Type type, int64_t v);     // kInt8/16/32/64
  static GgufValue Float(Type type, double v);       // kFloat32/64
  static GgufValue Bool(bool v);
  static GgufValue String(std::string v);
  static GgufValue Array(Type element_type, std::vector<GgufValue> elements);

  Type type() const { return type_; }
  // For kArray: the declared type of the elements.
  Type element_type() const { return element_type_; }

  // Each accessor returns nullopt / nullptr when the value is not of a fitting type:
  // AsUint64 accepts any integer type holding a non-negative value, AsInt64 any integer type
  // whose value fits int64, AsDouble only kFloat32/kFloat64, AsBool only kBool.
  std::optional<uint64_t> AsUint64() const;
  std::optional<int64_t> AsInt64() const;
  std::optional<double> AsDouble() const;
  std::optional<bool> AsBool() const;
  const std::string* AsString() const;
  const std::vector<GgufValue>* AsArray() const;

 private:
  Type type_ = Type::kUint8;
  Type element_type_ = Type::kUint8;
  std::variant<uint64_t, int64_t, double, bool, std::string, std::vector<GgufValue>> value_;
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::kF32;
  // ggml order: dims[0] is the contiguous dimension (a row); 1 to 4 entries, each >= 0.
  std::vector<int64_t> dims;
  uint64_t offset = 0;  // absolute byte offset of the data in the file
  uint64_t nbytes = 0;  // bytes of data: dims[0] / block_elements * block_bytes * other dims
  int64_t RowElements() const { return dims.empty() ? 0 : dims[0]; }
  int64_t NumRows() const;  // product of dims[1..]; 1 for a 1-D tensor
  int64_t NumElements() const;
};

struct GgufFile {
  uint32_t version = 0;
  uint64_t alignment = 32;
  uint64_t data_offset = 0;  // absolute offset of the (aligned) data section
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensorInfo> tensors;  // in file order

  // nullptr when absent.
  const GgufValue* FindMetadata(const std::string& key) const;
  const GgufTensorInfo* FindTensor(std::string_view name) const;
};

// Parses a whole GGUF file held in memory (`bytes` is the full file; `source` names it in
// errors). Checks: magic, version 2 or 3, counts plausible for the file size, every read in
// bounds, known value types, array nesting at most 16 deep, unique keys and tensor names,
// `general.alignment` a power of two, tensors with 1..4 dims, known ggml types, dims[0] a
// multiple of the type's block, offsets aligned, sizes computed without overflow and every
// tensor's data inside the file. Errors are InvalidArgument naming the file and the problem.
[[nodiscard]] absl::StatusOr<GgufFile> ParseGguf(std::string_view bytes, std::string_view source);

// Dequantises rows [first_row, first_row + num_rows) of tensor `t` (rows of t.RowElements()
// elements) from `bytes` (the file `t` was parsed from) into `out`, which must hold
// num_rows * t.RowElements() floats. Reads only those rows. InvalidArgument when the range is
// outside the tensor or the type cannot be dequantised.
[[nodiscard]] absl::Status ReadGgufRows(std::string_view bytes, const GgufTensorInfo& t,
                                        int64_t first_row, int64_t num_rows, float* out);

// A memory-mapped, parsed GGUF file. Not copyable; reading is thread-safe.
class GgufModel {
 public:
  // Maps and parses `path`. Errors: those of MappedFile::Open and ParseGguf.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<GgufModel>> Open(const std::string& path);

  const GgufFile& file() const { return file_; }
  const MappedFile& mapping() const { return mapped_; }
  std::string_view bytes() const {
    return {reinterpret_cast<const char*>(mapped_.data()), mapped_.size()};
  }
  // See ReadGgufRows.
  [[nodiscard]] absl::Status ReadRows(const GgufTensorInfo& t, int64_t first_row,
                                      int64_t num_rows, float* out) const {
    return ReadGgufRows(bytes(), t, first_row, num_rows, out);
  }

 private:
  GgufModel(MappedFile mapped, GgufFile file)
      : mapped_(std::move(mapped)), file_(std::move(file)) {}
  MappedFile mapped_;
  GgufFile file_;
};

// Same as GgufModel::Open.
[[nodiscard]] absl::StatusOr<std::unique_ptr<GgufModel>> OpenGguf(const std::string& path);

}  // namespace tpserve
