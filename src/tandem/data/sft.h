// Labelled examples for supervised fine-tuning, from JSONL files in the formats people have:
// {"messages": [{"role": ..., "content": ...}, ...]} (a chat, in the chat format of chat.h) or
// {"prompt": ..., "completion": ...} (plain text). Each example becomes one training row:
// inputs are its tokens, and only the tokens the example teaches are targets (the assistant's
// turns and their end-of-turn token, or the completion and </s>; every token with
// loss_on = "all"); the rest of the row is masked (target -1) and padded.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

class Tokenizer;

struct SftExample {
  std::vector<int32_t> tokens;  // with <s> first
  std::vector<uint8_t> target;  // target[i]: token i is predicted (from token i - 1) in the loss
  std::string where;            // FILE:LINE
};

struct SftOptions {
  std::string loss_on = "assistant";  // "assistant" (or the completion) or "all"
  int seq_len = 0;                    // an example's tokens must fit in seq_len + 1
};

// Throws "[sft] FILE:LINE: ..." naming the line for malformed JSON, an unknown role, an empty
// completion, a chat the tokenizer has no chat tokens for, or an example longer than the row.
std::vector<SftExample> load_sft_examples(const std::string& path, const Tokenizer& tok,
                                          const SftOptions& opt);

// Rows of B x T for samples first .. first + B - 1: sample i is example perm_e(i mod N) of
// epoch e = i / N, each epoch a fresh permutation drawn from (seed, e): a pure function of the
// sample index, so a resumed run draws what the uninterrupted one did.
class SftLoader {
 public:
  // `pack`: a sample is a row of several examples one after another (each epoch's
  // permutation cut greedily into rows), with doc_start (B x T) filled for the attention.
  SftLoader(std::vector<SftExample> examples, int batch, int seq_len, uint64_t seed,
            bool pack = false);
  void fill(int64_t first_sample, int32_t* inputs, int32_t* targets,
            int32_t* doc_start = nullptr) const;
  bool packed() const { return pack_; }
  // Row `i` of the examples in file order (for evaluation).
  void fill_example(size_t i, int32_t* inputs, int32_t* targets) const;
  size_t size() const { return ex_.size(); }
  size_t example_of(int64_t sample) const;

 private:
  std::vector<SftExample> ex_;
  int batch_, seq_len_;
  uint64_t seed_;
  bool pack_ = false;
  mutable int64_t epoch_ = -1;
  mutable std::vector<uint32_t> perm_;
  // Packing: rows per epoch so far, and the rows of one epoch.
  std::vector<std::vector<uint32_t>> pack_epoch(int64_t e) const;
  std::vector<uint32_t> packed_row(int64_t sample) const;
  mutable std::vector<int64_t> epoch_rows_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<std::vector<uint32_t>> cached_rows_;
};

}  // namespace tandem
