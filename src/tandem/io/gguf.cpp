// GGUF serialization: little-endian scalars, strings as (u64 length, bytes), arrays as
// (element type, u64 count, elements); tensor offsets relative to the aligned data section.
#include "tandem/io/gguf.h"

#include <cstring>

#include "tandem/core/error.h"

namespace tandem {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF"
constexpr uint64_t kAlign = 32;
enum : uint32_t {
  T_U32 = 4, T_I32 = 5, T_F32 = 6, T_BOOL = 7, T_STR = 8, T_ARR = 9, T_U64 = 10,
  T_U8 = 0, T_I8 = 1, T_U16 = 2, T_I16 = 3, T_I64 = 11, T_F64 = 12
};

struct Out {
  std::string s;
  template <class T>
  void put(T v) {
    s.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(const std::string& v) {
    put<uint64_t>(v.size());
    s += v;
  }
  void pad() { s.append((kAlign - s.size() % kAlign) % kAlign, '\0'); }
};

struct In {
  const std::string& b;
  size_t p = 0;
  std::string what;
  void need(size_t n) {
    if (n > b.size() - p) fail("[gguf] " + what + ": truncated at byte " + std::to_string(p));
  }
  template <class T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, b.data() + p, sizeof v);
    p += sizeof v;
    return v;
  }
  std::string str() {
    const uint64_t n = get<uint64_t>();
    need(n);
    std::string v = b.substr(p, n);
    p += n;
    return v;
  }
};

}  // namespace

size_t ggml_bytes(GgmlType t, int64_t n) {
  switch (t) {
    case GgmlType::F32: return n * 4;
    case GgmlType::F16: return n * 2;
    case GgmlType::Q8_0: return n / 32 * 34;
    case GgmlType::Q4_0: return n / 32 * 18;
  }
  return 0;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  for (const auto& [k, v] : kv)
    if (k == key) return &v;
  return nullptr;
}

const GgufTensor* GgufFile::tensor(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

std::string gguf_serialize(const GgufFile& f) {
  Out o;
  o.put<uint32_t>(kMagic);
  o.put<uint32_t>(3);
  o.put<uint64_t>(f.tensors.size());
  o.put<uint64_t>(f.kv.size());
  for (const auto& [key, val] : f.kv) {
    o.str(key);
    std::visit(
        [&](const auto& v) {
          using V = std::decay_t<decltype(v)>;
          if constexpr (std::is_same_v<V, uint32_t>) {
            o.put<uint32_t>(T_U32), o.put(v);
          } else if constexpr (std::is_same_v<V, int32_t>) {
            o.put<uint32_t>(T_I32), o.put(v);
          } else if constexpr (std::is_same_v<V, float>) {
            o.put<uint32_t>(T_F32), o.put(v);
          } else if constexpr (std::is_same_v<V, bool>) {
            o.put<uint32_t>(T_BOOL), o.put<uint8_t>(v ? 1 : 0);
          } else if constexpr (std::is_same_v<V, std::string>) {
            o.put<uint32_t>(T_STR), o.str(v);
          } else if constexpr (std::is_same_v<V, uint64_t>) {
            o.put<uint32_t>(T_U64), o.put(v);
          } else if constexpr (std::is_same_v<V, std::vector<std::string>>) {
            o.put<uint32_t>(T_ARR), o.put<uint32_t>(T_STR), o.put<uint64_t>(v.size());
            for (const auto& x : v) o.str(x);
          } else if constexpr (std::is_same_v<V, std::vector<float>>) {
            o.put<uint32_t>(T_ARR), o.put<uint32_t>(T_F32), o.put<uint64_t>(v.size());
            for (float x : v) o.put(x);
          } else {
            o.put<uint32_t>(T_ARR), o.put<uint32_t>(T_I32), o.put<uint64_t>(v.size());
            for (int32_t x : v) o.put(x);
          }
        },
        val);
  }
  uint64_t offset = 0;
  for (const GgufTensor& t : f.tensors) {
    int64_t n = 1;
    for (int64_t d : t.ne) n *= d;
    TANDEM_CHECK(t.data.size() == ggml_bytes(t.type, n), t.name);
    o.str(t.name);
    o.put<uint32_t>(t.ne.size());
    for (int64_t d : t.ne) o.put<uint64_t>(d);
    o.put<uint32_t>((uint32_t)t.type);
    o.put<uint64_t>(offset);
    offset += (t.data.size() + kAlign - 1) / kAlign * kAlign;
  }
  o.pad();
  for (const GgufTensor& t : f.tensors) {
    o.s += t.data;
    o.pad();
  }
  return o.s;
}

GgufFile gguf_parse(const std::string& bytes, const std::string& what) {
  In in{bytes, 0, what};
  if (in.get<uint32_t>() != kMagic) fail("[gguf] " + what + ": not a GGUF file (bad magic)");
  const uint32_t version = in.get<uint32_t>();
  if (version != 3) fail("[gguf] " + what + ": version " + std::to_string(version) + ", expected 3");
  const uint64_t nt = in.get<uint64_t>(), nkv = in.get<uint64_t>();
  if (nt > (1u << 20) || nkv > (1u << 20)) fail("[gguf] " + what + ": implausible counts");
  GgufFile f;
  auto scalar = [&](uint32_t type) -> GgufValue {
    switch (type) {
      case T_U32: return in.get<uint32_t>();
      case T_I32: return in.get<int32_t>();
      case T_F32: return in.get<float>();
      case T_BOOL: return in.get<uint8_t>() != 0;
      case T_STR: return in.str();
      case T_U64: return in.get<uint64_t>();
      case T_U8: return (uint32_t)in.get<uint8_t>();
      case T_I8: return (int32_t)in.get<int8_t>();
      case T_U16: return (uint32_t)in.get<uint16_t>();
      case T_I16: return (int32_t)in.get<int16_t>();
      case T_I64: return (uint64_t)in.get<int64_t>();
      case T_F64: return (float)in.get<double>();
    }
    fail("[gguf] " + what + ": unknown value type " + std::to_string(type));
  };
  for (uint64_t i = 0; i < nkv; ++i) {
    std::string key = in.str();
    const uint32_t type = in.get<uint32_t>();
    if (type != T_ARR) {
      f.kv.emplace_back(key, scalar(type));
      continue;
    }
    const uint32_t et = in.get<uint32_t>();
    const uint64_t n = in.get<uint64_t>();
    if (n > bytes.size()) fail("[gguf] " + what + ": implausible array length for " + key);
    if (et == T_STR) {
      std::vector<std::string> v;
      for (uint64_t j = 0; j < n; ++j) v.push_back(in.str());
      f.kv.emplace_back(key, v);
    } else if (et == T_F32) {
      std::vector<float> v;
      for (uint64_t j = 0; j < n; ++j) v.push_back(in.get<float>());
      f.kv.emplace_back(key, v);
    } else if (et == T_I32) {
      std::vector<int32_t> v;
      for (uint64_t j = 0; j < n; ++j) v.push_back(in.get<int32_t>());
      f.kv.emplace_back(key, v);
    } else {
      fail("[gguf] " + what + ": array type " + std::to_string(et) + " of " + key +
           " is not supported");
    }
  }
  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < nt; ++i) {
    GgufTensor t;
    t.name = in.str();
    const uint32_t nd = in.get<uint32_t>();
    if (nd == 0 || nd > 4) fail("[gguf] " + what + ": tensor " + t.name + " has " + std::to_string(nd) + " dims");
    for (uint32_t d = 0; d < nd; ++d) t.ne.push_back((int64_t)in.get<uint64_t>());
    t.type = (GgmlType)in.get<uint32_t>();
    offsets.push_back(in.get<uint64_t>());
    f.tensors.push_back(std::move(t));
  }
  const size_t data0 = (in.p + kAlign - 1) / kAlign * kAlign;
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    GgufTensor& t = f.tensors[i];
    int64_t n = 1;
    for (int64_t d : t.ne) n *= d;
    const size_t sz = ggml_bytes(t.type, n);
    if (sz == 0 && n > 0) fail("[gguf] " + what + ": tensor " + t.name + " has an unsupported type");
    if (data0 + offsets[i] > bytes.size() || sz > bytes.size() - data0 - offsets[i])
      fail("[gguf] " + what + ": tensor " + t.name + " runs past the end of the file");
    t.data = bytes.substr(data0 + offsets[i], sz);
  }
  return f;
}

}  // namespace tandem
