"""Build the classifier and its tokenizer: a hub/local model, or a random-init RoBERTa.

Real users name a hub model (`microsoft/codebert-base`) or a local directory; tests and demos
use `tiny`, a ~1.3 M-parameter RoBERTa with a byte-level BPE trained on the training split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from streamguard.errors import CheckpointError, InvalidTrainConfig
from streamguard.spec import SCRATCH_MODELS, TrainConfig

# Models whose position ids start after the padding index, so 2 positions are unusable.
_PADDED_POSITIONS = {"roberta", "xlm-roberta", "camembert", "longformer", "data2vec-text"}


def position_limit(model_config: Any) -> int | None:
    """Longest sequence (special tokens included) the model's position embeddings allow."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit is None:
        return None
    if getattr(model_config, "model_type", "") in _PADDED_POSITIONS:
        limit -= (getattr(model_config, "pad_token_id", 1) or 0) + 1
    return int(limit)


def check_max_seq_len(config: TrainConfig, model_config: Any) -> None:
    limit = position_limit(model_config)
    if limit is not None and config.max_seq_len > limit:
        raise InvalidTrainConfig([{
            "field": "max_seq_len",
            "message": f"{config.max_seq_len} exceeds the position limit of model "
                       f"{config.model!r}; allowed: 8..{limit}"}])


def _set_dropout(model_config: Any, dropout: float) -> None:
    for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout",
                 "attention_dropout"):
        if hasattr(model_config, attr):
            setattr(model_config, attr, dropout)


def train_scratch_tokenizer(config: TrainConfig, train_texts: Sequence[str],
                            ) -> PreTrainedTokenizerBase:
    """The byte-level BPE a scratch model uses, trained on the training texts (deterministic)."""
    from streamguard.tokenizer import train_bpe_tokenizer

    return train_bpe_tokenizer(train_texts, vocab_size=config.tokenizer_vocab_size,
                               max_len=config.max_seq_len)


def build_scratch(config: TrainConfig, train_texts: Sequence[str], *,
                  tokenizer: PreTrainedTokenizerBase | None = None,
                  ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Random-init RoBERTa plus a BPE tokenizer trained on the training texts.

    `tokenizer`: that BPE already trained (e.g. from the token cache); `train_texts` is unused.
    """
    if tokenizer is None:
        tokenizer = train_scratch_tokenizer(config, train_texts)
    kwargs: dict[str, Any] = dict(
        vocab_size=len(tokenizer), max_position_embeddings=config.max_seq_len + 2,
        type_vocab_size=1, pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout,
        num_labels=2, id2label={0: "safe", 1: "vulnerable"},
        label2id={"safe": 0, "vulnerable": 1}, **SCRATCH_MODELS[config.model])
    model_config = RobertaConfig(**kwargs)
    return RobertaForSequenceClassification(model_config), tokenizer


T = TypeVar("T")


def from_source(name_or_path: str | Path, load: Callable[[], T]) -> T:
    """`load()` from a hub id or folder; what transformers raises for a missing or unreachable
    model (OSError: repository not found, offline, no config.json; ValueError: an unknown
    architecture) becomes InvalidTrainConfig on `model` (CheckpointError for a checkpoint
    folder of our own), so the CLI prints one line and the job fails with the reason."""
    try:
        return load()
    except (OSError, ValueError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        if isinstance(name_or_path, Path):
            raise CheckpointError(f"cannot load the model in {name_or_path}: {reason}") from exc
        raise InvalidTrainConfig([{"field": "model", "message": (
            f"cannot load {name_or_path!r} ({reason}); use a scratch model "
            f"({', '.join(sorted(SCRATCH_MODELS))}), a local model folder with config.json, or "
            "a Hugging Face hub id that exists and that this machine can reach")}]) from exc


def load_model_config(name_or_path: str | Path, config: TrainConfig) -> Any:
    """The model's config with a 2-label head and the job's dropout; InvalidTrainConfig when
    `config.max_seq_len` exceeds its position limit (cheap: config.json only)."""
    model_config = from_source(name_or_path, lambda: AutoConfig.from_pretrained(
        name_or_path, num_labels=2, id2label={0: "safe", 1: "vulnerable"},
        label2id={"safe": 0, "vulnerable": 1}))
    _set_dropout(model_config, config.dropout)
    check_max_seq_len(config, model_config)
    return model_config


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerBase:
    """The fast tokenizer of a hub model, local model folder or checkpoint."""
    tokenizer = from_source(name_or_path,
                            lambda: AutoTokenizer.from_pretrained(name_or_path, use_fast=True))
    if not tokenizer.is_fast:
        raise InvalidTrainConfig([{"field": "model",
                                   "message": f"{name_or_path!r} has no fast tokenizer"}])
    return tokenizer


def load_pretrained(name_or_path: str | Path, config: TrainConfig, *,
                    tokenizer: PreTrainedTokenizerBase | None = None,
                    ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A hub model or local directory with a fresh 2-label head (or a checkpoint folder).

    `tokenizer`: its tokenizer, already loaded (`load_tokenizer`); loaded here when None.
    """
    model_config = load_model_config(name_or_path, config)
    if tokenizer is None:
        tokenizer = load_tokenizer(name_or_path)
    model = from_source(name_or_path, lambda: AutoModelForSequenceClassification.from_pretrained(
        name_or_path, config=model_config))
    return model, tokenizer


def build_model(config: TrainConfig, train_texts: Sequence[str] = (), *,
                checkpoint: Path | None = None, tokenizer: PreTrainedTokenizerBase | None = None,
                ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """From a checkpoint folder when resuming, else from config.model.

    `tokenizer`: the one data preparation already built for that source (the checkpoint's, the
    hub model's, or the scratch BPE), so it is neither loaded nor trained a second time.
    """
    if checkpoint is not None:
        return load_pretrained(checkpoint, config, tokenizer=tokenizer)
    if config.is_scratch_model:
        return build_scratch(config, train_texts, tokenizer=tokenizer)
    return load_pretrained(config.model, config, tokenizer=tokenizer)
