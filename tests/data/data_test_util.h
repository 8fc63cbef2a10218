// Shared helpers for the data tests: a per-test temporary directory and a small generated
// corpus, so unit tests never depend on downloaded text.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "../common/test_util.h"

namespace tandem::test {

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

}  // namespace tandem::test
