#include "model/checkpoint.h"

#include <algorithm>
#include <cstring>
#include <exception>
#include <map>
#include <new>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

using Json = nlohmann::json;

constexpr char kSingleFile[] = "model.safetensors";
constexpr char kIndexFile[] = "model.safetensors.index.json";

std::string Basename(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string_view AsText(const MappedFile& file) {
  return {reinterpret_cast<const char*>(file.data()), file.size()};
}

// The index names files inside the model folder; anything that could reach outside it (or
// is not a name at all) is refused rather than resolved.
absl::Status CheckShardName(const std::string& file, const std::string& tensor) {
  if (file.empty() || file.find('/') != std::string::npos || file.find("..") != std::string::npos ||
      file.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(kIndexFile, ": weight_map gives tensor \"", tensor, "\" the file name \"",
                     file, "\", which is not a plain file name in the model folder"));
  }
  return absl::OkStatus();
}

// Parses the index into tensor name -> shard file name.
absl::StatusOr<std::map<std::string, std::string>> ParseIndex(std::string_view text) {
  std::map<std::string, std::string> weight_map;
  // nlohmann throws on malformed JSON; this is the edge where that becomes a Status.
  try {
    const Json root = Json::parse(text);
    if (!root.is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kIndexFile, ": top level must be a JSON object, got ", root.type_name()));
    }
    auto map = root.find("weight_map");
    if (map == root.end() || !map->is_object()) {
      return absl::InvalidArgumentError(
          absl::StrCat(kIndexFile, ": field \"weight_map\" must be an object"));
    }
    for (const auto& [tensor, file] : map->items()) {
      if (!file.is_string()) {
        return absl::InvalidArgumentError(absl::StrCat(
            kIndexFile, ": weight_map entry for tensor \"", tensor, "\" must be a file name"));
      }
      RETURN_IF_ERROR(CheckShardName(file.get<std::string>(), tensor));
      weight_map.emplace(tensor, file.get<std::string>());
    }
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(kIndexFile, ": not valid JSON: ", e.what()));
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(absl::StrCat(kIndexFile, ": out of memory"));
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat(kIndexFile, ": ", e.what()));
  }
  if (weight_map.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(kIndexFile, ": field \"weight_map\" lists no tensors"));
  }
  return weight_map;
}

bool HeaderHas(const SafetensorsHeader& header, const std::string& name) {
  auto it = std::lower_bound(header.tensors.begin(), header.tensors.end(), name,
                             [](const TensorInfo& t, const std::string& n) { return t.name < n; });
  return it != header.tensors.end() && it->name == name;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Checkpoint>> Checkpoint::Open(const std::string& model_dir) {
  std::vector<MappedFile> files;
  std::vector<SafetensorsHeader> headers;

  absl::StatusOr<MappedFile> single = MappedFile::Open(absl::StrCat(model_dir, "/", kSingleFile));
  if (single.ok()) {
    ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensors(AsText(*single), kSingleFile));
    files.push_back(*std::move(single));
    headers.push_back(std::move(header));
  } else if (!absl::IsNotFound(single.status())) {
    return single.status();
  } else {
    absl::StatusOr<MappedFile> index = MappedFile::Open(absl::StrCat(model_dir, "/", kIndexFile));
    if (absl::IsNotFound(index.status())) {
      return absl::NotFoundError(
          absl::StrCat("no ", kSingleFile, " or ", kIndexFile, " in ", model_dir));
    }
    if (!index.ok()) return index.status();
    ASSIGN_OR_RETURN(auto weight_map, ParseIndex(AsText(*index)));

    std::map<std::string, int> file_index;  // ordered, so shard order is deterministic
    for (const auto& [tensor, file] : weight_map) file_index.emplace(file, 0);
    for (auto& [file, i] : file_index) {
      absl::StatusOr<MappedFile> shard = MappedFile::Open(absl::StrCat(model_dir, "/", file));
      if (!shard.ok()) {
        // The folder exists and has an index, so a shard it names being absent means the
        // checkpoint is incomplete: a bad file set, not a missing model.
        return absl::InvalidArgumentError(
            absl::StrCat(kIndexFile, " names shard ", file,
                         ", which cannot be read: ", shard.status().message()));
      }
      ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensors(AsText(*shard), file));
      i = static_cast<int>(files.size());
      files.push_back(*std::move(shard));
      headers.push_back(std::move(header));
    }
    for (const auto& [tensor, file] : weight_map) {
      if (!HeaderHas(headers[file_index[file]], tensor)) {
        return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", tensor,
                                                       "\" is missing, but ", kIndexFile,
                                                       " says this file holds it"));
      }
    }
  }

  auto checkpoint = std::make_unique<Checkpoint>();
  for (size_t i = 0; i < headers.size(); ++i) {
    for (TensorInfo& info : headers[i].tensors) {
      checkpoint->entries_.push_back(
          Entry{std::move(info), static_cast<int>(i), headers[i].data_offset});
    }
  }
  std::stable_sort(checkpoint->entries_.begin(), checkpoint->entries_.end(),
                   [](const Entry& a, const Entry& b) { return a.info.name < b.info.name; });
  for (size_t i = 1; i < checkpoint->entries_.size(); ++i) {
    const Entry& a = checkpoint->entries_[i - 1];
    const Entry& b = checkpoint->entries_[i];
    if (a.info.name == b.info.name) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tensor \"", a.info.name, "\" is named twice: in ", Basename(files[a.file_index].path()),
          " and ", Basename(files[b.file_index].path())));
    }
  }
  checkpoint->files_ = std::move(files);
  return checkpoint;
}

const Checkpoint::Entry* Checkpoint::FindEntry(const std::string& name) const {
  auto it = std::lower_bound(entries_.begin(), entries_.end(), name,
                             [](const Entry& e, const std::string& n) { return e.info.name < n; });
  if (it == entries_.end() || it->info.name != name) return nullptr;
  return &*it;
}

const TensorInfo* Checkpoint::Find(const std::string& name) const {
  const Entry* e = FindEntry(name);
  return e == nullptr ? nullptr : &e->info;
}

std::string Checkpoint::FileOf(const std::string& name) const {
  const Entry* e = FindEntry(name);
  return e == nullptr ? std::string() : Basename(files_[e->file_index].path());
}

absl::Status Checkpoint::ReadSlice(const std::string& name,
                                   const std::vector<int64_t>& expected_shape, const Slice2D& slice,
                                   void* dst) const {
  const Entry* e = FindEntry(name);
  if (e == nullptr) {
    const std::string dir = files_.empty() ? std::string("?") : Dirname(files_[0].path());
    return absl::NotFoundError(absl::StrCat("tensor \"", name, "\" not found in checkpoint ", dir));
  }
  const std::string file = Basename(files_[e->file_index].path());
  const std::vector<int64_t>& shape = e->info.shape;
  if (shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", name, "\" has shape ",
                                                   ShapeString(shape), ", expected ",
                                                   ShapeString(expected_shape)));
  }
  if (shape.size() != 1 && shape.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": tensor \"", name, "\" has shape ",
                                                   ShapeString(shape),
                                                   "; only 1-D and 2-D tensors can be sliced"));
  }
  const int64_t rows = shape[0];
  const int64_t cols = shape.size() == 2 ? shape[1] : 1;
  const bool rows_ok =
      0 <= slice.row_begin && slice.row_begin <= slice.row_end && slice.row_end <= rows;
  const bool cols_ok =
      shape.size() == 1
          ? slice.col_begin == 0 && slice.col_end == 1
          : 0 <= slice.col_begin && slice.col_begin <= slice.col_end && slice.col_end <= cols;
  if (!rows_ok || !cols_ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": slice rows [", slice.row_begin, ", ", slice.row_end, ") cols [", slice.col_begin,
        ", ", slice.col_end, ") is out of bounds for tensor \"", name, "\" of shape ",
        ShapeString(shape), shape.size() == 1 ? " (a 1-D slice takes cols [0, 1))" : ""));
  }

  const size_t elem = DTypeSize(e->info.dtype);
  const size_t out_rows = static_cast<size_t>(slice.row_end - slice.row_begin);
  const size_t out_row_bytes = static_cast<size_t>(slice.col_end - slice.col_begin) * elem;
  if (out_rows == 0 || out_row_bytes == 0) return absl::OkStatus();
  if (dst == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("ReadSlice of tensor \"", name, "\" got a null destination"));
  }
  // ParseSafetensors checked the tensor's bytes lie inside the mapping, and the slice lies
  // inside the tensor, so every address below is in bounds.
  const uint8_t* base = files_[e->file_index].data() + e->data_offset + e->info.data_begin;
  const size_t src_row_bytes = static_cast<size_t>(cols) * elem;
  const uint8_t* src = base + static_cast<size_t>(slice.row_begin) * src_row_bytes +
                       static_cast<size_t>(slice.col_begin) * elem;
  auto* out = static_cast<uint8_t*>(dst);
  if (out_row_bytes == src_row_bytes) {
    std::memcpy(out, src, out_rows * out_row_bytes);  // whole rows: one contiguous block
    return absl::OkStatus();
  }
  // Column slices touch only their own bytes of each row, so a rank pages in ~1/tp of them.
  for (size_t r = 0; r < out_rows; ++r) {
    std::memcpy(out + r * out_row_bytes, src + r * src_row_bytes, out_row_bytes);
  }
  return absl::OkStatus();
}

void Checkpoint::ReleasePages() const {
  for (const MappedFile& f : files_) f.ReleasePages();
}

uint64_t Checkpoint::TotalTensorBytes() const {
  uint64_t total = 0;
  for (const Entry& e : entries_) total += e.info.data_end - e.info.data_begin;
  return total;
}

}  // namespace tpserve
