"""The token cache (issue 10, item 5): a hit gives exactly what a miss built, any change misses,
a damaged entry is rebuilt and never trusted, entries are JSON and safetensors only, and the
worker's path keeps them in the job store, per tenant, where the API never reaches.

Real Devign functions (a sample of valid.jsonl) for the identity checks: long enough that
truncation at max_len is exercised.
"""

from __future__ import annotations

import ast
import json
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer

from streamguard.cli import build_parser, main, train_cache_dir
from streamguard.contract import InvalidDatasetUri, dataset_uri_key
from streamguard.datasets import read_examples, write_jsonl
from streamguard.errors import DataError
from streamguard.sinks import ListSink
from streamguard.spec import TrainConfig
from streamguard.storage import LocalArtifactStore
from streamguard.synth import synth_examples
from streamguard.training import preparation, run
from streamguard.training import token_cache as tc
from streamguard.training.data import make_loader
from streamguard.training.model_card import describe_split
from streamguard.training.preparation import PreparedData, prepare_data
from tests.conftest import sample_jsonl

CFG = TrainConfig(model="tiny", max_seq_len=64, tokenizer_vocab_size=500, batch_size=8,
                  seed=7)
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def splits(devign: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("token_cache_data")
    src = devign / "valid.jsonl"
    return {"train": sample_jsonl(src, out / "train.jsonl", 160, seed=1),
            "validation": sample_jsonl(src, out / "val.jsonl", 40, seed=2),
            "test": sample_jsonl(src, out / "test.jsonl", 30, seed=3)}


@pytest.fixture(scope="module")
def fresh(splits: dict[str, Path]) -> PreparedData:
    """The splits prepared without a cache: what every hit must reproduce."""
    return prepare_data(CFG, splits, cache=None)


@pytest.fixture(scope="module")
def filled(splits: dict[str, Path], tmp_path_factory: pytest.TempPathFactory,
           ) -> tuple[Path, PreparedData]:
    """A cache folder filled by one miss, and what that miss prepared."""
    folder = tmp_path_factory.mktemp("filled") / "cache"
    return folder, prepare_data(CFG, splits, cache=LocalArtifactStore(folder))


@pytest.fixture
def cache(filled: tuple[Path, PreparedData], tmp_path: Path) -> LocalArtifactStore:
    """A private copy of the filled cache."""
    shutil.copytree(filled[0], tmp_path / "cache")
    return LocalArtifactStore(tmp_path / "cache")


def batches(prep: PreparedData, name: str, *, shuffle: bool, group: bool) -> list[dict]:
    """Two epochs of a split's loader, as the run builds it."""
    loader = make_loader(prep.splits[name], 8, pad_id=int(prep.tokenizer.pad_token_id),
                         shuffle=shuffle, group_by_length=group, seed=CFG.seed)
    out = []
    for epoch in range(2):
        loader.batch_sampler.set_epoch(epoch)  # type: ignore[union-attr]
        out.extend(loader)
    return out


def assert_same_batches(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), key


# --- a hit is the miss, exactly ----------------------------------------------------------------

def test_a_hit_gives_the_same_tokenizer_ids_and_batches_as_the_miss(splits, filled, cache,
                                                                    fresh):
    miss = filled[1]
    hit = prepare_data(CFG, splits, cache=cache)
    assert miss.report.parts == dict.fromkeys(["tokenizer", *splits], "miss")
    assert hit.report.parts == dict.fromkeys(["tokenizer", *splits], "hit")
    assert hit.report.cache == "hit" and fresh.report.cache == "off"

    texts = [e.func for e in read_examples(splits["validation"])]
    ids = [p.tokenizer(texts, truncation=True, max_length=CFG.max_seq_len)["input_ids"]
           for p in (miss, hit, fresh)]
    assert ids[0] == ids[1] == ids[2]
    assert tc.tokenizer_fingerprint(hit.tokenizer) == tc.tokenizer_fingerprint(fresh.tokenizer)
    assert len(hit.tokenizer) == len(fresh.tokenizer)
    for name in splits:
        assert hit.splits[name].input_ids == fresh.splits[name].input_ids == \
            miss.splits[name].input_ids
        assert hit.splits[name].labels == fresh.splits[name].labels
        assert hit.data[name] == fresh.data[name] == describe_split(splits[name],
                                                                     fresh.splits[name].labels)
    assert hit.label_counts == fresh.label_counts
    assert max(hit.splits["train"].lengths) == CFG.max_seq_len  # truncation was exercised
    for name, shuffle, group in (("train", True, False), ("train", True, True),
                                 ("validation", False, False)):
        assert_same_batches(batches(hit, name, shuffle=shuffle, group=group),
                            batches(fresh, name, shuffle=shuffle, group=group))


def test_a_full_hit_parses_no_jsonl(splits, cache, monkeypatch):
    def no_reading(path: Any, **_: Any) -> None:
        raise AssertionError(f"{path} was parsed on a full hit")

    monkeypatch.setattr(preparation, "read_examples", no_reading)
    assert prepare_data(CFG, splits, cache=cache).report.cache == "hit"


def test_a_cached_tokenizer_is_the_one_training_gives_in_another_process(splits, cache):
    hit = prepare_data(CFG, splits, cache=cache)
    assert hit.report.parts["tokenizer"] == "hit"
    code = ("import sys; from streamguard.datasets import read_examples; "
            "from streamguard.spec import TrainConfig; "
            "from streamguard.training.model import train_scratch_tokenizer; "
            "from streamguard.training.token_cache import tokenizer_fingerprint; "
            f"cfg = TrainConfig(**{CFG.model_dump(mode='json')!r}); "
            "tok = train_scratch_tokenizer(cfg, [e.func for e in read_examples(sys.argv[1])]); "
            "print(tokenizer_fingerprint(tok))")
    trained = subprocess.run([sys.executable, "-c", code, str(splits["train"])], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.strip()
    assert trained == tc.tokenizer_fingerprint(hit.tokenizer)


# --- what misses -------------------------------------------------------------------------------

def changed_file(src: Path, dst: Path) -> Path:
    rows = [json.loads(line) for line in src.read_text().splitlines()]
    rows[0]["func"] += "\n/* edited */"
    write_jsonl(rows, dst)
    return dst


@pytest.mark.parametrize(("change", "expected"), [
    ("max_len", dict.fromkeys(["tokenizer", "train", "validation", "test"], "miss")),
    ("vocab", dict.fromkeys(["tokenizer", "train", "validation", "test"], "miss")),
    ("validation data", {"tokenizer": "hit", "train": "hit", "validation": "miss",
                         "test": "hit"}),
    ("train data", {"tokenizer": "miss", "train": "miss"}),  # the rest: see below
    ("namespace", dict.fromkeys(["tokenizer", "train", "validation", "test"], "miss")),
])
def test_a_change_of_max_len_data_tokenizer_or_tenant_misses(splits, cache, fresh, tmp_path,
                                                             change, expected):
    cfg, paths, namespace = CFG, dict(splits), ""
    if change == "max_len":
        cfg = CFG.model_copy(update={"max_seq_len": 48})
    elif change == "vocab":
        cfg = CFG.model_copy(update={"tokenizer_vocab_size": 450})
    elif change == "namespace":
        namespace = "another-tenant"
    else:
        name = change.split()[0]
        paths[name] = changed_file(splits[name], tmp_path / f"{name}.jsonl")
    again = prepare_data(cfg, paths, cache=cache, namespace=namespace)
    if change == "train data":  # a retrained tokenizer: the other splits hit only if it is equal
        same = tc.tokenizer_fingerprint(again.tokenizer) == tc.tokenizer_fingerprint(
            fresh.tokenizer)
        expected = {**expected, **dict.fromkeys(["validation", "test"],
                                                "hit" if same else "miss")}
    assert again.report.parts == expected
    if change == "namespace":
        assert again.splits == fresh.splits
    else:  # what a miss built is what no cache builds
        off = prepare_data(cfg, paths, cache=None, tokenizer=again.tokenizer)
        assert again.splits == off.splits


def test_another_given_tokenizer_misses_and_the_same_one_hits(splits, fresh, tmp_path):
    """Hub, local and checkpoint tokenizers are keyed by their fingerprint."""
    cache = LocalArtifactStore(tmp_path / "cache")
    other = prepare_data(CFG.model_copy(update={"tokenizer_vocab_size": 450}),
                         {"train": splits["train"]}, cache=None).tokenizer
    assert prepare_data(CFG, splits, tokenizer=fresh.tokenizer, cache=cache).report.cache == \
        "miss"
    assert prepare_data(CFG, splits, tokenizer=fresh.tokenizer, cache=cache).report.cache == \
        "hit"
    used = prepare_data(CFG, splits, tokenizer=other, cache=cache)
    assert used.report.parts == dict.fromkeys(splits, "miss")
    assert used.splits["train"].input_ids != fresh.splits["train"].input_ids


def test_a_checkpoints_copy_of_the_tokenizer_hits(splits, cache, fresh, tmp_path):
    """A resumed job takes its tokenizer from `last` (saved after use, with the backend's
    truncation and padding state): the same fingerprint, so the entries of its first attempt."""
    fresh.tokenizer(["int f(void) { return 0; }"] * 2, padding=True)
    fresh.tokenizer.save_pretrained(tmp_path / "last")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "last")
    assert tc.tokenizer_fingerprint(reloaded) == tc.tokenizer_fingerprint(fresh.tokenizer)
    again = prepare_data(CFG, splits, tokenizer=reloaded, cache=cache)
    assert again.report.parts == dict.fromkeys(splits, "hit")


# --- damaged entries are rebuilt ---------------------------------------------------------------

def truncate(cache: LocalArtifactStore, key: str, name: str) -> None:
    path = cache.local_path(f"{key}/{name}")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(cache: LocalArtifactStore, key: str, name: str) -> None:
    path = cache.local_path(f"{key}/{name}")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def remove(cache: LocalArtifactStore, key: str, name: str) -> None:
    cache.local_path(f"{key}/{name}").unlink()


def not_json(cache: LocalArtifactStore, key: str, name: str) -> None:
    cache.local_path(f"{key}/{name}").write_text("{not json")


def another_splits_entry(cache: LocalArtifactStore, key: str, _name: str) -> None:
    """The validation split's entry, manifest and all, under the train split's key: every
    sha256 matches its manifest, only the contents are not what the key stands for."""
    other = next(o.key.rsplit("/", 1)[0] for o in cache.list("cache/tokenized/")
                 if not o.key.startswith(key) and o.key.endswith("/meta.json")
                 and json.loads(cache.get_bytes(o.key))["rows"] == 40)
    tc.put_entry(cache, key, tc.get_entry(cache, other) or {})


@pytest.mark.parametrize(("damage", "target"), [
    (truncate, "tokens.safetensors"),
    (flip_byte, "tokens.safetensors"),
    (remove, "tokens.safetensors"),
    (not_json, "meta.json"),
    (truncate, "manifest.json"),
    (remove, "manifest.json"),  # an unfinished upload: a plain miss, nothing to say
    (another_splits_entry, "tokens.safetensors"),
])
def test_a_damaged_split_entry_is_ignored_and_rebuilt(splits, cache, fresh, damage, target,
                                                      caplog):
    fingerprint = tc.tokenizer_fingerprint(fresh.tokenizer)
    key = tc.tokenized_key(namespace="", data_sha256=fresh.data["train"]["sha256"],
                           fingerprint=fingerprint, max_len=CFG.max_seq_len)
    damage(cache, key, target)

    caplog.set_level(logging.WARNING, logger="streamguard.train")
    again = prepare_data(CFG, splits, cache=cache)
    assert again.report.parts == {"tokenizer": "hit", "train": "miss", "validation": "hit",
                                  "test": "hit"}
    assert again.splits["train"] == fresh.splits["train"]
    said = f"ignoring {key}" in caplog.text
    assert said == (damage is not remove or target != "manifest.json")
    assert prepare_data(CFG, splits, cache=cache).report.cache == "hit"  # rebuilt


@pytest.mark.parametrize("target", ["tokenizer.json", "fingerprint.json"])
def test_a_damaged_tokenizer_entry_is_ignored_and_retrained(splits, cache, fresh, target):
    (tok_prefix,) = {o.key.rsplit("/", 1)[0] for o in cache.list("cache/tokenizers/")}
    path = cache.local_path(f"{tok_prefix}/{target}")
    spec = json.loads(path.read_text())
    if target == "tokenizer.json":
        spec["model"]["merges"] = spec["model"]["merges"][:-1]  # another tokenizer...
    else:
        spec["fingerprint"] = "0" * 64
    data = json.dumps(spec).encode()
    files = {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name != "manifest.json"}
    tc.put_entry(cache, tok_prefix, {**files, target: data})  # ...with a matching manifest

    again = prepare_data(CFG, splits, cache=cache)
    assert again.report.parts["tokenizer"] == "miss"
    assert again.report.parts["train"] == "hit"  # the retrained tokenizer is the same one
    assert tc.tokenizer_fingerprint(again.tokenizer) == tc.tokenizer_fingerprint(fresh.tokenizer)
    assert prepare_data(CFG, splits, cache=cache).report.cache == "hit"


def test_a_store_that_refuses_writes_costs_only_the_cache(splits, fresh, tmp_path, caplog):
    class ReadOnly(LocalArtifactStore):
        def put_bytes(self, data: bytes, key: str) -> None:
            from streamguard.storage import StoreUnavailable
            raise StoreUnavailable("the artifact store is read-only")

    caplog.set_level(logging.WARNING, logger="streamguard.train")
    prep = prepare_data(CFG, splits, cache=ReadOnly(tmp_path / "ro"))
    assert prep.report.cache == "miss" and "cannot write cache/" in caplog.text
    assert prep.splits == fresh.splits


def test_bad_data_fails_as_without_a_cache_even_after_it_was_cached_as_a_test_split(
        splits, cache, tmp_path):
    one_class = tmp_path / "one.jsonl"
    write_jsonl([r for r in map(json.loads, splits["test"].read_text().splitlines())
                 if r["target"] == 0], one_class)
    # As a test split (never checked for both classes) it is cached...
    prepare_data(CFG, {**splits, "test": one_class}, cache=cache)
    # ...and as a validation split it still fails with check_split's message.
    with pytest.raises(DataError) as err:
        prepare_data(CFG, {**splits, "validation": one_class}, cache=cache)
    assert "only class 0 (safe) present" in str(err.value)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"func": "int f(){}", "target": 0}\nnot json\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        prepare_data(CFG, {**splits, "validation": bad}, cache=cache)


# --- what is stored ----------------------------------------------------------------------------

def test_cache_objects_are_json_and_safetensors_only(fresh, cache):
    objects = [o.key for o in cache.list("")]
    assert objects and all(k.startswith(("cache/tokenizers/", "cache/tokenized/"))
                           for k in objects)
    for key in objects:
        path = cache.local_path(key)
        if key.endswith(".safetensors"):
            with safe_open(str(path), framework="pt") as f:
                assert set(f.keys()) == {"ids", "offsets", "labels"}
                assert f.get_tensor("ids").dtype == torch.int32  # flat ids
                assert f.get_tensor("offsets").dim() == 1
        else:
            assert key.endswith(".json"), key
            json.loads(path.read_text())
        assert not path.read_bytes().startswith((b"\x80", b"PK"))  # no pickle, no torch.save
    rows = sum(len(s.labels) for s in fresh.splits.values())
    metas = [json.loads(cache.local_path(k).read_text()) for k in objects
             if k.endswith("/meta.json")]
    assert sum(m["rows"] for m in metas) == rows and len(metas) == len(fresh.splits)


# --- the worker's path and the CLI's ------------------------------------------------------------

def write_synth(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {"train": 320, "val": 40}
    for i, (name, n) in enumerate(sizes.items()):
        write_jsonl(synth_examples(n, seed=i, id_prefix=name), folder / f"{name}.jsonl")
    return {name: folder / f"{name}.jsonl" for name in sizes}


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """On 2 shared cores, 2 OpenMP threads spin against other processes (as test_worker)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_the_worker_path_keeps_the_cache_in_the_job_store_per_tenant(tmp_path,
                                                                     one_torch_thread):
    """As worker.tasks.train_job calls run(): cache=the job store, namespace=the tenant."""
    paths = write_synth(tmp_path / "data")
    store = LocalArtifactStore(tmp_path / "store")
    cfg = TrainConfig(model="tiny", max_seq_len=48, tokenizer_vocab_size=400, batch_size=16,
                      epochs=1, lr=1e-3, early_stopping_patience=0)

    def job(job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        sink = ListSink()
        run(cfg, train_path=paths["train"], val_path=paths["val"], work_dir=tmp_path / job_id,
            sink=sink, store=store, store_prefix=f"tenants/t1/jobs/{job_id}/", cache=store,
            cache_namespace="t1")
        assert sink.config is not None
        return sink.config["data_preparation"], sink.epochs

    first, first_epochs = job("j1")
    assert first["cache"] == "miss" and first["seconds"] > 0
    keys = [o.key for o in store.list("cache/")]
    assert any(k.startswith("cache/tokenizers/") for k in keys)
    assert sum(k.startswith("cache/tokenized/") and k.endswith("/meta.json") for k in keys) == 2
    assert not [o for o in store.list("tenants/") if "/cache/" in o.key]
    second, second_epochs = job("j2")
    assert second["cache"] == "hit"
    metric_keys = ("train_loss", "val_loss", "f1", "prediction_distribution")
    assert [{k: e[k] for k in metric_keys} for e in second_epochs] == \
        [{k: e[k] for k in metric_keys} for e in first_epochs]  # the same batches, same run
    # another tenant's job on the same files never shares an entry
    paths_only = {"train": paths["train"], "validation": paths["val"]}
    assert prepare_data(cfg, paths_only, cache=store, namespace="t2").report.cache == "miss"


def test_streamguard_train_reuses_its_cache_and_no_cache_keeps_none(tmp_path, caplog,
                                                                    one_torch_thread):
    paths = write_synth(tmp_path / "data")
    flags = ["--train", str(paths["train"]), "--val", str(paths["val"]), "--model", "tiny",
             "--max-seq-len", "32", "--tokenizer-vocab-size", "300", "--batch-size", "32",
             "--epochs", "1", "--lr", "1e-3", "--no-progress"]
    caplog.set_level(logging.INFO, logger="streamguard.train")
    said = []
    for run_dir, extra in (("a", []), ("b", []), ("c", ["--no-cache"])):
        caplog.clear()
        main(["train", *flags, "--output-dir", str(tmp_path / "runs" / run_dir), *extra])
        said.append(next(r.message for r in caplog.records
                         if r.message.startswith("data preparation")))
    assert "token cache miss: tokenizer, train, validation" in said[0]
    assert "token cache hit: tokenizer, train, validation" in said[1]
    assert "token cache off" in said[2]
    assert (tmp_path / "runs" / ".streamguard-cache" / "cache" / "tokenized").is_dir()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == \
        [".streamguard-cache", "a", "b", "c"]


def test_cli_cache_folder_is_beside_the_output_and_can_be_turned_off(tmp_path):
    parser = build_parser()
    base = ["train", "--train", "t.jsonl", "--val", "v.jsonl", "--output-dir",
            str(tmp_path / "runs" / "a")]
    assert train_cache_dir(parser.parse_args(base)) == tmp_path / "runs" / ".streamguard-cache"
    assert train_cache_dir(parser.parse_args([*base, "--cache-dir", str(tmp_path / "c")])) == \
        tmp_path / "c"
    assert train_cache_dir(parser.parse_args([*base, "--no-cache"])) is None


def test_the_api_never_reaches_cache_objects():
    class S3Like:
        def uri(self, key: str) -> str:
            return f"s3://bucket/{key}"

    for uri in ("s3://bucket/cache/tokenized/ab/tokens.safetensors",
                "s3://bucket/tenants/t1/../../cache/tokenized/ab/meta.json",
                "s3://bucket/tenants/t1/../cache/tokenizers/ab/tokenizer.json"):
        with pytest.raises(InvalidDatasetUri):
            dataset_uri_key(uri, store=S3Like(), tenant_id="t1")  # type: ignore[arg-type]
    for path in (REPO / "api").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert "cache/" not in node.value, path
            if isinstance(node, ast.ImportFrom):
                assert "token_cache" not in (node.module or ""), path
