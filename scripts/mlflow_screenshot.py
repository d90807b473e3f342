"""Regenerate docs/img/mlflow-*.png: a StreamGuard run in the MLflow UI.

    .venv/bin/python scripts/mlflow_screenshot.py [--devign ../shared/data/devign]

What it does, all on this machine: samples real Devign (the e2e tests' tiny job: train 3,000
rows, validation 300, test 200), starts a local `mlflow server` (SQLite backend, local
artifacts, a free loopback port), runs `streamguard train --tracker mlflow --mlflow-uri ...`
on the sample (about a minute on 2 cores), then opens the run's pages in Debian's Chromium
through Playwright (never `playwright install`) and saves the charts of its metrics and its
overview (params, tags, the model's artifacts). The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
CHROMIUM = Path(os.environ.get("STREAMGUARD_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: the e2e tests' tiny job (tests/e2e/harness.py): it predicts both classes from epoch 1
SPLITS = {"train": ("train.jsonl", 3000, 1), "val": ("valid.jsonl", 300, 2),
          "test": ("valid.jsonl", 200, 3)}
TRAIN_FLAGS = ["--model", "tiny", "--max-seq-len", "64", "--tokenizer-vocab-size", "2000",
               "--batch-size", "16", "--lr", "1e-3", "--epochs", "2",
               "--early-stopping-patience", "0", "--no-progress", "--no-cache"]


def say(text: str) -> None:
    print(f"mlflow_screenshot: {text}", flush=True)  # noqa: T201


def sample(src: Path, dst: Path, n: int, seed: int) -> Path:
    """A deterministic, class-stratified sample of n rows (as tests/conftest.py draws it)."""
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (folder / "mlflow-server.log").open("wb")
    process = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
         "--artifacts-destination", str(folder / "mlartifacts")],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"mlflow server exited; see {folder / 'mlflow-server.log'}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return process, uri
        except OSError:
            time.sleep(0.5)
    stop_server(process)
    raise SystemExit("mlflow server not ready after 180 s")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=wait_s)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def screenshot(uri: str, experiment_id: str, run_id: str, out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise SystemExit(f"Chromium missing at {CHROMIUM}: apt-get install chromium")
    run_url = f"{uri}/#/experiments/{experiment_id}/runs/{run_id}"
    saved = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        for name, url, ready in (
                ("mlflow-run-metrics.png", f"{run_url}/model-metrics", "epoch/f1"),
                ("mlflow-run-overview.png", run_url, "effective.lr")):
            page.goto(url, wait_until="networkidle", timeout=120_000)
            page.get_by_text(ready).first.wait_for(timeout=120_000)
            page.wait_for_timeout(3000)  # the charts draw after their data arrives
            path = out_dir / name
            page.screenshot(path=str(path))
            saved.append(path)
        browser.close()
    return saved


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devign", type=Path, default=ROOT.parent / "shared" / "data" / "devign")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work folder to keep (server database, run) [a temporary one]")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.keep or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        data = {split: sample(args.devign / src, work / f"{split}.jsonl", n, seed)
                for split, (src, n, seed) in SPLITS.items()}
        server, uri = start_server(work)
        say(f"mlflow server at {uri}")
        try:
            out = work / "devign-tiny"
            subprocess.run(
                [str(VENV_BIN / "streamguard"), "train", "--train", str(data["train"]),
                 "--val", str(data["val"]), "--test", str(data["test"]), "--output-dir",
                 str(out), *TRAIN_FLAGS, "--tracker", "mlflow", "--mlflow-uri", uri],
                check=True, env={**os.environ, "SG_TRACKERS__MLFLOW_EXPERIMENT": "streamguard"})
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=uri)
            experiment = client.get_experiment_by_name("streamguard")
            assert experiment is not None, "no streamguard experiment"
            (run,) = client.search_runs([experiment.experiment_id], max_results=1)
            say(f"run {run.info.run_id}: {run.info.status}, "
                f"{len(run.data.metrics)} metrics, {len(run.data.params)} params")
            args.out_dir.mkdir(parents=True, exist_ok=True)
            for path in screenshot(uri, experiment.experiment_id, run.info.run_id,
                                   args.out_dir):
                say(f"wrote {path}")
        finally:
            stop_server(server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
