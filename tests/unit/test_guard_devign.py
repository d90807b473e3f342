"""Issue 9 on real data: a first-time user's small Devign run (a few hundred rows, the tiny
model, CPU) is not called `collapsed` unless it had once predicted both classes; and
`streamguard guard replay` reads that stored run back.
"""

from __future__ import annotations

import json
import logging

import pytest

from streamguard.cli import main
from tests.conftest import sample_jsonl

RUN = ["--model", "tiny", "--max-seq-len", "128", "--tokenizer-vocab-size", "2000",
       "--batch-size", "16", "--lr", "5e-4", "--epochs", "3", "--eval-every-steps", "8",
       "--early-stopping-patience", "0", "--no-progress"]


def both_above(record: dict, ratio: float = 0.20) -> bool:
    d = record["prediction_distribution"]
    return (d["predicted_vulnerable"] >= ratio * d["actual_vulnerable"]
            and d["predicted_safe"] >= ratio * d["actual_safe"])


@pytest.mark.slow
def test_small_devign_run_is_never_collapsed_without_having_separated(devign, tmp_path, caplog,
                                                                      capsys):
    caplog.set_level(logging.INFO, logger="streamguard")
    train = sample_jsonl(devign / "train.jsonl", tmp_path / "train.jsonl", 500, seed=1)
    val = sample_jsonl(devign / "valid.jsonl", tmp_path / "val.jsonl", 200, seed=2)
    out = tmp_path / "run"
    code = main(["train", "--train", str(train), "--val", str(val), "--output-dir", str(out),
                 *RUN])
    result = json.loads((out / "result.json").read_text())
    history = result["evaluations"]
    assert [r["step"] for r in history][:3] == [8, 16, 24]  # 32 steps an epoch, 4 evaluations
    assert result["outcome"] in ("completed", "early_stopped", "not_learning"), result["message"]
    assert code == {"not_learning": 9}.get(result["outcome"], 0)
    if result["outcome"] == "not_learning":  # it never predicted both classes above the line
        assert not any(both_above(r) for r in history), history
    else:  # it did, and it ended predicting both
        assert both_above(history[-1])
    assert result["guard_grace_steps"] == 10  # the warmup: 10 % of 96 steps
    # replay the stored run with its own thresholds (its outcome again), then without a grace
    capsys.readouterr()
    assert main(["guard", "replay", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"{len(history)} evaluation(s); guard: warn 30%, stop 20%, "
                             "patience 3, grace 10 step(s)")
    assert len(lines) == 1 + len(history) + 2
    expected = "no stop" if result["outcome"] != "not_learning" else "not_learning at step"
    assert lines[-2].startswith(f"with these thresholds: {expected}"), lines
    assert lines[-1] == f"recorded: {result['outcome']}: {result['message']}"
