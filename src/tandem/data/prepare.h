// `tandem data`: text files -> tokenizer + train/val shards + dataset.json in one directory,
// built aside and renamed into place so a failure never leaves partial output.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

struct PrepareOptions {
  std::vector<std::string> input_files;  // UTF-8 text; each non-blank line is one document
  std::string out_dir;
  int vocab_size = 4096;
  double val_fraction = 0.05;  // share of documents (taken from the end) held out for val
  uint64_t seed = 1234;        // tokenizer training's sentence sampling
  bool overwrite = false;      // replace an existing dataset directory at out_dir
  bool quiet = false;          // no summary line on stderr
};

struct PrepareResult {
  int64_t train_documents = 0, val_documents = 0;
  int64_t train_tokens = 0, val_tokens = 0;
  std::string tokenizer_sha256;
  double seconds = 0;
};

// Layout of the directory and of each document's tokens: docs/shard-format.md.
// Throws "[data] ..." / "[tokenizer] ..." naming the file or value at fault.
PrepareResult prepare_dataset(const PrepareOptions& options);

}  // namespace tandem
