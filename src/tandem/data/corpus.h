// Reads text corpora as documents (one per non-blank line) so that tokenizer training and
// dataset preparation see exactly the same text.
#pragma once

#include <cstddef>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

// True when `line` holds at least one character other than ASCII whitespace.
bool has_text(std::string_view line);

// Yields the documents of a list of files in order: every line that has_text(), with its
// terminator ("\n" or "\r\n") and a file's leading UTF-8 byte-order mark removed; nothing
// else is changed. Errors are "[<who>] cannot read 'FILE'".
class DocumentReader {
 public:
  DocumentReader(std::vector<std::string> files, std::string who);
  bool next(std::string& doc);  // false at the end of the last file
  const std::string& current_file() const;

 private:
  std::vector<std::string> files_;
  std::string who_;
  size_t index_ = 0;
  bool open_ = false;
  bool first_line_ = true;
  std::ifstream in_;
};

// Checks that every file exists and is a regular file, and that the files together hold at
// least one document; the error names the file(s) and what was expected.
void check_corpus_files(const std::vector<std::string>& files, const std::string& who);

}  // namespace tandem
