// Line-based corpus reading shared by tokenizer training and dataset preparation.
#include "tandem/data/corpus.h"

#include <filesystem>

#include "tandem/core/error.h"

namespace tandem {

bool has_text(std::string_view line) {
  for (char c : line) {
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f') return true;
  }
  return false;
}

DocumentReader::DocumentReader(std::vector<std::string> files, std::string who)
    : files_(std::move(files)), who_(std::move(who)) {}

const std::string& DocumentReader::current_file() const {
  static const std::string none;
  return index_ < files_.size() ? files_[index_] : none;
}

bool DocumentReader::next(std::string& doc) {
  while (index_ < files_.size()) {
    if (!open_) {
      in_ = std::ifstream(files_[index_], std::ios::binary);
      if (!in_) fail("[" + who_ + "] cannot read '" + files_[index_] + "'");
      open_ = true;
      first_line_ = true;
    }
    while (std::getline(in_, doc)) {
      if (first_line_ && doc.starts_with("\xEF\xBB\xBF")) doc.erase(0, 3);  // editors add BOMs
      first_line_ = false;
      if (!doc.empty() && doc.back() == '\r') doc.pop_back();
      if (has_text(doc)) return true;
    }
    if (in_.bad()) fail("[" + who_ + "] read error on '" + files_[index_] + "'");
    in_.close();
    open_ = false;
    ++index_;
  }
  return false;
}

void check_corpus_files(const std::vector<std::string>& files, const std::string& who) {
  if (files.empty()) fail("[" + who + "] no input files given; expected at least one text file");
  namespace fs = std::filesystem;
  for (const auto& f : files) {
    std::error_code ec;
    auto st = fs::status(f, ec);
    if (!fs::exists(st)) fail("[" + who + "] input file '" + f + "' does not exist");
    if (!fs::is_regular_file(st)) fail("[" + who + "] input '" + f + "' is not a regular file");
  }
  DocumentReader reader(files, who);
  std::string doc;
  if (reader.next(doc)) return;
  std::string names;
  for (const auto& f : files) names += (names.empty() ? "'" : ", '") + f + "'";
  fail("[" + who + "] corpus is empty: no non-whitespace text in " + names +
       "; expected at least one line of text");
}

}  // namespace tandem
