// GGUF v3 files (llama.cpp's format): a header, typed key/value metadata, tensor descriptors,
// then tensor data aligned to 32 bytes. A writer for export and a reader for checking.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <variant>
#include <vector>

namespace tandem {

enum class GgmlType : uint32_t { F32 = 0, F16 = 1, Q4_0 = 2, Q8_0 = 8 };
// Bytes of n values of a type (n a multiple of the block size for quantized types).
size_t ggml_bytes(GgmlType t, int64_t n);

using GgufValue = std::variant<uint32_t, int32_t, float, bool, std::string, uint64_t,
                               std::vector<std::string>, std::vector<float>, std::vector<int32_t>>;

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // ggml order: ne[0] is the contiguous (innermost) dimension
  std::string data;
};

struct GgufFile {
  std::vector<std::pair<std::string, GgufValue>> kv;  // in file order
  std::vector<GgufTensor> tensors;
  const GgufValue* find(const std::string& key) const;
  const GgufTensor* tensor(const std::string& name) const;
};

std::string gguf_serialize(const GgufFile& f);
// Throws "[gguf] ..." naming `what` on a malformed file.
GgufFile gguf_parse(const std::string& bytes, const std::string& what);

}  // namespace tandem
