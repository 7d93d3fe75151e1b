#include "model/chat_template.h"

#include <algorithm>
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace tpserve {
namespace {

// Debian's abseil has its own string_view type.
absl::string_view Sv(std::string_view s) { return {s.data(), s.size()}; }

constexpr std::string_view kSmolLm2System =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";

// ---- Rendering ---------------------------------------------------------------------------

bool IsValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t len = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF.
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return false;
    }
    i += len;
  }
  return true;
}

absl::Status Invalid(std::string_view field, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(Sv(field), ": ", Sv(what)));
}

absl::Status Validate(const std::vector<ChatMessage>& messages, bool add_generation_prompt) {
  if (messages.empty()) return Invalid("messages", "empty; a user message is required");
  const size_t first_turn = messages[0].role == "system" ? 1 : 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::string field = absl::StrCat("messages[", i, "]");
    const std::string& role = messages[i].role;
    if (role != "system" && role != "user" && role != "assistant") {
      return Invalid(field + ".role", absl::StrCat("unknown role \"", absl::CHexEscape(role),
                                                   "\"; want system, user or assistant"));
    }
    if (role == "system" && i > 0) {
      return Invalid(field + ".role", "a system message may only be first");
    }
    const char* want = (i + first_turn) % 2 == 0 ? "user" : "assistant";
    if (i >= first_turn && role != want) {
      return Invalid(field + ".role",
                     absl::StrCat("\"", role, "\" where \"", want,
                                  "\" must come (user and assistant alternate, user first)"));
    }
    if (!IsValidUtf8(messages[i].content)) return Invalid(field + ".content", "not valid UTF-8");
  }
  if (first_turn == messages.size()) {
    return Invalid("messages", "no user message after the system message");
  }
  if (add_generation_prompt && messages.back().role != "user") {
    return Invalid(absl::StrCat("messages[", messages.size() - 1, "].role"),
                   "the last message must be \"user\" when add_generation_prompt is set");
  }
  return absl::OkStatus();
}

void AppendMessage(ChatFormat format, std::string_view role, std::string_view content,
                   std::string& out) {
  if (format == ChatFormat::kChatMl) {
    absl::StrAppend(&out, "<|im_start|>", Sv(role), "\n", Sv(content), "<|im_end|>\n");
    return;
  }
  const std::string_view tag = role == "system" ? "SYSTEM" : role == "user" ? "USER" : "ASSISTANT";
  absl::StrAppend(&out, Sv(tag), ": ", Sv(content), "\n");
}

// ---- Jinja subset ------------------------------------------------------------------------
// A template is lexed as Jinja does with trim_blocks and lstrip_blocks (HF's settings), its
// tags parsed into a small tree, and the tree run by an interpreter that knows only the
// constructs listed in the header; anything else makes detection give up.

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\f' || c == '\v'; }

// Whitespace Python's str.strip or re's \s would remove but IsSpace does not.
bool HasOtherSpace(std::string_view s) {
  for (unsigned char c : s) {
    if (c >= 0x1c && c <= 0x1f) return true;
  }
  for (std::string_view u :
       {"\u0085", "\u00a0", "\u1680", "\u2028", "\u2029", "\u202f", "\u205f", "\u3000"}) {
    if (s.find(u) != std::string_view::npos) return true;
  }
  for (int k = 0; k <= 0xa; ++k) {  // U+2000..U+200A
    const char seq[] = {'\xe2', '\x80', static_cast<char>(0x80 + k), 0};
    if (s.find(seq) != std::string_view::npos) return true;
  }
  return false;
}

struct Item {
  enum Kind { kText, kExpr, kStmt } kind;
  std::string text;  // literal output for kText, the tag's inside otherwise
};

// Splits the template into text (already trimmed as Jinja would) and tags; nullopt on a
// syntax error or a construct whose whitespace handling we do not model.
std::optional<std::vector<Item>> Lex(std::string_view jinja) {
  std::string src;  // newlines normalised, one trailing newline dropped (keep_trailing_newline)
  for (size_t i = 0; i < jinja.size(); ++i) {
    if (jinja[i] == '\r') {
      src += '\n';
      if (i + 1 < jinja.size() && jinja[i + 1] == '\n') ++i;
    } else {
      src += jinja[i];
    }
  }
  if (!src.empty() && src.back() == '\n') src.pop_back();

  std::vector<Item> items;
  size_t pos = 0;
  bool line_starting = true;
  while (pos <= src.size()) {
    size_t tag = pos;
    while (
        tag + 1 < src.size() &&
        !(src[tag] == '{' && (src[tag + 1] == '{' || src[tag + 1] == '%' || src[tag + 1] == '#'))) {
      ++tag;
    }
    if (tag + 1 >= src.size()) tag = std::string::npos;
    std::string text = src.substr(pos, tag == std::string::npos ? std::string::npos : tag - pos);
    if (HasOtherSpace(text)) return std::nullopt;
    if (tag == std::string::npos) {
      if (!text.empty()) items.push_back({Item::kText, std::move(text)});
      break;
    }
    const char kind = src[tag + 1];
    const char sign = tag + 2 < src.size() ? src[tag + 2] : '\0';
    if (sign == '-') {
      while (!text.empty() && IsSpace(text.back())) text.pop_back();
    } else if (sign != '+' && kind != '{') {     // lstrip_blocks
      const size_t line = text.rfind('\n') + 1;  // npos + 1 == 0
      if ((line > 0 || line_starting) && line < text.size() &&
          std::all_of(text.begin() + line, text.end(), IsSpace)) {
        text.resize(line);
      }
    }
    if (!text.empty()) items.push_back({Item::kText, std::move(text)});
    const size_t start = tag + 2 + (sign == '-' || sign == '+' ? 1 : 0);
    const char closer = kind == '{' ? '}' : kind;
    size_t close = std::string::npos;
    for (size_t i = start; i + 1 < src.size(); ++i) {
      if (kind != '#' && (src[i] == '\'' || src[i] == '"')) {
        const char quote = src[i];
        for (++i; i < src.size() && src[i] != quote; ++i) {
          if (src[i] == '\\') ++i;
        }
        if (i >= src.size()) return std::nullopt;
      } else if (src[i] == closer && src[i + 1] == '}') {
        close = i;
        break;
      }
    }
    if (close == std::string::npos) return std::nullopt;
    const char end_sign = close > start ? src[close - 1] : '\0';
    const bool strip_after = end_sign == '-';
    const size_t inner_end = strip_after || (end_sign == '+' && kind != '{') ? close - 1 : close;
    if (kind != '#') {
      items.push_back(
          {kind == '{' ? Item::kExpr : Item::kStmt, src.substr(start, inner_end - start)});
    }
    pos = close + 2;
    line_starting = false;
    if (strip_after) {
      while (pos < src.size() && IsSpace(src[pos])) line_starting = src[pos++] == '\n';
    } else if (kind != '{' && end_sign != '+' && pos < src.size() && src[pos] == '\n') {
      ++pos;  // trim_blocks
      line_starting = true;
    }
  }
  return items;
}

struct Token {
  bool is_string;
  std::string text;  // a string's value, else the name, number or operator
};

// Tokens of a tag's inside, with `a.b` rewritten as `a['b']` (Jinja treats them alike here).
std::optional<std::vector<Token>> Tokenize(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  auto ident = [&](size_t j) {
    return j < s.size() && (std::isalpha(static_cast<unsigned char>(s[j])) || s[j] == '_');
  };
  while (i < s.size()) {
    const char c = s[i];
    if (IsSpace(c)) {
      ++i;
    } else if (c == '\'' || c == '"') {
      std::string value;
      for (++i; i < s.size() && s[i] != c; ++i) {
        if (s[i] != '\\') {
          value += s[i];
          continue;
        }
        if (++i >= s.size()) return std::nullopt;
        switch (s[i]) {
          case 'n':
            value += '\n';
            break;
          case 't':
            value += '\t';
            break;
          case '\\':
          case '\'':
          case '"':
            value += s[i];
            break;
          default:
            return std::nullopt;  // other Python escapes: not modelled
        }
      }
      if (i >= s.size()) return std::nullopt;
      ++i;
      out.push_back({true, std::move(value)});
    } else if (ident(i) || std::isdigit(static_cast<unsigned char>(c))) {
      const size_t b = i;
      while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
      out.push_back({false, std::string(s.substr(b, i - b))});
    } else if (c == '.' && ident(i + 1) && !out.empty()) {
      const size_t b = ++i;
      while (i < s.size() && (std::isalnum(static_cast<unsigned char>(s[i])) || s[i] == '_')) ++i;
      out.push_back({false, "["});
      out.push_back({true, std::string(s.substr(b, i - b))});
      out.push_back({false, "]"});
    } else if ((c == '=' || c == '!') && i + 1 < s.size() && s[i + 1] == '=') {
      out.push_back({false, std::string(s.substr(i, 2))});
      i += 2;
    } else {
      out.push_back({false, std::string(1, c)});
      ++i;
    }
  }
  return out;
}

// Whether toks[pos..] starts with `pattern` (space-separated): 'x' is the string x, $ any
// string (appended to *captured), other words the token itself. Advances pos on success.
bool Match(const std::vector<Token>& toks, size_t& pos, std::string_view pattern,
           std::string* captured = nullptr) {
  size_t p = pos;
  for (absl::string_view word : absl::StrSplit(Sv(pattern), ' ')) {
    if (p >= toks.size()) return false;
    const Token& t = toks[p++];
    if (word == "$") {
      if (!t.is_string) return false;
      if (captured != nullptr) *captured = t.text;
    } else if (word.front() == '\'') {
      if (!t.is_string || t.text != word.substr(1, word.size() - 2)) return false;
    } else if (t.is_string || t.text != word) {
      return false;
    }
  }
  pos = p;
  return true;
}

// Whether `toks` is exactly `pattern`.
bool Is(const std::vector<Token>& toks, std::string_view pattern) {
  size_t pos = 0;
  return Match(toks, pos, pattern) && pos == toks.size();
}

struct Piece {
  enum Kind { kText, kRole, kContent, kFirstRole, kFirstContent } kind;
  std::string text;
};

struct Atom {
  enum Kind { kGen, kDefined, kLoopFirst, kLoopLast, kRoleIs, kFirstRoleIs } kind;
  bool negate = false;
  std::string role;
};

struct Node {
  enum Kind { kOut, kFor, kIf, kSetGenFalse } kind;
  std::vector<Piece> out;
  std::vector<Node> body;                                                 // kFor
  std::vector<std::pair<std::vector<Atom>, std::vector<Node>>> branches;  // kIf; {} = else
};

std::optional<std::vector<Atom>> ParseCondition(const std::vector<Token>& toks, size_t pos) {
  std::vector<Atom> atoms;
  while (true) {
    Atom a{Atom::kGen, false, ""};
    a.negate = Match(toks, pos, "not");
    if (Match(toks, pos, "add_generation_prompt is defined")) {
      a.kind = Atom::kDefined;
    } else if (Match(toks, pos, "add_generation_prompt is not defined")) {
      a = {Atom::kDefined, !a.negate, ""};
    } else if (Match(toks, pos, "add_generation_prompt")) {
      a.kind = Atom::kGen;
    } else if (Match(toks, pos, "loop [ 'first' ]")) {
      a.kind = Atom::kLoopFirst;
    } else if (Match(toks, pos, "loop [ 'last' ]")) {
      a.kind = Atom::kLoopLast;
    } else if (Match(toks, pos, "message [ 'role' ]")) {
      a.kind = Atom::kRoleIs;
    } else if (Match(toks, pos, "messages [ 0 ] [ 'role' ]")) {
      a.kind = Atom::kFirstRoleIs;
    } else {
      return std::nullopt;
    }
    if (a.kind == Atom::kRoleIs || a.kind == Atom::kFirstRoleIs) {
      if (Match(toks, pos, "!= $", &a.role)) {
        a.negate = !a.negate;
      } else if (!Match(toks, pos, "== $", &a.role)) {
        return std::nullopt;
      }
    }
    atoms.push_back(std::move(a));
    if (pos == toks.size()) return atoms;
    if (!Match(toks, pos, "and")) return std::nullopt;
  }
}

std::optional<std::vector<Piece>> ParseOutput(const std::vector<Token>& toks) {
  std::vector<Piece> out;
  size_t pos = 0;
  while (true) {
    std::string text;
    if (Match(toks, pos, "$", &text))
      out.push_back({Piece::kText, std::move(text)});
    else if (Match(toks, pos, "message [ 'role' ]"))
      out.push_back({Piece::kRole, ""});
    else if (Match(toks, pos, "message [ 'content' ]"))
      out.push_back({Piece::kContent, ""});
    else if (Match(toks, pos, "messages [ 0 ] [ 'role' ]"))
      out.push_back({Piece::kFirstRole, ""});
    else if (Match(toks, pos, "messages [ 0 ] [ 'content' ]"))
      out.push_back({Piece::kFirstContent, ""});
    else
      return std::nullopt;
    if (pos == toks.size()) return out;
    if (!Match(toks, pos, "+") && !Match(toks, pos, "~")) return std::nullopt;
  }
}

// Parses items[i..] into `nodes` up to a statement that is not ours; *stop gets its tokens
// (empty at the end of the template). Nesting is bounded so that no template exhausts the stack.
bool ParseBlock(const std::vector<Item>& items, size_t& i, std::vector<Node>& nodes,
                std::vector<Token>* stop, int depth = 0) {
  stop->clear();
  if (depth > 16) return false;
  for (; i < items.size(); ++i) {
    const Item& item = items[i];
    if (item.kind == Item::kText) {
      nodes.push_back({Node::kOut, {{Piece::kText, item.text}}, {}, {}});
      continue;
    }
    auto toks = Tokenize(item.text);
    if (!toks || toks->empty()) return false;
    if (item.kind == Item::kExpr) {
      auto out = ParseOutput(*toks);
      if (!out) return false;
      nodes.push_back({Node::kOut, std::move(*out), {}, {}});
      continue;
    }
    if (Is(*toks, "for message in messages")) {
      Node loop{Node::kFor, {}, {}, {}};
      std::vector<Token> end;
      if (!ParseBlock(items, ++i, loop.body, &end, depth + 1)) return false;
      if (end.size() != 1 || end[0].text != "endfor") return false;
      nodes.push_back(std::move(loop));
    } else if (!(*toks)[0].is_string && (*toks)[0].text == "if") {
      Node branch{Node::kIf, {}, {}, {}};
      std::vector<Token> end = *toks;
      bool had_else = false;
      while (true) {
        std::vector<Atom> cond;
        if (!had_else) {
          auto c = ParseCondition(end, 1);
          if (!c) return false;
          cond = std::move(*c);
        }
        branch.branches.push_back({std::move(cond), {}});
        if (!ParseBlock(items, ++i, branch.branches.back().second, &end, depth + 1)) return false;
        if (end.empty() || end[0].is_string) return false;
        if (end.size() == 1 && end[0].text == "endif") break;
        if (had_else) return false;
        if (end.size() == 1 && end[0].text == "else")
          had_else = true;
        else if (end[0].text != "elif")
          return false;
      }
      nodes.push_back(std::move(branch));
    } else if (Is(*toks, "set add_generation_prompt = false") ||
               Is(*toks, "set add_generation_prompt = False")) {
      nodes.push_back({Node::kSetGenFalse, {}, {}, {}});
    } else {
      *stop = std::move(*toks);
      return true;
    }
  }
  return true;
}

std::optional<std::vector<Node>> Parse(std::string_view jinja) {
  auto items = Lex(jinja);
  if (!items) return std::nullopt;
  std::vector<Node> nodes;
  std::vector<Token> stop;
  size_t i = 0;
  if (!ParseBlock(*items, i, nodes, &stop) || !stop.empty()) return std::nullopt;
  return nodes;
}

struct RunState {
  const std::vector<ChatMessage>& messages;
  bool gen;
  int index = -1;  // loop position, -1 outside the loop
};

// Renders `nodes` as Jinja would; false where Jinja would fail or we would be unsure.
bool Run(const std::vector<Node>& nodes, RunState& s, std::string& out) {
  const bool in_loop = s.index >= 0;
  const int n = static_cast<int>(s.messages.size());
  for (const Node& node : nodes) {
    switch (node.kind) {
      case Node::kOut:
        for (const Piece& p : node.out) {
          if ((p.kind == Piece::kRole || p.kind == Piece::kContent) && !in_loop) return false;
          if ((p.kind == Piece::kFirstRole || p.kind == Piece::kFirstContent) && n == 0) {
            return false;
          }
          switch (p.kind) {
            case Piece::kText:
              out += p.text;
              break;
            case Piece::kRole:
              out += s.messages[s.index].role;
              break;
            case Piece::kContent:
              out += s.messages[s.index].content;
              break;
            case Piece::kFirstRole:
              out += s.messages[0].role;
              break;
            case Piece::kFirstContent:
              out += s.messages[0].content;
              break;
          }
        }
        break;
      case Node::kFor:
        if (in_loop) return false;
        for (s.index = 0; s.index < n; ++s.index) {
          if (!Run(node.body, s, out)) return false;
        }
        s.index = -1;
        break;
      case Node::kIf:
        for (const auto& [cond, body] : node.branches) {
          bool taken = true;
          for (const Atom& a : cond) {
            bool v = true;
            if ((a.kind == Atom::kLoopFirst || a.kind == Atom::kLoopLast ||
                 a.kind == Atom::kRoleIs) &&
                !in_loop) {
              return false;
            }
            if (a.kind == Atom::kFirstRoleIs && n == 0) return false;
            switch (a.kind) {
              case Atom::kGen:
                v = s.gen;
                break;
              case Atom::kDefined:  // HF always passes add_generation_prompt
                v = true;
                break;
              case Atom::kLoopFirst:
                v = s.index == 0;
                break;
              case Atom::kLoopLast:
                v = s.index == n - 1;
                break;
              case Atom::kRoleIs:
                v = s.messages[s.index].role == a.role;
                break;
              case Atom::kFirstRoleIs:
                v = s.messages[0].role == a.role;
                break;
            }
            taken = taken && (v != a.negate);
          }
          if (taken) {
            if (!Run(body, s, out)) return false;
            break;
          }
        }
        break;
      case Node::kSetGenFalse:
        if (in_loop) return false;  // a loop body's `set` is scoped to it in Jinja
        s.gen = false;
        break;
    }
  }
  return true;
}

std::optional<std::string> RunTemplate(const std::vector<Node>& program,
                                       const std::vector<ChatMessage>& messages, bool gen) {
  RunState state{messages, gen};
  std::string out;
  if (!Run(program, state, out)) return std::nullopt;
  return out;
}

// Whether `program` renders like `t` for every valid conversation of up to five messages.
// Programs branch only on roles, loop.first/last and the flag: longer conversations only
// repeat middle turns seen here.
bool RendersAs(const std::vector<Node>& program, const ChatTemplate& t) {
  static constexpr const char* kRoles[] = {"system", "user", "assistant"};
  for (int len = 1; len <= 5; ++len) {
    int combos = 1;
    for (int k = 0; k < len; ++k) combos *= 3;
    for (int code = 0; code < combos; ++code) {
      std::vector<ChatMessage> messages;
      for (int k = 0, c = code; k < len; ++k, c /= 3) {
        messages.push_back({kRoles[c % 3], absl::StrCat("m", k)});
      }
      for (bool gen : {false, true}) {
        auto want = RenderChat(t, messages, gen);
        if (!want.ok()) continue;
        if (RunTemplate(program, messages, gen) != *want) return false;
      }
    }
  }
  return true;
}

}  // namespace

absl::StatusOr<ChatTemplate> ChatTemplateByName(std::string_view name) {
  if (name == "chatml") return ChatTemplate{ChatFormat::kChatMl, ""};
  if (name == "smollm2") return ChatTemplate{ChatFormat::kChatMl, std::string(kSmolLm2System)};
  if (name == "airomnimix") return ChatTemplate{ChatFormat::kAirOmniMix, ""};
  return absl::InvalidArgumentError(absl::StrCat("unknown chat template \"",
                                                 absl::CHexEscape(Sv(name)),
                                                 "\"; known: chatml, smollm2, airomnimix"));
}

std::optional<ChatTemplate> DetectChatTemplate(std::string_view jinja) {
  const auto program = Parse(jinja);
  if (!program) return std::nullopt;
  const std::vector<ChatMessage> probe = {{"user", "m0"}};
  const auto one = RunTemplate(*program, probe, true);
  if (!one) return std::nullopt;
  for (ChatFormat format : {ChatFormat::kChatMl, ChatFormat::kAirOmniMix}) {
    ChatTemplate t{format, ""};
    const std::string plain = *RenderChat(t, probe, true);
    if (*one != plain) {
      // The default system prompt is what stands between the system message's affixes.
      const bool chatml = format == ChatFormat::kChatMl;
      const std::string_view head = chatml ? "<|im_start|>system\n" : "SYSTEM: ";
      const std::string tail = absl::StrCat(chatml ? "<|im_end|>\n" : "\n", plain);
      if (one->size() <= head.size() + tail.size() || !one->starts_with(head) ||
          !one->ends_with(tail)) {
        continue;
      }
      t.default_system = one->substr(head.size(), one->size() - head.size() - tail.size());
    }
    if (RendersAs(*program, t)) return t;
  }
  return std::nullopt;
}

absl::StatusOr<std::string> RenderChat(const ChatTemplate& t,
                                       const std::vector<ChatMessage>& messages,
                                       bool add_generation_prompt) {
  if (absl::Status s = Validate(messages, add_generation_prompt); !s.ok()) return s;
  std::string out;
  if (messages[0].role != "system" && !t.default_system.empty()) {
    AppendMessage(t.format, "system", t.default_system, out);
  }
  for (const ChatMessage& m : messages) AppendMessage(t.format, m.role, m.content, out);
  if (add_generation_prompt) {
    out += t.format == ChatFormat::kChatMl ? "<|im_start|>assistant\n" : "ASSISTANT:";
  }
  return out;
}

}  // namespace tpserve
