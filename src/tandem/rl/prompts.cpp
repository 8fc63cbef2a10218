// load_prompts (see prompts.h).
#include "tandem/rl/prompts.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "tandem/core/error.h"
#include "tandem/data/chat.h"
#include "tandem/data/tokenizer.h"

namespace tandem {

std::vector<Prompt> load_prompts(const std::string& path, const Tokenizer& tok, int context,
                                 int room, const std::string& who, int limit) {
  const std::string tag = "[" + who + "] ";
  std::ifstream in(path);
  if (!in) fail(tag + "cannot open '" + path + "'");
  const bool chat = has_chat_format(tok);
  std::vector<Prompt> out;
  std::string line;
  for (int no = 1; std::getline(in, line); ++no) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    if (limit > 0 && (int)out.size() >= limit) break;
    const std::string where = path + ":" + std::to_string(no);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception& e) {
      fail(tag + where + ": not a JSON object (" + e.what() + ")");
    }
    if (!j.is_object()) fail(tag + where + ": not a JSON object");
    Prompt p;
    p.where = where;
    if (!j.contains("reference"))
      fail(tag + where + ": missing \"reference\" (what the verifier checks against)");
    p.reference = j["reference"].is_string() ? j["reference"].get<std::string>() : j["reference"].dump();
    if (j.contains("messages")) {
      const nlohmann::json& m = j["messages"];
      if (!m.is_array() || m.empty()) fail(tag + where + ": \"messages\" must be a non-empty array");
      if (!chat)
        fail(tag + where + ": a chat needs the chat format's tokens (" + kTurnStart + ", " +
             kTurnEnd + "), which this tokenizer lacks: prepare the data again");
      std::vector<ChatMessage> turns;
      for (size_t i = 0; i < m.size(); ++i) {
        const std::string at = where + ": messages[" + std::to_string(i) + "]";
        if (!m[i].is_object() || !m[i].contains("role") || !m[i]["role"].is_string() ||
            !m[i].contains("content") || !m[i]["content"].is_string())
          fail(tag + at + " must be {\"role\": string, \"content\": string}");
        const std::string role = m[i]["role"].get<std::string>();
        if (role != "system" && role != "user" && role != "assistant")
          fail(tag + at + ": unknown role '" + role + "' (expected system, user or assistant)");
        turns.push_back({role, m[i]["content"].get<std::string>()});
      }
      while (!turns.empty() && turns.back().role == "assistant") turns.pop_back();
      if (turns.empty()) fail(tag + where + ": the chat has no turn before the answer");
      p.text = render_chat_template(turns, true);
      p.tokens = {tok.bos_id()};
      for (int32_t t : tok.encode_with_specials(p.text)) p.tokens.push_back(t);
    } else if (j.contains("prompt")) {
      if (!j["prompt"].is_string() || j["prompt"].get<std::string>().empty())
        fail(tag + where + ": \"prompt\" must be a non-empty string");
      p.text = j["prompt"].get<std::string>();
      p.tokens = {tok.bos_id()};
      for (int32_t t : tok.encode(p.text)) p.tokens.push_back(t);
    } else {
      fail(tag + where + ": expected {\"messages\": [...], \"reference\": ...} or "
           "{\"prompt\": ..., \"reference\": ...}");
    }
    if ((int)p.tokens.size() + room > context)
      fail(tag + where + ": the prompt is " + std::to_string(p.tokens.size()) + " tokens; with " +
           std::to_string(room) + " tokens for the answer it passes the context of " +
           std::to_string(context));
    out.push_back(std::move(p));
  }
  if (out.empty()) fail(tag + "'" + path + "' holds no prompts");
  return out;
}

}  // namespace tandem
