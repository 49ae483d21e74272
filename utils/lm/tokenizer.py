"""The course tokenizer: byte-level BPE trained with `tokenizers` on all three corpora,
wrapped as a `PreTrainedTokenizerFast` (the class transformers, TRL and TransformerLens
expect).

Special tokens: `<|endoftext|>` is BOS and EOS (as in GPT-2), `<|pad|>` pads. The
tokenizer prepends BOS itself (`add_bos_token=True`, like Llama/Gemma tokenizers), so
HF, TRL and TransformerLens all see the same token sequence for the same text. Digits
are split one per token, so a tic-tac-toe move is exactly one token.
"""
from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from utils.core import CourseError

BOS = EOS = "<|endoftext|>"
PAD = "<|pad|>"


def train_tokenizer(texts: list[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (deterministic for a given list)."""
    if not texts:
        raise CourseError("train_tokenizer needs a non-empty list of texts")
    if not 300 <= vocab_size <= 50_000:
        raise CourseError(f"vocab_size must be between 300 and 50000 (256 bytes + merges), got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[BOS, PAD], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), min_frequency=2,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return wrap(tok)


def wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        add_bos_token=True, add_eos_token=False, padding_side="right",
        model_max_length=128, clean_up_tokenization_spaces=False,
    )


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    path = Path(path)
    if not (path / "tokenizer.json").exists():
        raise CourseError(f"no tokenizer at {path}: build it with `python -m utils.lm build tokenizer`")
    tok = PreTrainedTokenizerFast.from_pretrained(str(path))
    # transformers 5 keeps BOS-prepending in tokenizer.json's post-processor and drops the
    # add_bos_token flag on save; set it again so TransformerLens uses this tokenizer as is
    # instead of reloading it (it reloads tokenizers whose flag is False).
    tok.add_bos_token = True
    if tok.encode("") != [tok.bos_token_id] or tok.pad_token != PAD or tok.eos_token != EOS:
        raise CourseError(f"the tokenizer at {path} lacks BOS/EOS/pad settings: rebuild it with `python -m utils.lm build tokenizer`")
    return tok
