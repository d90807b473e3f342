"""Train a small byte-level BPE tokenizer with RoBERTa's special tokens, wrapped for transformers.

For models trained from scratch on C code (tests, CPU baselines), where a pretrained vocabulary
such as CodeBERT's is not wanted. Byte-level means there are no unknown characters: `<unk>`
exists only so the special-token layout matches RoBERTa's.

    tok = train_bpe_tokenizer(funcs, vocab_size=8000, max_len=512, save_dir="out/tok")
    AutoTokenizer.from_pretrained("out/tok")  # the same tokenizer again

About 5 s for the 21,854 Devign train functions (48 MB) at 8k vocabulary on 2 CPU cores.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Order fixes the ids: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4, as in RoBERTa / CodeBERT.
SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
#: Part of the token cache's key for trained tokenizers: bump it whenever a change here would
#: make the same texts train a different tokenizer (trainer settings, pre-tokenizer, specials).
RECIPE_VERSION = 1


def train_bpe_tokenizer(texts: Iterable[str], *, vocab_size: int, max_len: int,
                        save_dir: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on `texts`; encodings are `<s> ... </s>`, truncated on the right.

    Deterministic: the same texts in the same order give the same vocabulary and merges (the
    trainer breaks count ties by pair ids, never by hash order; tested across processes), which
    is what lets the token cache key a trained tokenizer by its training file's sha256.

    Args:
        texts: training texts, read once in order.
        vocab_size: final vocabulary size, the 5 special tokens and 256 byte symbols included.
        max_len: `model_max_length` of the returned tokenizer (special tokens included).
        save_dir: if given, `save_pretrained` there so `AutoTokenizer.from_pretrained` reloads it.

    Raises:
        ValueError: `vocab_size` cannot hold the special tokens and the byte alphabet, or
            `max_len` is below 2.
    """
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if vocab_size < len(SPECIAL_TOKENS) + len(alphabet):
        raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS) + len(alphabet)} "
                         f"(5 special tokens + 256 bytes), got {vocab_size}")
    if max_len < 2:
        raise ValueError(f"max_len must be at least 2 (<s> and </s>), got {max_len}")

    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    # No prefix space: a function starts at column 0, and code is not a sentence continuation.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2,
                                  special_tokens=list(SPECIAL_TOKENS), initial_alphabet=alphabet,
                                  show_progress=False)
    backend.train_from_iterator(texts, trainer=trainer)
    ids = {token: backend.token_to_id(token) for token in SPECIAL_TOKENS}
    assert list(ids.values()) == list(range(len(SPECIAL_TOKENS))), ids  # the trainer's contract
    backend.post_processor = processors.RobertaProcessing(
        ("</s>", SPECIAL_TOKENS.index("</s>")), ("<s>", SPECIAL_TOKENS.index("<s>")),
        trim_offsets=True, add_prefix_space=False)

    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>", cls_token="<s>", sep_token="</s>",
        model_max_length=max_len, truncation_side="right", padding_side="right")
    if save_dir is not None:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(save_dir))
    return tokenizer
