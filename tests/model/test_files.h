// Test-only helpers that write small safetensors files and folders (layer: tests).
// Headers are built either from tensors (always consistent) or from raw JSON text, so tests
// can also write files that lie.
#pragma once

#include <stdlib.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "common/dtype.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tpserve::test {

struct TestTensor {
  std::string name;
  std::string dtype;  // as safetensors spells it: "F32", "BF16", "F16"
  std::vector<int64_t> shape;
  std::string bytes;  // raw little-endian data
};

inline std::string F32Bytes(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(float));
}

inline std::string U16Bytes(const std::vector<uint16_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(uint16_t));
}

inline std::string Bf16Bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h;
  for (float f : v) h.push_back(F32ToBf16(f));
  return U16Bytes(h);
}

inline std::string F16Bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h;
  for (float f : v) h.push_back(F32ToF16(f));
  return U16Bytes(h);
}

// Values 0, 1, 2, ... so that element (r, c) of a [rows, cols] tensor is r * cols + c, exactly
// representable in bf16/f16 for small tensors (< 256 elements for bf16).
inline std::vector<float> Iota(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<float>(i);
  return v;
}

// The 8-byte little-endian length, the header text, then the data section.
inline std::string Frame(std::string_view header, std::string_view data) {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out.append(header);
  out.append(data);
  return out;
}

// A well-formed file: tensors laid out back to back in the given order.
inline std::string SafetensorsBytes(const std::vector<TestTensor>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const TestTensor& t : tensors) {
    header[t.name] = {{"dtype", t.dtype},
                      {"shape", t.shape},
                      {"data_offsets", {data.size(), data.size() + t.bytes.size()}}};
    data += t.bytes;
  }
  return Frame(header.dump(), data);
}

inline void WriteFile(const std::string& path, std::string_view bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

// A fresh empty folder under GTest's temp dir (left behind for inspection on failure).
inline std::string MakeTempDir() {
  std::string templ = ::testing::TempDir() + "tpserve_model_XXXXXX";
  char* dir = mkdtemp(templ.data());
  EXPECT_NE(dir, nullptr) << "mkdtemp failed for " << templ;
  return templ;
}

}  // namespace tpserve::test
