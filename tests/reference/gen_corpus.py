"""Deterministic test corpus for the embedder reference checks: >= 300 varied texts (short, long
beyond 256 tokens, accents, CJK, emoji, code, numbers, whitespace oddities, control characters,
special-token look-alikes, the empty string). Same seed, same corpus, on every machine.

    python3 gen_corpus.py OUT.jsonl [--count N]
"""
import json
import random
import sys

SEED = 20240611

WORDS = ("the quick brown fox jumps over lazy dog embedding vector search engine queue batch token "
         "model weights layer attention residual normalise cosine similarity python redis stream worker "
         "kernel matrix unaffable antidisestablishmentarianism running ran runs").split()

FRAGMENTS = [
    "Héllo wörld, café crème brûlée à la mode", "Ångström naïve façade coöperate résumé",
    "Straße ÆØÅ æøå œuvre Ǆemal", "İstanbul ıi ΣΑΣ σας ὅτι", "Москва — столица России",
    "Ελληνικά γράμματα", "مرحبا بالعالم", "שלום עולם", "हिन्दी भाषा", "ภาษาไทย",
    "日本語のテキストです。", "中文文本，包括标点！", "한국어 문장입니다", "豈 更 車 (compatibility ideographs)",
    "𠀀𠀁 extension B, 𫠠 gap, 𫤠 extension E", "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "emoji 😀😃🎉 🫠 👩‍👩‍👧 🇫🇷 ❤️ ✨", "🏳️‍🌈 skin tones 👍🏽👍🏿",
    "def f(x):\n    return x**2 + 1  # comment", "for (int i = 0; i < n; i++) { a[i] += b[i]; }",
    "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;", "<div class=\"x\">&amp; &lt;tag&gt;</div>",
    "https://example.com/path?q=1&r=two#frag", "user@example.org", "C:\\Windows\\System32",
    "3.14159 2.71828 6.022e23 -42 +7 1,000,000 0x1F 1/2 50%", "$100.00 €99 ¥500 £3 ₹80",
    "2024-06-11T12:34:56Z", "phone: +1 (555) 123-4567", "½ ¼ ① ² ³ ℃ № ™ ©",
    "tabs\there\tand\tthere", "line1\nline2\r\nline3", "  leading and trailing  ",
    "multiple     spaces", "nbsp\u00a0between\u2003em\u3000ideographic", "zero\u200bwidth\u200djoiner",
    "soft\u00adhyphen", "bell\u0007 and nul\u0000 and esc\u001b", "bidi \u202eoverride\u202c marks",
    "replacement \ufffd char", "private \ue000 use", "combining e\u0301 a\u0308 n\u0303",
    "[CLS] [SEP] [MASK] [PAD] [UNK] [mask] [ SEP ]", "hi[SEP]there[MASK]", "##ing ## #hash",
    "a" * 101, "b" * 100, "x" * 30 + "é" * 80, "supercalifragilisticexpialidocious",
    "!!!???...,,,;;;:::", "«quotes» „German“ “curly” ‘single’", "— – ‐ … · • ¶ §",
    "Mixed CASE WoRdS", "ALL CAPS SENTENCE HERE", "camelCaseIdentifier snake_case_name kebab-case",
    "\u0130\u0131 \u03a3 \u1e9e \u2126 \u212a", "𝐁𝐨𝐥𝐝 𝑖𝑡𝑎𝑙𝑖𝑐 𝔣𝔯𝔞𝔨𝔱𝔲𝔯", "\u0378 unassigned",
]

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "The new movie is awesome.",
    "The cat sits outside.", "The new movie is so great.", "I love pasta.", "Do you like pizza?",
]


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def corpus(count=320):
    rng = random.Random(SEED)
    texts = ["", " ", "\n", "\t \u3000", "a", ".", "[SEP]"]
    texts += FRAGMENTS
    texts += SENTENCES
    texts.append(" ".join(FRAGMENTS))          # long, many scripts
    texts.append(words(rng, 400))               # long: beyond 256 tokens
    texts.append(" ".join(SENTENCES) * 4)       # long, natural
    texts.append("中文" * 300)                  # long CJK: one token per character
    texts.append("😀" * 300)                    # long emoji
    while len(texts) < count:
        kind = rng.randrange(6)
        if kind == 0:
            texts.append(words(rng, rng.randint(1, 12)))
        elif kind == 1:
            texts.append(words(rng, rng.randint(60, 140)))
        elif kind == 2:
            texts.append(" ".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 4))))
        elif kind == 3:
            texts.append(rng.choice(SENTENCES) + " " + rng.choice(FRAGMENTS))
        elif kind == 4:
            texts.append(words(rng, rng.randint(200, 320)))
        else:
            t = list(words(rng, rng.randint(5, 30)))
            for _ in range(rng.randint(1, 5)):  # sprinkle odd characters
                t.insert(rng.randrange(len(t) + 1), rng.choice("\u00a0\u200b\t\n\u0301😀中é!?#"))
            texts.append("".join(t))
    return texts


def main():
    out = sys.argv[1]
    count = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--count" else 320
    with open(out, "w", encoding="utf-8") as f:
        for i, t in enumerate(corpus(count)):
            f.write(json.dumps({"id": f"t{i:04d}", "text": t}, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
