"""Predictions end to end against `streamguard up --no-demo` (uvicorn, a training worker and an
inference worker; SQLite, file:// store, filesystem broker): a tiny job trains on generated C
functions (1,600 / 200 / 200 rows, 2 epochs), then

- `POST /v1/jobs/{id}/predict` on the validation functions answers probabilities whose counts
  at 0.5 are exactly the best epoch's recorded prediction distribution and confusion matrix,
  and that equal (1e-5) the trainer's own evaluation path run on the downloaded checkpoint;
- `streamguard predict --model job:ID val.jsonl` answers the same probabilities;
- a queued and a cancelled job answer 409, another tenant 404, 65 functions / none / an
  oversized one 422;
- the API process never loaded torch (its mapped libraries), the inference worker did.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from streamguard.predict import MAX_FUNCTION_BYTES, MAX_FUNCTIONS
from tests.e2e.harness import VENV_BIN, Proc, base_env, child_pids, free_port
from tests.integration.client_fixtures import jsonl, split_rows

pytestmark = pytest.mark.integration

KEY_LINE = re.compile(r"API key for tenant 'dev': (\S+)")
SPLITS = {"train": 1600, "val": 200, "test": 200}
CONFIG = {"model": "tiny", "max_seq_len": 64, "tokenizer_vocab_size": 1000, "batch_size": 16,
          "lr": 1e-3, "epochs": 2, "early_stopping_patience": 0}
FINISHED = {"completed", "early_stopped"}
TERMINAL = FINISHED | {"collapsed", "not_learning", "non_finite_loss", "cancelled", "failed",
                       "timed_out"}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Proc, Path]]:
    """`streamguard up --no-demo`; (url, key, process, data dir)."""
    tmp = tmp_path_factory.mktemp("predict_service")
    data_dir, port = tmp / "sg", free_port()
    up = Proc("streamguard-up", [str(VENV_BIN / "streamguard"), "up", "--no-demo",
                                 "--port", str(port), "--data-dir", str(data_dir)],
              base_env(), tmp / "up.log", capture_stdout=True)
    try:
        line = up.wait_for_output(lambda text: KEY_LINE.search(text) is not None, 180)
        match = KEY_LINE.search(line)
        assert match is not None
        yield f"http://127.0.0.1:{port}", match.group(1), up, data_dir
    except BaseException:
        for name in ("api", "worker", "inference"):
            log = data_dir / "logs" / f"{name}.log"
            text = log.read_text(errors="replace") if log.exists() else "(no log)"
            print(f"\n===== {name} =====\n" + "\n".join(text.splitlines()[-60:]))  # noqa: T201
        print(f"\n===== up =====\n{up.tail(60)}")  # noqa: T201
        raise
    finally:
        up.stop()


def upload(client: httpx.Client, split: str) -> str:
    response = client.post("/v1/datasets", data={"name": f"predict-{split}"},
                           files={"file": (f"{split}.jsonl", jsonl(split_rows(split,
                                                                              SPLITS[split])),
                                           "application/x-ndjson")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def predict(client: httpx.Client, job_id: str, functions: list[str]) -> list[dict[str, Any]]:
    """Every function's item, in order, in requests of at most MAX_FUNCTIONS."""
    items: list[dict[str, Any]] = []
    for start in range(0, len(functions), MAX_FUNCTIONS):
        response = client.post(f"/v1/jobs/{job_id}/predict",
                               json={"functions": functions[start:start + MAX_FUNCTIONS]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["job_id"] == job_id and len(body["items"]) == len(
            functions[start:start + MAX_FUNCTIONS])
        items += [{**item, "threshold": body["threshold"], "checkpoint": body["checkpoint"]}
                  for item in body["items"]]
    return items


def wait_terminal(client: httpx.Client, job_id: str, up: Proc, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = str(client.get(f"/v1/jobs/{job_id}").json()["status"])
        if status in TERMINAL:
            return status
        up.check_alive()
        time.sleep(1.0)
    raise AssertionError(f"job {job_id} not finished after {timeout_s:.0f} s")


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    error: dict[str, Any] = response.json()["error"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    return error


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def child_with(up: Proc, needle: str) -> int:
    pids = [pid for pid in child_pids(up.pid)
            if needle in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")]
    assert len(pids) == 1, (needle, pids)
    return pids[0]


def worker_evaluation(folder: Path, rows: list[dict[str, Any]]) -> list[float]:
    """p(vulnerable) through the trainer's own loaders and forward pass (run.py, loop.py)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from streamguard.spec import TrainConfig
    from streamguard.training.data import make_loader, tokenize

    config = TrainConfig(**json.loads((folder / "train_config.json").read_text()))
    tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    loader = make_loader(tokenize(tokenizer, [r["func"] for r in rows],
                                  [r["target"] for r in rows], config.max_seq_len),
                         config.effective_eval_batch_size, pad_id=int(tokenizer.pad_token_id),
                         # in the rows' order: the trainer's evaluation sorts by length
                         # (group_by_length), which changes no probability, only their order
                         shuffle=False, group_by_length=False, seed=config.seed)
    probs: list[float] = []
    with torch.inference_mode():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
            probs += torch.softmax(logits.float(), dim=-1)[:, 1].tolist()
    return probs


@pytest.mark.timeout(360)
def test_predictions_match_the_workers_evaluation(service: tuple[str, str, Proc, Path],
                                                  tmp_path: Path) -> None:
    url, key, up, data_dir = service
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60.0) as client:
        refs = {split: {"dataset_id": upload(client, split)} for split in SPLITS}
        response = client.post("/v1/jobs", json={"name": "predict", "datasets": refs,
                                                 "config": CONFIG})
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]

        # --- refusals while the job trains ------------------------------------------------
        queued = client.post("/v1/jobs", json={"name": "queued", "datasets": refs,
                                               "config": CONFIG}).json()["id"]
        error = error_of(client.post(f"/v1/jobs/{queued}/predict",
                                     json={"functions": ["int f;"]}), 409)
        assert "finished with a model" in error["message"], error
        assert client.post(f"/v1/jobs/{queued}/cancel").status_code in (200, 202)
        assert wait_terminal(client, queued, up, 60) == "cancelled"
        error_of(client.post(f"/v1/jobs/{queued}/predict", json={"functions": ["int f;"]}), 409)
        for body, field in (({"functions": ["int f;"] * (MAX_FUNCTIONS + 1)}, "functions"),
                            ({"functions": []}, "functions"),
                            ({"functions": ["x" * (MAX_FUNCTION_BYTES + 1)]}, "functions.0"),
                            ({"functions": ["é" * (MAX_FUNCTION_BYTES // 2 + 1)]},
                             "functions.0"),
                            ({"functions": ["int f;\n", "int g;\x00"]}, "functions.1")):
            error = error_of(client.post(f"/v1/jobs/{job_id}/predict", json=body), 422)
            assert error["field"] == field, error
        other = subprocess.run([str(VENV_BIN / "streamguard"), "keys", "create", "--tenant",
                                "other", "--data-dir", str(data_dir)], env=base_env(),
                               capture_output=True, text=True, timeout=60, check=True)
        other_key = other.stdout.strip().splitlines()[-1]

        status = wait_terminal(client, job_id, up, 240)
        assert status in FINISHED, client.get(f"/v1/jobs/{job_id}").json()
        best = next(c for c in client.get(f"/v1/jobs/{job_id}/checkpoints").json()["items"]
                    if c["name"] == "best")

        # --- (a) the API against the recorded evaluation of the best epoch ------------------
        val = split_rows("val", SPLITS["val"])
        items = predict(client, job_id, [r["func"] for r in val])
        assert items[0]["checkpoint"] == {"name": "best", "epoch": best["epoch"],
                                          "sha256": best["sha256"]}
        threshold = items[0]["threshold"]
        confusion = [[0, 0], [0, 0]]
        for row, item in zip(val, items, strict=True):
            assert item["label"] == int(item["probability"] >= threshold)
            assert item["label_name"] == ("vulnerable" if item["label"] else "safe")
            confusion[row["target"]][int(item["probability"] >= 0.5)] += 1
        recorded = best["metrics"]
        assert recorded["confusion_matrix"] == {
            "true_negative": confusion[0][0], "false_positive": confusion[0][1],
            "false_negative": confusion[1][0], "true_positive": confusion[1][1]}
        assert recorded["prediction_distribution"] == {
            "predicted_vulnerable": confusion[0][1] + confusion[1][1],
            "predicted_safe": confusion[0][0] + confusion[1][0],
            "actual_vulnerable": sum(confusion[1]), "actual_safe": sum(confusion[0])}
        if recorded.get("brier") is not None:  # p itself, not only the side of 0.5
            brier = sum((i["probability"] - r["target"]) ** 2
                        for r, i in zip(val, items, strict=True)) / len(val)
            assert brier == pytest.approx(recorded["brier"], abs=1e-6)

        # --- (b) the CLI with job:ID, and the trainer's own evaluation path ----------------
        val_file = tmp_path / "val.jsonl"
        val_file.write_bytes(jsonl(val))
        out, cache = tmp_path / "scored.jsonl", tmp_path / "cache"
        env = {**base_env(), "STREAMGUARD_CACHE_DIR": str(cache)}
        cli = subprocess.run([str(VENV_BIN / "streamguard"), "predict", "--model",
                              f"job:{job_id}", str(val_file), "--out", str(out), "--url", url,
                              "--api-key", key, "--device", "cpu"],
                             env=env, capture_output=True, text=True, timeout=120)
        assert cli.returncode == 0, cli.stderr[-2000:]
        scored = [json.loads(line) for line in out.read_text().splitlines()]
        assert [s["id"] for s in scored] == [r["id"] for r in val]
        assert [s["probability"] for s in scored] == pytest.approx(
            [i["probability"] for i in items], abs=1e-5)
        assert [(s["label"], s["threshold"]) for s in scored] == [
            (i["label"], threshold) for i in items]
        (folder,) = (cache / "models").iterdir()
        assert folder.name == f"{job_id}-{best['sha256'][:16]}"
        assert worker_evaluation(folder, val) == pytest.approx(
            [i["probability"] for i in items], abs=1e-5)

        # --- (c) another tenant's job is not found -----------------------------------------
        error_of(client.post(f"/v1/jobs/{job_id}/predict", json={"functions": ["int f;"]},
                             headers={"Authorization": f"Bearer {other_key}"}), 404)

    # --- (d) the API process never loaded torch; the inference worker did --------------------
    api_pid = child_with(up, "streamguard\x00api\x00")  # `python -m streamguard api ...`
    assert "libtorch" not in mapped_libraries(api_pid)
    assert "/torch/" not in mapped_libraries(api_pid)
    assert "libtorch" in mapped_libraries(child_with(up, "worker.inference"))
    assert os.path.exists(data_dir / "inference-results.db")
