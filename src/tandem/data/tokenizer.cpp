// Tokenizer on SentencePiece: loading and hashing the model, streaming decode, and training
// with fixed options so the same corpus and seed give the same model bytes.
#include "tandem/data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <unordered_map>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"
#include "tandem/core/rng.h"
#include "tandem/data/chat.h"
#include "tandem/data/corpus.h"

namespace tandem {

namespace {

// Byte value of a byte-fallback piece ("<0xE4>"), or -1.
int byte_value(const std::string& piece) {
  if (piece.size() != 6 || !piece.starts_with("<0x") || piece.back() != '>') return -1;
  unsigned v = 0;
  if (std::sscanf(piece.c_str() + 3, "%2x", &v) != 1) return -1;
  return static_cast<int>(v);
}

// SentencePiece prefixes messages with "./src/file.cc(123) [condition] "; keep the sentence.
std::string clean_message(const std::string& msg) {
  if (msg.find(".cc(") == std::string::npos) return msg;
  size_t end = msg.find("] ");
  return end == std::string::npos ? msg : msg.substr(end + 2);
}

// Feeds corpus documents to the trainer without loading whole files into memory.
class DocumentIterator : public sentencepiece::SentenceIterator {
 public:
  explicit DocumentIterator(const std::vector<std::string>& files) : reader_(files, "tokenizer") {
    Next();
  }
  bool done() const override { return done_; }
  void Next() override {
    try {
      done_ = !reader_.next(value_);
    } catch (const Error& e) {
      status_ = sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, e.what());
      done_ = true;
    }
  }
  const std::string& value() const override { return value_; }
  sentencepiece::util::Status status() const override { return status_; }

 private:
  DocumentReader reader_;
  std::string value_;
  bool done_ = false;
  sentencepiece::util::Status status_;
};

}  // namespace

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::load(const std::string& path) {
  std::string bytes;
  try {
    bytes = read_file(path);
  } catch (const Error& e) {
    fail(std::string("[tokenizer] cannot load tokenizer model: ") + e.what());
  }
  Tokenizer t;
  t.sp_ = std::make_unique<sentencepiece::SentencePieceProcessor>();
  auto st = t.sp_->LoadFromSerializedProto(bytes);
  if (!st.ok() || t.sp_->GetPieceSize() <= 0) {
    fail("[tokenizer] '" + path + "' is not a SentencePiece model: " + st.ToString());
  }
  t.path_ = path;
  t.sha256_ = sha256_hex(bytes.data(), bytes.size());
  for (const std::string& r : kReservedPieces)  // a tokenizer trained before has none
    if (t.piece_id(r) >= 0) t.reserved_.push_back(r);
  return t;
}

std::vector<int32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  auto st = sp_->Encode(text, &ids);
  if (!st.ok()) fail("[tokenizer] encode failed: " + st.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

bool has_chat_format(const Tokenizer& tok) {
  return tok.piece_id(kTurnStart) >= 0 && tok.piece_id(kTurnEnd) >= 0;
}

int32_t Tokenizer::piece_id(const std::string& piece) const {
  const int id = sp_->PieceToId(piece);
  return id >= 0 && id < vocab_size() && sp_->IdToPiece(id) == piece ? id : -1;
}

std::vector<int32_t> Tokenizer::encode_with_specials(const std::string& text) const {
  std::vector<int32_t> out;
  size_t pos = 0;
  while (pos < text.size()) {
    // The nearest reserved piece from pos.
    size_t at = std::string::npos, len = 0;
    int32_t id = -1;
    for (const std::string& r : reserved_) {
      const size_t f = text.find(r, pos);
      if (f < at) at = f, len = r.size(), id = piece_id(r);
    }
    const std::string fragment = text.substr(pos, at == std::string::npos ? std::string::npos : at - pos);
    if (!fragment.empty())
      for (int32_t t : encode(fragment)) out.push_back(t);
    if (at == std::string::npos) break;
    out.push_back(id);
    pos = at + len;
  }
  return out;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  const int n = vocab_size();
  for (int32_t id : ids) {
    if (id < 0 || id >= n) {
      fail("[tokenizer] cannot decode id " + std::to_string(id) + ": expected 0 <= id < " +
           std::to_string(n) + " (the tokenizer's vocab size)");
    }
  }
  std::string out;
  auto st = sp_->Decode(std::vector<int>(ids.begin(), ids.end()), &out);
  if (!st.ok()) fail("[tokenizer] decode failed: " + st.ToString());
  return out;
}

// decode() without the trailing byte pieces that start a UTF-8 character but do not finish it;
// SentencePiece would render those as U+FFFD and the text would change once they complete.
std::string Tokenizer::stable_decode(std::span<const int32_t> ids) const {
  size_t end = ids.size();
  for (size_t k = 1; k <= 4 && k <= ids.size(); ++k) {
    int32_t id = ids[ids.size() - k];
    if (id < 0 || id >= vocab_size() || !sp_->IsByte(id)) break;
    int b = byte_value(sp_->IdToPiece(id));
    if ((b & 0xC0) == 0x80) continue;  // continuation byte: look further back for the lead
    int need = (b & 0xE0) == 0xC0 ? 2 : (b & 0xF0) == 0xE0 ? 3 : (b & 0xF8) == 0xF0 ? 4 : 0;
    if (static_cast<int>(k) < need) end = ids.size() - k;
    break;
  }
  return decode(ids.first(end));
}

std::string Tokenizer::decode_piece(std::span<const int32_t> ids) const {
  if (ids.empty()) return "";
  // Decode only from the last ordinary piece before the new id: it resets SentencePiece's
  // leading-space and byte-grouping state identically in both decodes, so their difference
  // is the true delta and the cost does not grow with the sequence.
  ptrdiff_t s = static_cast<ptrdiff_t>(ids.size()) - 2;
  while (s > 0) {
    int32_t id = ids[s];
    if (id >= 0 && id < vocab_size() && !sp_->IsByte(id) && !sp_->IsControl(id)) break;
    --s;
  }
  if (s < 0) s = 0;
  auto window = ids.subspan(static_cast<size_t>(s));
  std::string cur = stable_decode(window);
  std::string prev = stable_decode(window.first(window.size() - 1));
  size_t common = 0;  // prev is a prefix of cur; guard anyway so a surprise cannot throw
  while (common < prev.size() && common < cur.size() && prev[common] == cur[common]) ++common;
  return cur.substr(common);
}

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int Tokenizer::unk_id() const { return sp_->unk_id(); }

std::vector<Tokenizer::PieceInfo> Tokenizer::pieces() const {
  std::vector<PieceInfo> out(vocab_size());
  for (int i = 0; i < vocab_size(); ++i) {
    PieceInfo& p = out[i];
    p.piece = sp_->IdToPiece(i);
    p.score = sp_->GetScore(i);
    const bool reserved =
        std::find(reserved_.begin(), reserved_.end(), p.piece) != reserved_.end();
    p.type = sp_->IsUnknown(i)   ? 2
             : sp_->IsControl(i) ? 3
             : reserved          ? 4
             : sp_->IsByte(i)    ? 6
             : sp_->IsUnused(i)  ? 5
                                 : 1;
  }
  return out;
}
int Tokenizer::bos_id() const { return sp_->bos_id(); }
int Tokenizer::eos_id() const { return sp_->eos_id(); }

std::string Tokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || id >= vocab_size()) fail("[tokenizer] id " + std::to_string(id) + " out of range");
  return sp_->IdToPiece(id);
}

void train_tokenizer(const std::vector<std::string>& input_files, const std::string& model_prefix,
                     int vocab_size, const TokenizerTrainOptions& options) {
  // 3 specials + 256 byte pieces must fit, and at least one learned piece beside them.
  if (vocab_size < 260) {
    fail("[tokenizer] vocab_size " + std::to_string(vocab_size) +
         " is too small: expected at least 260 (3 special ids + 256 byte-fallback pieces + 1)");
  }
  if (options.max_sentences < 0 || options.num_threads < 1) {
    fail("[tokenizer] expected max_sentences >= 0 and num_threads >= 1");
  }
  check_corpus_files(input_files, "tokenizer");
  std::string dir = std::filesystem::path(model_prefix).parent_path().string();
  if (!dir.empty() && !std::filesystem::is_directory(dir)) {
    fail("[tokenizer] output directory '" + dir + "' for model prefix '" + model_prefix +
         "' does not exist");
  }

  std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(vocab_size)},
      {"byte_fallback", "true"},
      // Rare characters fall back to bytes instead of taking vocab slots.
      {"character_coverage", "0.9995"},
      {"unk_id", "0"},
      {"bos_id", "1"},
      {"eos_id", "2"},
      {"pad_id", "-1"},
      // Identity normalization keeps decode(encode(text)) == text, as Llama's tokenizer does.
      {"normalization_rule_name", "identity"},
      {"remove_extra_whitespaces", "false"},
      {"add_dummy_prefix", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"split_digits", "true"},
      {"max_sentence_length", "16384"},
      {"input_sentence_size", std::to_string(options.max_sentences)},
      {"shuffle_input_sentence", "true"},
      {"num_threads", std::to_string(options.num_threads)},
      {"minloglevel", "2"},  // keep SentencePiece's progress chatter off stderr
  };
  if (options.reserve) {
    std::string symbols;
    for (const std::string& r : kReservedPieces) symbols += (symbols.empty() ? "" : ",") + r;
    args["user_defined_symbols"] = symbols;
  }
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned>(mix64(options.seed)));
  DocumentIterator docs(input_files);
  std::string model;
  auto st = sentencepiece::SentencePieceTrainer::Train(args, &docs, &model);
  if (!docs.status().ok()) fail(docs.status().message());
  if (!st.ok()) {
    std::string files;
    for (const auto& f : input_files) files += (files.empty() ? "'" : ", '") + f + "'";
    fail("[tokenizer] training with vocab_size " + std::to_string(vocab_size) + " on " + files +
         " failed: " + clean_message(st.message()));
  }

  sentencepiece::SentencePieceProcessor sp;
  if (!sp.LoadFromSerializedProto(model).ok()) fail("[tokenizer] trainer produced a bad model");
  std::string vocab;
  for (int i = 0; i < sp.GetPieceSize(); ++i) {
    char score[32];
    std::snprintf(score, sizeof score, "%g", sp.GetScore(i));
    vocab += sp.IdToPiece(i) + "\t" + score + "\n";
  }
  atomic_write_file(model_prefix + ".model", model);
  atomic_write_file(model_prefix + ".vocab", vocab);
}

}  // namespace tandem
