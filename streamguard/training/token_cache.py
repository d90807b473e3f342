"""The token cache: trained tokenizers and tokenized splits, content-addressed in the store.

A job's data preparation (train a scratch BPE, tokenize every split) is a pure function of bytes
the job already holds and a few settings, so its result is stored under the sha256 of exactly
those inputs and reused by the next job that has them:

    cache/tokenizers/<sha256(namespace, train file sha256, vocab size, max_len,
                             tokenizers version, recipe version)>/
        tokenizer.json, tokenizer_config.json, manifest.json
    cache/tokenized/<sha256(namespace, split file sha256, tokenizer fingerprint, max_len,
                            tokenizers version, format version)>/
        tokens.safetensors (ids: int32, flat; offsets: int64, rows + 1; labels: int64)
        meta.json, manifest.json

An entry's files are written first and its `manifest.json` (size and sha256 of each file, the
`streamguard.manifest` format) last, so a manifest names a complete entry; a reader checks every
file against it and the contents against what it asked for, and treats anything else (a missing
file, a short or altered object, a different row count) as a miss that is rebuilt and
overwritten, never trusted. Only JSON and safetensors are read: no pickle.

`namespace` keeps tenants apart: the worker passes the tenant id, so a key cannot be derived
without it, and a hit never tells a tenant that another one trained on the same bytes. Keys
sit outside `tenants/`, which the API never lists or serves.

Bump CACHE_FORMAT whenever the layout, `training.data.tokenize` or the row validation of
`datasets.read_examples` changes meaning: a hit skips reading the JSONL files altogether.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from streamguard.errors import StorageError
from streamguard.manifest import MANIFEST_FORMAT, MANIFEST_NAME
from streamguard.storage import ArtifactNotFound, ArtifactStore, check_key
from streamguard.training.data import TokenizedSplit

log = logging.getLogger("streamguard.train")

CACHE_FORMAT = 1
TOKENIZERS_PREFIX = "cache/tokenizers"
TOKENIZED_PREFIX = "cache/tokenized"
TOKENS_FILE = "tokens.safetensors"
META_FILE = "meta.json"


class CacheEntryError(ValueError):
    """A cache entry exists but is incomplete, altered or not what was asked for."""


def _library_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _digest(fields: Mapping[str, Any]) -> str:
    """sha256 of canonical JSON: the same fields give the same key on every machine."""
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of what decides a fast tokenizer's ids: its serialized `tokenizer.json` (vocab,
    merges, normalizer, pre-tokenizer, post-processor, added tokens), its special tokens and
    truncation side.

    The backend's truncation and padding state is left out: encoding calls set it (tokenize
    passes max_length, which is part of every key anyway), so it says nothing about the
    tokenizer itself and would differ between a fresh and an already used one.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"{type(tokenizer).__name__} is not a fast tokenizer")
    spec = json.loads(backend.to_str())
    spec.pop("truncation", None)
    spec.pop("padding", None)
    return _digest({"tokenizer_json": spec,
                    "special_tokens": {k: str(v) for k, v in
                                       sorted(tokenizer.special_tokens_map.items())},
                    "pad_token_id": tokenizer.pad_token_id,
                    "truncation_side": tokenizer.truncation_side})


def tokenizer_key(*, namespace: str, train_sha256: str, vocab_size: int, max_len: int,
                  recipe: int) -> str:
    """Where the scratch BPE trained on the file with `train_sha256` is kept."""
    return f"{TOKENIZERS_PREFIX}/" + _digest({
        "kind": "bpe-tokenizer", "format": CACHE_FORMAT, "namespace": namespace,
        "train_sha256": train_sha256, "vocab_size": vocab_size, "max_len": max_len,
        "recipe": recipe, "tokenizers": _library_version("tokenizers")})


def tokenized_key(*, namespace: str, data_sha256: str, fingerprint: str, max_len: int) -> str:
    """Where the split with `data_sha256`, tokenized by `fingerprint` at `max_len`, is kept."""
    return f"{TOKENIZED_PREFIX}/" + _digest({
        "kind": "tokenized-split", "format": CACHE_FORMAT, "namespace": namespace,
        "data_sha256": data_sha256, "tokenizer": fingerprint, "max_len": max_len,
        "tokenizers": _library_version("tokenizers")})


# --- entries: files, then the manifest ---------------------------------------------------------

def put_entry(store: ArtifactStore, prefix: str, files: Mapping[str, bytes]) -> None:
    """Write every file under `prefix/`, then the manifest that makes the entry valid."""
    entries = []
    for name, data in sorted(files.items()):
        store.put_bytes(data, f"{prefix}/{name}")
        entries.append({"name": name, "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest()})
    manifest = {"format": MANIFEST_FORMAT, "files": entries}
    store.put_bytes((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
                    f"{prefix}/{MANIFEST_NAME}")


def get_entry(store: ArtifactStore, prefix: str) -> dict[str, bytes] | None:
    """The entry's files, each checked against the manifest; None when there is no manifest.

    One GET per object (no HEAD first): on S3 every round trip counts against a hit.

    Raises:
        CacheEntryError: the manifest is malformed or a file is missing or altered.
        StorageError: the store could not be read (StoreUnavailable included).
    """
    try:
        raw = store.get_bytes(f"{prefix}/{MANIFEST_NAME}")
    except ArtifactNotFound:
        return None
    try:
        manifest = json.loads(raw)
        items = manifest["files"]
        well_formed = manifest["format"] == MANIFEST_FORMAT and isinstance(items, list) and all(
            isinstance(item["size"], int) and isinstance(item["sha256"], str)
            and check_key(item["name"]) for item in items)
    except (KeyError, TypeError, ValueError, StorageError) as exc:
        raise CacheEntryError(f"{MANIFEST_NAME} is malformed ({type(exc).__name__})") from exc
    if not well_formed:
        raise CacheEntryError(f"{MANIFEST_NAME} is not a format-{MANIFEST_FORMAT} manifest")
    files: dict[str, bytes] = {}
    for item in items:
        try:
            data = store.get_bytes(f"{prefix}/{item['name']}")
        except ArtifactNotFound as exc:
            raise CacheEntryError(f"{item['name']} is missing") from exc
        if len(data) != item["size"] or hashlib.sha256(data).hexdigest() != item["sha256"]:
            raise CacheEntryError(f"{item['name']} does not match its manifest "
                                  f"({len(data)} bytes, expected {item['size']})")
        files[item["name"]] = data
    return files


# --- tokenized splits --------------------------------------------------------------------------

def encode_split(split: TokenizedSplit, meta: Mapping[str, Any]) -> dict[str, bytes]:
    """The entry's files: flat int32 ids with int64 row offsets and labels, and meta.json."""
    lengths = torch.tensor([len(ids) for ids in split.input_ids], dtype=torch.int64)
    offsets = torch.zeros(len(lengths) + 1, dtype=torch.int64)
    torch.cumsum(lengths, 0, out=offsets[1:])
    flat = torch.tensor([t for ids in split.input_ids for t in ids], dtype=torch.int32)
    tensors = {"ids": flat, "offsets": offsets,
               "labels": torch.tensor(split.labels, dtype=torch.int64)}
    meta = {**meta, "format": CACHE_FORMAT, "rows": len(split.labels), "tokens": int(flat.numel())}
    return {TOKENS_FILE: save_tensors(tensors),
            META_FILE: (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode()}


def decode_split(files: Mapping[str, bytes], *, expect: Mapping[str, Any], vocab_size: int,
                 max_len: int) -> TokenizedSplit:
    """TokenizedSplit from an entry's files; CacheEntryError unless it is exactly what was
    asked for (`expect` is compared with meta.json) and internally consistent."""
    try:
        meta = json.loads(files[META_FILE])
        tensors = load_tensors(files[TOKENS_FILE])
        ids, offsets, labels = tensors["ids"], tensors["offsets"], tensors["labels"]
    except Exception as exc:  # noqa: BLE001 - any decoding failure means a bad entry
        raise CacheEntryError(f"unreadable entry ({type(exc).__name__}: {exc})") from exc
    wrong = sorted(k for k, v in expect.items() if meta.get(k) != v)
    if wrong or meta.get("format") != CACHE_FORMAT:
        raise CacheEntryError(f"meta.json differs in {wrong or ['format']}")
    rows = meta.get("rows")
    shapes_ok = (ids.dtype == torch.int32 and offsets.dtype == torch.int64
                 and labels.dtype == torch.int64 and ids.ndim == offsets.ndim == labels.ndim == 1
                 and labels.numel() == rows and offsets.numel() == labels.numel() + 1)
    if not shapes_ok:
        raise CacheEntryError("tensors have the wrong dtype or shape")
    lengths = offsets.diff()
    if (offsets[0] != 0 or int(offsets[-1]) != ids.numel() or bool((lengths < 1).any())
            or bool((lengths > max_len).any())):
        raise CacheEntryError("row offsets are inconsistent")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise CacheEntryError(f"token ids outside the vocabulary (0..{vocab_size - 1})")
    if bool(((labels != 0) & (labels != 1)).any()):
        raise CacheEntryError("labels other than 0 and 1")
    flat, bounds = ids.tolist(), offsets.tolist()
    return TokenizedSplit([flat[a:b] for a, b in zip(bounds, bounds[1:], strict=False)],
                          labels.tolist())


# --- trained tokenizers ------------------------------------------------------------------------

def encode_tokenizer(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    """The files `save_pretrained` writes (JSON only for a fast tokenizer)."""
    with tempfile.TemporaryDirectory(prefix="sg-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


def decode_tokenizer(files: Mapping[str, bytes]) -> PreTrainedTokenizerBase:
    """Load the tokenizer from an entry's files; CacheEntryError unless it is a fast tokenizer
    whose fingerprint is the one `fingerprint.json` recorded when the entry was written."""
    if any(not name.endswith(".json") or "/" in name for name in files):
        raise CacheEntryError(f"unexpected files {sorted(files)} (JSON only)")
    try:
        stored = json.loads(files["fingerprint.json"])["fingerprint"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CacheEntryError("fingerprint.json is missing or malformed") from exc
    with tempfile.TemporaryDirectory(prefix="sg-tok-") as tmp:
        for name, data in files.items():
            if name != "fingerprint.json":
                (Path(tmp) / name).write_bytes(data)
        try:
            tokenizer = AutoTokenizer.from_pretrained(tmp, use_fast=True)
        except Exception as exc:  # noqa: BLE001 - any loading failure means a bad entry
            raise CacheEntryError(f"tokenizer does not load ({type(exc).__name__})") from exc
    if not getattr(tokenizer, "is_fast", False) or tokenizer_fingerprint(tokenizer) != stored:
        raise CacheEntryError("the tokenizer is not the one its entry was written for")
    return tokenizer


def tokenizer_files(tokenizer: PreTrainedTokenizerBase) -> dict[str, bytes]:
    """`encode_tokenizer` plus `fingerprint.json`, checked again on every load."""
    fingerprint = {"fingerprint": tokenizer_fingerprint(tokenizer)}
    return {**encode_tokenizer(tokenizer),
            "fingerprint.json": (json.dumps(fingerprint) + "\n").encode()}
