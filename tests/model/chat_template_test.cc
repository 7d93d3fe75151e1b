// Chat templates against Hugging Face: prompts that apply_chat_template renders for ~20
// conversations with the SmolLM2, plain ChatML and AirOmniMix Jinja templates
// (tests/data/make_chat_golden.py), template recognition, and the input rules.
#include "model/chat_template.h"

#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace tpserve {
namespace {

const nlohmann::json& Golden() {
  static const nlohmann::json* golden = [] {
    std::ifstream in(std::string(TPSERVE_TEST_DATA_DIR) + "/chat-golden.json", std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return new nlohmann::json(nlohmann::json::parse(s.str()));
  }();
  return *golden;
}

ChatFormat FormatOf(const std::string& name) {
  EXPECT_TRUE(name == "chatml" || name == "airomnimix") << name;
  return name == "chatml" ? ChatFormat::kChatMl : ChatFormat::kAirOmniMix;
}

std::vector<ChatMessage> Messages(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m.at("role"), m.at("content")});
  return out;
}

std::string JinjaOf(const std::string& name) {
  for (const auto& t : Golden().at("templates")) {
    if (t.at("name") == name) return t.at("jinja");
  }
  ADD_FAILURE() << "no golden template " << name;
  return "";
}

TEST(ChatTemplateTest, DetectsEachGoldenTemplateWithItsDefaultSystem) {
  ASSERT_EQ(Golden().at("templates").size(), 5u);
  for (const auto& t : Golden().at("templates")) {
    SCOPED_TRACE(t.at("name").get<std::string>());
    const auto detected = DetectChatTemplate(t.at("jinja").get<std::string>());
    ASSERT_TRUE(detected.has_value());
    EXPECT_EQ(detected->format, FormatOf(t.at("format")));
    EXPECT_EQ(detected->default_system, t.at("default_system").get<std::string>());
  }
}

TEST(ChatTemplateTest, NamedTemplatesEqualTheirDetectedJinja) {
  for (const char* name : {"smollm2", "chatml", "airomnimix"}) {
    SCOPED_TRACE(name);
    const auto named = ChatTemplateByName(name);
    ASSERT_TRUE(named.ok()) << named.status();
    EXPECT_EQ(DetectChatTemplate(JinjaOf(name)), *named);
  }
  EXPECT_FALSE(ChatTemplateByName("smollm2")->default_system.empty());
}

TEST(ChatTemplateTest, RenderEqualsHuggingFaceByteForByte) {
  const auto& conversations = Golden().at("conversations");
  ASSERT_GE(conversations.size(), 20u);
  int compared = 0;
  for (size_t c = 0; c < conversations.size(); ++c) {
    const auto& conv = conversations[c];
    const auto messages = Messages(conv.at("messages"));
    const bool gen = conv.at("add_generation_prompt");
    for (const auto& [name, expected] : conv.at("expected").items()) {
      SCOPED_TRACE(testing::Message() << "conversation " << c << ", template " << name);
      const auto t = DetectChatTemplate(JinjaOf(name));
      ASSERT_TRUE(t.has_value());
      const auto prompt = RenderChat(*t, messages, gen);
      ASSERT_TRUE(prompt.ok()) << prompt.status();
      EXPECT_EQ(*prompt, expected.get<std::string>());
      ++compared;
    }
  }
  EXPECT_EQ(compared, static_cast<int>(conversations.size()) * 5);
}

TEST(ChatTemplateTest, AirOmniMixRendersTheDocumentedForm) {
  const ChatTemplate t = *ChatTemplateByName("airomnimix");
  const std::vector<ChatMessage> chat = {{"user", "hi"}, {"assistant", "hello"}, {"user", "more"}};
  EXPECT_EQ(*RenderChat(t, chat), "USER: hi\nASSISTANT: hello\nUSER: more\nASSISTANT:");
  EXPECT_EQ(*RenderChat(t, {{"system", "s"}, {"user", "q"}}), "SYSTEM: s\nUSER: q\nASSISTANT:");
  EXPECT_EQ(*RenderChat(t, {{"user", "q"}, {"assistant", "a"}}, false), "USER: q\nASSISTANT: a\n");
}

TEST(ChatTemplateTest, OtherRealWorldTemplatesAreNotDetected) {
  ASSERT_GE(Golden().at("other_templates").size(), 5u);
  for (const auto& t : Golden().at("other_templates")) {
    SCOPED_TRACE(t.at("name").get<std::string>());
    EXPECT_EQ(DetectChatTemplate(t.at("jinja").get<std::string>()), std::nullopt);
  }
}

TEST(ChatTemplateTest, SmallChangesToAKnownTemplateAreNotDetected) {
  const std::string smol = JinjaOf("smollm2");
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"'<|im_end|>' + '\\n'", "'<|im_end|>' + ' \\n'"},  // different separator
      {"!= 'system'", "== 'system'"},                     // injects at the wrong time
      {"loop.first and ", ""},                            // injects before every message
      {"'\\n' + message['content']", "'\\n' + message['role']"},
      {"{{ '<|im_start|>assistant\\n' }}", "{{ '<|im_start|>assistant' }}"},
      {"{% if add_generation_prompt %}", "{% if add_generation_prompt or tools %}"},
      {"message['content']", "message['content'] | trim"},
      {"message['content']", "message['content'].strip()"},
      {"{% endfor %}", "{% endfor %}{{ eos_token }}"},
      {"'<|im_start|>' + message['role']", "bos_token + '<|im_start|>' + message['role']"},
      {"\\nYou are", "\\rYou are"},             // escape we do not model
      {"{% endfor %}", ""},                     // syntax error
      {"{% endfor %}", "\u00a0{%- endfor %}"},  // whitespace only Python strips: refused
  };
  for (const auto& [from, to] : edits) {
    SCOPED_TRACE(from + " -> " + to);
    const size_t at = smol.find(from);
    ASSERT_NE(at, std::string::npos);
    std::string edited = smol;
    edited.replace(at, from.size(), to);
    EXPECT_EQ(DetectChatTemplate(edited), std::nullopt);
  }
  EXPECT_TRUE(DetectChatTemplate(smol).has_value());  // the edits above are what made it fail
  std::string deep;  // nesting far past any real template is refused, not recursed into
  for (int i = 0; i < 100000; ++i) deep += "{% if add_generation_prompt %}";
  EXPECT_EQ(DetectChatTemplate(deep), std::nullopt);
}

TEST(ChatTemplateTest, LayoutsOfChatMlAreReadAsJinjaReadsThem) {
  const ChatTemplate chatml = *ChatTemplateByName("chatml");
  const auto& layouts = Golden().at("chatml_layouts");
  ASSERT_GE(layouts.size(), 10u);
  int as_chatml = 0;
  for (size_t i = 0; i < layouts.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "layout " << i);
    const bool want = layouts[i].at("renders_as_chatml");
    const auto detected = DetectChatTemplate(layouts[i].at("jinja").get<std::string>());
    EXPECT_EQ(detected, want ? std::optional(chatml) : std::nullopt);
    as_chatml += want;
  }
  EXPECT_GT(as_chatml, 0);
  EXPECT_LT(as_chatml, static_cast<int>(layouts.size()));
}

struct ErrorCase {
  std::vector<ChatMessage> messages;
  bool add_generation_prompt;
  std::string field;  // must appear in the error message
};

TEST(ChatTemplateTest, InvalidConversationsNameTheField) {
  const std::vector<ErrorCase> cases = {
      {{}, true, "messages:"},
      {{{"system", "s"}}, false, "messages:"},
      {{{"User", "x"}}, true, "messages[0].role"},
      {{{"user", "x"}, {"tool", "y"}, {"user", "z"}}, true, "messages[1].role"},
      {{{"user", "x"}, {"system", "s"}}, false, "messages[1].role"},
      {{{"assistant", "x"}, {"user", "y"}}, true, "messages[0].role"},
      {{{"system", "s"}, {"assistant", "x"}}, false, "messages[1].role"},
      {{{"user", "x"}, {"user", "y"}}, true, "messages[1].role"},
      {{{"user", "x"}, {"assistant", "y"}, {"assistant", "z"}}, false, "messages[2].role"},
      {{{"user", "x"}, {"assistant", "y"}}, true, "messages[1].role"},
      {{{"user", "x"}, {"assistant", "y"}, {"user", "ok\xff"}}, true, "messages[2].content"},
      {{{"user", "\xc0\x80"}}, true, "messages[0].content"},      // overlong NUL
      {{{"user", "\xed\xa0\x80"}}, true, "messages[0].content"},  // surrogate
      {{{"user", "\xe2\x82"}}, true, "messages[0].content"},      // truncated
  };
  for (const ChatFormat format : {ChatFormat::kChatMl, ChatFormat::kAirOmniMix}) {
    for (size_t i = 0; i < cases.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "case " << i);
      const auto r =
          RenderChat({format, "default"}, cases[i].messages, cases[i].add_generation_prompt);
      ASSERT_FALSE(r.ok());
      EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_TRUE(absl::StartsWith(r.status().message(), cases[i].field)) << r.status();
    }
  }
  // The same shapes that are valid pass.
  EXPECT_TRUE(RenderChat({}, {{"user", "\xe2\x82\xac \xf0\x9f\xa6\x99"}}).ok());
  EXPECT_TRUE(RenderChat({}, {{"system", "s"}, {"user", "x"}, {"assistant", "y"}}, false).ok());
}

TEST(ChatTemplateTest, UnknownNameListsTheKnownOnes) {
  const auto r = ChatTemplateByName("ChatML");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  for (const char* known : {"chatml", "smollm2", "airomnimix"}) {
    EXPECT_NE(r.status().message().find(known), std::string::npos) << r.status();
  }
}

}  // namespace
}  // namespace tpserve
