// Internal to model/: IncrementalDetokenizer's decoder for SentencePiece models (layer: model).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/sentencepiece_tokenizer.h"
#include "model/tokenizer.h"

namespace tpserve::internal {

// `model` must outlive the decoder. Contract: IncrementalDetokenizer in model/tokenizer.h.
std::unique_ptr<StreamDecoder> NewSentencePieceStreamDecoder(const SentencePieceModel& model,
                                                             std::vector<int32_t> prompt_ids);

}  // namespace tpserve::internal
