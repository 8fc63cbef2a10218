// safetensors: what the writer produces follows the published layout (checked by hand-built
// bytes), round-trips, and every malformed header is refused with a message naming the source.
#include <gtest/gtest.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "tandem/core/error.h"
#include "tandem/io/safetensors.h"

namespace tandem {
namespace {

std::string with_header(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + data;
}

std::string error_of(const std::string& bytes) {
  try {
    safetensors_parse(bytes, "probe.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Safetensors, WriterFollowsTheFormat) {
  float w[6] = {1, 2, 3, 4, 5, 6};
  StFile f;
  f.metadata["format"] = "pt";
  f.tensors.push_back(st_f32("a.weight", {2, 3}, w));
  std::string bytes = safetensors_serialize(f);
  uint64_t hn;
  std::memcpy(&hn, bytes.data(), 8);
  EXPECT_EQ(hn % 8, 0u) << "header padded to 8 bytes";
  auto h = nlohmann::json::parse(bytes.substr(8, hn));
  EXPECT_EQ(h["a.weight"]["dtype"], "F32");
  EXPECT_EQ(h["a.weight"]["shape"], nlohmann::json({2, 3}));
  EXPECT_EQ(h["a.weight"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(h["__metadata__"]["format"], "pt");
  ASSERT_EQ(bytes.size(), 8 + hn + 24);
  EXPECT_EQ(std::memcmp(bytes.data() + 8 + hn, w, 24), 0);
}

TEST(Safetensors, RoundTrip) {
  float a[3] = {1.5f, -2, 3}, b[4] = {7, 8, 9, 10};
  StFile f;
  f.tensors.push_back(st_f32("x", {3}, a));
  f.tensors.push_back(st_f32("y", {2, 2}, b));
  StFile g = safetensors_parse(safetensors_serialize(f), "mem");
  ASSERT_EQ(g.tensors.size(), 2u);
  EXPECT_EQ(g.get("y").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(std::memcmp(g.get("x").data.data(), a, sizeof a), 0);
  EXPECT_EQ(std::memcmp(g.get("y").data.data(), b, sizeof b), 0);
  EXPECT_THROW(g.get("z"), Error);
}

TEST(Safetensors, RejectsMalformedFiles) {
  const std::string data(8, '\0');
  EXPECT_NE(error_of("abc").find("too short"), std::string::npos);
  std::string huge(8, '\xff');
  EXPECT_NE(error_of(huge).find("exceeds"), std::string::npos);
  EXPECT_NE(error_of(with_header("{not json", data)).find("JSON"), std::string::npos);
  EXPECT_NE(error_of(with_header("[1,2]", data)).find("object"), std::string::npos);
  EXPECT_NE(
      error_of(with_header(R"({"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", data))
          .find("outside"),
      std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data))
                .find("does not match"),
            std::string::npos);
  EXPECT_NE(error_of(with_header(R"({"t":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}})", data))
                .find("unknown dtype"),
            std::string::npos);
  EXPECT_NE(
      error_of(with_header(R"({"t":{"shape":[1],"data_offsets":[0,4]}})", data)).find("malformed"),
      std::string::npos);
  EXPECT_NE(error_of("abc").find("probe.safetensors"), std::string::npos) << "names the source";
  EXPECT_EQ(
      error_of(with_header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", data)), "")
      << "a valid file parses";
}

}  // namespace
}  // namespace tandem
