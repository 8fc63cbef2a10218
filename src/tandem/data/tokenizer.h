// SentencePiece BPE tokenizer: load, encode, decode (whole and streaming), and training from
// text files. Byte fallback makes every UTF-8 string encodable without <unk>.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace tandem {

class Tokenizer {
 public:
  // Throws tandem::Error "[tokenizer] ..." naming `path` when it is missing or not a model.
  static Tokenizer load(const std::string& path);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  std::vector<int32_t> encode(const std::string& text) const;  // no bos/eos added
  // Text that holds reserved tokens (the chat format's): each reserved token becomes its id,
  // and the text between them is encoded piece by piece, each with its own leading-space
  // marker, as llama.cpp tokenizes special tokens in a prompt.
  std::vector<int32_t> encode_with_specials(const std::string& text) const;
  // The id of `piece`, or -1 when the vocabulary lacks it.
  int32_t piece_id(const std::string& piece) const;
  // The reserved pieces this tokenizer has (of kReservedPieces).
  const std::vector<std::string>& reserved() const { return reserved_; }
  // Throws when an id is outside [0, vocab_size()); control ids (bos/eos) decode to "".
  std::string decode(std::span<const int32_t> ids) const;
  // Streaming decode: the text that appending ids.back() adds to the output, given every id
  // generated so far. Bytes of a UTF-8 character split over byte-fallback pieces are held
  // back until the character is complete, so the concatenated deltas equal decode(ids)
  // whenever ids does not end inside such a character. Cost is independent of ids.size().
  std::string decode_piece(std::span<const int32_t> ids) const;

  int vocab_size() const;
  int bos_id() const;
  int eos_id() const;
  std::string id_to_piece(int32_t id) const;
  // Every piece with its score and kind, for exporting the vocabulary (GGUF's token types:
  // 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
  struct PieceInfo {
    std::string piece;
    float score = 0;
    int type = 1;
  };
  std::vector<PieceInfo> pieces() const;
  int unk_id() const;
  const std::string& sha256() const { return sha256_; }  // of the model file's bytes
  const std::string& path() const { return path_; }

 private:
  Tokenizer() = default;
  std::string stable_decode(std::span<const int32_t> ids) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::vector<std::string> reserved_;
  std::string path_;
  std::string sha256_;
};

// Pieces reserved at training time (whole tokens, never split or learned from the corpus):
// the chat format's turn markers (see chat.h).
inline const std::vector<std::string> kReservedPieces = {"<|im_start|>", "<|im_end|>"};

struct TokenizerTrainOptions {
  uint64_t seed = 1234;             // fixes sentence sampling, so training is reproducible
  int64_t max_sentences = 2000000;  // lines sampled for training; 0 = use every line
  int num_threads = 1;              // one thread keeps the result independent of the machine
  bool reserve = true;              // reserve kReservedPieces (false: as before they existed)
};

// Trains a byte-fallback BPE model on the documents of `input_files` (see corpus.h) and
// writes <model_prefix>.model and <model_prefix>.vocab atomically. Ids: 0 <unk>, 1 <s>,
// 2 </s>, 3 and 4 the reserved pieces, then the byte pieces. Throws "[tokenizer] ..." naming the file or value at fault.
void train_tokenizer(const std::vector<std::string>& input_files, const std::string& model_prefix,
                     int vocab_size, const TokenizerTrainOptions& options = {});

}  // namespace tandem
