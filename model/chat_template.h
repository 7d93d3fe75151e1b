// Chat templates: messages -> prompt text, for the two prompt formats the engine serves, and
// recognition of the Jinja chat templates that models ship (GGUF `tokenizer.chat_template`,
// tokenizer_config.json `chat_template`). Layer: model; pure functions, no I/O, thread-safe.
//
// Formats (content is copied verbatim, never escaped, as Hugging Face's renderer does):
//   kChatMl:     each message "<|im_start|>{role}\n{content}<|im_end|>\n";
//                generation prompt "<|im_start|>assistant\n".
//   kAirOmniMix: system "SYSTEM: {content}\n", user "USER: {content}\n",
//                assistant "ASSISTANT: {content}\n"; generation prompt "ASSISTANT:" (no space),
//                e.g. "USER: hi\nASSISTANT: hello\nUSER: more\nASSISTANT:".
// When the first message is not a system one and default_system is non-empty, a system message
// with default_system is rendered first.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace tpserve {

struct ChatMessage {
  std::string role;     // "system" | "user" | "assistant"
  std::string content;  // UTF-8
};

enum class ChatFormat { kChatMl, kAirOmniMix };

struct ChatTemplate {
  ChatFormat format = ChatFormat::kChatMl;
  std::string default_system;  // "" = none

  friend bool operator==(const ChatTemplate&, const ChatTemplate&) = default;
};

// "chatml" (no default system), "smollm2" (ChatML with SmolLM2-Instruct's default system
// prompt) or "airomnimix" (no default system); names are case-sensitive. InvalidArgument
// listing the known names otherwise.
[[nodiscard]] absl::StatusOr<ChatTemplate> ChatTemplateByName(std::string_view name);

// The ChatTemplate that renders exactly as the Jinja template `jinja` does under Hugging Face's
// apply_chat_template (trim_blocks, lstrip_blocks), or nullopt when that cannot be shown; it
// never guesses. Only a small Jinja subset is understood: loops over `messages` named `message`,
// if/elif/else on add_generation_prompt, loop.first/last and `==`/`!=` tests of message's or
// messages[0]'s role (joined by `and`, optionally negated), text and `{{ }}` that concatenate
// string literals with those roles and contents, and the no-op `add_generation_prompt is
// defined` guard. Anything else (tools, bos_token, filters, raise_exception, escapes other than
// \n \t \\ \' \", non-ASCII whitespace in text, ...) gives nullopt. A template in the subset is
// accepted when it renders like ChatML or AirOmniMix, with or without a default system prompt
// (taken from what it renders before a lone user message), for every valid conversation
// (RenderChat's rules) of up to five messages, with and without the generation prompt.
[[nodiscard]] std::optional<ChatTemplate> DetectChatTemplate(std::string_view jinja);

// Renders `messages` in `t`'s format (see the top of this file), followed by the generation
// prompt when `add_generation_prompt`. Rules, each violation an InvalidArgument naming the
// field ("messages", or "messages[i].role" / "messages[i].content"):
//   - at least one user message; roles are "system", "user" or "assistant" (case-sensitive);
//   - a system message may only be first;
//   - after it, roles alternate user, assistant, user, ..., starting with user;
//   - with add_generation_prompt the last message is "user";
//   - content is valid UTF-8 (it may be empty and may contain any text, markers included).
[[nodiscard]] absl::StatusOr<std::string> RenderChat(const ChatTemplate& t,
                                                     const std::vector<ChatMessage>& messages,
                                                     bool add_generation_prompt = true);

}  // namespace tpserve
