// Export of a checkpoint for other runtimes: GGUF for llama.cpp (f32, q8_0 or q4_0, with the
// SentencePiece vocabulary) and a Hugging Face directory (LlamaForCausalLM). Lives beside the
// quantizer, which a quantized GGUF shares with `--quant`, so both runtimes hold the same
// weights.
#pragma once

#include <string>

#include "tandem/backend/backend.h"
#include "tandem/infer/engine.h"

namespace tandem {

// Writes `out` atomically. type F32 writes f32 matrices; Q8/Q4 write q8_0/q4_0 (norms stay
// f32). `name` goes to general.name.
void export_gguf(const ModelFiles& mf, WType type, const std::string& name, const std::string& out);

// Writes config.json, generation_config.json, model.safetensors, tokenizer.model,
// tokenizer_config.json and special_tokens_map.json into the directory `out` (created; must
// not exist or be empty). Written under a temporary name and renamed when complete.
void export_hf(const ModelFiles& mf, const std::string& out);

// The row permutation llama.cpp expects for q and k (its rotary embedding pairs adjacent
// values; Hugging Face rotates halves): row h*D + 2i + j takes row h*D + j*D/2 + i.
std::vector<float> permute_for_gguf(const float* w, int rows, int cols, int heads);

}  // namespace tandem
