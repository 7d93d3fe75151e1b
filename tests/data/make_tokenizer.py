#!/usr/bin/env python3
"""Makes the tiny SentencePiece tokenizer of the test models and the golden encodings.

Trains a 301-piece BPE model (unk 0, bos 1, eos 2, 256 byte-fallback pieces, trainer settings
as Llama/Mistral's tokenizer.model: identity normalisation, dummy prefix, digits split, no
whitespace collapsing) on the built-in text below, writes it to tiny-mistral/tokenizer.model
and tiny-llama/tokenizer.model (the same file; both configs say vocab_size 301), and records
~1000 deterministic strings with the ids Hugging Face's slow LlamaTokenizer (legacy=True, as
Mistral ships it; BOS added, no EOS) gives for them in tokenizer_golden.json.

Needs transformers 4.x (v5 removed the slow sentencepiece LlamaTokenizer) and sentencepiece;
no torch. Run once by hand when the text or the cases change; the outputs are committed:

    python3 -m venv /tmp/tok-ref && /tmp/tok-ref/bin/pip install 'transformers<5' sentencepiece
    /tmp/tok-ref/bin/python tests/data/make_tokenizer.py tests/data

The run is deterministic: the same versions write byte-identical files.
"""
import io
import json
import os
import random
import sys

import sentencepiece as spm

VOCAB_SIZE = 301
SEED = 20240611
NUM_CASES = 1000

# Training text. With 301 pieces, 259 of them specials and bytes, only ~40 remain for
# characters and merges, and the trainer insists on covering 98% of the characters it sees:
# so the prose (weighted PROSE_REPEATS times) is plain lower-case English, and the code,
# digits, capitals and Unicode (seen once) mostly fall back to bytes, which is what the
# tests want to exercise.
PROSE = """\
the quick brown fox jumps over the lazy dog and the dog does not mind it at all
in the beginning there was the token and the token was split into pieces
tokenizers turn text into numbers and numbers back into text one piece at a time
she sells sea shells on the sea shore and the shells she sells are sea shells for sure
it was the best of times it was the worst of times it was the age of wisdom
there is a theory which states that if ever anyone discovers exactly what the universe is for
it will instantly disappear and be replaced by something even more bizarre
all happy families are alike and each unhappy family is unhappy in its own way
the model reads the prompt then writes the answer one token after another
what is the capital of france the capital of france is paris
write a short poem about the sea and the wind and the long grey shore
"""
PROSE_REPEATS = 20
EXTRA = """\
USER: What is the capital of France?
ASSISTANT: The capital of France is Paris.
def tokenize(text):
    return [piece for piece in text.split(" ") if piece]
for i in range(10):
    print(i, i * i, "the square of", i)
int main(int argc, char** argv) { return 0; }
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14159 1e-5 65536 4096 32000.
Unicode: café, naïve, résumé, jalapeño, Straße, 東京, 서울, Москва, Αθήνα.
Emoji: 😀 😂 👍 🎉 🚀 ❤️ 👩‍💻 🇫🇷 ✨ 🙂.
Math: α + β = γ, ∑ x² ≤ ∞, √2 ≈ 1.414, π ≈ 3.14159.
"""


def train_model():
    """The serialized model proto (bytes)."""
    lines = PROSE.splitlines() * PROSE_REPEATS + EXTRA.splitlines()
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=out,
        model_type="bpe",
        vocab_size=VOCAB_SIZE,
        character_coverage=0.98,
        byte_fallback=True,
        split_digits=True,
        split_by_unicode_script=True,
        split_by_whitespace=True,
        allow_whitespace_only_pieces=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        max_sentencepiece_length=16,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        unk_surface=" \u2047 ",
        num_threads=1,
        shuffle_input_sentence=False,
        minloglevel=2,
    )
    return out.getvalue()


# Material the golden strings are drawn from.
WORDS = ("the a of and to in is it that was for on are with as he she they be at one have this "
         "from by hot word but what some we can out other were all there when up use your how "
         "said an each which do their time if will way about many then them write would like so "
         "these her long make thing see him two has look more day could go come did number sound "
         "no most people my over know water than call first who may down side been now find "
         "tokenizer model prompt answer piece byte").split()
UNICODE_WORDS = [
    "café", "naïve", "résumé", "Straße", "Ærøskøbing", "jalapeño", "façade", "Zürich", "Łódź",
    "東京", "北京市", "日本語", "中文字符", "서울", "한국어", "Москва", "привет", "Αθήνα", "λόγος",
    "שלום", "مرحبا", "नमस्ते", "ภาษาไทย", "ኢትዮጵያ", "Ελληνικά", "Việt Nam", "İstanbul",
    "e\u0301", "a\u0308o\u0308", "\u00a0", "\u200b", "\ufeff", "\u2028", "ｆｕｌｌｗｉｄｔｈ",
    "ℌ𝔢𝔩𝔩𝔬", "𝟘𝟙𝟚", "©®™", "½¼¾", "€£¥₹", "→⇒↔", "∀x∈ℝ", "x²+y²=z²", "\ufffd",
]
EMOJI = [
    "😀", "😂", "👍", "👍🏽", "🎉", "🚀", "❤️", "❤", "👩‍💻", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "✨",
    "🙂", "🤖", "🦀", "🐍", "🏳️‍🌈", "🧑🏿‍🚀", "☕", "🔥", "💯", "🫠", "🥲", "#️⃣", "🀄", "🂡",
]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}",
    "if (a && b || !c) { return -1; }",
    "SELECT * FROM users WHERE id = 42;",
    "<div class=\"main\">Hello</div>",
    "{\"key\": [1, 2.5, null, true], \"nested\": {\"a\": \"b\"}}",
    "x = lambda y: y ** 2  # square",
    "std::vector<int32_t> ids{1, 2, 3};",
    "fn main() { println!(\"{}\", 1 + 1); }",
    "#include <stdio.h>\n",
    "$ ls -la | grep '^d' > out.txt 2>&1",
    "a[i][j] = b[j][i]; // transpose",
    "   indented\n\t\ttabbed\n",
    "@decorator\nclass Foo(Bar):\n    pass",
    "regex: ^[A-Za-z0-9_]+$ \\d{3}-\\d{4}",
]
SPACES = [" ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n", " \t ", "\u3000", "\u2009", "\u00a0"]
SYMBOLS = list("!\"#$%&'()*+,-./:;=?@[\\]^_`{|}~")


def number(rng):
    kind = rng.randrange(6)
    if kind == 0:
        return str(rng.randrange(10))
    if kind == 1:
        return str(rng.randrange(10 ** rng.randrange(1, 20)))
    if kind == 2:
        return f"{rng.uniform(-1000, 1000):.{rng.randrange(1, 6)}f}"
    if kind == 3:
        return f"{rng.uniform(0, 1):.3e}"
    if kind == 4:
        return f"{rng.randrange(1900, 2100)}-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
    return "0x" + "".join(rng.choice("0123456789abcdef") for _ in range(rng.randrange(1, 9)))


def random_char(rng):
    """A code point from a mix of blocks, never a surrogate, U+2581 or NUL."""
    blocks = [(0x01, 0x7F), (0xA0, 0x2FF), (0x370, 0x52F), (0x590, 0x6FF), (0x900, 0x97F),
              (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x22FF),
              (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xE000, 0xE0FF),
              (0xFE00, 0xFE0F), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x10000, 0x1007F),
              (0x20000, 0x2A6DF), (0xE0000, 0xE007F), (0x10FF00, 0x10FFFD)]
    lo, hi = rng.choice(blocks)
    c = rng.randint(lo, hi)
    return chr(c) if c != 0x2581 else "x"


def sentence(rng, n):
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.55:
            w = rng.choice(WORDS)
            out.append(w.capitalize() if rng.random() < 0.15 else w)
        elif r < 0.65:
            out.append(rng.choice(UNICODE_WORDS))
        elif r < 0.75:
            out.append(rng.choice(EMOJI))
        elif r < 0.85:
            out.append(number(rng))
        elif r < 0.93:
            out.append(rng.choice(SYMBOLS) * rng.randrange(1, 3))
        else:
            out.append("".join(random_char(rng) for _ in range(rng.randrange(1, 4))))
    text = ""
    for i, w in enumerate(out):
        if i:
            text += rng.choice(SPACES) if rng.random() < 0.15 else " "
        text += w
    return text


def golden_strings():
    """NUM_CASES distinct strings, fixed by SEED; the hand-picked edge cases come first."""
    fixed = [
        "", " ", "  ", "\n", "\t", "a", " a", "a ", "  a  ", "Hello", "Hello world",
        "Hello, world!", " Hello world", "Hello  world", "Hello\nworld", "Hello\n\nworld\n",
        "USER: What is 2 + 2?\nASSISTANT: 4", "SYSTEM: be brief\nUSER: hi\nASSISTANT:",
        "0", "12345", "3.14159", "1,000,000", "-42", "1e-5",
        "😀", "😀😀😀", "a😀b", " 😀", "👩‍💻", "🇫🇷🇯🇵", "❤️", "👍🏽",
        "€", "é", "e\u0301", "東京", "日本語のテキスト", "한국어", "Ελληνικά", "Москва", "עברית",
        "مرحبا بالعالم", "नमस्ते", "ภาษาไทย", "\u200b", "\ufeff", "\u00a0", "\ufffd",
        "\U0010fffd", "\U00020000", "\x01\x02\x7f", "a\u2581b", "\u2581", "\u2581\u2581x",
        "    def f():\n        pass", "{\"a\": 1}", "<<SYS>>", "[INST] hi [/INST]",
        "The quick brown fox jumps over the lazy dog.", "the the the the the",
        " " * 17, "\n" * 5, "\t \t \n", "a" * 50, "ab" * 30, "9" * 40,
    ]
    rng = random.Random(SEED)
    seen = set(fixed)
    out = list(fixed)
    while len(out) < NUM_CASES:
        kind = rng.randrange(10)
        if kind < 4:
            s = sentence(rng, rng.randrange(1, 12))
        elif kind == 4:
            s = rng.choice(CODE)
            if rng.random() < 0.5:
                s = s.replace("x", rng.choice(UNICODE_WORDS))
        elif kind == 5:
            s = "".join(rng.choice(EMOJI) for _ in range(rng.randrange(1, 6)))
        elif kind == 6:
            s = "".join(random_char(rng) for _ in range(rng.randrange(1, 10)))
        elif kind == 7:
            s = "".join(rng.choice(SPACES) + rng.choice(WORDS) for _ in range(rng.randrange(1, 5)))
            s += rng.choice(SPACES) * rng.randrange(0, 3)
        elif kind == 8:
            s = " ".join(number(rng) for _ in range(rng.randrange(1, 5)))
        else:
            s = rng.choice(SPACES) + sentence(rng, rng.randrange(1, 6)) + rng.choice(SPACES)
        # HF splits the special-token strings out of the text; the engine never does.
        if any(t in s for t in ("<s>", "</s>", "<unk>")) or s in seen:
            continue
        seen.add(s)
        out.append(s)
    return out


def load_hf_tokenizer(model_path):
    import transformers
    from transformers import LlamaTokenizer

    tok = LlamaTokenizer(vocab_file=model_path, legacy=True, add_bos_token=True,
                         add_eos_token=False)
    if not hasattr(tok, "sp_model"):
        sys.exit(f"transformers {transformers.__version__} has no slow LlamaTokenizer; "
                 "use transformers<5")
    return tok


def main():
    data_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
    proto = train_model()
    paths = []
    for model in ("tiny-mistral", "tiny-llama"):
        path = os.path.join(data_dir, model, "tokenizer.model")
        with open(path, "wb") as f:
            f.write(proto)
        paths.append(path)

    sp = spm.SentencePieceProcessor(model_proto=proto)
    assert sp.get_piece_size() == VOCAB_SIZE, sp.get_piece_size()
    assert (sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2)

    tok = load_hf_tokenizer(paths[0])
    strings = golden_strings()
    cases = []
    hf_decode_differs = 0
    for s in strings:
        ids = tok.encode(s)
        # With legacy=True and no special-token text, HF is plain sentencepiece plus BOS.
        if ids != [sp.bos_id()] + sp.encode(s):
            sys.exit(f"HF and sentencepiece disagree on {s!r}")
        if tok.decode(ids, skip_special_tokens=True) != s:
            hf_decode_differs += 1
        cases.append({"text": s, "ids": ids})

    golden = {
        "about": "Hugging Face LlamaTokenizer (slow, legacy=True, add_bos_token=True) on "
                 "tiny-mistral/tokenizer.model; written by make_tokenizer.py",
        "transformers": __import__("transformers").__version__,
        "sentencepiece": spm.__version__,
        "bos_id": sp.bos_id(),
        "eos_id": sp.eos_id(),
        "vocab_size": sp.get_piece_size(),
        "cases": cases,
    }
    out = os.path.join(data_dir, "tokenizer_golden.json")
    with open(out, "w", encoding="utf-8") as f:
        # One case per line keeps diffs readable; ids compact.
        f.write("{\n")
        for key in ("about", "transformers", "sentencepiece", "bos_id", "eos_id", "vocab_size"):
            f.write(f"  {json.dumps(key)}: {json.dumps(golden[key], ensure_ascii=False)},\n")
        f.write('  "cases": [\n')
        for i, c in enumerate(cases):
            sep = "," if i + 1 < len(cases) else ""
            f.write("    " + json.dumps(c, ensure_ascii=False, separators=(",", ":")) + sep + "\n")
        f.write("  ]\n}\n")
    byte_pieces = sum(1 for c in cases for i in c["ids"] if sp.is_byte(i))
    total = sum(len(c["ids"]) for c in cases)
    print(f"wrote {paths} ({len(proto)} bytes) and {out} ({os.path.getsize(out)} bytes): "
          f"{len(cases)} cases, {total} ids, {byte_pieces} byte-fallback ids; HF decode "
          f"differs from the text for {hf_decode_differs} cases")


if __name__ == "__main__":
    main()
