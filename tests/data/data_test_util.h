// Shared helpers for the data tests: a per-test temporary directory and a small generated
// corpus, so unit tests never depend on downloaded text.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "tandem/core/error.h"

namespace tandem::test {

// A fresh directory named after the running test and the pid; removed on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = std::string(info->test_suite_name()) + "_" + info->name();
    path_ = std::filesystem::temp_directory_path() /
            ("tandem_data_" + std::to_string(::getpid()) + "_" + name);
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// `lines` deterministic English-like sentences (ASCII letters, digits, punctuation), one per
// line, with an occasional blank line that must not become a document.
inline std::string make_corpus(int lines, uint64_t seed = 7) {
  static const char* words[] = {
      "the",   "lord",  "said",  "unto",  "moses", "and",    "it",     "came",   "to",
      "pass",  "that",  "in",    "those", "days",  "king",   "of",     "israel", "went",
      "up",    "house", "light", "water", "earth", "heaven", "people", "spake",  "for",
      "there", "was",   "great", "city",  "river", "behold", "a",      "man",    "children"};
  const int n_words = sizeof(words) / sizeof(words[0]);
  uint64_t s = seed;
  auto next = [&]() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<int>((s >> 33) % 1000003);
  };
  std::string out;
  for (int i = 0; i < lines; ++i) {
    out += std::to_string(1 + i % 50) + ":" + std::to_string(1 + next() % 30) + " ";
    int n = 6 + next() % 12;
    for (int w = 0; w < n; ++w) {
      std::string word = words[next() % n_words];
      if (w == 0) word[0] = static_cast<char>(word[0] - 'a' + 'A');
      out += word;
      out += (w + 1 == n) ? "." : (next() % 7 == 0 ? ", " : " ");
    }
    out += "\n";
    if (i % 37 == 36) out += "   \n";
  }
  return out;
}

// Returns the message of the tandem::Error thrown by `fn`, or "" (and a test failure).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const tandem::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

}  // namespace tandem::test
