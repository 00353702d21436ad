"""A byte-level BPE tokenizer trained on the corpus, saved as a ``transformers`` fast tokenizer.

Byte-level BPE (GPT-2/RoBERTa style) never meets an unknown character, which matters for code:
identifiers, operators and any Unicode in strings all tokenize. Special tokens follow RoBERTa:
``<s> text </s>``, ``<pad>``, ``<unk>``, ``<mask>`` (for masked-LM pretraining).

``split_identifiers=True`` is the retrieval setting: camelCase and snake_case identifiers are split
into lowercase words and whitespace is dropped before BPE, so that ``getUserName`` in code and
"user name" in a docstring share the tokens ``user`` and ``name`` (plain byte-level BPE gives ``user``
inside an identifier and ``Ġuser`` after a space: different tokens that a model from scratch must
learn to align). This is CodeSearchNet's subtokenization, done inside the tokenizer (its
normalizer and pre-tokenizer are saved in ``tokenizer.json``), so that the saved tokenizer alone
reproduces it. Decoding then gives the words without their original spacing.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 8000,
    min_frequency: int = 2,
    max_length: int = 256,
    split_identifiers: bool = False,
):
    """Train on ``texts`` and return a ``PreTrainedTokenizerFast`` (``save_pretrained``-able)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    if split_identifiers:
        tok.normalizer = normalizers.Sequence(
            [
                normalizers.NFKC(),
                # A space at each camelCase boundary: getUserName -> get User Name, HTTPServer -> HTTP Server.
                normalizers.Replace(Regex(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])"), " "),
                normalizers.Lowercase(),
            ]
        )
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.WhitespaceSplit(),
                # Every character that is not a letter or digit stands alone: _ . ( ) ...
                pre_tokenizers.Split(Regex(r"[^\p{L}\p{N}]"), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")), add_prefix_space=False
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        cls_token="<s>",
        sep_token="</s>",
        model_max_length=max_length,
        padding_side="right",
    )
