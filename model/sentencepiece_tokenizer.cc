// SentencePieceModel over the shim library (model/spm_shim.h), loaded privately with dlopen so
// that SentencePiece's bundled protobuf never meets the system one.
#include "model/sentencepiece_tokenizer.h"

#include <dlfcn.h>

#include <cstdlib>
#include <utility>

#include "model/spm_shim.h"

namespace tpserve::internal {

struct SentencePieceModel::Processor {
  void* library = nullptr;
  TpserveSpm* model = nullptr;
  TpserveSpmFreeFn free_fn = nullptr;
  TpserveSpmEncodeFn encode = nullptr;
  TpserveSpmDecodeFn decode = nullptr;
  ~Processor() {
    if (model != nullptr) free_fn(model);
    // The library stays loaded: its static state outlives any one model.
  }
};

namespace {

// The shim's path: TPSERVE_SPM_SHIM overrides the one fixed at build time.
const char* ShimPath() {
  const char* env = std::getenv("TPSERVE_SPM_SHIM");
  return env != nullptr && *env != '\0' ? env : TPSERVE_SPM_SHIM_PATH;
}

template <typename Fn>
bool Find(void* library, const char* name, Fn* fn) {
  *fn = reinterpret_cast<Fn>(dlsym(library, name));
  return *fn != nullptr;
}

}  // namespace

SentencePieceModel::SentencePieceModel() = default;
SentencePieceModel::~SentencePieceModel() = default;

std::unique_ptr<SentencePieceModel> SentencePieceModel::Load(std::string_view serialized,
                                                             std::string* error) {
  static void* library = dlopen(ShimPath(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
  if (library == nullptr) {
    const char* why = dlerror();
    *error = std::string("cannot load the SentencePiece shim ") + ShimPath() + ": " +
             (why != nullptr ? why : "unknown error");
    return nullptr;
  }
  TpserveSpmLoadFn load;
  TpserveSpmIntFn size_fn, bos_fn, eos_fn;
  TpserveSpmKindFn kind_fn;
  auto processor = std::make_unique<Processor>();
  processor->library = library;
  if (!Find(library, "tpserve_spm_load", &load) || !Find(library, "tpserve_spm_free", &processor->free_fn) ||
      !Find(library, "tpserve_spm_size", &size_fn) || !Find(library, "tpserve_spm_bos", &bos_fn) ||
      !Find(library, "tpserve_spm_eos", &eos_fn) || !Find(library, "tpserve_spm_kind", &kind_fn) ||
      !Find(library, "tpserve_spm_encode", &processor->encode) ||
      !Find(library, "tpserve_spm_decode", &processor->decode)) {
    *error = std::string("the SentencePiece shim ") + ShimPath() + " lacks a function";
    return nullptr;
  }
  char message[512] = {0};
  processor->model = load(serialized.data(), serialized.size(), message, sizeof message);
  if (processor->model == nullptr) {
    *error = message;
    return nullptr;
  }
  std::unique_ptr<SentencePieceModel> model(new SentencePieceModel());
  const int32_t size = size_fn(processor->model);
  if (size <= 0) {
    *error = "the model has no pieces";
    return nullptr;
  }
  model->kinds_.assign(size, Kind::kText);
  model->byte_values_.assign(size, 0);
  for (int32_t id = 0; id < size; ++id) {
    int32_t value = 0;
    switch (kind_fn(processor->model, id, &value)) {
      case 1:
        model->kinds_[id] = Kind::kControl;
        if (model->control_id_ < 0) model->control_id_ = id;
        break;
      case 2:
        model->kinds_[id] = Kind::kByte;
        model->byte_values_[id] = static_cast<uint8_t>(value);
        break;
      case -1:
        *error = "byte piece " + std::to_string(id) + " is not spelled <0xNN>";
        return nullptr;
      default:
        break;
    }
  }
  model->bos_id_ = bos_fn(processor->model);
  model->eos_id_ = eos_fn(processor->model);
  model->processor_ = std::move(processor);
  return model;
}

std::vector<int32_t> SentencePieceModel::Encode(const std::string& text) const {
  std::vector<int32_t> ids(text.size() + 8);
  int64_t n = processor_->encode(processor_->model, text.data(), text.size(), ids.data(), ids.size());
  if (n > static_cast<int64_t>(ids.size())) {
    ids.resize(n);
    n = processor_->encode(processor_->model, text.data(), text.size(), ids.data(), ids.size());
  }
  ids.resize(n < 0 ? 0 : n);  // encoding a loaded model fails only on allocation
  return ids;
}

std::string SentencePieceModel::Decode(std::span<const int32_t> ids) const {
  std::vector<int32_t> valid;
  valid.reserve(ids.size());
  for (int32_t id : ids) {
    if (InRange(id)) {
      valid.push_back(id);
    } else if (control_id_ >= 0) {
      valid.push_back(control_id_);  // the library rejects the whole call for one bad id
    }
  }
  std::string text(valid.size() * 8 + 16, '\0');
  int64_t n = processor_->decode(processor_->model, valid.data(), valid.size(), text.data(), text.size());
  if (n > static_cast<int64_t>(text.size())) {
    text.resize(n);
    n = processor_->decode(processor_->model, valid.data(), valid.size(), text.data(), text.size());
  }
  text.resize(n < 0 ? 0 : n);
  return text;
}

}  // namespace tpserve::internal
