// The OpenAI-compatible wire protocol: request bodies of /v1/completions and
// /v1/chat/completions parsed and validated into a GenRequest, responses and stream chunks
// built as JSON, and errors in OpenAI's shape. No I/O and no model: this is what the request
// fuzzer drives.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace tandem::serve {

// A request the server refuses: HTTP status, OpenAI error type, message, offending parameter.
struct ApiError : std::runtime_error {
  ApiError(int status, std::string type, const std::string& message, std::string param = "",
           std::string code = "")
      : std::runtime_error(message), status(status), type(std::move(type)),
        param(std::move(param)), code(std::move(code)) {}
  int status;
  std::string type, param, code;
};
// {"error": {"message", "type", "param", "code"}}
std::string error_body(const ApiError& e);
ApiError bad_request(const std::string& message, const std::string& param = "");

enum class Endpoint { Completions, Chat };

// A prompt as the client sent it: text, or token ids.
struct Prompt {
  std::string text;
  std::vector<int32_t> ids;
  bool is_ids = false;
  bool special = false;  // the text holds the chat format's reserved tokens
};

struct Limits {
  std::string model_id;     // the one model served; other names get 404
  int vocab_size = 0;       // token ids must be below
  int max_tokens = 0;       // cap on max_tokens (and the default for chat)
  int max_n = 16;           // choices per request
  int max_prompts = 16;     // prompts per completions request
  bool chat_format = false;  // the tokenizer has the chat format's tokens (data/chat.h)
};

struct GenRequest {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;
  std::vector<Prompt> prompts;  // completions: 1..max_prompts; chat: 1 (the rendered messages)
  int max_tokens = 16;  // -1: until the context is full (chat without a limit)
  float temperature = 1.f, top_p = 1.f;
  int top_k = 0;
  std::vector<std::string> stop;
  std::optional<uint64_t> seed;
  int n = 1;
  bool stream = false, include_usage = false;
  // Extension (as vLLM's): the response also carries the prompt's token ids.
  bool return_token_ids = false;
  // Extension (as vLLM's): no end of sequence or of turn before this many tokens.
  int min_tokens = 0;
  bool logprobs = false;  // return logprobs of chosen tokens
  int top_logprobs = 0;   // and this many alternatives per position
};

// Throws ApiError (400 invalid_request_error naming the parameter, or 404 for another model).
GenRequest parse_request(Endpoint ep, std::string_view body, const Limits& limits);

// Chat messages rendered as one prompt: "System: ...\nUser: ...\nAssistant: ..." ending with
// "Assistant:" so the model continues as the assistant.
// The messages as the prompt text: the chat format (data/chat.h) when the tokenizer has it,
// else plain "User: ..." lines for a model trained before it.
std::string render_chat(const nlohmann::json& messages, bool chat_format = false);

// One generated token with its log-probability and the most likely alternatives.
struct TokenLogprob {
  std::string token;  // its text piece
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};

struct ChoiceResult {
  int index = 0;
  std::string text;
  std::string finish_reason;  // "stop" | "length"
  std::vector<TokenLogprob> logprobs;
};

struct Usage {
  int64_t prompt_tokens = 0, completion_tokens = 0;
};

std::string new_id(Endpoint ep);
nlohmann::json usage_json(const Usage& u);
// The whole (non-streaming) response.
nlohmann::json response_json(const GenRequest& r, const std::string& id, int64_t created,
                             const std::vector<ChoiceResult>& choices, const Usage& usage);
// One stream chunk for choice `index`: text delta, its logprobs, finish reason ("" while
// going). Chat's first chunk per choice carries the role.
nlohmann::json chunk_json(const GenRequest& r, const std::string& id, int64_t created, int index,
                          const std::string& delta, const std::vector<TokenLogprob>& logprobs,
                          const std::string& finish_reason, bool first);
nlohmann::json usage_chunk_json(const GenRequest& r, const std::string& id, int64_t created,
                                const Usage& u);
// JSON text that never throws on invalid UTF-8 (replaced by U+FFFD).
std::string dump(const nlohmann::json& j);

}  // namespace tandem::serve
