#include "model/gguf.h"

#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <unordered_set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status.h"
#include "model/gguf_dequant.h"

namespace tpserve {
namespace {

constexpr uint32_t kMaxDims = 4;
// Not a limit of the format: a bound so that a hostile file cannot exhaust the stack.
constexpr int kMaxArrayDepth = 16;

// Smallest encodings, used to reject counts that could not fit in the rest of the file
// before anything is allocated for them.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;          // key length, type, one byte of value
constexpr uint64_t kMinTensorInfoBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset

// Names and keys come from the file; keep messages bounded whatever they hold.
std::string Quoted(std::string_view s) {
  constexpr size_t kMaxLen = 200;
  if (s.size() > kMaxLen) return absl::StrCat("\"", std::string(s.substr(0, kMaxLen)), "...\"");
  return absl::StrCat("\"", std::string(s), "\"");
}

bool MulOverflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

// Bounds-checked little-endian reader over the file. Every error names the file and offset.
class Reader {
 public:
  Reader(std::string_view bytes, std::string_view source) : bytes_(bytes), source_(source) {}

  absl::Status Error(std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(std::string(source_), ": ", std::string(what), " (at byte ", pos_, ")"));
  }
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }

  template <typename T>
  absl::Status Read(T* v, std::string_view what) {
    if (remaining() < sizeof(T)) {
      return Error(absl::StrCat("file ends inside ", std::string(what)));
    }
    std::memcpy(v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return absl::OkStatus();
  }

  absl::Status ReadString(std::string* s, std::string_view what) {
    uint64_t len = 0;
    RETURN_IF_ERROR(Read(&len, what));
    if (len > remaining()) {
      return Error(absl::StrCat(std::string(what), " has length ", len, " past the end of the file (",
                                remaining(), " bytes left)"));
    }
    s->assign(bytes_.data() + pos_, len);
    pos_ += len;
    return absl::OkStatus();
  }

 private:
  std::string_view bytes_;
  std::string_view source_;
  uint64_t pos_ = 0;
};

bool IsKnownValueType(uint32_t t) { return t <= static_cast<uint32_t>(GgufValue::Type::kFloat64); }

// Fewest bytes one value of type `t` can take (strings and arrays: their length prefixes).
uint64_t MinValueBytes(GgufValue::Type t) {
  switch (t) {
    case GgufValue::Type::kUint8:
    case GgufValue::Type::kInt8:
    case GgufValue::Type::kBool:
      return 1;
    case GgufValue::Type::kUint16:
    case GgufValue::Type::kInt16:
      return 2;
    case GgufValue::Type::kUint32:
    case GgufValue::Type::kInt32:
    case GgufValue::Type::kFloat32:
      return 4;
    case GgufValue::Type::kString:
    case GgufValue::Type::kUint64:
    case GgufValue::Type::kInt64:
    case GgufValue::Type::kFloat64:
      return 8;
    case GgufValue::Type::kArray:
      return 4 + 8;
  }
  return 1;
}

template <typename T>
absl::StatusOr<T> ReadScalar(Reader& r, std::string_view what) {
  T v{};
  RETURN_IF_ERROR(r.Read(&v, what));
  return v;
}

absl::StatusOr<GgufValue> ReadValue(Reader& r, GgufValue::Type type, const std::string& key,
                                    int depth) {
  const std::string what = absl::StrCat("value of ", Quoted(key));
  using T = GgufValue::Type;
  switch (type) {
    case T::kUint8: {
      ASSIGN_OR_RETURN(uint8_t v, ReadScalar<uint8_t>(r, what));
      return GgufValue::Unsigned(type, v);
    }
    case T::kInt8: {
      ASSIGN_OR_RETURN(int8_t v, ReadScalar<int8_t>(r, what));
      return GgufValue::Signed(type, v);
    }
    case T::kUint16: {
      ASSIGN_OR_RETURN(uint16_t v, ReadScalar<uint16_t>(r, what));
      return GgufValue::Unsigned(type, v);
    }
    case T::kInt16: {
      ASSIGN_OR_RETURN(int16_t v, ReadScalar<int16_t>(r, what));
      return GgufValue::Signed(type, v);
    }
    case T::kUint32: {
      ASSIGN_OR_RETURN(uint32_t v, ReadScalar<uint32_t>(r, what));
      return GgufValue::Unsigned(type, v);
    }
    case T::kInt32: {
      ASSIGN_OR_RETURN(int32_t v, ReadScalar<int32_t>(r, what));
      return GgufValue::Signed(type, v);
    }
    case T::kUint64: {
      ASSIGN_OR_RETURN(uint64_t v, ReadScalar<uint64_t>(r, what));
      return GgufValue::Unsigned(type, v);
    }
    case T::kInt64: {
      ASSIGN_OR_RETURN(int64_t v, ReadScalar<int64_t>(r, what));
      return GgufValue::Signed(type, v);
    }
    case T::kFloat32: {
      ASSIGN_OR_RETURN(float v, ReadScalar<float>(r, what));
      return GgufValue::Float(type, v);
    }
    case T::kFloat64: {
      ASSIGN_OR_RETURN(double v, ReadScalar<double>(r, what));
      return GgufValue::Float(type, v);
    }
    case T::kBool: {
      ASSIGN_OR_RETURN(uint8_t v, ReadScalar<uint8_t>(r, what));
      if (v > 1) return r.Error(absl::StrCat(what, " is a bool with byte value ", v));
      return GgufValue::Bool(v != 0);
    }
    case T::kString: {
      std::string s;
      RETURN_IF_ERROR(r.ReadString(&s, what));
      return GgufValue::String(std::move(s));
    }
    case T::kArray: {
      if (depth >= kMaxArrayDepth) {
        return r.Error(absl::StrCat(what, " nests arrays more than ", kMaxArrayDepth, " deep"));
      }
      ASSIGN_OR_RETURN(uint32_t elem_raw, ReadScalar<uint32_t>(r, what));
      if (!IsKnownValueType(elem_raw)) {
        return r.Error(absl::StrCat(what, " is an array of unknown value type ", elem_raw));
      }
      const auto elem_type = static_cast<T>(elem_raw);
      ASSIGN_OR_RETURN(uint64_t count, ReadScalar<uint64_t>(r, what));
      if (count > r.remaining() / MinValueBytes(elem_type)) {
        return r.Error(absl::StrCat(what, " is an array of ", count,
                                    " elements, more than the rest of the file can hold"));
      }
      std::vector<GgufValue> elements;
      elements.reserve(count);
      for (uint64_t i = 0; i < count; ++i) {
        ASSIGN_OR_RETURN(GgufValue e, ReadValue(r, elem_type, key, depth + 1));
        elements.push_back(std::move(e));
      }
      return GgufValue::Array(elem_type, std::move(elements));
    }
  }
  return r.Error(absl::StrCat(what, " has unknown value type ", static_cast<uint32_t>(type)));
}

absl::StatusOr<GgufFile> Parse(std::string_view bytes, std::string_view source) {
  Reader r(bytes, source);
  GgufFile file;

  char magic[4] = {};
  RETURN_IF_ERROR(r.Read(&magic, "the magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0) return r.Error("is not a GGUF file (bad magic)");
  RETURN_IF_ERROR(r.Read(&file.version, "the version"));
  if (file.version != 2 && file.version != 3) {
    return r.Error(absl::StrCat("has GGUF version ", file.version,
                                "; only versions 2 and 3 (little-endian) are supported"));
  }
  uint64_t n_tensors = 0, n_kv = 0;
  RETURN_IF_ERROR(r.Read(&n_tensors, "the tensor count"));
  RETURN_IF_ERROR(r.Read(&n_kv, "the metadata count"));
  if (n_kv > r.remaining() / kMinKvBytes) {
    return r.Error(absl::StrCat("declares ", n_kv, " metadata entries, more than the file can hold"));
  }
  if (n_tensors > r.remaining() / kMinTensorInfoBytes) {
    return r.Error(absl::StrCat("declares ", n_tensors, " tensors, more than the file can hold"));
  }

  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key;
    RETURN_IF_ERROR(r.ReadString(&key, absl::StrCat("metadata key #", i)));
    ASSIGN_OR_RETURN(uint32_t type_raw,
                     ReadScalar<uint32_t>(r, absl::StrCat("the type of ", Quoted(key))));
    if (!IsKnownValueType(type_raw)) {
      return r.Error(absl::StrCat("metadata ", Quoted(key), " has unknown value type ", type_raw));
    }
    ASSIGN_OR_RETURN(GgufValue v,
                     ReadValue(r, static_cast<GgufValue::Type>(type_raw), key, /*depth=*/0));
    if (file.metadata.count(key) != 0) {
      return r.Error(absl::StrCat("has metadata key ", Quoted(key), " twice"));
    }
    file.metadata.emplace(std::move(key), std::move(v));
  }

  if (const GgufValue* a = file.FindMetadata("general.alignment"); a != nullptr) {
    const std::optional<uint64_t> align = a->AsUint64();
    if (!align.has_value() || *align == 0 || (*align & (*align - 1)) != 0 ||
        *align > (uint64_t{1} << 30)) {
      return r.Error("has general.alignment that is not a power-of-two integer <= 2^30");
    }
    file.alignment = *align;
  }

  file.tensors.reserve(n_tensors);
  std::unordered_set<std::string> names;
  std::vector<uint64_t> relative_offsets;
  relative_offsets.reserve(n_tensors);
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    RETURN_IF_ERROR(r.ReadString(&t.name, absl::StrCat("the name of tensor #", i)));
    const std::string what = absl::StrCat("tensor ", Quoted(t.name));
    if (!names.insert(t.name).second) return r.Error(absl::StrCat("has ", what, " twice"));
    ASSIGN_OR_RETURN(uint32_t n_dims, ReadScalar<uint32_t>(r, absl::StrCat("the dims of ", what)));
    if (n_dims == 0 || n_dims > kMaxDims) {
      return r.Error(absl::StrCat(what, " has ", n_dims, " dims; 1 to ", kMaxDims, " are allowed"));
    }
    for (uint32_t d = 0; d < n_dims; ++d) {
      ASSIGN_OR_RETURN(uint64_t ne, ReadScalar<uint64_t>(r, absl::StrCat("the dims of ", what)));
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return r.Error(absl::StrCat(what, " has dim ", d, " = ", ne, ", too large"));
      }
      t.dims.push_back(static_cast<int64_t>(ne));
    }
    ASSIGN_OR_RETURN(uint32_t type_raw, ReadScalar<uint32_t>(r, absl::StrCat("the type of ", what)));
    t.type = static_cast<GgmlType>(type_raw);
    const std::optional<GgmlTypeTraits> traits = GetGgmlTypeTraits(t.type);
    if (!traits.has_value()) {
      return r.Error(absl::StrCat(what, " has unknown ggml type ", type_raw));
    }
    uint64_t rel_offset = 0;
    RETURN_IF_ERROR(r.Read(&rel_offset, absl::StrCat("the offset of ", what)));
    if (rel_offset % file.alignment != 0) {
      return r.Error(absl::StrCat(what, " has offset ", rel_offset, " not a multiple of the alignment ",
                                  file.alignment));
    }
    if (t.dims[0] % traits->block_elements != 0) {
      return r.Error(absl::StrCat(what, " of type ", traits->name, " has a row of ", t.dims[0],
                                  " elements, not a multiple of its block of ",
                                  traits->block_elements));
    }
    uint64_t nbytes = static_cast<uint64_t>(t.dims[0] / traits->block_elements);
    bool overflow = MulOverflows(nbytes, static_cast<uint64_t>(traits->block_bytes), &nbytes);
    // Rows and elements are both kept below 2^63 so that int64 arithmetic on them is safe.
    uint64_t rows = 1;
    for (size_t d = 1; d < t.dims.size(); ++d) {
      overflow = overflow || MulOverflows(nbytes, static_cast<uint64_t>(t.dims[d]), &nbytes);
      overflow = overflow || MulOverflows(rows, static_cast<uint64_t>(t.dims[d]), &rows);
    }
    uint64_t elements = 0;
    overflow = overflow || MulOverflows(rows, static_cast<uint64_t>(t.dims[0]), &elements);
    constexpr uint64_t kMaxInt64 = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
    if (overflow || rows > kMaxInt64 || elements > kMaxInt64) {
      return r.Error(absl::StrCat(what, " has a size that overflows 64 bits"));
    }
    t.nbytes = nbytes;
    relative_offsets.push_back(rel_offset);
    file.tensors.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment.
  const uint64_t end_of_infos = r.pos();
  const uint64_t pad = (file.alignment - end_of_infos % file.alignment) % file.alignment;
  file.data_offset = end_of_infos + pad;  // cannot overflow: both are far below 2^63
  for (size_t i = 0; i < file.tensors.size(); ++i) {
    GgufTensorInfo& t = file.tensors[i];
    uint64_t begin = 0, end = 0;
    if (__builtin_add_overflow(file.data_offset, relative_offsets[i], &begin) ||
        __builtin_add_overflow(begin, t.nbytes, &end) || end > bytes.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          std::string(source), ": tensor ", Quoted(t.name), " (offset ", relative_offsets[i],
          " in the data section at ", file.data_offset, ", ", t.nbytes,
          " bytes) extends past the end of the file (", bytes.size(), " bytes)"));
    }
    t.offset = begin;
  }
  return file;
}

}  // namespace

std::optional<GgmlTypeTraits> GetGgmlTypeTraits(GgmlType type) {
  switch (type) {
    case GgmlType::kF32: return GgmlTypeTraits{"F32", 1, 4};
    case GgmlType::kF16: return GgmlTypeTraits{"F16", 1, 2};
    case GgmlType::kQ4_0: return GgmlTypeTraits{"Q4_0", 32, 18};
    case GgmlType::kQ4_1: return GgmlTypeTraits{"Q4_1", 32, 20};
    case GgmlType::kQ5_0: return GgmlTypeTraits{"Q5_0", 32, 22};
    case GgmlType::kQ5_1: return GgmlTypeTraits{"Q5_1", 32, 24};
    case GgmlType::kQ8_0: return GgmlTypeTraits{"Q8_0", 32, 34};
    case GgmlType::kQ2_K: return GgmlTypeTraits{"Q2_K", 256, 84};
    case GgmlType::kQ3_K: return GgmlTypeTraits{"Q3_K", 256, 110};
    case GgmlType::kQ4_K: return GgmlTypeTraits{"Q4_K", 256, 144};
    case GgmlType::kQ5_K: return GgmlTypeTraits{"Q5_K", 256, 176};
    case GgmlType::kQ6_K: return GgmlTypeTraits{"Q6_K", 256, 210};
    case GgmlType::kQ8_K: return GgmlTypeTraits{"Q8_K", 256, 292};
    case GgmlType::kIQ2_XXS: return GgmlTypeTraits{"IQ2_XXS", 256, 66};
    case GgmlType::kIQ2_XS: return GgmlTypeTraits{"IQ2_XS", 256, 74};
    case GgmlType::kIQ3_XXS: return GgmlTypeTraits{"IQ3_XXS", 256, 98};
    case GgmlType::kIQ1_S: return GgmlTypeTraits{"IQ1_S", 256, 50};
    case GgmlType::kIQ4_NL: return GgmlTypeTraits{"IQ4_NL", 32, 18};
    case GgmlType::kIQ3_S: return GgmlTypeTraits{"IQ3_S", 256, 110};
    case GgmlType::kIQ2_S: return GgmlTypeTraits{"IQ2_S", 256, 82};
    case GgmlType::kIQ4_XS: return GgmlTypeTraits{"IQ4_XS", 256, 136};
    case GgmlType::kI8: return GgmlTypeTraits{"I8", 1, 1};
    case GgmlType::kI16: return GgmlTypeTraits{"I16", 1, 2};
    case GgmlType::kI32: return GgmlTypeTraits{"I32", 1, 4};
    case GgmlType::kI64: return GgmlTypeTraits{"I64", 1, 8};
    case GgmlType::kF64: return GgmlTypeTraits{"F64", 1, 8};
    case GgmlType::kIQ1_M: return GgmlTypeTraits{"IQ1_M", 256, 56};
    case GgmlType::kBF16: return GgmlTypeTraits{"BF16", 1, 2};
    case GgmlType::kTQ1_0: return GgmlTypeTraits{"TQ1_0", 256, 54};
    case GgmlType::kTQ2_0: return GgmlTypeTraits{"TQ2_0", 256, 66};
    case GgmlType::kMXFP4: return GgmlTypeTraits{"MXFP4", 32, 17};
  }
  return std::nullopt;
}

GgufValue GgufValue::Unsigned(Type type, uint64_t v) {
  GgufValue g;
  g.type_ = type;
  g.value_ = v;
  return g;
}
GgufValue GgufValue::Signed(Type type, int64_t v) {
  GgufValue g;
  g.type_ = type;
  g.value_ = v;
  return g;
}
GgufValue GgufValue::Float(Type type, double v) {
  GgufValue g;
  g.type_ = type;
  g.value_ = v;
  return g;
}
GgufValue GgufValue::Bool(bool v) {
  GgufValue g;
  g.type_ = Type::kBool;
  g.value_ = v;
  return g;
}
GgufValue GgufValue::String(std::string v) {
  GgufValue g;
  g.type_ = Type::kString;
  g.value_ = std::move(v);
  return g;
}
GgufValue GgufValue::Array(Type element_type, std::vector<GgufValue> elements) {
  GgufValue g;
  g.type_ = Type::kArray;
  g.element_type_ = element_type;
  g.value_ = std::move(elements);
  return g;
}

std::optional<uint64_t> GgufValue::AsUint64() const {
  if (const auto* u = std::get_if<uint64_t>(&value_)) return *u;
  if (const auto* i = std::get_if<int64_t>(&value_); i != nullptr && *i >= 0) {
    return static_cast<uint64_t>(*i);
  }
  return std::nullopt;
}
std::optional<int64_t> GgufValue::AsInt64() const {
  if (const auto* i = std::get_if<int64_t>(&value_)) return *i;
  if (const auto* u = std::get_if<uint64_t>(&value_);
      u != nullptr && *u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return static_cast<int64_t>(*u);
  }
  return std::nullopt;
}
std::optional<double> GgufValue::AsDouble() const {
  if (const auto* d = std::get_if<double>(&value_)) return *d;
  return std::nullopt;
}
std::optional<bool> GgufValue::AsBool() const {
  if (const auto* b = std::get_if<bool>(&value_)) return *b;
  return std::nullopt;
}
const std::string* GgufValue::AsString() const { return std::get_if<std::string>(&value_); }
const std::vector<GgufValue>* GgufValue::AsArray() const {
  return std::get_if<std::vector<GgufValue>>(&value_);
}

int64_t GgufTensorInfo::NumRows() const {
  int64_t n = 1;
  for (size_t d = 1; d < dims.size(); ++d) n *= dims[d];
  return n;
}
int64_t GgufTensorInfo::NumElements() const { return dims.empty() ? 0 : RowElements() * NumRows(); }

const GgufValue* GgufFile::FindMetadata(const std::string& key) const {
  auto it = metadata.find(key);
  return it == metadata.end() ? nullptr : &it->second;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  for (const GgufTensorInfo& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

absl::StatusOr<GgufFile> ParseGguf(std::string_view bytes, std::string_view source) {
  try {
    return Parse(bytes, source);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(std::string(source), ": out of memory parsing the GGUF header"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(std::string(source), ": ", e.what()));
  }
}

absl::Status ReadGgufRows(std::string_view bytes, const GgufTensorInfo& t, int64_t first_row,
                          int64_t num_rows, float* out) {
  const std::string what = absl::StrCat("tensor ", Quoted(t.name));
  if (first_row < 0 || num_rows < 0 || first_row > t.NumRows() ||
      num_rows > t.NumRows() - first_row) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": rows [", first_row, ", +", num_rows,
                                                   ") are outside its ", t.NumRows(), " rows"));
  }
  if (t.offset > bytes.size() || t.nbytes > bytes.size() - t.offset) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": data lies outside the file"));
  }
  if (num_rows == 0) return absl::OkStatus();
  return DequantizeRows(t.type, reinterpret_cast<const uint8_t*>(bytes.data()) + t.offset,
                        t.RowElements(), first_row, num_rows, out);
}

absl::StatusOr<std::unique_ptr<GgufModel>> GgufModel::Open(const std::string& path) {
  ASSIGN_OR_RETURN(MappedFile mapped, MappedFile::Open(path));
  const std::string_view bytes(reinterpret_cast<const char*>(mapped.data()), mapped.size());
  ASSIGN_OR_RETURN(GgufFile file, ParseGguf(bytes, path));
  return std::unique_ptr<GgufModel>(new GgufModel(std::move(mapped), std::move(file)));
}

absl::StatusOr<std::unique_ptr<GgufModel>> OpenGguf(const std::string& path) {
  return GgufModel::Open(path);
}

}  // namespace tpserve
