"""Unit tests for streamguard.synth: exact class counts, determinism, learnable labels, the CLI."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from streamguard import cli_data
from streamguard.datasets import check_split, inspect_files, label_counts, read_examples
from streamguard.synth import synth_examples, write_jsonl

# One regex per flaw, to count how often each appears among vulnerable rows.
FLAW_PATTERNS = {
    "unchecked_copy": r"\b(?:strcpy|memcpy)\(",
    "malloc_null": r"(?:malloc|calloc)\(",
    "off_by_one": r"<=",
    "use_after_free": r"free\((\w+)\);\n(?:.*\n)*?.*\b\1->",
    "format_string": r"printf\((?:stderr, |\w+, sizeof\(\w+\), )?\w+\)|syslog\(LOG_ERR, \w+\)",
}


def flawed(func: str) -> bool:
    """A hand-written oracle: the flaw is present in the text, so the label is learnable."""
    if "<=" in func or re.search(FLAW_PATTERNS["format_string"], func):
        return True
    if re.search(FLAW_PATTERNS["use_after_free"], func):
        return True
    if "strcpy(" in func and "strlen(" not in func:
        return True
    if "memcpy(" in func and not re.search(r"if \(\w+ > ", func):
        return True
    if re.search(FLAW_PATTERNS["malloc_null"], func):
        return not re.search(r"if \((?:\w+ == NULL|!\w+)\)", func)
    return False


def best_threshold_accuracy(values: list[int], labels: list[int]) -> float:
    """Best accuracy of `label = value > t` or `label = value <= t` over all thresholds t."""
    pairs = sorted(zip(values, labels, strict=True))
    n, n_pos = len(pairs), sum(labels)
    best = max(n_pos, n - n_pos) / n
    below_neg = below_pos = 0
    for k, (value, label) in enumerate(pairs):
        below_pos += label
        below_neg += 1 - label
        if k + 1 < n and pairs[k + 1][0] == value:
            continue
        acc = (below_neg + n_pos - below_pos) / n
        best = max(best, acc, 1 - acc)
    return best


@pytest.mark.parametrize(("n", "fraction"), [(0, 0.46), (1, 0.46), (7, 0.5), (100, 0.46),
                                             (333, 0.1), (50, 0.0), (50, 1.0)])
def test_exact_number_of_vulnerable_rows(n: int, fraction: float) -> None:
    rows = synth_examples(n, vulnerable_fraction=fraction)
    assert len(rows) == n
    assert sum(r["target"] for r in rows) == round(n * fraction)


def test_rows_have_the_dataset_fields_and_unique_ids() -> None:
    rows = synth_examples(50, seed=4, id_prefix="synth-train")
    assert all(set(r) == {"id", "project", "target", "func"} for r in rows)
    assert {r["project"] for r in rows} == {"synth"}
    assert [r["id"] for r in rows] == [f"synth-train-{i}" for i in range(50)]
    assert all(r["func"].startswith(("int ", "static int ")) and r["func"].endswith("}\n")
               for r in rows)


def test_same_seed_same_rows_other_seed_other_rows() -> None:
    assert synth_examples(200, seed=5) == synth_examples(200, seed=5)
    assert synth_examples(200, seed=5) != synth_examples(200, seed=6)


def test_every_flaw_appears_and_the_label_follows_from_the_text() -> None:
    rows = synth_examples(2000, seed=0)
    for name, pattern in FLAW_PATTERNS.items():
        assert sum(1 for r in rows if r["target"] and re.search(pattern, r["func"])) > 100, name
    wrong = [r for r in rows if flawed(r["func"]) != bool(r["target"])]
    assert not wrong, wrong[0]


def test_label_is_not_predictable_from_length() -> None:
    rows = synth_examples(2000, seed=0)
    labels = [r["target"] for r in rows]
    majority = 1 - sum(labels) / len(labels)
    for feature in (len, lambda f: f.count("\n")):
        acc = best_threshold_accuracy([feature(r["func"]) for r in rows], labels)
        assert acc < majority + 0.03, acc


def test_functions_are_varied() -> None:
    rows = synth_examples(2000, seed=0)
    assert len({r["func"] for r in rows}) == 2000
    names = {r["func"].split("(")[0].split()[-1] for r in rows}
    assert len(names) > 500


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n": -1}, "n must be >= 0"),
    ({"n": 10, "vulnerable_fraction": 1.5}, "between 0 and 1"),
])
def test_bad_arguments(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synth_examples(**kwargs)  # type: ignore[arg-type]


def test_write_jsonl_round_trips_through_read_examples(tmp_path: Path) -> None:
    rows = synth_examples(40, seed=2)
    path = tmp_path / "sub" / "train.jsonl"
    assert write_jsonl(rows, path) == 40
    examples = read_examples(path)
    assert [e.func for e in examples] == [r["func"] for r in rows]
    assert label_counts(examples) == [40 - round(40 * 0.46), round(40 * 0.46)]
    check_split(examples, path)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="streamguard")
    cli_data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.handler(args)


def test_cli_synth_writes_three_disjoint_splits(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    code = run_cli("data", "synth", "--out", str(out), "--train", "300", "--valid", "100",
                   "--test", "50", "--seed", "7", "--vulnerable-fraction", "0.5")
    assert code == 0
    assert "train.jsonl: 300 rows, 150 vulnerable" in capsys.readouterr().out
    paths = [out / f"{s}.jsonl" for s in ("train", "valid", "test")]
    stats = inspect_files(paths)
    assert [f["rows"] for f in stats["files"]] == [300, 100, 50]
    assert [f["n_vulnerable"] for f in stats["files"]] == [150, 50, 25]
    assert all(c["shared_functions"] == 0 for c in stats["cross_file_duplicates"])
    ids = [json.loads(line)["id"] for p in paths for line in p.read_text().splitlines()]
    assert len(set(ids)) == 450


@pytest.mark.parametrize("bad", [["--train", "-3"], ["--vulnerable-fraction", "2"]])
def test_cli_synth_rejects_bad_numbers(tmp_path: Path, bad: list[str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli("data", "synth", "--out", str(tmp_path), *bad)
    assert info.value.code == 2
    assert "must be" in capsys.readouterr().err
