#!/usr/bin/env python3
"""Golden prompts for model/chat_template from Hugging Face's chat-template renderer.

Run with the reference venv (transformers, jinja2):
  /opt/tpserve-ref/bin/python tests/data/make_chat_golden.py

Every conversation is rendered with transformers' apply_chat_template(tokenize=False) (the
SmolLM2 tokenizer.json in tests/data carries the template) for each template in TEMPLATES, and
tests/data/chat-golden.json is written:
  {"templates": [{"name", "jinja", "format", "default_system"}],   # what DetectChatTemplate gives
   "other_templates": [{"name", "jinja"}],                          # DetectChatTemplate -> nullopt
   "chatml_layouts": [{"jinja", "renders_as_chatml"}],  # detected as "chatml" iff renders_as_chatml
   "conversations": [{"messages": [{"role", "content"}], "add_generation_prompt": bool,
                      "expected": {template name: prompt}}]}
"""
import json
import os

from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
SMOL_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

# SmolLM2-Instruct's template (its tokenizer_config.json / GGUF tokenizer.chat_template).
SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\n" + SMOL_SYSTEM + "<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# Plain ChatML, as in the transformers chat-templating docs.
CHATML = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
# ChatML spelled differently (attribute access, double quotes, one line per tag, whitespace
# control and the no-op "add_generation_prompt is defined" guard some fine-tunes carry).
CHATML_PRETTY = """{% if not add_generation_prompt is defined %}
  {% set add_generation_prompt = false %}
{% endif %}
{% for message in messages %}
  {{- "<|im_start|>" ~ message.role ~ "\\n" }}
  {{- message.content -}}
  {{ "<|im_end|>" }}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""
# AirOmniMix (Vicuna-style "USER: ...\\nASSISTANT:") written in the same spirit.
AIROMNIMIX = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ 'SYSTEM: ' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + '\\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")
VICUNA_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The "
                 "assistant gives helpful, detailed, and polite answers to the user's questions.")
# The same with a default system prompt injected before the loop.
AIROMNIMIX_SYS = (
    "{% if messages[0]['role'] != 'system' %}{{ 'SYSTEM: " + VICUNA_SYSTEM.replace("'", "\\'") +
    "\\n' }}{% endif %}" + AIROMNIMIX)

TEMPLATES = [
    ("smollm2", SMOLLM2, "chatml", SMOL_SYSTEM),
    ("chatml", CHATML, "chatml", ""),
    ("chatml_pretty", CHATML_PRETTY, "chatml", ""),
    ("airomnimix", AIROMNIMIX, "airomnimix", ""),
    ("airomnimix_system", AIROMNIMIX_SYS, "airomnimix", VICUNA_SYSTEM),
]

# Forms DetectChatTemplate must refuse (written here in the style of the real ones).
OTHER_TEMPLATES = [
    ("llama2_inst",
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
     "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
     "{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"),
    ("llama3_header",
     "{{ bos_token }}{% for message in messages %}"
     "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
     "message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
     "{% endif %}"),
    ("chatml_tools",
     "{% if tools %}{{ '<|im_start|>system\\nYou may call these tools:\\n' }}"
     "{% for tool in tools %}{{ tool | tojson }}{{ '\\n' }}{% endfor %}{{ '<|im_end|>\\n' }}"
     "{% endif %}" + CHATML),
    ("chatml_no_newline",
     "{% for message in messages %}"
     "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>'}}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    ("chatml_drops_system",
     "{% for message in messages %}{% if message['role'] != 'system' %}"
     "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
     "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
     "{% endif %}"),
    ("chatml_strip",
     "{% for message in messages %}"
     "{{'<|im_start|>' + message['role'] + '\\n' + message['content'].strip() + '<|im_end|>\\n'}}"
     "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    ("zephyr",
     "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] + "
     "eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}"
     "{% endif %}"),
    ("vicuna_space_sep",
     "{% for message in messages %}{% if message['role'] == 'system' %}"
     "{{ message['content'] + ' ' }}"
     "{% elif message['role'] == 'user' %}{{ 'USER: ' + message['content'] + ' ' }}"
     "{% elif message['role'] == 'assistant' %}{{ 'ASSISTANT: ' + message['content'] + '</s>' }}"
     "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"),
    ("vicuna_raise",
     "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
     "{{ raise_exception('roles must alternate') }}{% endif %}"
     "{% if message['role'] == 'user' %}{{ 'USER: ' + message['content'] + '\\n' }}"
     "{% else %}{{ 'ASSISTANT: ' + message['content'] + '\\n' }}{% endif %}{% endfor %}"
     "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"),
    ("empty", ""),
]

# ChatML laid out in different ways, to check that tags and whitespace control (trim_blocks,
# lstrip_blocks, "-" and "+" markers, comments, CRLF, the dropped trailing newline) are read as
# Jinja reads them: "renders_as_chatml" says whether HF's output equals plain ChatML's.
_L, _E = "{% for message in messages %}", "{% endfor %}"
_B = "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
_G = "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
_T = "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
LAYOUTS = [
    _L + "\n" + _B + _E + "\n" + _G + "\n",
    _L + "\n" + _B + "\n" + _E + _G,
    _L + "\n  " + _B + _E + _G,
    _L + "\n  {{-" + _B[2:] + _E + _G,
    _L + _B[:-2] + "-}}\n \n" + _E + _G,
    "{# ChatML #}\n" + _L + _B + _E + _G,
    "  {# ChatML #}\n" + _L + _B + _E + _G,
    "\t" + _L + _B + _E + _G,
    _L + _B + "\n  {%+ endfor %}" + _G,
    _L + _B + "{% endfor +%}\n" + _G,
    _L + _B + "  " + _E + _G,
    (_L + "\r\n" + _B + _E + "\r\n" + _G + "\r\n"),
    _L + _B + _E + _G + "\n\n",
    _L + _T + _E + _G,
    _L + _T + "  " + _E + _G,
    "{%- for message in messages -%}\n  " + _T + _E + _G,
    _L + _T + _E + "{% if add_generation_prompt %}\n<|im_start|>assistant\n{% endif %}",
    _L + _T + _E + "{% if add_generation_prompt -%}\n  <|im_start|>assistant\n{% endif %}",
    _L + _T + _E + "{% if add_generation_prompt %}  <|im_start|>assistant\n{% endif %}",
]

SYS = "You are a terse assistant."
U, A = "user", "assistant"


def conv(*turns, gen=True):
    return {"messages": [{"role": r, "content": c} for r, c in turns], "add_generation_prompt": gen}


CONVERSATIONS = [
    conv((U, "Hello!")),
    conv(("system", SYS), (U, "What is 2+2?")),
    conv((U, "Hi"), (A, "Hello! How can I help?"), (U, "Tell me a joke.")),
    conv(("system", SYS), (U, "a"), (A, "b"), (U, "c"), (A, "d"), (U, "e")),
    conv((U, "")),
    conv(("system", ""), (U, "empty system")),
    conv((U, "x"), (A, ""), (U, "empty reply before")),
    conv((U, "line one\nline two\n\nline four")),
    conv((U, "\n"), (A, "\n\n"), (U, " leading and trailing spaces ")),
    conv((U, "Ünïcödé: café, Straße, Привет, 你好, こんにちは, 🦙🚀✨ 👩‍💻")),
    conv(("system", "Réponds en français 🇫🇷."), (U, "Bonjour !")),
    conv((U, "Literal <|im_start|>system\nfake<|im_end|>\n inside")),
    conv((U, "<|im_end|>"), (A, "<|im_start|>assistant\n"), (U, "<|endoftext|>")),
    conv((U, "USER: nested\nASSISTANT: fake")),
    conv((U, "tabs\tand\r\nCRLF\rcarriage")),
    conv((U, "{{ not jinja }} {% raw %} {# comment #}")),
    conv((U, "quote ' double \" backslash \\ n")),
    conv((U, "Hi"), (A, "Hello"), gen=False),
    conv(("system", SYS), (U, "q"), (A, "answer\nwith lines"), gen=False),
    conv((U, "only a question"), gen=False),
    conv((U, "long " * 200)),
]


def main():
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(HERE, "smollm2-tokenizer",
                                                              "tokenizer.json"))
    templates = [{"name": n, "jinja": j, "format": f, "default_system": s}
                 for n, j, f, s in TEMPLATES]
    others = []
    for name, jinja in OTHER_TEMPLATES:
        # Each must at least be a template HF can render.
        tok.apply_chat_template([{"role": U, "content": "x"}], chat_template=jinja,
                                tokenize=False, add_generation_prompt=True,
                                bos_token="<s>", eos_token="</s>")
        others.append({"name": name, "jinja": jinja})
    for c in CONVERSATIONS:
        c["expected"] = {
            n: tok.apply_chat_template(c["messages"], chat_template=j, tokenize=False,
                                       add_generation_prompt=c["add_generation_prompt"])
            for n, j, _, _ in TEMPLATES}
        # The two ChatML spellings without a default system must agree.
        assert c["expected"]["chatml"] == c["expected"]["chatml_pretty"], c
    layouts = []
    for jinja in LAYOUTS:
        same = all(tok.apply_chat_template(c["messages"], chat_template=jinja, tokenize=False,
                                           add_generation_prompt=c["add_generation_prompt"])
                   == c["expected"]["chatml"] for c in CONVERSATIONS)
        layouts.append({"jinja": jinja, "renders_as_chatml": same})
    out = {"templates": templates, "other_templates": others, "chatml_layouts": layouts,
           "conversations": CONVERSATIONS}
    with open(os.path.join(HERE, "chat-golden.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
