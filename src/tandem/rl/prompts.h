// Prompts for RL and evaluation, from JSONL: {"messages": [...], "reference": ...} (rendered in
// the chat format up to the opening of the assistant's turn; final assistant turns, a label,
// are dropped) or {"prompt": "...", "reference": ...} (plain text). The reference is what the
// verifier checks against: a string, or any JSON value (passed on as its JSON text).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem {

class Tokenizer;

struct Prompt {
  std::vector<int32_t> tokens;  // <s> first
  std::string text;             // as rendered (what a verifier sees as the prompt)
  std::string reference;
  std::string where;            // FILE:LINE
};

// Throws "[WHO] FILE:LINE: ..." for malformed JSON, an unknown role, a missing reference, a
// chat the tokenizer has no chat tokens for, or a prompt that leaves fewer than `room` tokens
// of `context`; "[WHO] FILE holds no prompts" for an empty file. `limit` > 0 reads only the
// first `limit` prompts.
std::vector<Prompt> load_prompts(const std::string& path, const Tokenizer& tok, int context,
                                 int room, const std::string& who, int limit = 0);

}  // namespace tandem
