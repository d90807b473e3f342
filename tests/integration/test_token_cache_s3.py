"""The token cache on S3 (moto's server over HTTP, real boto3): the worker's store when it is a
bucket. A second preparation hits and gives the same splits; a truncated object is rebuilt.

Run: .venv/bin/pytest -m integration tests/integration/test_token_cache_s3.py
"""

from __future__ import annotations

from pathlib import Path

import pytest

from streamguard.datasets import write_jsonl
from streamguard.spec import TrainConfig
from streamguard.storage import S3ArtifactStore
from streamguard.synth import synth_examples
from streamguard.training import token_cache as tc
from streamguard.training.preparation import prepare_data

pytestmark = pytest.mark.integration

CFG = TrainConfig(model="tiny", max_seq_len=48, tokenizer_vocab_size=400)


def test_the_cache_in_a_bucket_hits_and_rebuilds_a_truncated_object(s3_store: S3ArtifactStore,
                                                                    tmp_path: Path) -> None:
    paths = {}
    for i, (name, n) in enumerate((("train", 200), ("validation", 40))):
        paths[name] = tmp_path / f"{name}.jsonl"
        write_jsonl(synth_examples(n, seed=i, id_prefix=name), paths[name])

    first = prepare_data(CFG, paths, cache=s3_store, namespace="t1")
    second = prepare_data(CFG, paths, cache=s3_store, namespace="t1")
    assert first.report.cache == "miss" and second.report.cache == "hit"
    assert second.splits == first.splits
    keys = [o.key for o in s3_store.list("cache/")]
    assert any(k.startswith("cache/tokenizers/") for k in keys)
    tokens = [k for k in keys if k.endswith("/tokens.safetensors")]
    assert len(tokens) == 2

    data = s3_store.get_bytes(tokens[0])
    s3_store.put_bytes(data[: len(data) // 2], tokens[0])  # an upload cut short
    third = prepare_data(CFG, paths, cache=s3_store, namespace="t1")
    assert sorted(third.report.parts.values()) == ["hit", "hit", "miss"]
    assert third.splits == first.splits
    assert s3_store.get_bytes(tokens[0]) == data  # rebuilt byte for byte
    assert tc.get_entry(s3_store, tokens[0].rsplit("/", 1)[0]) is not None
