// Dataset preparation: train the tokenizer, encode documents, split, write shards and a
// manifest in a hidden sibling directory, then swap it into place.
#include "tandem/data/prepare.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <span>

#include "tandem/core/error.h"
#include "tandem/core/fs.h"
#include "tandem/core/hash.h"
#include "tandem/core/log.h"
#include "tandem/data/corpus.h"
#include "tandem/data/shard.h"
#include "tandem/data/tokenizer.h"

namespace tandem {

namespace fs = std::filesystem;

namespace {

// Removes the staging directory however prepare_dataset exits.
struct StagingDir {
  std::string path;
  ~StagingDir() { remove_all(path); }
};

// Fails unless `out` is absent, empty, or (with overwrite) a previous dataset. Anything else
// may be the user's data, which we never replace.
void check_out_dir(const fs::path& out, bool overwrite) {
  std::error_code ec;
  if (!fs::exists(out, ec)) return;
  const std::string o = out.string();
  if (!fs::is_directory(out, ec)) fail("[data] output '" + o + "' exists and is not a directory");
  if (fs::exists(out / "dataset.json", ec)) {
    if (!overwrite) {
      fail("[data] output directory '" + o +
           "' already holds a dataset; pass the overwrite option to replace it");
    }
    return;
  }
  if (!fs::is_empty(out, ec)) {
    fail("[data] output directory '" + o +
         "' is not empty and holds no dataset.json; refusing to replace it, choose another");
  }
}

// Moves the finished staging directory to `out`. An existing `out` is swapped atomically
// (RENAME_EXCHANGE) so there is never a moment without a complete directory there; the old
// one ends up at `staging` and is removed with it.
void install(const std::string& staging, const fs::path& out) {
  const std::string o = out.string();
  if (!fs::exists(out)) {
    if (::rename(staging.c_str(), o.c_str()) != 0) {
      fail("[data] cannot rename '" + staging + "' to '" + o + "': " + std::strerror(errno));
    }
    return;
  }
  if (::renameat2(AT_FDCWD, staging.c_str(), AT_FDCWD, o.c_str(), RENAME_EXCHANGE) == 0) return;
  // File systems without RENAME_EXCHANGE: move the old directory aside first.
  std::string aside = staging + ".old";
  if (::rename(o.c_str(), aside.c_str()) != 0) {
    fail("[data] cannot move '" + o + "' aside: " + std::strerror(errno));
  }
  if (::rename(staging.c_str(), o.c_str()) != 0) {
    int err = errno;
    ::rename(aside.c_str(), o.c_str());
    fail("[data] cannot rename '" + staging + "' to '" + o + "': " + std::strerror(err));
  }
  remove_all(aside);
}

// Encodes every document as [bos] tokens [eos]; doc_ends[i] is one past document i's last token.
void encode_corpus(const Tokenizer& tok, const std::vector<std::string>& files,
                   std::vector<int32_t>& tokens, std::vector<int64_t>& doc_ends) {
  DocumentReader reader(files, "data");
  std::vector<std::string> chunk;
  std::vector<std::vector<int32_t>> encoded;
  bool more = true;
  while (more) {
    chunk.clear();
    std::string doc;
    while (chunk.size() < 8192 && (more = reader.next(doc))) chunk.push_back(std::move(doc));
    encoded.assign(chunk.size(), {});
    std::string error;  // exceptions must not leave an OpenMP region
    // Encoding is const and thread-safe in SentencePiece; results are joined in order.
#pragma omp parallel for schedule(dynamic, 64)
    for (size_t i = 0; i < chunk.size(); ++i) {
      try {
        encoded[i] = tok.encode(chunk[i]);
      } catch (const std::exception& e) {
#pragma omp critical
        error = e.what();
      }
    }
    if (!error.empty()) fail(error);
    for (const auto& ids : encoded) {
      tokens.push_back(tok.bos_id());
      tokens.insert(tokens.end(), ids.begin(), ids.end());
      tokens.push_back(tok.eos_id());
      doc_ends.push_back(static_cast<int64_t>(tokens.size()));
    }
  }
}

}  // namespace

PrepareResult prepare_dataset(const PrepareOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  if (opt.out_dir.empty()) fail("[data] no output directory given");
  if (!(opt.val_fraction >= 0.0 && opt.val_fraction <= 0.5)) {
    fail("[data] val_fraction " + std::to_string(opt.val_fraction) +
         " is out of range: expected 0 <= val_fraction <= 0.5");
  }
  if (opt.vocab_size < 260) {
    fail("[data] vocab_size " + std::to_string(opt.vocab_size) +
         " is too small: expected at least 260 (3 special ids + 256 byte-fallback pieces + 1)");
  }
  check_corpus_files(opt.input_files, "data");
  fs::path out = fs::path(opt.out_dir).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();  // "dir/" names "dir"
  check_out_dir(out, opt.overwrite);
  fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  make_dirs(parent.string());

  StagingDir staging{
      (parent / ("." + out.filename().string() + ".tmp-" + std::to_string(::getpid()))).string()};
  remove_all(staging.path);
  make_dirs(staging.path);
  const fs::path dir = staging.path;

  TokenizerTrainOptions topt;
  topt.seed = opt.seed;
  train_tokenizer(opt.input_files, (dir / "tokenizer").string(), opt.vocab_size, topt);
  Tokenizer tok = Tokenizer::load((dir / "tokenizer.model").string());

  std::vector<int32_t> tokens;
  std::vector<int64_t> doc_ends;
  encode_corpus(tok, opt.input_files, tokens, doc_ends);
  const auto n_docs = static_cast<int64_t>(doc_ends.size());
  int64_t n_val = 0;
  if (opt.val_fraction > 0) {
    n_val = std::max<int64_t>(1, std::llround(opt.val_fraction * static_cast<double>(n_docs)));
  }
  if (n_docs - n_val < 1) {
    fail("[data] the corpus holds " + std::to_string(n_docs) +
         " document(s) (non-blank lines); at least 2 are needed to hold out a validation split");
  }
  const int64_t split = doc_ends[n_docs - n_val - 1];  // first val token
  std::span<const int32_t> all(tokens);
  const auto vocab = static_cast<uint32_t>(tok.vocab_size());
  std::string train_sha = write_shard((dir / "train.bin").string(), all.first(split), vocab);
  std::string val_sha = write_shard((dir / "val.bin").string(), all.subspan(split), vocab);

  PrepareResult r;
  r.train_documents = n_docs - n_val;
  r.val_documents = n_val;
  r.train_tokens = split;
  r.val_tokens = static_cast<int64_t>(tokens.size()) - split;
  r.tokenizer_sha256 = tok.sha256();

  nlohmann::json sources = nlohmann::json::array();
  for (const auto& f : opt.input_files) {
    sources.push_back({{"path", f}, {"bytes", fs::file_size(f)}, {"sha256", sha256_file(f)}});
  }
  auto split_json = [&](const char* file, int64_t docs, int64_t n, const std::string& sha) {
    return nlohmann::json{
        {"file", file}, {"documents", docs}, {"tokens", n}, {"payload_sha256", sha}};
  };
  nlohmann::json manifest = {
      {"format", "tandem-dataset"},
      {"version", 1},
      {"document_layout", "one document per non-blank line: <s> line-tokens </s>"},
      {"tokenizer",
       {{"file", "tokenizer.model"},
        {"sha256", tok.sha256()},
        {"vocab_size", tok.vocab_size()},
        {"bos_id", tok.bos_id()},
        {"eos_id", tok.eos_id()}}},
      {"splits",
       {{"train", split_json("train.bin", r.train_documents, r.train_tokens, train_sha)},
        {"val", split_json("val.bin", r.val_documents, r.val_tokens, val_sha)}}},
      {"val_fraction", opt.val_fraction},
      {"seed", opt.seed},
      {"sources", sources},
  };
  // Written last: a directory with a dataset.json is a complete dataset.
  atomic_write_file((dir / "dataset.json").string(), manifest.dump(2) + "\n");

  install(staging.path, out);
  fsync_path(parent.string());
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!opt.quiet) {
    char line[256];
    std::snprintf(line, sizeof line,
                  "[data] %s: %lld documents, train %lld tokens, val %lld tokens, vocab %d, %.1fs",
                  out.string().c_str(), static_cast<long long>(n_docs),
                  static_cast<long long>(r.train_tokens), static_cast<long long>(r.val_tokens),
                  tok.vocab_size(), r.seconds);
    log_info(line);
  }
  return r;
}

}  // namespace tandem
