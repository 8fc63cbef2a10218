// Request parsing with one precise error per problem, and the response shapes of OpenAI's
// completions and chat completions APIs (including streaming chunks and logprobs).
#include "tandem/serve/protocol.h"

#include "tandem/data/chat.h"

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

namespace tandem::serve {

using nlohmann::json;

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string error_body(const ApiError& e) {
  json err = {{"message", e.what()},
              {"type", e.type},
              {"param", e.param.empty() ? json(nullptr) : json(e.param)},
              {"code", e.code.empty() ? json(nullptr) : json(e.code)}};
  return dump(json{{"error", err}});
}

ApiError bad_request(const std::string& message, const std::string& param) {
  return ApiError(400, "invalid_request_error", message, param);
}

namespace {

const char* type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::number_float: return "a number";
    default: return "an integer";
  }
}

[[noreturn]] void wrong_type(const std::string& key, const json& v, const char* want) {
  throw bad_request(std::string("'") + key + "' must be " + want + ", not " + type_name(v), key);
}

// Optional fields: absent or null keeps the default.
const json* field(const json& body, const char* key) {
  auto it = body.find(key);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

double get_number(const json& body, const char* key, double def, double lo, double hi) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_number()) wrong_type(key, *v, "a number");
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "'%s' must be between %g and %g, got %g", key, lo, hi, x);
    throw bad_request(buf, key);
  }
  return x;
}

int64_t get_int(const json& body, const char* key, int64_t def, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_number_integer() && !v->is_number_unsigned()) wrong_type(key, *v, "an integer");
  if (v->is_number_unsigned() && v->get<uint64_t>() > (uint64_t)INT64_MAX)
    throw bad_request(std::string("'") + key + "' is too large", key);
  const int64_t x = v->get<int64_t>();
  if (x < lo || x > hi)
    throw bad_request(std::string("'") + key + "' must be between " + std::to_string(lo) +
                          " and " + std::to_string(hi) + ", got " + std::to_string(x),
                      key);
  return x;
}

bool get_bool(const json& body, const char* key, bool def) {
  const json* v = field(body, key);
  if (!v) return def;
  if (!v->is_boolean()) wrong_type(key, *v, "a boolean");
  return v->get<bool>();
}

std::vector<int32_t> token_ids(const json& arr, const char* key, const Limits& lim) {
  std::vector<int32_t> ids;
  for (const json& t : arr) {
    if (!t.is_number_integer() && !t.is_number_unsigned())
      throw bad_request(std::string("'") + key + "' token ids must be integers", key);
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id >= lim.vocab_size)
      throw bad_request(std::string("'") + key + "' holds token id " + std::to_string(id) +
                            ", outside the vocabulary of " + std::to_string(lim.vocab_size),
                        key);
    ids.push_back((int32_t)id);
  }
  return ids;
}

std::vector<Prompt> parse_prompts(const json& body, const Limits& lim) {
  const json* p = field(body, "prompt");
  if (!p) throw bad_request("'prompt' is required", "prompt");
  std::vector<Prompt> out;
  auto text = [&](const json& s) {
    Prompt pr;
    pr.text = s.get<std::string>();
    out.push_back(std::move(pr));
  };
  if (p->is_string()) {
    text(*p);
  } else if (p->is_array()) {
    if (p->empty()) throw bad_request("'prompt' must not be an empty array", "prompt");
    if ((*p)[0].is_number()) {
      Prompt pr;
      pr.is_ids = true;
      pr.ids = token_ids(*p, "prompt", lim);
      out.push_back(std::move(pr));
    } else {
      for (const json& e : *p) {
        if (e.is_string()) {
          text(e);
        } else if (e.is_array()) {
          Prompt pr;
          pr.is_ids = true;
          pr.ids = token_ids(e, "prompt", lim);
          out.push_back(std::move(pr));
        } else {
          throw bad_request("'prompt' must be a string, an array of strings, or token ids",
                            "prompt");
        }
      }
    }
  } else {
    wrong_type("prompt", *p, "a string, an array of strings, or token ids");
  }
  if ((int)out.size() > lim.max_prompts)
    throw bad_request("'prompt' holds " + std::to_string(out.size()) +
                          " prompts; at most " + std::to_string(lim.max_prompts) + " are allowed",
                      "prompt");
  for (const Prompt& pr : out)
    if (pr.is_ids ? pr.ids.empty() : pr.text.empty())
      throw bad_request("'prompt' must not be empty", "prompt");
  return out;
}

std::vector<std::string> parse_stop(const json& body) {
  const json* s = field(body, "stop");
  std::vector<std::string> out;
  if (!s) return out;
  if (s->is_string()) {
    out.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    for (const json& e : *s) {
      if (!e.is_string()) throw bad_request("'stop' must hold strings", "stop");
      out.push_back(e.get<std::string>());
    }
  } else {
    wrong_type("stop", *s, "a string or an array of strings");
  }
  if (out.size() > 4) throw bad_request("'stop' holds more than 4 sequences", "stop");
  for (const auto& x : out)
    if (x.empty()) throw bad_request("'stop' sequences must not be empty", "stop");
  return out;
}

// Parameters of the OpenAI API that this server does not implement: accepted only at their
// neutral value, so a client relying on them hears about it.
void reject_unsupported(const json& body) {
  for (const char* k : {"presence_penalty", "frequency_penalty"}) {
    const json* v = field(body, k);
    if (v && (!v->is_number() || v->get<double>() != 0.0))
      throw bad_request(std::string("'") + k + "' is not supported (only 0)", k);
  }
  if (const json* v = field(body, "logit_bias"); v && !(v->is_object() && v->empty()))
    throw bad_request("'logit_bias' is not supported", "logit_bias");
  if (const json* v = field(body, "echo"); v && !(v->is_boolean() && !v->get<bool>()))
    throw bad_request("'echo' is not supported", "echo");
  if (const json* v = field(body, "best_of"); v && !(v->is_number_integer() && v->get<int64_t>() == 1))
    throw bad_request("'best_of' is not supported (only 1)", "best_of");
  if (const json* v = field(body, "suffix"); v && !(v->is_string() && v->get<std::string>().empty()))
    throw bad_request("'suffix' is not supported", "suffix");
  for (const char* k : {"tools", "functions", "response_format", "tool_choice"})
    if (field(body, k)) throw bad_request(std::string("'") + k + "' is not supported", k);
}

}  // namespace

std::string render_chat(const json& messages, bool chat_format) {
  if (!messages.is_array()) wrong_type("messages", messages, "an array");
  if (messages.empty()) throw bad_request("'messages' must not be empty", "messages");
  std::string out;
  std::vector<ChatMessage> turns;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) throw bad_request("'" + where + "' must be an object", "messages");
    auto role = m.find("role");
    if (role == m.end() || !role->is_string())
      throw bad_request("'" + where + ".role' must be a string", "messages");
    const std::string r = role->get<std::string>();
    std::string name;
    if (r == "system" || r == "developer") name = "System";
    else if (r == "user") name = "User";
    else if (r == "assistant") name = "Assistant";
    else
      throw bad_request("'" + where + ".role' must be system, developer, user or assistant, not '" +
                            r + "'",
                        "messages");
    auto content = m.find("content");
    std::string text;
    if (content == m.end() || content->is_null()) {
      if (r != "assistant") throw bad_request("'" + where + ".content' is required", "messages");
    } else if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {  // [{"type": "text", "text": ...}]
      for (const json& part : *content) {
        if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
            !part["text"].is_string())
          throw bad_request("'" + where + ".content' parts must be {\"type\": \"text\", \"text\": ...}",
                            "messages");
        text += part["text"].get<std::string>();
      }
    } else {
      throw bad_request("'" + where + ".content' must be a string or an array of text parts",
                        "messages");
    }
    out += name + ": " + text + "\n";
    turns.push_back({r == "developer" ? "system" : r, text});
  }
  if (chat_format) return render_chat_template(turns, true);
  out += "Assistant:";
  return out;
}

GenRequest parse_request(Endpoint ep, std::string_view body_text, const Limits& lim) {
  json body;
  try {
    body = json::parse(body_text);
  } catch (const json::exception& e) {  // parse errors, and numbers beyond double's range
    throw bad_request(std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw bad_request("the body must be a JSON object");
  GenRequest r;
  r.endpoint = ep;
  const json* model = field(body, "model");
  if (!model) throw bad_request("'model' is required", "model");
  if (!model->is_string()) wrong_type("model", *model, "a string");
  r.model = model->get<std::string>();
  if (r.model != lim.model_id)
    throw ApiError(404, "invalid_request_error",
                   "the model '" + r.model + "' does not exist; this server serves '" +
                       lim.model_id + "'",
                   "model", "model_not_found");
  reject_unsupported(body);
  if (ep == Endpoint::Completions) {
    r.prompts = parse_prompts(body, lim);
    r.max_tokens = (int)get_int(body, "max_tokens", 16, 1, lim.max_tokens);
    if (const json* lp = field(body, "logprobs")) {
      if (!lp->is_number_integer()) wrong_type("logprobs", *lp, "an integer (0 to 5)");
      r.top_logprobs = (int)get_int(body, "logprobs", 0, 0, 5);
      r.logprobs = true;
    }
  } else {
    const json* m = field(body, "messages");
    if (!m) throw bad_request("'messages' is required", "messages");
    Prompt p;
    p.text = render_chat(*m, lim.chat_format);
    p.special = lim.chat_format;
    r.prompts.push_back(std::move(p));
    // Without a limit, a chat reply may run to the end of the context.
    const int64_t mt = get_int(body, "max_tokens", -1, 1, lim.max_tokens);
    r.max_tokens = (int)get_int(body, "max_completion_tokens", mt, 1, lim.max_tokens);
    r.logprobs = get_bool(body, "logprobs", false);
    r.top_logprobs = (int)get_int(body, "top_logprobs", 0, 0, 20);
    if (r.top_logprobs > 0 && !r.logprobs)
      throw bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
  }
  r.temperature = (float)get_number(body, "temperature", 1.0, 0.0, 2.0);
  r.top_p = (float)get_number(body, "top_p", 1.0, 0.0, 1.0);
  if (r.top_p <= 0.f) throw bad_request("'top_p' must be greater than 0", "top_p");
  r.top_k = (int)get_int(body, "top_k", 0, 0, lim.vocab_size);
  r.n = (int)get_int(body, "n", 1, 1, lim.max_n);
  if ((int64_t)r.n * (int64_t)r.prompts.size() > lim.max_n)
    throw bad_request("'n' times the number of prompts must be at most " +
                          std::to_string(lim.max_n),
                      "n");
  if (const json* s = field(body, "seed")) {
    if (!s->is_number_integer() && !s->is_number_unsigned()) wrong_type("seed", *s, "an integer");
    r.seed = s->is_number_unsigned() ? s->get<uint64_t>() : (uint64_t)s->get<int64_t>();
  }
  r.stop = parse_stop(body);
  r.stream = get_bool(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", *so, "an object");
    if (!r.stream) throw bad_request("'stream_options' needs 'stream': true", "stream_options");
    r.include_usage = get_bool(*so, "include_usage", false);
  }
  if (const json* u = field(body, "user"); u && !u->is_string()) wrong_type("user", *u, "a string");
  r.return_token_ids = get_bool(body, "return_token_ids", false);
  r.min_tokens = (int)get_int(body, "min_tokens", 0, 0, lim.max_tokens);
  if (r.max_tokens > 0 && r.min_tokens > r.max_tokens)
    throw bad_request("'min_tokens' must not exceed 'max_tokens'", "min_tokens");
  return r;
}

std::string new_id(Endpoint ep) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t base = std::random_device{}();
  char buf[64];
  std::snprintf(buf, sizeof buf, "%s-%012llx%04llx", ep == Endpoint::Chat ? "chatcmpl" : "cmpl",
                (unsigned long long)(base & 0xffffffffffffULL),
                (unsigned long long)(counter++ & 0xffff));
  return buf;
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back((int)c);
  return b;
}

// Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}; chat:
// {"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}.
json logprobs_json(const GenRequest& r, const std::vector<TokenLogprob>& lps, size_t offset0) {
  if (r.endpoint == Endpoint::Completions) {
    json tokens = json::array(), lp = json::array(), top = json::array(), off = json::array();
    size_t offset = offset0;
    for (const TokenLogprob& t : lps) {
      tokens.push_back(t.token);
      lp.push_back(t.logprob);
      json alt = json::object();
      for (const auto& [tok, l] : t.top) alt[tok] = l;
      top.push_back(alt);
      off.push_back(offset);
      offset += t.token.size();
    }
    return {{"tokens", tokens}, {"token_logprobs", lp}, {"top_logprobs", top}, {"text_offset", off}};
  }
  json content = json::array();
  for (const TokenLogprob& t : lps) {
    json top = json::array();
    for (const auto& [tok, l] : t.top)
      top.push_back({{"token", tok}, {"logprob", l}, {"bytes", bytes_of(tok)}});
    content.push_back(
        {{"token", t.token}, {"logprob", t.logprob}, {"bytes", bytes_of(t.token)}, {"top_logprobs", top}});
  }
  return {{"content", content}};
}

const char* object_name(const GenRequest& r, bool chunk) {
  if (r.endpoint == Endpoint::Completions) return "text_completion";
  return chunk ? "chat.completion.chunk" : "chat.completion";
}

}  // namespace

json response_json(const GenRequest& r, const std::string& id, int64_t created,
                   const std::vector<ChoiceResult>& choices, const Usage& usage) {
  json cs = json::array();
  for (const ChoiceResult& c : choices) {
    json lp = r.logprobs ? logprobs_json(r, c.logprobs, 0) : json(nullptr);
    if (r.endpoint == Endpoint::Completions)
      cs.push_back({{"index", c.index}, {"text", c.text}, {"logprobs", lp},
                    {"finish_reason", c.finish_reason}});
    else
      cs.push_back({{"index", c.index},
                    {"message", {{"role", "assistant"}, {"content", c.text}}},
                    {"logprobs", lp},
                    {"finish_reason", c.finish_reason}});
  }
  return {{"id", id},         {"object", object_name(r, false)}, {"created", created},
          {"model", r.model}, {"choices", cs},                   {"usage", usage_json(usage)}};
}

json chunk_json(const GenRequest& r, const std::string& id, int64_t created, int index,
                const std::string& delta, const std::vector<TokenLogprob>& lps,
                const std::string& finish_reason, bool first) {
  json lp = r.logprobs && !lps.empty() ? logprobs_json(r, lps, 0) : json(nullptr);
  json fin = finish_reason.empty() ? json(nullptr) : json(finish_reason);
  json choice;
  if (r.endpoint == Endpoint::Completions) {
    choice = {{"index", index}, {"text", delta}, {"logprobs", lp}, {"finish_reason", fin}};
  } else {
    json d = json::object();
    if (first) d["role"] = "assistant";
    if (!delta.empty() || (first && finish_reason.empty())) d["content"] = delta;
    choice = {{"index", index}, {"delta", d}, {"logprobs", lp}, {"finish_reason", fin}};
  }
  json out = {{"id", id},          {"object", object_name(r, true)}, {"created", created},
              {"model", r.model},  {"choices", json::array({choice})}};
  if (r.include_usage) out["usage"] = nullptr;
  return out;
}

json usage_chunk_json(const GenRequest& r, const std::string& id, int64_t created,
                      const Usage& u) {
  return {{"id", id},         {"object", object_name(r, true)}, {"created", created},
          {"model", r.model}, {"choices", json::array()},       {"usage", usage_json(u)}};
}

}  // namespace tandem::serve
