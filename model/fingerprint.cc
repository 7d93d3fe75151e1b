#include "model/fingerprint.h"

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <cstring>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status.h"
#include "model/gguf.h"
#include "model/gguf_config.h"

namespace tpserve {
namespace {

uint64_t Fnv1a(uint64_t h, std::string_view bytes) {
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

absl::StatusOr<std::string> ReadAll(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::string out(limit, '\0');
  in.read(out.data(), static_cast<std::streamsize>(limit));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

}  // namespace

absl::StatusOr<std::string> ModelFingerprint(const std::string& model_dir) {
  uint64_t h = 14695981039346656037ull;
  ASSIGN_OR_RETURN(std::optional<std::string> gguf_path, FindModelGguf(model_dir));
  if (gguf_path.has_value()) {
    // Metadata and tensor infos: everything before the data section.
    ASSIGN_OR_RETURN(std::unique_ptr<GgufModel> gguf, GgufModel::Open(*gguf_path));
    h = Fnv1a(h, gguf->bytes().substr(0, gguf->file().data_offset));
    return absl::StrFormat("%016x", h);
  }
  absl::StatusOr<std::string> config = ReadAll(model_dir + "/config.json", 1 << 20);
  if (!config.ok()) return config.status();
  h = Fnv1a(h, *config);
  std::vector<std::string> files;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors") files.push_back(name);
  }
  std::sort(files.begin(), files.end());
  for (const std::string& name : files) {
    // The 8-byte length prefix and the JSON header describe the whole layout.
    absl::StatusOr<std::string> head = ReadAll(model_dir + "/" + name, 8);
    if (!head.ok() || head->size() < 8) {
      return absl::InvalidArgumentError(absl::StrCat(model_dir, "/", name, ": shorter than 8 bytes"));
    }
    uint64_t len = 0;
    std::memcpy(&len, head->data(), 8);
    absl::StatusOr<std::string> header = ReadAll(model_dir + "/" + name, 8 + std::min<uint64_t>(len, 100u << 20));
    if (!header.ok()) return header.status();
    h = Fnv1a(h, name);
    h = Fnv1a(h, *header);
  }
  return absl::StrFormat("%016x", h);
}

}  // namespace tpserve
