// The ChatML renderer and its Jinja twin (see chat.h); has_chat_format is in tokenizer.cpp, so
// this file needs nothing but the standard library (the request fuzzer links it alone).
#include "tandem/data/chat.h"

namespace tandem {

std::string render_chat_template(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt) {
  std::string out;
  for (const ChatMessage& m : messages)
    out += std::string(kTurnStart) + m.role + "\n" + m.content + kTurnEnd + "\n";
  if (add_generation_prompt) out += std::string(kTurnStart) + "assistant\n";
  return out;
}

const std::string& chat_template_jinja() {
  static const std::string t =
      "{% for message in messages %}"
      "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
      "{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  return t;
}

}  // namespace tandem
