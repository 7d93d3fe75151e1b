// Dequantisation of ggml tensor data to fp32 (layer: model; plain CPU reference code, written
// for clarity and bit-exactness with ggml's dequantize_row_* functions). Thread-safe.
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "model/gguf.h"

namespace tpserve {

// Dequantises `num_rows` whole rows starting at row `first_row` of a tensor of type `type`
// whose data begins at `data` and whose rows hold `row_elements` elements (ne[0]). Reads only
// the bytes of the requested rows: [first_row * row_bytes, (first_row + num_rows) * row_bytes)
// from `data`, which the caller guarantees are readable (ReadGgufRows checks this against the
// file). Writes num_rows * row_elements floats to `out` ([num_rows, row_elements] fp32
// row-major).
// Supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K. InvalidArgument (naming the
// type number) for any other type, for row_elements <= 0 or not a multiple of the type's
// block, for negative first_row / num_rows, or when the byte range overflows.
[[nodiscard]] absl::Status DequantizeRows(GgmlType type, const uint8_t* data,
                                          int64_t row_elements, int64_t first_row,
                                          int64_t num_rows, float* out);

// True when DequantizeRows supports `type`.
bool CanDequantize(GgmlType type);

}  // namespace tpserve
