"""A record far longer than the model reads is cut before tokenizing, with the same token ids as
tokenizing it whole (the slow reference) and truncating after."""

from __future__ import annotations

import random

import pytest

from mmssl.models import DualEncoder
from mmssl.models.text import TextPrep
from mmssl.tokens import MAX_CHARS_PER_TOKEN, clip_chars


def _long_texts(n_chars: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["def", "return", "self", "x_1", "getUserName", "(", ")", ":", "    ", "\n", "é", "数据", "0x1F", "#"]
    text = "".join(rng.choice(words) + rng.choice(["", " "]) for _ in range(n_chars // 3))
    return [text, text[::-1], " " * n_chars, "short one"]


@pytest.mark.parametrize("max_length", [8, 48, 256])
def test_clipped_tokenizing_equals_tokenizing_the_whole_text(tiny_model, max_length):
    tokenizer = DualEncoder.from_pretrained(tiny_model).towers["code"].tokenizer
    texts = _long_texts(20_000)
    fast = TextPrep(tokenizer, max_length)(texts)
    slow = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    assert fast["input_ids"].tolist() == slow["input_ids"].tolist()
    assert fast["attention_mask"].tolist() == slow["attention_mask"].tolist()


def test_a_real_pretrained_tokenizer_agrees_too():
    from transformers import AutoTokenizer

    from mmssl.models.text import resolve_init

    tokenizer = AutoTokenizer.from_pretrained(resolve_init("minilm"))
    texts = _long_texts(20_000, seed=1)
    for max_length in (16, 128):
        fast = TextPrep(tokenizer, max_length)(texts)["input_ids"].tolist()
        slow = tokenizer(texts, padding=True, truncation=True, max_length=max_length)["input_ids"]
        assert fast == [row + [tokenizer.pad_token_id] * (len(fast[0]) - len(row)) for row in slow]


def test_the_tokenizer_never_sees_more_than_the_cut(tiny_model):
    tokenizer = DualEncoder.from_pretrained(tiny_model).towers["code"].tokenizer
    seen = []
    prep = TextPrep(lambda texts, **kw: seen.extend(map(len, texts)) or tokenizer(texts, **kw), 64)
    prep(["x" * 50_000_000, "y"])  # one 50 MB record
    assert seen == [64 * MAX_CHARS_PER_TOKEN, 1]
    assert clip_chars(["abc"], 1) == ["abc"]


def test_open_clip_tokenizing_is_cut_the_same_way():
    import open_clip

    from mmssl.models.clip_text import ClipTextPrep

    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    texts = _long_texts(10_000, seed=2)
    assert ClipTextPrep(tokenizer)(texts)["input_ids"].tolist() == tokenizer(texts).tolist()
