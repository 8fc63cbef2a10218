// SFT examples: JSONL parsing, tokenization in the chat format, and the masks (see sft.h).
#include "tandem/data/sft.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/core/error.h"
#include "tandem/core/rng.h"
#include "tandem/data/chat.h"
#include "tandem/data/tokenizer.h"

namespace tandem {
namespace {

constexpr uint64_t kStreamSft = 0x736674ull;  // epoch permutations

// How many leading tokens of `prefix_tokens` the whole sequence shares: where the text after
// the prefix starts in the whole sequence's tokens (a token spanning the boundary belongs to
// the prefix).
size_t shared_prefix(const std::vector<int32_t>& all, const std::vector<int32_t>& prefix) {
  size_t n = 0;
  while (n < all.size() && n < prefix.size() && all[n] == prefix[n]) ++n;
  return n;
}

std::vector<int32_t> with_bos(const Tokenizer& tok, std::vector<int32_t> ids) {
  ids.insert(ids.begin(), tok.bos_id());
  return ids;
}

std::string string_field(const nlohmann::json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) fail("[sft] " + where + ": missing \"" + key + "\"");
  if (!j[key].is_string()) fail("[sft] " + where + ": \"" + key + "\" must be a string");
  return j[key].get<std::string>();
}

SftExample chat_example(const nlohmann::json& msgs, const Tokenizer& tok, const SftOptions& opt,
                        const std::string& where) {
  if (!has_chat_format(tok))
    fail("[sft] " + where + ": a chat needs the chat format's tokens (" + kTurnStart + ", " +
         kTurnEnd + "), and this tokenizer was prepared without them: prepare the data again "
         "with this version of `tandem data prepare`, or use {\"prompt\", \"completion\"}");
  if (!msgs.is_array() || msgs.empty())
    fail("[sft] " + where + ": \"messages\" must be a non-empty array");
  std::vector<ChatMessage> turns;
  std::vector<std::pair<size_t, size_t>> taught;  // character spans: content + end of turn
  std::string text;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string at = where + ": messages[" + std::to_string(i) + "]";
    if (!msgs[i].is_object()) fail("[sft] " + at + " must be an object");
    const std::string role = string_field(msgs[i], "role", at);
    const std::string content = string_field(msgs[i], "content", at);
    if (role != "system" && role != "user" && role != "assistant")
      fail("[sft] " + at + ": unknown role '" + role + "' (expected system, user or assistant)");
    if (role == "assistant" && content.empty())
      fail("[sft] " + at + ": an empty assistant turn teaches nothing");
    const size_t before = text.size();
    text += render_chat_template({{role, content}}, false);
    if (role == "assistant") {
      const size_t start = before + std::string(kTurnStart).size() + role.size() + 1;
      taught.emplace_back(start, start + content.size() + std::string(kTurnEnd).size());
    }
  }
  if (taught.empty() && opt.loss_on != "all")
    fail("[sft] " + where + ": the chat has no assistant turn to learn from");
  SftExample ex;
  ex.tokens = with_bos(tok, tok.encode_with_specials(text));
  ex.target.assign(ex.tokens.size(), opt.loss_on == "all" ? 1 : 0);
  ex.target[0] = 0;  // <s> is never predicted
  for (const auto& [start, end] : taught) {
    const size_t a = shared_prefix(ex.tokens, with_bos(tok, tok.encode_with_specials(text.substr(0, start))));
    const size_t b = with_bos(tok, tok.encode_with_specials(text.substr(0, end))).size();
    for (size_t k = std::max<size_t>(a, 1); k < b && k < ex.tokens.size(); ++k) ex.target[k] = 1;
  }
  return ex;
}

SftExample completion_example(const nlohmann::json& j, const Tokenizer& tok,
                              const SftOptions& opt, const std::string& where) {
  const std::string prompt = string_field(j, "prompt", where);
  const std::string completion = string_field(j, "completion", where);
  if (completion.empty()) fail("[sft] " + where + ": the completion is empty");
  SftExample ex;
  ex.tokens = with_bos(tok, tok.encode(prompt + completion));
  ex.tokens.push_back(tok.eos_id());
  const size_t a = prompt.empty() ? 1 : shared_prefix(ex.tokens, with_bos(tok, tok.encode(prompt)));
  ex.target.assign(ex.tokens.size(), 0);
  for (size_t k = opt.loss_on == "all" ? 1 : std::max<size_t>(a, 1); k < ex.tokens.size(); ++k)
    ex.target[k] = 1;
  return ex;
}

}  // namespace

std::vector<SftExample> load_sft_examples(const std::string& path, const Tokenizer& tok,
                                          const SftOptions& opt) {
  if (opt.loss_on != "assistant" && opt.loss_on != "all")
    fail("[sft] loss_on must be \"assistant\" or \"all\", not \"" + opt.loss_on + "\"");
  std::ifstream in(path);
  if (!in) fail("[sft] cannot open '" + path + "'");
  std::vector<SftExample> out;
  std::string line;
  for (int64_t no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      fail("[sft] " + where + ": not a JSON object (" + e.what() + ")");
    }
    if (!j.is_object()) fail("[sft] " + where + ": not a JSON object");
    SftExample ex;
    if (j.contains("messages"))
      ex = chat_example(j["messages"], tok, opt, where);
    else if (j.contains("prompt") || j.contains("completion"))
      ex = completion_example(j, tok, opt, where);
    else
      fail("[sft] " + where + ": expected {\"messages\": [...]} or {\"prompt\", \"completion\"}");
    if (opt.seq_len > 0 && ex.tokens.size() > (size_t)opt.seq_len + 1)
      fail("[sft] " + where + ": the example is " + std::to_string(ex.tokens.size()) +
           " tokens; a row holds train.seq_len + 1 = " + std::to_string(opt.seq_len + 1));
    ex.where = where;
    out.push_back(std::move(ex));
  }
  if (out.empty()) fail("[sft] '" + path + "' holds no examples");
  return out;
}

SftLoader::SftLoader(std::vector<SftExample> examples, int batch, int seq_len, uint64_t seed,
                     bool pack)
    : ex_(std::move(examples)), batch_(batch), seq_len_(seq_len), seed_(seed), pack_(pack) {
  TANDEM_CHECK(!ex_.empty(), "no examples");
}

size_t SftLoader::example_of(int64_t sample) const {
  const int64_t n = (int64_t)ex_.size();
  const int64_t epoch = sample / n;
  if (epoch != epoch_) {  // Fisher-Yates with counter-based draws: (seed, epoch, k)
    perm_.resize(ex_.size());
    for (size_t i = 0; i < perm_.size(); ++i) perm_[i] = (uint32_t)i;
    for (int64_t k = n - 1; k > 0; --k) {
      const uint64_t r = rng_u64(seed_, kStreamSft, ((uint64_t)epoch << 32) | (uint64_t)k);
      std::swap(perm_[(size_t)k], perm_[(size_t)(r % (uint64_t)(k + 1))]);
    }
    epoch_ = epoch;
  }
  return perm_[(size_t)(sample % n)];
}

void SftLoader::fill_example(size_t i, int32_t* inputs, int32_t* targets) const {
  const SftExample& e = ex_[i];
  const size_t n = e.tokens.size();
  for (int t = 0; t < seq_len_; ++t) {
    inputs[t] = (size_t)t < n ? e.tokens[(size_t)t] : 0;  // padding after the example
    targets[t] = (size_t)t + 1 < n && e.target[(size_t)t + 1] ? e.tokens[(size_t)t + 1] : -1;
  }
}

void SftLoader::fill(int64_t first_sample, int32_t* inputs, int32_t* targets,
                     int32_t* doc_start) const {
  for (int b = 0; b < batch_; ++b) {
    int32_t* in = inputs + (size_t)b * seq_len_;
    int32_t* tg = targets + (size_t)b * seq_len_;
    if (!pack_) {
      fill_example(example_of(first_sample + b), in, tg);
      continue;
    }
    // A packed row: its examples one after another, each example's last token only a target
    // (the next example does not learn from it); the rest of the row is padding, a document
    // of its own.
    const std::vector<uint32_t> row = packed_row(first_sample + b);
    int32_t* ds = doc_start + (size_t)b * seq_len_;
    int off = 0;
    for (uint32_t i : row) {
      const SftExample& e = ex_[i];
      const int n = (int)e.tokens.size() - 1;  // input positions it takes
      for (int t = 0; t < n; ++t) {
        in[off + t] = e.tokens[(size_t)t];
        tg[off + t] = e.target[(size_t)t + 1] ? e.tokens[(size_t)t + 1] : -1;
        ds[off + t] = off;
      }
      off += n;
    }
    for (int t = off; t < seq_len_; ++t) in[t] = 0, tg[t] = -1, ds[t] = off;
  }
}

std::vector<std::vector<uint32_t>> SftLoader::pack_epoch(int64_t e) const {
  const int64_t n = (int64_t)ex_.size();
  std::vector<std::vector<uint32_t>> rows;
  int used = seq_len_ + 1;
  for (int64_t k = 0; k < n; ++k) {
    const uint32_t i = (uint32_t)example_of(e * n + k);
    const int len = (int)ex_[i].tokens.size() - 1;  // input positions the example takes
    if (used + len > seq_len_) rows.emplace_back(), used = 0;
    rows.back().push_back(i);
    used += len;
  }
  return rows;
}

std::vector<uint32_t> SftLoader::packed_row(int64_t sample) const {
  // Rows of each epoch: its permutation cut greedily into runs that fit seq_len input
  // positions. Row r of the run is found through the epochs' row counts, all a function of
  // (seed, epoch): a resumed run packs what the uninterrupted one did.
  int64_t first_row = 0;
  for (int64_t e = 0;; ++e) {
    if ((int64_t)epoch_rows_.size() <= e) {
      cached_rows_ = pack_epoch(e);
      cached_epoch_ = e;
      epoch_rows_.push_back((int64_t)cached_rows_.size());
    }
    if (sample < first_row + epoch_rows_[(size_t)e]) {
      if (cached_epoch_ != e) cached_rows_ = pack_epoch(e), cached_epoch_ = e;
      return cached_rows_[(size_t)(sample - first_row)];
    }
    first_row += epoch_rows_[(size_t)e];
  }
}

}  // namespace tandem
