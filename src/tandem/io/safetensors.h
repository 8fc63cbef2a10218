// safetensors files: an 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, then the raw data. Used for checkpoints and exports.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

struct StTensor {
  std::string name;
  std::string dtype;  // "F32", "I32", "I64", "U8", ...
  std::vector<int64_t> shape;
  std::string data;  // raw little-endian bytes
};

struct StFile {
  std::vector<StTensor> tensors;
  std::map<std::string, std::string> metadata;
  const StTensor* find(const std::string& name) const;
  const StTensor& get(const std::string& name) const;  // throws Error naming the tensor
};

// A tensor's description and bytes held elsewhere, for writing without a copy.
struct StView {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string_view data;
};
// The file's leading bytes (8-byte length, JSON header padded to 8 bytes) for tensors whose
// data follow in the given order.
std::string safetensors_header(const std::vector<StView>& tensors,
                               const std::map<std::string, std::string>& metadata);
// Serializes to bytes (tensors in the given order; header padded to 8 bytes).
std::string safetensors_serialize(const StFile& f);
// Parses bytes; `what` names the source in error messages.
StFile safetensors_parse(const std::string& bytes, const std::string& what);
StFile safetensors_load(const std::string& path);

StTensor st_f32(const std::string& name, std::vector<int64_t> shape, const float* data);
size_t st_dtype_size(const std::string& dtype);

}  // namespace tandem
