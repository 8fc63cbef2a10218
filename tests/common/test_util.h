// Helpers shared by every test folder: a per-test temporary directory, whole-file reads and
// writes, byte flips for corruption tests, and catching an expected tandem::Error.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tandem/core/error.h"
#include "tandem/core/hash.h"

namespace tandem::test {

namespace fs = std::filesystem;

// A fresh directory named after the running test and the pid; removed on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = info ? std::string(info->test_suite_name()) + "-" + info->name() : "suite";
    for (char& c : name)
      if (c == '/') c = '_';
    path_ = fs::temp_directory_path() / ("tandem-test-" + name + "-" + std::to_string(::getpid()));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

inline std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline std::string sha_of(const std::string& path) {
  std::string b = read_bytes(path);
  return sha256_hex(b.data(), b.size());
}

// XORs the byte at `offset` (or at the middle of the file when offset < 0) with `mask`.
inline void flip_byte(const std::string& path, std::streamoff offset = -1, char mask = 0x5a) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  if (offset < 0) {
    f.seekg(0, std::ios::end);
    offset = f.tellg() / 2;
  }
  char c = 0;
  f.seekg(offset);
  f.read(&c, 1);
  c = static_cast<char>(c ^ mask);
  f.seekp(offset);
  f.write(&c, 1);
}

// Returns the message of the tandem::Error thrown by `fn`, or "" (and a test failure).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const tandem::Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected a tandem::Error";
  return "";
}

}  // namespace tandem::test
