"""The `streamguard` command as a user meets it: a fast `--help` that loads no torch, `--version`,
suggestions for mistyped commands, flags and choices, and one-line errors with exit code 2 for
invalid input (missing files, bad `--config`, an unknown hub model, a missing `data inspect`
file). Subprocesses where the exit code and stderr are the contract."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamguard.cli import main
from streamguard.cli_format import train_summary
from streamguard.version import package_version

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "httpx", "sqlalchemy", "celery", "fastapi", "matplotlib")


def streamguard(*argv: str, env: dict[str, str] | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`streamguard ARGV` in a fresh interpreter (this checkout first on the path)."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-c", "import sys; from streamguard.cli import main; "
                           "sys.exit(main())", *argv], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1, proc.stderr  # one line, no traceback, no usage dump
    return proc.stderr


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["submit", "--help"],
                                  ["api", "--help"]])
def test_help_loads_no_heavy_module(argv: list[str]) -> None:
    code = ("import sys\nfrom streamguard.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: streamguard" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "LOADED []"


def test_version() -> None:
    proc = streamguard("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"streamguard {package_version()}"


@pytest.mark.parametrize(("argv", "fragment"), [
    (["trian"], "unknown command 'trian'; did you mean 'train'?"),
    (["data", "inspekt", "x.jsonl"], "unknown command 'inspekt'; did you mean 'inspect'?"),
    (["train", "--modle", "tiny"], "unknown flag --modle; did you mean --model?"),
    # the typo is named, not the required --train it left unset
    (["train", "--trian", "t.jsonl", "--val", "v.jsonl", "--output-dir", "o"],
     "unknown flag --trian; did you mean --train?"),
    (["train", "--train", "t", "--val", "v", "--output-dir", "o", "--selection-metric", "recal"],
     "--selection-metric: invalid choice: 'recal'; did you mean 'recall'?"),
    (["jobs", "--staus", "running"], "did you mean --status?"),
    (["api", "--workers", "0"], "argument --workers: must be at least 1, got 0"),
    (["api", "--wrokers", "2"], "unknown flag --wrokers; did you mean --workers?"),
])
def test_typos_get_a_suggestion_and_exit_2(argv: list[str], fragment: str) -> None:
    err = one_line_error(streamguard(*argv))
    assert fragment in err, err


def test_an_unknown_command_far_from_any_lists_the_commands() -> None:
    err = one_line_error(streamguard("xyzzy"))
    assert "unknown command 'xyzzy'" in err and "train" in err and "submit" in err, err


def _splits(tmp_path: Path) -> tuple[Path, Path]:
    rows = [{"func": "int f(void) { return 0; }", "target": 0},
            {"func": "void g(char *s) { char b[4]; strcpy(b, s); }", "target": 1}]
    train, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    for path in (train, val):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return train, val


def test_missing_and_bad_inputs_are_one_line_errors(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    train, val = _splits(tmp_path)
    base = ["train", "--val", str(val), "--output-dir", str(tmp_path / "out"), "--model", "tiny"]
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"lr": 1e-3,')
    not_object = tmp_path / "list.json"
    not_object.write_text("[1, 2]")
    cases = [
        ([*base, "--train", "/nope/train.jsonl"], "--train /nope/train.jsonl: no such file"),
        ([*base, "--train", str(train), "--test", str(tmp_path)], f"--test {tmp_path}: not a file"),
        ([*base, "--train", str(train), "--config", "/nope/c.json"],
         "--config /nope/c.json: no such file"),
        ([*base, "--train", str(train), "--config", str(bad_json)],
         f"--config {bad_json}: invalid JSON at line 1"),
        ([*base, "--train", str(train), "--config", str(not_object)],
         "must hold a JSON object of TrainConfig fields, found list"),
        (["data", "inspect", str(train), "/nope/missing.jsonl"],
         "/nope/missing.jsonl: no such file"),
        (["data", "import-codexglue", "/nope/function.json", "--split-dir", str(tmp_path),
          "--out", str(tmp_path / "cx")], "/nope/function.json: no such file"),
    ]
    for argv, fragment in cases:
        assert main(argv) == 2, argv
        captured = capsys.readouterr()
        assert fragment in captured.err, (argv, captured.err)
        assert captured.err.startswith("streamguard: error: "), captured.err
        assert "Traceback" not in captured.err and "BAD LINES" not in captured.out
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_a_command_whose_extra_is_missing_names_the_extra(tmp_path: Path) -> None:
    """A client-only or API-only install (no torch) asked to train: which extra to install."""
    train, val = _splits(tmp_path)
    code = ("import sys; sys.modules['torch'] = None  # as if not installed\n"
            "from streamguard.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "train", "--train", str(train), "--val",
                           str(val), "--output-dir", str(tmp_path / "out"), "--model", "tiny"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "`streamguard train` needs torch" in proc.stderr
    assert "pip install 'streamguard[worker]'" in proc.stderr


def test_a_folder_that_is_no_model_is_refused_on_the_model_field(tmp_path: Path) -> None:
    from streamguard.errors import InvalidTrainConfig
    from streamguard.spec import TrainConfig
    from streamguard.training.model import load_model_config, load_tokenizer

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    config = TrainConfig(model="tiny")
    for load in (lambda: load_model_config(str(empty), config), lambda: load_tokenizer(str(empty))):
        with pytest.raises(InvalidTrainConfig) as err:
            load()
        assert err.value.field == "model" and f"cannot load {str(empty)!r}" in err.value.message


@pytest.mark.slow  # a subprocess that imports torch and transformers (~10-20 s here)
def test_an_unknown_hub_model_is_refused_by_name(tmp_path: Path) -> None:
    train, val = _splits(tmp_path)
    proc = streamguard("train", "--train", str(train), "--val", str(val), "--output-dir",
                       str(tmp_path / "out"), "--model", "nosuch-org/nosuch-model",
                       env={"HF_HUB_OFFLINE": "1"}, timeout=180)
    err = one_line_error(proc)
    assert "model: cannot load 'nosuch-org/nosuch-model'" in err, err
    assert "scratch model (" in err and "tiny" in err  # what would have been accepted


def test_db_upgrade_migrates_from_the_packaged_scripts(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    import sqlite3

    from streamguard.db.migrate import migrations_dir

    assert (migrations_dir() / "env.py").is_file()
    assert main(["db", "upgrade", "--data-dir", str(tmp_path / "sg")]) == 0
    assert "migrated to head" in capsys.readouterr().out
    with sqlite3.connect(tmp_path / "sg" / "streamguard.db") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "epoch_metrics", "alembic_version"} <= tables, tables


def test_train_summary_names_the_result_best_epoch_and_paths() -> None:
    dist = {"predicted_vulnerable": 5, "predicted_safe": 5, "actual_vulnerable": 4,
            "actual_safe": 6}
    history = [{"epoch": e, "train_loss": 0.7, "val_loss": 0.69, "accuracy": 0.6, "f1": f1,
                "mcc": 0.1, "roc_auc": 0.6, "prediction_distribution": dist, "is_best": best}
               for e, f1, best in ((1, 0.5, True), (2, 0.4, False))]
    payload = {"outcome": "completed", "message": "completed 2 epoch(s)", "best_epoch": 1,
               "best_metric": 0.5, "config": {"selection_metric": "f1"},
               "checkpoints": {"best": "runs/a/checkpoints/best"}, "model_dir": "runs/a/model",
               "test_metrics": None}
    text = "\n".join(train_summary(payload, history, Path("runs/a")))
    assert "epoch  train_loss" in text
    rows = [line for line in text.splitlines() if line.lstrip().startswith(("1 ", "2 "))]
    assert len(rows) == 2 and rows[0].endswith("best") and not rows[1].endswith("best")
    assert "outcome:         completed: completed 2 epoch(s)" in text
    assert "best:            epoch 1, f1 0.5000" in text
    assert "best checkpoint: runs/a/checkpoints/best" in text
    assert "model:           runs/a/model" in text


@pytest.mark.slow
def test_train_to_files_has_no_progress_frames_and_ends_with_the_result(tmp_path: Path) -> None:
    """stdout/stderr are files, not a terminal: plain lines only (no `\\r` bar frames), then the
    epoch table and the result block."""
    from streamguard.synth import synth_examples, write_jsonl

    for split, n, seed in (("train", 64, 0), ("val", 32, 1)):
        write_jsonl(synth_examples(n, seed=seed, vulnerable_fraction=0.5,
                                   id_prefix=split), tmp_path / f"{split}.jsonl")
    out = tmp_path / "run"
    with open(tmp_path / "stdout.log", "w") as so, open(tmp_path / "stderr.log", "w") as se:
        proc = subprocess.run(
            [sys.executable, "-c", "import sys; from streamguard.cli import main; "
             "sys.exit(main())", "train", "--train", str(tmp_path / "train.jsonl"),
             "--val", str(tmp_path / "val.jsonl"), "--output-dir", str(out), "--model", "tiny",
             "--max-seq-len", "32", "--tokenizer-vocab-size", "300", "--batch-size", "16",
             "--epochs", "2", "--lr", "1e-3", "--device", "cpu"],
            stdout=so, stderr=se, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=300)
    stdout = (tmp_path / "stdout.log").read_text()
    stderr = (tmp_path / "stderr.log").read_text()
    assert proc.returncode in (0, 3, 9), stdout + stderr  # any guarded outcome; not a crash
    assert "\r" not in stdout and "\r" not in stderr
    result = json.loads((out / "result.json").read_text())
    assert f"outcome:         {result['outcome']}" in stdout
    assert "epoch  train_loss" in stdout
    if result["best_epoch"] is not None:
        assert f"best checkpoint: {out / 'checkpoints' / 'best'}" in stdout
        assert f"model:           {out / 'model'}" in stdout
