#!/usr/bin/env python3
"""Writes the small test tokenizer.json files in this directory (deterministic).

    python3 tokenizer/testdata/make_test_tokenizers.py

Each is a realistic miniature of a real model's tokenizer.json: same pre-tokenizer / normalizer /
decoder / post-processor structure, a vocab and a few dozen merges trained here by plain BPE on
TRAIN_TEXT. The goldens (goldens.json) come from an independent implementation, see gen_goldens.mjs.
"""
import collections
import json
import os

import regex

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TRAIN_TEXT = """The quick brown fox jumps over the lazy dog. The router sends each request to the
worker that already holds the longest prefix of its tokens in the cache. Then the worker reads
the cached blocks and only computes the new tokens. In the end, there are fewer tokens to compute,
and the time to the first token is shorter. This is the whole idea: reuse what is there.
def encode(text): return [token for token in text.split()]  # 12345 67890
"""


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def train(words, num_merges):
    """Plain BPE: most frequent adjacent pair, ties by the pair itself."""
    counts = collections.Counter(tuple(w) for w in words)
    merges = []
    for _ in range(num_merges):
        pairs = collections.Counter()
        for w, c in counts.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        best = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))[0]
        merges.append(best)
        new = collections.Counter()
        for w, c in counts.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(w[i] + w[i + 1])
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new[tuple(out)] += c
        counts = new
    return merges


def byte_level(merge_format, pre_tokenizer, post_processor, name, ignore_merges):
    b2u = bytes_to_unicode()
    vocab = {b2u[b]: b for b in range(256)}
    words = ["".join(b2u[b] for b in w.encode()) for w in regex.findall(LLAMA3_PATTERN, TRAIN_TEXT)]
    merges = train(words, 60)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    # A word only reachable through ignore_merges (whole pre-token in the vocab).
    vocab["Ġsupercalifragilistic"] = len(vocab)
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                "<|eot_id|>"]
    added = []
    for i, s in enumerate(specials):
        added.append({"id": len(vocab) + i, "content": s, "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    added.append({"id": len(vocab) + len(specials), "content": "<tool_call>", "single_word": False,
                  "lstrip": False, "rstrip": False, "normalized": False, "special": False})
    doc = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": ignore_merges, "vocab": vocab,
                  "merges": [[a, b] if merge_format == "pairs" else a + " " + b for a, b in merges]},
    }
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)


def sentencepiece(name, metaspace_pre_tokenizer, prepend_scheme="first", split=False):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    text = "▁" + TRAIN_TEXT.replace(" ", "▁").replace("\n", "▁")
    for ch in sorted(set(text)):
        vocab.setdefault(ch, len(vocab))
    words = [w for w in regex.findall(r"▁?[^▁]+|▁", text)]
    merges = train(words, 80)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    added = [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])]
    if metaspace_pre_tokenizer:
        normalizer = None
        pre_tokenizer = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": prepend_scheme,
                         "split": split}
    else:
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "▁"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]}
        pre_tokenizer = None
    doc = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<s>", "type_id": 1}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                  "merges": [a + " " + b for a, b in merges]},
    }
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)


LLAMA3_PRE = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
LLAMA3_POST = {"type": "Sequence", "processors": [
    {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
    {"type": "TemplateProcessing",
     "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}}],
     "pair": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}},
              {"Sequence": {"id": "A", "type_id": 0}},
              {"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 1}},
              {"Sequence": {"id": "B", "type_id": 1}}],
     "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [317],
                                              "tokens": ["<|begin_of_text|>"]}}}]}
GPT2_PRE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
GPT2_POST = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True}

if __name__ == "__main__":
    byte_level("pairs", LLAMA3_PRE, LLAMA3_POST, "llama3_bpe.json", True)
    byte_level("strings", GPT2_PRE, GPT2_POST, "gpt2_bpe.json", False)
    sentencepiece("llama2_spm.json", False)
    sentencepiece("mistral_metaspace.json", True)
    sentencepiece("metaspace_split_always.json", True, prepend_scheme="always", split=True)
