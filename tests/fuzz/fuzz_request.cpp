// libFuzzer target: request bodies of both endpoints through parse_request. Any input must end
// in a GenRequest or an ApiError with a 4xx status; anything else (another exception, a crash,
// a sanitizer report) is a bug. The first byte picks the endpoint.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "tandem/serve/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tandem::serve;
  if (size == 0) return 0;
  const Endpoint ep = data[0] & 1 ? Endpoint::Chat : Endpoint::Completions;
  const std::string_view body(reinterpret_cast<const char*>(data + 1), size - 1);
  Limits lim;
  lim.model_id = "m";
  lim.vocab_size = 4096;
  lim.max_tokens = 256;
  try {
    GenRequest r = parse_request(ep, body, lim);
    if (r.prompts.empty() || r.n < 1 || r.max_tokens == 0 || r.max_tokens > 256) std::abort();
    // What the server does next with a parsed request: build a response and a chunk.
    std::vector<ChoiceResult> choices(1);
    (void)dump(response_json(r, "id", 0, choices, Usage{}));
    (void)dump(chunk_json(r, "id", 0, 0, "x", {}, "", true));
  } catch (const ApiError& e) {
    if (e.status < 400 || e.status >= 500) std::abort();
    (void)error_body(e);
  }
  return 0;
}
