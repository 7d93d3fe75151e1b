#include "model/safetensors.h"

#include <algorithm>
#include <exception>
#include <limits>
#include <new>
#include <tuple>
#include <unordered_set>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

using Json = nlohmann::json;

constexpr size_t kLengthPrefixBytes = 8;
// The reference implementation refuses larger headers; so do we, so that a corrupt prefix
// cannot make us parse (and allocate for) most of a multi-GB file as JSON.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

// Tensor names come from the file; keep messages bounded whatever they hold.
std::string Quoted(absl::string_view name) {
  constexpr size_t kMaxLen = 200;
  if (name.size() > kMaxLen) return absl::StrCat("\"", name.substr(0, kMaxLen), "...\"");
  return absl::StrCat("\"", name, "\"");
}

absl::Status FileError(absl::string_view source, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": ", what));
}

absl::Status TensorError(absl::string_view source, absl::string_view name, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(source, ": tensor ", Quoted(name), " ", what));
}

// Scalars verbatim, containers by kind: a message must never echo a whole hostile header.
std::string Describe(const Json& v) {
  if (v.is_structured()) return absl::StrCat("an ", v.type_name());
  std::string s = v.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (s.size() > 64) s = absl::StrCat(s.substr(0, 64), "...");
  return s;
}

absl::StatusOr<std::vector<int64_t>> ParseShape(const Json& entry, const std::string& name,
                                                absl::string_view source) {
  auto it = entry.find("shape");
  if (it == entry.end()) return TensorError(source, name, "has no field \"shape\"");
  if (!it->is_array()) {
    return TensorError(source, name,
                       absl::StrCat("field \"shape\" must be a list, got ", Describe(*it)));
  }
  std::vector<int64_t> shape;
  shape.reserve(it->size());
  for (const Json& d : *it) {
    if (!d.is_number_integer()) {
      return TensorError(source, name,
                         absl::StrCat("field \"shape\" must hold integers, got ", Describe(d)));
    }
    // Non-negative literals are stored unsigned and may not fit int64.
    const bool fits = d.is_number_unsigned()
                          ? d.get<uint64_t>() <= uint64_t{std::numeric_limits<int64_t>::max()}
                          : d.get<int64_t>() >= 0;
    if (!fits) {
      return TensorError(source, name,
                         absl::StrCat("field \"shape\" has invalid dimension ", Describe(d)));
    }
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

absl::StatusOr<std::pair<uint64_t, uint64_t>> ParseOffsets(const Json& entry,
                                                           const std::string& name,
                                                           absl::string_view source) {
  auto it = entry.find("data_offsets");
  if (it == entry.end()) return TensorError(source, name, "has no field \"data_offsets\"");
  if (!it->is_array() || it->size() != 2 || !(*it)[0].is_number_unsigned() ||
      !(*it)[1].is_number_unsigned()) {
    return TensorError(source, name,
                       "field \"data_offsets\" must be a list of two non-negative integers");
  }
  return std::make_pair((*it)[0].get<uint64_t>(), (*it)[1].get<uint64_t>());
}

absl::StatusOr<TensorInfo> ParseEntry(const std::string& name, const Json& entry,
                                      uint64_t data_size, absl::string_view source) {
  if (!entry.is_object()) {
    return TensorError(source, name, absl::StrCat("must be an object, got ", Describe(entry)));
  }
  TensorInfo info;
  info.name = name;

  auto dtype = entry.find("dtype");
  if (dtype == entry.end()) return TensorError(source, name, "has no field \"dtype\"");
  if (!dtype->is_string()) {
    return TensorError(source, name,
                       absl::StrCat("field \"dtype\" must be a string, got ", Describe(*dtype)));
  }
  absl::StatusOr<DType> parsed = ParseDType(dtype->get_ref<const std::string&>());
  if (!parsed.ok()) {
    return TensorError(source, name, absl::StrCat("field \"dtype\": ", parsed.status().message()));
  }
  info.dtype = *parsed;

  ASSIGN_OR_RETURN(info.shape, ParseShape(entry, name, source));
  ASSIGN_OR_RETURN(auto offsets, ParseOffsets(entry, name, source));
  info.data_begin = offsets.first;
  info.data_end = offsets.second;

  // Checked arithmetic: a shape like [2^40, 2^40] must be an error, not a wrapped size.
  uint64_t elements = 1;
  for (int64_t d : info.shape) {
    if (__builtin_mul_overflow(elements, static_cast<uint64_t>(d), &elements)) {
      return TensorError(source, name, "has a shape whose element count overflows");
    }
  }
  uint64_t bytes;
  if (__builtin_mul_overflow(elements, uint64_t{DTypeSize(info.dtype)}, &bytes)) {
    return TensorError(source, name, "has a shape whose byte size overflows");
  }
  if (info.data_begin > info.data_end) {
    return TensorError(source, name,
                       absl::StrCat("has data_offsets [", info.data_begin, ", ", info.data_end,
                                    "] with begin after end"));
  }
  if (info.data_end > data_size) {
    return TensorError(source, name,
                       absl::StrCat("has data_offsets [", info.data_begin, ", ", info.data_end,
                                    "] beyond the data section of ", data_size, " bytes"));
  }
  if (info.data_end - info.data_begin != bytes) {
    return TensorError(source, name,
                       absl::StrCat("has data_offsets [", info.data_begin, ", ", info.data_end,
                                    "] spanning ", info.data_end - info.data_begin,
                                    " bytes, but shape [", absl::StrJoin(info.shape, ", "), "] of ",
                                    std::string(DTypeName(info.dtype)), " needs ", bytes));
  }
  return info;
}

// Two tensors sharing bytes would alias: a write-free loader would not notice, but it means
// the file is corrupt. Empty tensors own no bytes and cannot overlap anything.
absl::Status CheckNoOverlap(const std::vector<TensorInfo>& tensors, absl::string_view source) {
  std::vector<const TensorInfo*> by_offset;
  by_offset.reserve(tensors.size());
  for (const TensorInfo& t : tensors) {
    if (t.data_end > t.data_begin) by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](const TensorInfo* a, const TensorInfo* b) {
    return std::tie(a->data_begin, a->data_end) < std::tie(b->data_begin, b->data_end);
  });
  const TensorInfo* furthest = nullptr;  // the earlier tensor reaching furthest
  for (const TensorInfo* t : by_offset) {
    if (furthest != nullptr && t->data_begin < furthest->data_end) {
      return FileError(
          source, absl::StrCat("tensors ", Quoted(furthest->name), " [", furthest->data_begin, ", ",
                               furthest->data_end, ") and ", Quoted(t->name), " [", t->data_begin,
                               ", ", t->data_end, ") overlap"));
    }
    if (furthest == nullptr || t->data_end > furthest->data_end) furthest = t;
  }
  return absl::OkStatus();
}

absl::StatusOr<SafetensorsHeader> Parse(std::string_view file, absl::string_view source) {
  if (file.size() < kLengthPrefixBytes) {
    return FileError(source, absl::StrCat("file is ", file.size(),
                                          " bytes, too short for the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {
    header_len |= uint64_t{static_cast<uint8_t>(file[i])} << (8 * i);
  }
  const uint64_t after_prefix = file.size() - kLengthPrefixBytes;
  if (header_len > after_prefix) {
    return FileError(source, absl::StrCat("header length ", header_len, " exceeds the ",
                                          after_prefix, " bytes after the length prefix"));
  }
  if (header_len > kMaxHeaderBytes) {
    return FileError(source, absl::StrCat("header length ", header_len, " exceeds the limit of ",
                                          kMaxHeaderBytes, " bytes"));
  }

  // nlohmann keeps the last of duplicate keys silently; a tensor named twice is corruption.
  std::unordered_set<std::string> names;
  std::string duplicate;
  auto on_event = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::key && depth == 1 && duplicate.empty() &&
        !names.insert(parsed.get<std::string>()).second) {
      duplicate = parsed.get<std::string>();
    }
    return true;
  };
  const Json root = Json::parse(file.substr(kLengthPrefixBytes, header_len), on_event);
  if (!root.is_object()) {
    return FileError(source, absl::StrCat("header must be a JSON object, got ", root.type_name()));
  }
  if (!duplicate.empty()) {
    return TensorError(source, duplicate, "is named twice in the header");
  }

  SafetensorsHeader header;
  header.data_offset = kLengthPrefixBytes + header_len;
  const uint64_t data_size = file.size() - header.data_offset;
  header.tensors.reserve(root.size());
  // A JSON object iterates in key order, so the tensors come out sorted by name.
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") continue;
    ASSIGN_OR_RETURN(TensorInfo info, ParseEntry(name, entry, data_size, source));
    header.tensors.push_back(std::move(info));
  }
  RETURN_IF_ERROR(CheckNoOverlap(header.tensors, source));
  return header;
}

}  // namespace

int64_t TensorInfo::NumElements() const {
  // Parsed tensors never overflow (ParseSafetensors checks); a hand-built one that does
  // reports -1 rather than a wrapped count.
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0 || __builtin_mul_overflow(n, d, &n)) return -1;
  }
  return n;
}

absl::StatusOr<SafetensorsHeader> ParseSafetensors(std::string_view file,
                                                   std::string_view source_name) {
  // Debian's abseil has its own string_view, which StrCat needs; convert once here.
  const absl::string_view source(source_name.data(), source_name.size());
  // nlohmann throws on malformed JSON; this is the edge where that becomes a Status.
  try {
    return Parse(file, source);
  } catch (const Json::parse_error& e) {
    return FileError(source, absl::StrCat("header is not valid JSON: ", e.what()));
  } catch (const Json::exception& e) {
    return FileError(source, absl::StrCat("header: ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat(source, ": out of memory while parsing the header"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(source, ": ", e.what()));
  }
}

}  // namespace tpserve
