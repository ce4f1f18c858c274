"""BERT's uncased WordPiece tokenizer in pure Python, read from a ``vocab.txt``.

It reproduces what the model's ``tokenizer.json`` declares (``BertNormalizer``
with clean_text, Chinese characters split, accents stripped, lower case;
``BertPreTokenizer``; WordPiece with ``##`` continuations, 100 characters at
most per word; ``[CLS] ... [SEP]``), so the example needs neither the
``tokenizers`` wheel nor ``transformers``.  ``tests/test_minilm_example.py``
checks it against ``tokenizers`` where that is installed.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path

import torch

MAX_CHARS_PER_WORD = 100


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F
            or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def normalize(text: str) -> str:
    """BertNormalizer: drop control characters, whitespace to spaces, spaces around
    CJK characters, accents stripped (NFD, marks removed), lower case."""
    out = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            out.append(" ")
        elif _is_cjk(cp):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    text = unicodedata.normalize("NFD", "".join(out))
    return "".join(ch for ch in text if unicodedata.category(ch) != "Mn").lower()


def pre_tokenize(text: str) -> list[str]:
    """BertPreTokenizer: split on whitespace, each punctuation character a word."""
    words: list[str] = []
    for chunk in text.split():
        current = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if current:
                    words.append(current)
                words.append(ch)
                current = ""
            else:
                current += ch
        if current:
            words.append(current)
    return words


class WordPiece:
    """``WordPiece(vocab_file)(sentences)``: BERT input ids and attention mask."""

    def __init__(self, vocab_file: str | Path, *, max_length: int = 256):
        tokens = Path(vocab_file).read_text(encoding="utf-8").split("\n")
        self.vocab = {tok: i for i, tok in enumerate(tokens) if tok}
        self.max_length = max_length
        self.cls, self.sep = self.vocab["[CLS]"], self.vocab["[SEP]"]
        self.unk, self.pad = self.vocab["[UNK]"], self.vocab["[PAD]"]

    def word_ids(self, word: str) -> list[int]:
        """Greedy longest-match pieces of one word; ``[UNK]`` for the whole word if
        some part matches nothing or the word is too long."""
        if len(word) > MAX_CHARS_PER_WORD:
            return [self.unk]
        ids, start = [], 0
        while start < len(word):
            end = len(word)
            while end > start:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                if piece in self.vocab:
                    ids.append(self.vocab[piece])
                    break
                end -= 1
            if end == start:
                return [self.unk]
            start = end
        return ids

    def encode(self, text: str) -> list[int]:
        """``[CLS] pieces [SEP]``, truncated to ``max_length`` ids in all."""
        ids = [i for w in pre_tokenize(normalize(text)) for i in self.word_ids(w)]
        return [self.cls, *ids[: self.max_length - 2], self.sep]

    def __call__(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)``, int64, padded on the right to the longest."""
        encoded = [self.encode(s) for s in sentences]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), self.pad, dtype=torch.int64)
        mask = torch.zeros((len(encoded), width), dtype=torch.int64)
        for row, e in enumerate(encoded):
            ids[row, : len(e)] = torch.tensor(e)
            mask[row, : len(e)] = 1
        return ids, mask
