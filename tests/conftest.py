"""Shared fixtures. The Devign data is read from ../shared/data/devign (or $STREAMGUARD_DEVIGN_DIR).

A missing data file is a test *failure*, never a skip: CI must not go green without real data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DEVIGN_DIR = REPO_ROOT.parent / "shared" / "data" / "devign"


def devign_dir() -> Path:
    return Path(os.environ.get("STREAMGUARD_DEVIGN_DIR", DEFAULT_DEVIGN_DIR))


@pytest.fixture(scope="session")
def devign() -> Path:
    """The folder holding the real Devign train.jsonl and valid.jsonl."""
    folder = devign_dir()
    for name in ("train.jsonl", "valid.jsonl"):
        if not (folder / name).is_file():
            pytest.fail(f"Devign data missing: {folder / name} (set STREAMGUARD_DEVIGN_DIR)")
    return folder


def sample_jsonl(src: Path, dst: Path, n: int, *, seed: int = 0) -> Path:
    """Write a deterministic, class-stratified sample of n rows of `src` to `dst`."""
    import random

    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line]
    by_label: dict[int, list[dict]] = {0: [], 1: []}
    for row in rows:
        by_label[int(row["target"])].append(row)
    rng = random.Random(seed)
    n_vuln = round(n * len(by_label[1]) / len(rows))
    picked = rng.sample(by_label[1], n_vuln) + rng.sample(by_label[0], n - n_vuln)
    picked.sort(key=lambda r: r["id"])
    dst.write_text("".join(json.dumps(r) + "\n" for r in picked), encoding="utf-8")
    return dst


@pytest.fixture(scope="session")
def devign_sample(devign: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Deterministic, class-stratified train/val/test samples of real Devign.

    3,000 training rows at batch 16 give ~190 optimizer steps per epoch: a from-scratch tiny
    model needs that many before its first evaluation, or it still predicts one class.
    """
    out = tmp_path_factory.mktemp("devign_sample")
    return {
        "train": sample_jsonl(devign / "train.jsonl", out / "train.jsonl", 3000, seed=1),
        "val": sample_jsonl(devign / "valid.jsonl", out / "val.jsonl", 300, seed=2),
        "test": sample_jsonl(devign / "valid.jsonl", out / "test.jsonl", 200, seed=3),
    }
