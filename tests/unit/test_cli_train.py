"""`streamguard train` on real Devign data, and its refusals of bad input (exit codes, messages)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamguard.cli import main

TINY = ["--model", "tiny", "--max-seq-len", "64", "--tokenizer-vocab-size", "2000",
        "--batch-size", "16", "--lr", "1e-3", "--epochs", "2", "--no-progress"]


@pytest.mark.slow
def test_train_on_real_devign_sample(devign_sample, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="streamguard")
    out = tmp_path / "run"
    code = main(["train", "--train", str(devign_sample["train"]), "--val",
                 str(devign_sample["val"]), "--test", str(devign_sample["test"]),
                 "--output-dir", str(out), *TINY])
    printed = caplog.text
    assert code == 0, printed
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    for row in rows:  # both classes predicted every epoch
        dist = row["prediction_distribution"]
        assert dist["predicted_vulnerable"] > 0 and dist["predicted_safe"] > 0, dist
        assert dist["actual_vulnerable"] + dist["actual_safe"] == 300
        for key in ("train_loss", "val_loss", "accuracy", "precision", "recall", "f1", "mcc",
                    "lr"):
            assert isinstance(row[key], float), key
    assert "predicted vulnerable" in printed and "class weights" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["outcome"] == "completed" and result["best_epoch"] in (1, 2)
    assert result["test_metrics"]["prediction_distribution"]["actual_vulnerable"] + \
        result["test_metrics"]["prediction_distribution"]["actual_safe"] == 200
    for name in ("best", "last"):
        folder = out / "checkpoints" / name
        assert (folder / "model.safetensors").is_file()
        torch.load(folder / "training_state.pt", weights_only=True)
    assert (out / "model" / "config.json").is_file()


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GOOD = '{"func": "int f(void) { return 0; }", "target": 0}\n' \
       '{"func": "void g(char *s) { char b[4]; strcpy(b, s); }", "target": 1}\n'


@pytest.mark.parametrize(("train_text", "fragment"), [
    ('{"func": "int f(){}", "target": 0}\nnot json\n', "line 2: invalid JSON"),
    ('{"func": "int f(){}"}\n', "line 1: missing field `target`"),
    ('{"func": "int f(){}", "target": 2}\n',
     "line 1: field `target` must be 0, 1, true or false; found 2"),
    ('{"func": "   ", "target": 1}\n', "line 1: field `func` is empty"),
    ('{"func": "int f(){}", "target": 0}\n{"func": "int g(){}", "target": 0}\n',
     "only class 0"),
])
def test_bad_data_is_refused_before_training(tmp_path, capsys, train_text, fragment):
    train = write(tmp_path / "train.jsonl", train_text)
    val = write(tmp_path / "val.jsonl", GOOD)
    code = main(["train", "--train", str(train), "--val", str(val), "--output-dir",
                 str(tmp_path / "out"), *TINY])
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(("flag", "value", "fragment"), [
    ("--lr", "nan", "lr:"), ("--lr", "0", "lr:"), ("--batch-size", "0", "batch_size:"),
    ("--warmup-ratio", "1.5", "warmup_ratio:"), ("--max-seq-len", "600000", "max_seq_len:"),
])
def test_bad_config_exits_non_zero_naming_the_field(tmp_path, flag, value, fragment):
    train = write(tmp_path / "train.jsonl", GOOD)
    proc = subprocess.run([sys.executable, "-m", "streamguard.cli", "train", "--train",
                           str(train), "--val", str(train), "--output-dir",
                           str(tmp_path / "out"), "--model", "tiny", flag, value],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert fragment in proc.stderr and "allowed" in proc.stderr, proc.stderr


def test_unknown_enum_is_refused_by_the_parser(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "streamguard.cli", "train", "--train", "x",
                           "--val", "x", "--output-dir", str(tmp_path), "--mixed-precision",
                           "fp8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'fp8'" in proc.stderr


def test_train_help_lists_every_config_field_with_its_text(capsys):
    """Help is generated from TrainConfig's descriptions; argparse %-formats it, so a literal
    "%" in a description ("~30 % more compute") once crashed `--help`."""
    from streamguard.spec import TrainConfig

    with pytest.raises(SystemExit) as exit_:
        main(["train", "--help"])
    assert exit_.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    for name, info in TrainConfig.model_fields.items():
        assert "--" + name.replace("_", "-") in shown
        assert " ".join((info.description or "").split())[:40] in shown, name
    assert "% more compute" in shown
