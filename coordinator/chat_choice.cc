#include "coordinator/chat_choice.h"

#include "absl/strings/str_cat.h"

namespace tpserve {
namespace {

std::string FormatName(ChatFormat f) { return f == ChatFormat::kChatMl ? "chatml" : "airomnimix"; }

ChatChoice Chosen(const ChatTemplate& t, std::string reason) {
  return ChatChoice{t, FormatName(t.format), std::move(reason)};
}

}  // namespace

absl::StatusOr<ChatChoice> ChooseChatTemplate(std::string_view flag,
                                              const ModelFolderInfo& folder) {
  if (flag == "none") return ChatChoice{std::nullopt, "", "--chat_template none"};
  if (flag != "auto") {
    absl::StatusOr<ChatTemplate> t = ChatTemplateByName(flag);
    if (!t.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--chat_template: ", t.status().message(),
                                                     " (or auto, none)"));
    }
    return Chosen(*t, absl::StrCat("--chat_template ", std::string(flag)));
  }
  if (!folder.chat_template.empty()) {
    if (std::optional<ChatTemplate> t = DetectChatTemplate(folder.chat_template)) {
      return Chosen(*t, "the model's declared chat template");
    }
    return ChatChoice{std::nullopt, "",
                      "the model declares a chat template tpserve does not know; messages are "
                      "refused unless --chat_template names one"};
  }
  if (folder.config.architecture == Architecture::kMistral) {
    return Chosen(ChatTemplate{ChatFormat::kAirOmniMix, ""},
                  "none declared; the Mistral family's USER:/ASSISTANT: form");
  }
  return ChatChoice{std::nullopt, "", "the model declares no chat template; messages are refused"};
}

}  // namespace tpserve
