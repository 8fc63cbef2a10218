// The chat format: ChatML turns, "<|im_start|>ROLE\nCONTENT<|im_end|>\n", between tokens the
// tokenizer reserves at `tandem data prepare` time. One definition serves every place a chat
// is turned into tokens: SFT examples, `tandem serve`'s chat completions, and the Jinja
// template written into GGUF and Hugging Face exports, so llama.cpp and transformers format a
// chat the way the model was trained. A tokenizer trained before the reserved tokens existed
// has no chat format (serve falls back to plain "User: ..." lines).
#pragma once

#include <string>
#include <vector>

namespace tandem {

class Tokenizer;

struct ChatMessage {
  std::string role;  // system, user or assistant
  std::string content;
};

inline constexpr const char* kTurnStart = "<|im_start|>";
inline constexpr const char* kTurnEnd = "<|im_end|>";

// Whether `tok` has the reserved turn tokens.
bool has_chat_format(const Tokenizer& tok);
// The turns as text; with `add_generation_prompt`, the opening of the assistant's turn.
std::string render_chat_template(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt);
// The same template in Jinja (Hugging Face's chat_template, GGUF's tokenizer.chat_template).
const std::string& chat_template_jinja();

}  // namespace tandem
