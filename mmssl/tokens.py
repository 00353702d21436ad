"""Texts before a tokenizer sees them; torch-free, shared by the towers and the ONNX runtime."""

from __future__ import annotations

# No tokenizer mmssl uses makes a token of more than this many characters in practice (BPE merges
# stay short; a long run of one character splits), so the first max_length x this characters of a
# text give the same max_length tokens as the whole text.
MAX_CHARS_PER_TOKEN = 32


def clip_chars(texts, max_tokens: int) -> list[str]:
    """Each text cut to what its first ``max_tokens`` tokens can span, before tokenizing: a 50 MB
    record costs what a short one does, not minutes and gigabytes of token ids thrown away."""
    limit = max_tokens * MAX_CHARS_PER_TOKEN
    return [t[:limit] for t in texts]
