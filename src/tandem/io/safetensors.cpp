// safetensors reader and writer on nlohmann-json, with full validation of the header.
#include "tandem/io/safetensors.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"

namespace tandem {

size_t st_dtype_size(const std::string& dtype) {
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "U8" || dtype == "I8" || dtype == "BOOL") return 1;
  return 0;
}

const StTensor* StFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

const StTensor& StFile::get(const std::string& name) const {
  const StTensor* t = find(name);
  if (!t) fail("[safetensors] missing tensor '" + name + "'");
  return *t;
}

StTensor st_f32(const std::string& name, std::vector<int64_t> shape, const float* data) {
  StTensor t;
  t.name = name;
  t.dtype = "F32";
  t.shape = std::move(shape);
  size_t n = 1;
  for (auto d : t.shape) n *= d;
  t.data.assign(reinterpret_cast<const char*>(data), n * sizeof(float));
  return t;
}

std::string safetensors_header(const std::vector<StView>& tensors,
                               const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  size_t off = 0;
  for (const auto& t : tensors) {
    h[t.name] = {
        {"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {off, off + t.data.size()}}};
    off += t.data.size();
  }
  std::string header = h.dump();
  while (header.size() % 8) header.push_back(' ');
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header;
}

std::string safetensors_serialize(const StFile& f) {
  std::vector<StView> views;
  size_t bytes = 0;
  for (const auto& t : f.tensors) {
    views.push_back({t.name, t.dtype, t.shape, t.data});
    bytes += t.data.size();
  }
  std::string out = safetensors_header(views, f.metadata);
  out.reserve(out.size() + bytes);
  for (const auto& t : f.tensors) out += t.data;
  return out;
}

StFile safetensors_parse(const std::string& bytes, const std::string& what) {
  auto bad = [&](const std::string& why) { fail("[safetensors] " + what + ": " + why); };
  if (bytes.size() < 8) bad("file too short for a header");
  uint64_t hn;
  std::memcpy(&hn, bytes.data(), 8);
  if (hn > bytes.size() - 8) bad("header length " + std::to_string(hn) + " exceeds file size");
  nlohmann::json h;
  try {
    h = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + hn);
  } catch (const std::exception& e) {
    bad(std::string("header is not valid JSON: ") + e.what());
  }
  if (!h.is_object()) bad("header is not a JSON object");
  const size_t data_start = 8 + hn, data_len = bytes.size() - data_start;
  StFile f;
  try {
    for (auto it = h.begin(); it != h.end(); ++it) {
      if (it.key() == "__metadata__") {
        for (auto m = it->begin(); m != it->end(); ++m) f.metadata[m.key()] = m->get<std::string>();
        continue;
      }
      StTensor t;
      t.name = it.key();
      t.dtype = it->at("dtype").get<std::string>();
      t.shape = it->at("shape").get<std::vector<int64_t>>();
      auto offs = it->at("data_offsets").get<std::vector<uint64_t>>();
      size_t es = st_dtype_size(t.dtype);
      if (es == 0) bad("tensor '" + t.name + "' has unknown dtype " + t.dtype);
      if (offs.size() != 2 || offs[0] > offs[1] || offs[1] > data_len)
        bad("tensor '" + t.name + "' has data offsets outside the file");
      uint64_t n = 1;
      for (auto d : t.shape) {
        if (d < 0) bad("tensor '" + t.name + "' has a negative dimension");
        n *= (uint64_t)d;
      }
      if (n * es != offs[1] - offs[0])
        bad("tensor '" + t.name + "' byte size does not match its shape");
      t.data.assign(bytes.data() + data_start + offs[0], offs[1] - offs[0]);
      f.tensors.push_back(std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    bad(std::string("malformed header: ") + e.what());
  }
  return f;
}

StFile safetensors_load(const std::string& path) {
  return safetensors_parse(read_file(path), path);
}

}  // namespace tandem
