// export_gguf / export_hf: tensor renaming (Hugging Face -> llama.cpp), the q/k row
// permutation, block packing of quantized weights, vocabulary and metadata.
#include "tandem/infer/export.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/half.h"
#include "tandem/data/chat.h"
#include "tandem/infer/quant.h"
#include "tandem/io/gguf.h"
#include "tandem/io/safetensors.h"

namespace tandem {

namespace fs = std::filesystem;
using nlohmann::json;

std::vector<float> permute_for_gguf(const float* w, int rows, int cols, int heads) {
  const int D = rows / heads, half = D / 2;
  std::vector<float> out((size_t)rows * cols);
  for (int h = 0; h < heads; ++h)
    for (int i = 0; i < half; ++i)
      for (int j = 0; j < 2; ++j)
        std::copy_n(w + ((size_t)h * D + j * half + i) * cols, cols,
                    out.data() + ((size_t)h * D + 2 * i + j) * cols);
  return out;
}

namespace {

// A [rows, cols] matrix as a GGUF tensor of the given type (ne = {cols, rows}).
GgufTensor matrix(const std::string& name, const float* w, int rows, int cols, WType type) {
  GgufTensor t;
  t.name = name;
  t.ne = {cols, rows};
  if (type == WType::F32) {
    t.type = GgmlType::F32;
    t.data.assign(reinterpret_cast<const char*>(w), (size_t)rows * cols * sizeof(float));
    return t;
  }
  const QuantMatrix q = quantize_matrix(w, rows, cols, type);
  const int nb = cols / kQBlock;
  t.type = type == WType::Q8 ? GgmlType::Q8_0 : GgmlType::Q4_0;
  const size_t qbytes = type == WType::Q8 ? kQBlock : kQBlock / 2;
  t.data.reserve((size_t)rows * nb * (2 + qbytes));
  for (int r = 0; r < rows; ++r)
    for (int b = 0; b < nb; ++b) {
      const uint16_t d = float_to_half(q.scale[(size_t)r * nb + b]);
      t.data.append(reinterpret_cast<const char*>(&d), 2);
      const size_t off = ((size_t)r * nb + b) * qbytes;
      t.data.append(reinterpret_cast<const char*>(q.data.data()) + off, qbytes);
    }
  return t;
}

GgufTensor vector1d(const std::string& name, const float* w, int n) {
  GgufTensor t;
  t.name = name;
  t.ne = {n};
  t.type = GgmlType::F32;
  t.data.assign(reinterpret_cast<const char*>(w), (size_t)n * sizeof(float));
  return t;
}

}  // namespace

void export_gguf(const ModelFiles& mf, WType type, const std::string& name,
                 const std::string& out) {
  const ModelConfig& c = mf.config.model;
  const ParamLayout L(c);
  const float* P = mf.params.data();
  const int C = c.dim, F = c.hidden_dim, D = c.head_dim(), H = c.n_heads, Hkv = c.n_kv_heads;
  if (type != WType::F32 && (C % kQBlock || F % kQBlock || (H * D) % kQBlock))
    fail("[export] q8_0/q4_0 need the model's widths to be multiples of 32 (dim " +
         std::to_string(C) + ", hidden " + std::to_string(F) + ")");
  GgufFile g;
  auto kv = [&](const std::string& k, GgufValue v) { g.kv.emplace_back(k, std::move(v)); };
  kv("general.architecture", std::string("llama"));
  kv("general.name", name);
  kv("general.file_type", (uint32_t)(type == WType::F32 ? 0 : type == WType::Q8 ? 7 : 2));
  kv("general.quantization_version", (uint32_t)2);
  kv("general.alignment", (uint32_t)32);
  kv("llama.context_length", (uint32_t)c.context);
  kv("llama.embedding_length", (uint32_t)C);
  kv("llama.block_count", (uint32_t)c.n_layers);
  kv("llama.feed_forward_length", (uint32_t)F);
  kv("llama.attention.head_count", (uint32_t)H);
  kv("llama.attention.head_count_kv", (uint32_t)Hkv);
  kv("llama.rope.dimension_count", (uint32_t)D);
  kv("llama.rope.freq_base", c.rope_theta);
  kv("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  kv("llama.vocab_size", (uint32_t)c.vocab_size);
  const Tokenizer& tok = *mf.tokenizer;
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  for (const auto& p : tok.pieces()) {
    tokens.push_back(p.piece);
    scores.push_back(p.score);
    types.push_back(p.type);
  }
  kv("tokenizer.ggml.model", std::string("llama"));
  kv("tokenizer.ggml.tokens", tokens);
  kv("tokenizer.ggml.scores", scores);
  kv("tokenizer.ggml.token_type", types);
  kv("tokenizer.ggml.bos_token_id", (uint32_t)tok.bos_id());
  kv("tokenizer.ggml.eos_token_id", (uint32_t)tok.eos_id());
  kv("tokenizer.ggml.unknown_token_id", (uint32_t)tok.unk_id());
  kv("tokenizer.ggml.add_bos_token", true);
  kv("tokenizer.ggml.add_eos_token", false);
  if (has_chat_format(tok)) {  // llama.cpp formats chats as the model was trained, and stops
    kv("tokenizer.chat_template", chat_template_jinja());  // at the end of the turn
    kv("tokenizer.ggml.eot_token_id", (uint32_t)tok.piece_id(kTurnEnd));
  }

  g.tensors.push_back(matrix("token_embd.weight", P + L.embed, c.vocab_size, C, type));
  for (int l = 0; l < c.n_layers; ++l) {
    const LayerOffsets& o = L.layers[l];
    const std::string b = "blk." + std::to_string(l) + ".";
    const float* wq = P + o.wqkv;
    const float* wk = wq + (size_t)H * D * C;
    const float* wv = wk + (size_t)Hkv * D * C;
    g.tensors.push_back(vector1d(b + "attn_norm.weight", P + o.ln1, C));
    g.tensors.push_back(matrix(b + "attn_q.weight", permute_for_gguf(wq, H * D, C, H).data(), H * D, C, type));
    g.tensors.push_back(matrix(b + "attn_k.weight", permute_for_gguf(wk, Hkv * D, C, Hkv).data(), Hkv * D, C, type));
    g.tensors.push_back(matrix(b + "attn_v.weight", wv, Hkv * D, C, type));
    g.tensors.push_back(matrix(b + "attn_output.weight", P + o.wo, C, H * D, type));
    g.tensors.push_back(vector1d(b + "ffn_norm.weight", P + o.ln2, C));
    g.tensors.push_back(matrix(b + "ffn_gate.weight", P + o.wgateup, F, C, type));
    g.tensors.push_back(matrix(b + "ffn_up.weight", P + o.wgateup + (size_t)F * C, F, C, type));
    g.tensors.push_back(matrix(b + "ffn_down.weight", P + o.wdown, C, F, type));
  }
  g.tensors.push_back(vector1d("output_norm.weight", P + L.final_norm, C));
  if (!c.tie_embeddings)
    g.tensors.push_back(matrix("output.weight", P + L.lm_head, c.vocab_size, C, type));
  const fs::path parent = fs::path(out).parent_path();
  if (!parent.empty() && !fs::is_directory(parent))
    fail("[export] the directory of '" + out + "' does not exist");
  atomic_write_file(out, gguf_serialize(g));
}

void export_hf(const ModelFiles& mf, const std::string& out) {
  const ModelConfig& c = mf.config.model;
  if (fs::exists(out) && !(fs::is_directory(out) && fs::is_empty(out)))
    fail("[export] '" + out + "' already exists and is not an empty directory");
  const fs::path parent = fs::absolute(out).parent_path();
  if (!fs::is_directory(parent))
    fail("[export] the directory of '" + out + "' does not exist");
  const Tokenizer& tok = *mf.tokenizer;
  const std::string tmp = out + ".tmp-export";
  remove_all(tmp);
  make_dirs(tmp);
  try {
    json cfg = {{"architectures", {"LlamaForCausalLM"}},
                {"model_type", "llama"},
                {"hidden_size", c.dim},
                {"intermediate_size", c.hidden_dim},
                {"num_hidden_layers", c.n_layers},
                {"num_attention_heads", c.n_heads},
                {"num_key_value_heads", c.n_kv_heads},
                {"head_dim", c.head_dim()},
                {"max_position_embeddings", c.context},
                {"rms_norm_eps", c.norm_eps},
                {"rope_theta", c.rope_theta},
                {"rope_scaling", nullptr},
                {"vocab_size", c.vocab_size},
                {"tie_word_embeddings", c.tie_embeddings},
                {"hidden_act", "silu"},
                {"attention_bias", false},
                {"attention_dropout", 0.0},
                {"mlp_bias", false},
                {"initializer_range", 0.02},
                {"pretraining_tp", 1},
                {"use_cache", true},
                {"bos_token_id", tok.bos_id()},
                {"eos_token_id", tok.eos_id()},
                {"torch_dtype", "float32"}};
    atomic_write_file(tmp + "/config.json", cfg.dump(2) + "\n");
    const bool chat = has_chat_format(tok);
    json gen = {{"bos_token_id", tok.bos_id()}, {"eos_token_id", tok.eos_id()},
                {"max_length", c.context}, {"do_sample", true}, {"temperature", 1.0}};
    if (chat) gen["eos_token_id"] = {tok.eos_id(), tok.piece_id(kTurnEnd)};
    atomic_write_file(tmp + "/generation_config.json", gen.dump(2) + "\n");
    json tcfg = {{"tokenizer_class", "LlamaTokenizer"}, {"bos_token", "<s>"},
                 {"eos_token", "</s>"}, {"unk_token", "<unk>"}, {"add_bos_token", true},
                 {"add_eos_token", false}, {"model_max_length", c.context}, {"legacy", true},
                 {"clean_up_tokenization_spaces", false}};
    json special = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"unk_token", "<unk>"}};
    if (chat) {
      tcfg["chat_template"] = chat_template_jinja();
      tcfg["additional_special_tokens"] = {kTurnStart, kTurnEnd};
      special["additional_special_tokens"] = {kTurnStart, kTurnEnd};
    }
    atomic_write_file(tmp + "/tokenizer_config.json", tcfg.dump(2) + "\n");
    atomic_write_file(tmp + "/special_tokens_map.json", special.dump(2) + "\n");
    atomic_write_file(tmp + "/tokenizer.model", read_file(tok.path()));
    StFile st;
    st.metadata["format"] = "pt";  // transformers refuses safetensors without it
    const ParamLayout L(c);
    for (const TensorInfo& t : L.tensors)
      st.tensors.push_back(st_f32(t.name, t.shape, mf.params.data() + t.offset));
    atomic_write_file(tmp + "/model.safetensors", safetensors_serialize(st));
    if (fs::exists(out)) fs::remove(out);
    fs::rename(tmp, out);
    fsync_path(parent.string());
  } catch (...) {
    remove_all(tmp);
    throw;
  }
}

}  // namespace tandem
