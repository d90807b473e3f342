"""Regenerate docs/img/mlflow-run-*.png: a StreamGuard run in the MLflow UI.

    .venv/bin/python scripts/mlflow_screenshot.py [--devign ../shared/data/devign]

What it does, all on this machine: samples real Devign (the e2e tests' tiny job: train 3,000
rows, validation 300, test 200), starts a local `mlflow server` (SQLite backend, local
artifacts, a free loopback port), runs `streamguard train --tracker mlflow --mlflow-uri ...`
on the sample (about two minutes on 2 cores), then opens the run's pages in Debian's Chromium
through Playwright (never `playwright install`) and saves the charts of its metrics and its
artifacts (the model directory, the guard's warnings). The server is stopped at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
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
sys.path.insert(0, str(ROOT))
# the e2e tests' tiny job (its samples and flags): it predicts both classes from epoch 1
from tests.e2e.harness import free_port, make_splits  # noqa: E402

TRAIN_FLAGS = ["--model", "tiny", "--max-seq-len", "64", "--tokenizer-vocab-size", "2000",
               "--batch-size", "16", "--lr", "1e-3", "--epochs", "2",
               "--early-stopping-patience", "0", "--no-progress", "--no-cache"]


def say(text: str) -> None:
    print(f"mlflow_screenshot: {text}", flush=True)  # noqa: T201


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


#: The charts shown: per epoch F1 and the prediction distribution (what the collapse guard
#: watches), per logged step the training loss and the learning rate.
CHARTS = "epoch/f1|epoch/pred_vulnerable|epoch/pred_safe|step/train_loss|step/lr"


def screenshot(uri: str, experiment_id: str, run_id: str, out_dir: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise SystemExit(f"Chromium missing at {CHROMIUM}: apt-get install chromium")
    run_url = f"{uri}/#/experiments/{experiment_id}/runs/{run_id}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                    headless=True)
        page = browser.new_page(viewport={"width": 1440, "height": 1020})
        search = page.get_by_placeholder("Search metric charts")
        page.goto(f"{run_url}/model-metrics", timeout=120_000)
        search.wait_for(timeout=120_000)
        # MLflow 3 opens in its GenAI view; the classic "Model training" view is the one for
        # a training run (the choice is kept in the browser, then the page is opened again)
        toggle = page.get_by_text("Model training", exact=True)
        if toggle.count():
            toggle.first.click()
            page.wait_for_timeout(1000)
            page.goto(f"{run_url}/model-metrics", timeout=120_000)
            search.wait_for(timeout=120_000)
        close = page.locator("button[aria-label='Close']")  # the assistant's side panel
        if close.count():
            close.first.click()
        search.fill(CHARTS)
        page.get_by_text("pred_vulnerable", exact=True).first.wait_for(timeout=60_000)
        page.wait_for_timeout(4000)  # the charts draw after their data arrives
        metrics = out_dir / "mlflow-run-metrics.png"
        page.screenshot(path=str(metrics))

        page.set_viewport_size({"width": 1440, "height": 470})
        page.goto(f"{run_url}/artifacts", timeout=120_000)
        page.get_by_text("model", exact=True).first.click(timeout=120_000)
        page.get_by_text("model.safetensors").first.wait_for(timeout=60_000)
        guard = page.get_by_text("guard", exact=True)  # present when the guard warned
        if guard.count():
            guard.first.click()
            page.get_by_text("warnings.txt", exact=True).first.click(timeout=60_000)
            page.get_by_text("WARNING").first.wait_for(timeout=60_000)
        page.wait_for_timeout(1500)
        artifacts = out_dir / "mlflow-run-artifacts.png"
        page.screenshot(path=str(artifacts))
        browser.close()
    return [metrics, artifacts]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devign", type=Path, default=ROOT.parent / "shared" / "data" / "devign")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work folder to keep (server database, run) [a temporary one]")
    parser.add_argument("--reuse", action="store_true",
                        help="the --keep folder already holds a run: only take the pictures")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = (args.keep or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        server, uri = start_server(work)
        say(f"mlflow server at {uri}")
        try:
            out = work / "devign-tiny"
            if not args.reuse:
                data = make_splits(args.devign, work)
                subprocess.run(
                    [str(VENV_BIN / "streamguard"), "train", "--train", str(data["train"]),
                     "--val", str(data["val"]), "--test", str(data["test"]), "--output-dir",
                     str(out), *TRAIN_FLAGS, "--tracker", "mlflow", "--mlflow-uri", uri],
                    check=True,
                    env={**os.environ, "SG_TRACKERS__MLFLOW_EXPERIMENT": "streamguard"})
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
