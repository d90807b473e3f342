"""A run's data preparation: read and check the splits, build the tokenizer, tokenize them.

With a token cache (any ArtifactStore: the job's store in the worker, a local folder for
`streamguard train`), each expensive part is looked up first by the content hash of its inputs
(`training.token_cache`) and only built on a miss, after which it is stored for the next job:

- the scratch BPE tokenizer, by the train file's sha256, vocabulary size and max length;
- each split's token ids and labels, by the file's sha256, the tokenizer's fingerprint and
  max length (hub, local and checkpoint tokenizers too).

A hit gives the very `TokenizedSplit` the miss built (same ids, same labels, so the same
batches). When every part hits, the JSONL files are hashed but not parsed: an entry is only
ever written for bytes that passed `read_examples` and `check_split`, and its key is those
bytes' sha256. A bad file therefore always misses, and fails exactly as it does without a cache.

    prep = prepare_data(config, {"train": train_path, "validation": val_path}, cache=store)
    prep.report.as_dict()  # {"seconds": 0.8, "cache": "hit", "parts": {"tokenizer": "hit", ...}}
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from transformers import PreTrainedTokenizerBase

from streamguard.datasets import Example, check_split, read_examples
from streamguard.errors import StorageError
from streamguard.spec import TrainConfig
from streamguard.storage import ArtifactStore, sha256_file
from streamguard.tokenizer import RECIPE_VERSION
from streamguard.training import token_cache as tc
from streamguard.training.data import TokenizedSplit, tokenize
from streamguard.training.model import train_scratch_tokenizer

log = logging.getLogger("streamguard.train")

T = TypeVar("T")
#: Splits a classifier needs both classes in (the test split is only evaluated).
CHECKED_SPLITS = ("train", "validation")


@dataclass(frozen=True)
class PrepReport:
    """How long data preparation took and what the token cache did for each part.

    `parts` maps "tokenizer" (scratch models only) and each split to "hit", "miss" or "off";
    `cache` sums them up: "hit" (all hit), "miss" (all missed), "off", or "partial".
    """

    seconds: float
    parts: dict[str, str]

    @property
    def cache(self) -> str:
        states = set(self.parts.values())
        return states.pop() if len(states) == 1 else "partial"

    def as_dict(self) -> dict[str, Any]:
        return {"seconds": round(self.seconds, 3), "cache": self.cache, "parts": dict(self.parts)}

    def summary(self) -> str:
        if self.cache == "off":
            return f"data preparation {self.seconds:.2f} s (token cache off)"
        by_state: dict[str, list[str]] = {}
        for part, state in self.parts.items():
            by_state.setdefault(state, []).append(part)
        said = "; ".join(f"{state}: {', '.join(parts)}" for state, parts in by_state.items())
        return f"data preparation {self.seconds:.2f} s (token cache {said})"


@dataclass
class PreparedData:
    """Everything the loaders and the model card need, and the report."""

    tokenizer: PreTrainedTokenizerBase
    splits: dict[str, TokenizedSplit]
    data: dict[str, dict[str, Any]]  # per split, as model_card.describe_split gives it
    report: PrepReport

    @property
    def label_counts(self) -> list[int]:
        """[n_safe, n_vulnerable] of the train split."""
        labels = self.splits["train"].labels
        return [len(labels) - sum(labels), sum(labels)]


def describe(path: Path, sha256: str, labels: Sequence[int]) -> dict[str, Any]:
    """`model_card.describe_split`'s dict from a hash already taken (no second read)."""
    vulnerable = sum(1 for y in labels if int(y) == 1)
    return {"name": path.name, "sha256": sha256, "rows": len(labels),
            "label_counts": {"safe": len(labels) - vulnerable, "vulnerable": vulnerable}}


def _sha256_or_none(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None  # reading it raises the DataError that says why


def prepare_data(config: TrainConfig, paths: Mapping[str, str | Path], *,
                 tokenizer: PreTrainedTokenizerBase | None = None,
                 cache: ArtifactStore | None = None, namespace: str = "") -> PreparedData:
    """Read, check and tokenize the splits in `paths` ("train" required), reusing the cache.

    Args:
        config: the job's config (model, max_seq_len, tokenizer_vocab_size).
        paths: split name -> JSONL file; "train" and "validation" must hold both classes.
        tokenizer: the model's tokenizer (hub, local or checkpoint); None trains the scratch BPE.
        cache: where prepared data is looked up and kept; None turns the cache off.
        namespace: part of every key (the worker passes the tenant id): no sharing across it.

    Raises:
        DataError: a split is missing, malformed or (train, validation) holds one class only.
    """
    start = time.perf_counter()
    files = {name: Path(p) for name, p in paths.items()}
    shas = {name: _sha256_or_none(path) for name, path in files.items()}
    examples: dict[str, list[Example]] = {}

    def read(*names: str) -> None:
        """Read (once) and check the named splits: all reads first, as without a cache."""
        todo = [n for n in names if n not in examples]
        for name in todo:
            examples[name] = read_examples(files[name])
        for name in todo:
            if name in CHECKED_SPLITS:
                check_split(examples[name], str(files[name]))

    parts: dict[str, str] = {}
    if tokenizer is None:
        tokenizer, parts["tokenizer"] = _scratch_tokenizer(config, shas["train"], examples,
                                                           lambda: read(*files), cache, namespace)
    tok: PreTrainedTokenizerBase = tokenizer
    fingerprint = tc.tokenizer_fingerprint(tok) if cache is not None else ""
    splits: dict[str, TokenizedSplit] = {}
    keys: dict[str, tuple[str, dict[str, Any]]] = {}  # split -> (key, expected meta) to write
    for name, sha in shas.items():
        if cache is None or sha is None:
            parts[name] = "off"
            continue
        key = tc.tokenized_key(namespace=namespace, data_sha256=sha, fingerprint=fingerprint,
                               max_len=config.max_seq_len)
        expect = {"data_sha256": sha, "tokenizer": fingerprint, "max_len": config.max_seq_len}
        found = _fetch(cache, key, partial(tc.decode_split, expect=expect, vocab_size=len(tok),
                                           max_len=config.max_seq_len))
        # One class in train/validation: read it, so check_split fails as without a cache.
        if found is not None and (name not in CHECKED_SPLITS or len(set(found.labels)) == 2):
            splits[name], parts[name] = found, "hit"
        else:
            keys[name], parts[name] = (key, expect), "miss"
    read(*(name for name in files if name not in splits))  # every check before any tokenizing
    for name in files:
        if name not in splits:
            rows = examples[name]
            splits[name] = tokenize(tok, [e.func for e in rows], [e.target for e in rows],
                                    config.max_seq_len)
            if cache is not None and name in keys:
                _keep(cache, keys[name][0], partial(tc.encode_split, splits[name], keys[name][1]))
    splits = {name: splits[name] for name in files}  # in the order given
    data = {name: describe(files[name], shas[name] or "", splits[name].labels) for name in files}
    report = PrepReport(time.perf_counter() - start, parts)
    log.info(report.summary())
    return PreparedData(tok, splits, data, report)


def _scratch_tokenizer(config: TrainConfig, train_sha: str | None,
                       examples: dict[str, list[Example]], read_all: Callable[[], None],
                       cache: ArtifactStore | None, namespace: str,
                       ) -> tuple[PreTrainedTokenizerBase, str]:
    """The scratch BPE from the cache, or trained on the train split (every split is read and
    checked before that, so bad data fails before the seconds-to-minutes of training)."""
    key = None
    if cache is not None and train_sha is not None:
        key = tc.tokenizer_key(namespace=namespace, train_sha256=train_sha,
                               vocab_size=config.tokenizer_vocab_size,
                               max_len=config.max_seq_len, recipe=RECIPE_VERSION)
        found = _fetch(cache, key, tc.decode_tokenizer)
        if found is not None:
            return found, "hit"
    read_all()
    tokenizer = train_scratch_tokenizer(config, [e.func for e in examples["train"]])
    if key is None or cache is None:
        return tokenizer, "off"
    _keep(cache, key, lambda: tc.tokenizer_files(tokenizer))
    return tokenizer, "miss"


def _fetch(cache: ArtifactStore, key: str, decode: Callable[[dict[str, bytes]], T]) -> T | None:
    """The decoded entry under `key`, or None (absent, bad: rebuilt, or the store failing)."""
    try:
        files = tc.get_entry(cache, key)
        return None if files is None else decode(files)
    except tc.CacheEntryError as exc:
        log.warning("token cache: ignoring %s (%s); rebuilding it", key, exc)
    except (StorageError, OSError) as exc:
        log.warning("token cache: cannot read %s (%s); preparing without it", key, exc)
    return None


def _keep(cache: ArtifactStore, key: str, encode: Callable[[], dict[str, bytes]]) -> None:
    """Store an entry; a store that refuses only costs the next job the cache."""
    try:
        tc.put_entry(cache, key, encode())
    except (StorageError, OSError) as exc:
        log.warning("token cache: cannot write %s (%s); the next job prepares its data again",
                    key, exc)
