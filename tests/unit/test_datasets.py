"""Unit tests for streamguard.datasets: validation messages, inspection, CodeXGLUE import, CLI."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamguard import cli_data
from streamguard.datasets import (
    Example,
    check_split,
    format_inspection,
    import_codexglue,
    inspect_files,
    label_counts,
    percentiles,
    read_examples,
    read_split_indices,
)
from streamguard.errors import DataError, StreamGuardError

OFFICIAL_SPLIT_SIZES = {"train": 21_854, "valid": 2_732, "test": 2_732}


def write(tmp_path: Path, *lines: str, name: str = "data.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def row(func: str = "int f(void) { return 0; }", target: object = 0, **extra: object) -> str:
    return json.dumps({"func": func, "target": target, **extra})


def only_problem(path: Path) -> tuple[int, str]:
    with pytest.raises(DataError) as info:
        read_examples(path)
    assert info.value.total == 1, info.value.problems
    return info.value.problems[0]


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="streamguard")
    cli_data.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.handler(args)


# --- reading good files ------------------------------------------------------------------------

def test_read_examples_keeps_extra_fields_and_accepts_boolean_labels(tmp_path: Path) -> None:
    path = write(tmp_path, row(target=1, id="a-0", project="FFmpeg"), row(target=False),
                 row(target=True), "", "  ")
    examples = read_examples(path)
    assert [e.target for e in examples] == [1, 0, 1]
    extra = {"id": "a-0", "project": "FFmpeg"}
    assert examples[0] == Example("int f(void) { return 0; }", 1, extra)
    assert examples[1].extra == {}
    assert label_counts(examples) == [1, 2]


# --- one test per bad input: the message and the line number -----------------------------------

def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    n, why = only_problem(write(tmp_path, row(), '{"func": "x", "target": 0', row()))
    assert n == 2
    assert why.startswith("invalid JSON (") and "column" in why


def test_not_an_object(tmp_path: Path) -> None:
    n, why = only_problem(write(tmp_path, row(), row(), '["int f(void) {}", 1]'))
    assert (n, why) == (3, "expected a JSON object, found an array")


def test_missing_func(tmp_path: Path) -> None:
    n, why = only_problem(write(tmp_path, '{"target": 1, "id": "x"}'))
    assert (n, why) == (1, "missing field `func` (the function source, a string)")


def test_missing_target(tmp_path: Path) -> None:
    n, why = only_problem(write(tmp_path, row(), '{"func": "int f(void) {}"}'))
    assert (n, why) == (2, "missing field `target` (the label: 0, 1, true or false)")


def test_missing_both_fields_lists_both(tmp_path: Path) -> None:
    n, why = only_problem(write(tmp_path, '{"id": "x"}'))
    assert n == 1
    assert "missing field `func`" in why and "missing field `target`" in why


def test_func_not_a_string(tmp_path: Path) -> None:
    n, why = only_problem(write(tmp_path, row(), json.dumps({"func": ["int", "f"], "target": 0})))
    assert (n, why) == (2, "field `func` must be a string, found an array")


@pytest.mark.parametrize("func", ["", "   \n\t  "])
def test_empty_or_whitespace_func(tmp_path: Path, func: str) -> None:
    n, why = only_problem(write(tmp_path, row(), row(), row(func=func)))
    assert (n, why) == (3, "field `func` is empty or whitespace only")


@pytest.mark.parametrize(("target", "shown"), [
    (2, "2 (a number)"),
    ("1", '"1" (a string)'),
    (1.0, "1.0 (a number)"),
    (None, "null (null)"),
    (-1, "-1 (a number)"),
])
def test_label_not_0_or_1_says_what_was_found_and_what_is_accepted(
        tmp_path: Path, target: object, shown: str) -> None:
    n, why = only_problem(write(tmp_path, row(), row(target=target)))
    assert n == 2
    assert why == f"field `target` must be 0, 1, true or false; found {shown}"


def test_blank_line_between_rows(tmp_path: Path) -> None:
    n, why = only_problem(write(tmp_path, row(), "", row()))
    assert (n, why) == (2, "blank line between rows")


def test_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(row().encode() + b"\n" + b'{"func": "\xff", "target": 0}\n')
    n, why = only_problem(path)
    assert n == 2 and why.startswith("not valid UTF-8")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="no examples") as info:
        read_examples(path)
    assert "empty or only blank lines" in str(info.value)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="cannot read the file"):
        read_examples(tmp_path / "nope.jsonl")


def test_every_line_is_validated_and_the_first_problems_listed(tmp_path: Path) -> None:
    lines = [row() if i % 3 else row(target=7) for i in range(45)]  # 15 bad: lines 1, 4, 7, ...
    with pytest.raises(DataError) as info:
        read_examples(write(tmp_path, *lines), max_problems=4)
    err = info.value
    assert err.total == 15
    assert [n for n, _ in err.problems] == [1, 4, 7, 10]
    assert str(err).startswith(f"{tmp_path / 'data.jsonl'}: 15 bad line(s)\n  line 1: field")
    assert str(err).endswith("... and 11 more")
    assert isinstance(err, StreamGuardError) and err.field == "dataset"


# --- splits ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("target", "name"), [(0, "safe"), (1, "vulnerable")])
def test_check_split_needs_both_classes(target: int, name: str) -> None:
    examples = [Example("int f(void) {}", target)] * 3
    with pytest.raises(DataError) as info:
        check_split(examples, "valid.jsonl")
    assert info.value.problems == [
        (0, f"only class {target} ({name}) present: a classifier split needs both classes")]
    check_split(examples, "valid.jsonl", require_both_classes=False)


def test_check_split_rejects_an_empty_split() -> None:
    with pytest.raises(DataError, match="empty split"):
        check_split([], "test.jsonl", require_both_classes=False)


def test_check_split_accepts_both_classes() -> None:
    check_split([Example("a", 0), Example("b", 1)], "train.jsonl")


# --- inspection --------------------------------------------------------------------------------

def test_percentiles_nearest_rank() -> None:
    assert percentiles(list(range(1, 101))) == {"min": 1, "p50": 50, "p90": 90, "p99": 99,
                                                "max": 100}
    assert percentiles([7]) == {"min": 7, "p50": 7, "p90": 7, "p99": 7, "max": 7}
    assert percentiles([]) is None


def test_inspect_counts_duplicates_conflicts_leakage_and_bad_lines(tmp_path: Path) -> None:
    train = write(tmp_path, row("A", 0), row("A", 1), row("B", 0), row("B", 0), row("B", 0),
                  row("C", 1), row("shared", 1), "not json", name="train.jsonl")
    valid = write(tmp_path, row("shared", 0), row("D", 1), row("C", 1), name="valid.jsonl")
    stats = inspect_files([train, valid])
    json.dumps(stats)  # JSON-native
    t, v = stats["files"]
    assert (t["rows"], t["n_safe"], t["n_vulnerable"]) == (7, 4, 3)
    assert t["vulnerable_fraction"] == round(3 / 7, 4)
    assert t["bad_lines"] == 1 and t["problems"][0][0] == 8
    assert t["duplicates"] == {"rows": 5, "groups": 2, "conflicting_groups": 1}
    assert v["duplicates"] == {"rows": 0, "groups": 0, "conflicting_groups": 0}
    assert stats["cross_file_duplicates"] == [
        {"a": str(train), "b": str(valid), "shared_functions": 2}]
    # Pooled: A (0/1), B (0), C (1/1), shared (1/0): four groups, two conflicting.
    assert stats["all"]["duplicates"] == {"rows": 9, "groups": 4, "conflicting_groups": 2}
    assert stats["all"]["rows"] == 10 and stats["all"]["bad_lines"] == 1
    assert t["chars"] == {"min": 1, "p50": 1, "p90": 6, "p99": 6, "max": 6}
    assert "tokens" not in t

    text = format_inspection(stats)
    assert "rows 7: 4 safe, 3 vulnerable (42.86% vulnerable)" in text
    assert "BAD LINES: 1" in text and "line 8: invalid JSON" in text
    assert "duplicate functions: 5 rows in 2 groups, 1 with conflicting labels" in text
    assert "4 duplicate groups, 2 with conflicting labels" in text
    assert "LEAKAGE" in text


def test_inspect_reports_a_missing_file_without_raising(tmp_path: Path) -> None:
    stats = inspect_files([tmp_path / "missing.jsonl"])
    f = stats["files"][0]
    assert f["rows"] == 0 and f["bad_lines"] == 1 and f["vulnerable_fraction"] is None
    assert "cannot read the file" in f["problems"][0][1]
    assert "BAD LINES" in format_inspection(stats)


# --- CodeXGLUE import --------------------------------------------------------------------------

def make_codexglue(tmp_path: Path, n: int = 10, splits: dict[str, list[int]] | None = None
                   ) -> tuple[Path, Path]:
    entries = [{"project": "FFmpeg" if i % 2 else "qemu", "commit_id": f"{i:040x}",
                "target": i % 3 == 0, "func": f"int f{i}(void) {{ return {i}; }}"}
               for i in range(n)]
    function_json = tmp_path / "function.json"
    function_json.write_text(json.dumps(entries), encoding="utf-8")
    split_dir = tmp_path / "split"
    split_dir.mkdir(exist_ok=True)
    splits = splits or {"train": [5, 0, 1, 2, 3, 4], "valid": [6, 7], "test": [9, 8]}
    for name, indices in splits.items():
        (split_dir / f"{name}.txt").write_text("".join(f"{i}\n" for i in indices) + "\n")
    return function_json, split_dir


def test_import_codexglue_writes_splits_in_index_order(tmp_path: Path) -> None:
    function_json, split_dir = make_codexglue(tmp_path)
    counts = import_codexglue(function_json, split_dir, tmp_path / "out")
    assert counts == {"train": 6, "valid": 2, "test": 2}
    lines = (tmp_path / "out/test.jsonl").read_text().splitlines()
    test_rows = [json.loads(line) for line in lines]
    assert [r["idx"] for r in test_rows] == [9, 8]
    assert test_rows[0] == {"idx": 9, "project": "FFmpeg", "commit_id": f"{9:040x}", "target": 1,
                            "func": "int f9(void) { return 9; }"}
    examples = read_examples(tmp_path / "out/train.jsonl")
    assert [e.extra["idx"] for e in examples] == [5, 0, 1, 2, 3, 4]
    assert label_counts(examples) == [4, 2]


def test_import_codexglue_idx_out_of_range(tmp_path: Path) -> None:
    function_json, split_dir = make_codexglue(
        tmp_path, splits={"train": [0, 1], "valid": [2, 10], "test": [3]})
    with pytest.raises(DataError) as info:
        import_codexglue(function_json, split_dir, tmp_path / "out")
    assert info.value.path == str(split_dir / "valid.txt")
    assert info.value.problems == [
        (2, "idx 10 is out of range: function.json has 10 entries (idx 0 to 9)")]
    assert not (tmp_path / "out").exists()  # nothing written on error


def test_import_codexglue_idx_in_two_splits(tmp_path: Path) -> None:
    function_json, split_dir = make_codexglue(
        tmp_path, splits={"train": [0, 1, 2], "valid": [3, 4], "test": [5, 1]})
    with pytest.raises(DataError) as info:
        import_codexglue(function_json, split_dir, tmp_path / "out")
    assert info.value.path == str(split_dir / "test.txt")
    assert info.value.problems == [
        (2, "idx 1 is already in train.txt line 2: a function belongs to one split only")]


def test_import_codexglue_repeated_and_non_integer_idx(tmp_path: Path) -> None:
    function_json, split_dir = make_codexglue(tmp_path)
    (split_dir / "train.txt").write_text("0\n1\n0\nseven\n")
    with pytest.raises(DataError) as info:
        import_codexglue(function_json, split_dir, tmp_path / "out")
    assert info.value.problems == [(3, "idx 0 is repeated (first at line 1)"),
                                   (4, "expected a non-negative integer idx, found 'seven'")]


def test_import_codexglue_missing_split_file(tmp_path: Path) -> None:
    function_json, split_dir = make_codexglue(tmp_path)
    (split_dir / "test.txt").unlink()
    with pytest.raises(DataError, match="test.txt: cannot read the split file"):
        import_codexglue(function_json, split_dir, tmp_path / "out")


def test_import_codexglue_bad_function_json(tmp_path: Path) -> None:
    function_json, split_dir = make_codexglue(tmp_path)
    function_json.write_text(json.dumps({"func": "x", "target": 0}))
    with pytest.raises(DataError, match="expected a JSON array of objects, found an object"):
        import_codexglue(function_json, split_dir, tmp_path / "out")
    function_json.write_text(json.dumps([{"func": "int f(void) {}", "target": 1},
                                         {"func": "", "target": 3}]))
    with pytest.raises(DataError) as info:
        import_codexglue(function_json, split_dir, tmp_path / "out")
    assert info.value.problems == [(0, "idx 1: field `func` is empty or whitespace only; field "
                                       "`target` must be 0, 1, true or false; found 3 (a number)")]


def test_official_split_files_parse_and_are_disjoint(devign: Path, tmp_path: Path) -> None:
    folder = devign / "codexglue_official_split"
    splits = {name: read_split_indices(folder / f"{name}.txt") for name in OFFICIAL_SPLIT_SIZES}
    assert {name: len(idx) for name, idx in splits.items()} == OFFICIAL_SPLIT_SIZES
    together = set().union(*map(set, splits.values()))
    assert together == set(range(27_318))  # disjoint and covering function.json exactly
    # The real import path over a stand-in function.json of the real size.
    entries = [{"func": f"int f{i}(void) {{}}", "target": i % 2} for i in range(27_318)]
    function_json = tmp_path / "function.json"
    function_json.write_text(json.dumps(entries))
    counts = import_codexglue(function_json, folder, tmp_path / "out")
    assert counts == OFFICIAL_SPLIT_SIZES


# --- the real Devign data ----------------------------------------------------------------------

def test_real_devign_valid_reads_cleanly(devign: Path) -> None:
    examples = read_examples(devign / "valid.jsonl")
    assert len(examples) == 2_732
    assert label_counts(examples) == [1_486, 1_246]
    assert set(examples[0].extra) == {"id", "project", "project_index"}
    check_split(examples, devign / "valid.jsonl")


def test_real_devign_has_no_leakage_and_55_conflicting_pairs_in_train_and_valid(
        devign: Path) -> None:
    # PROVENANCE.md counts 60 conflicting pairs over all three splits; the held-out test split
    # holds the other 5, so train + valid show 55 (50 + 5), all pairs, none across files.
    stats = inspect_files([devign / "train.jsonl", devign / "valid.jsonl"])
    train, valid = stats["files"]
    assert (train["rows"], train["n_vulnerable"], train["bad_lines"]) == (21_854, 9_967, 0)
    assert train["duplicates"] == {"rows": 100, "groups": 50, "conflicting_groups": 50}
    assert valid["duplicates"] == {"rows": 10, "groups": 5, "conflicting_groups": 5}
    assert stats["cross_file_duplicates"][0]["shared_functions"] == 0
    assert stats["all"]["duplicates"]["conflicting_groups"] == 55
    assert train["chars"]["min"] == 26 and train["chars"]["max"] == 142_346


# --- CLI -------------------------------------------------------------------------------------

def test_cli_import_codexglue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    function_json, split_dir = make_codexglue(tmp_path)
    out = tmp_path / "out"
    code = run_cli("data", "import-codexglue", str(function_json), "--split-dir", str(split_dir),
                   "--out", str(out))
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["test.jsonl", "train.jsonl", "valid.jsonl"]
    assert "train.jsonl: 6 rows" in capsys.readouterr().out


def test_cli_import_codexglue_error_exits_2(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    function_json, split_dir = make_codexglue(
        tmp_path, splits={"train": [0], "valid": [0], "test": [1]})
    code = run_cli("data", "import-codexglue", str(function_json), "--split-dir", str(split_dir),
                   "--out", str(tmp_path / "out"))
    assert code == 2
    assert "idx 0 is already in train.txt line 1" in capsys.readouterr().err


def test_cli_inspect_text_json_and_exit_codes(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, row("a", 0), row("b", 1), name="good.jsonl")
    bad = write(tmp_path, row("a", 0), row("c", 5), name="bad.jsonl")
    assert run_cli("data", "inspect", str(good)) == 0
    assert "rows 2: 1 safe, 1 vulnerable" in capsys.readouterr().out
    assert run_cli("data", "inspect", str(good), str(bad), "--json") == 1
    stats = json.loads(capsys.readouterr().out)
    assert stats["files"][1]["problems"][0][0] == 2
    assert stats["cross_file_duplicates"][0]["shared_functions"] == 1


def test_cli_data_without_subcommand_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("data") == 2
    assert "import-codexglue" in capsys.readouterr().err


def test_data_layer_imports_stay_light() -> None:
    # The API and CLI import these; torch and transformers load only inside the handlers.
    code = ("import sys, streamguard.datasets, streamguard.cli_data; "
            "print(sorted(m for m in ('torch', 'transformers', 'tokenizers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
