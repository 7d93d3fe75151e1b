// Which chat template the coordinator renders GenerateRequest.messages with (layer:
// coordinator; pure function, thread-safe).
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "model/chat_template.h"
#include "model/model_folder.h"

namespace tpserve {

struct ChatChoice {
  std::optional<ChatTemplate> chat_template;  // nullopt: messages are refused
  std::string name;                           // "chatml", "airomnimix" or ""
  std::string reason;                         // one line for the log: where it came from
};

// `flag` is --chat_template: "auto", "none", or a ChatTemplateByName name. "auto" takes the
// template the model declares when DetectChatTemplate knows it; a declared template it does
// not know gives none (a reason names the flag to pass); a model that declares none gets
// "airomnimix" when it is a Mistral model (the family's documented prompt form) and none
// otherwise. InvalidArgument naming --chat_template for an unknown name.
[[nodiscard]] absl::StatusOr<ChatChoice> ChooseChatTemplate(std::string_view flag,
                                                            const ModelFolderInfo& folder);

}  // namespace tpserve
