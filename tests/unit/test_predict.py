"""`streamguard.predict.Predictor`, `streamguard predict`'s input parsing and output, and the
inference worker's task body (model cache, sha256 check) on a tiny random model: CPU only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

from streamguard.cli import main
from streamguard.cli_predict import InputRow, parse_jsonl, read_inputs
from streamguard.contract import MODEL_META_FILE, checkpoint_pointer_key, job_prefix
from streamguard.errors import CheckpointError, DataError
from streamguard.predict import Predictor, read_model_facts, unpack_model_archive
from streamguard.sinks import ListSink
from streamguard.spec import TrainConfig
from streamguard.storage import LocalArtifactStore
from streamguard.synth import synth_examples
from streamguard.training.data import make_loader, tokenize
from streamguard.training.loop import evaluate
from streamguard.training.model import build_scratch
from streamguard.training.publish import CheckpointPublisher, write_model_archive

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = TrainConfig(model="tiny", max_seq_len=48, tokenizer_vocab_size=400, batch_size=8)
ROWS = synth_examples(40, seed=5, id_prefix="val")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny RoBERTa saved like a checkpoint folder (model, tokenizer, train config)."""
    torch.manual_seed(0)
    model, tokenizer = build_scratch(CONFIG, [r["func"] for r in synth_examples(60, seed=0)])
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "train_config.json").write_text(CONFIG.model_dump_json())
    return folder


def worker_probabilities(folder: Path, funcs: list[str], labels: list[int]
                         ) -> tuple[list[float], list[list[int]]]:
    """What the training loop's evaluation sees: run.py's loader, then `loop.evaluate`."""
    predictor = Predictor(folder, device="cpu")
    model, tokenizer = predictor.model, predictor.tokenizer
    loader = make_loader(tokenize(tokenizer, funcs, labels, CONFIG.max_seq_len),
                         CONFIG.effective_eval_batch_size, pad_id=int(tokenizer.pad_token_id),
                         # in the rows' order (the trainer sorts evaluation by length, which
                         # changes no probability, only their order)
                         shuffle=False, group_by_length=False, seed=CONFIG.seed)
    probs: list[float] = []
    with torch.inference_mode():
        for batch in loader:
            logits = model(input_ids=batch["input_ids"],
                           attention_mask=batch["attention_mask"]).logits
            probs += torch.softmax(logits.float(), dim=-1)[:, 1].tolist()
    metrics = evaluate(model, loader, torch.nn.CrossEntropyLoss(), torch.device("cpu"),
                       nullcontext())
    return probs, metrics.confusion


# --- Predictor ---------------------------------------------------------------------------------

def test_probabilities_match_the_evaluation_path(model_dir: Path) -> None:
    funcs, labels = [r["func"] for r in ROWS], [r["target"] for r in ROWS]
    expected, confusion = worker_probabilities(model_dir, funcs, labels)
    predictor = Predictor(model_dir, device="cpu", batch_size=7)  # other batches, other order
    got = predictor.predict(funcs)
    assert predictor.threshold == 0.5 and predictor.max_seq_len == CONFIG.max_seq_len
    assert [p.probability for p in got] == pytest.approx(expected, abs=1e-6)
    recount = [[0, 0], [0, 0]]
    for label, p in zip(labels, got, strict=True):
        recount[label][p.label] += 1
        assert p.label_name == ("vulnerable" if p.label else "safe")
    assert recount == confusion  # the recorded confusion matrix, recomputed from predictions


def test_batches_and_repeats_give_the_same_answer(model_dir: Path) -> None:
    funcs = [r["func"] for r in ROWS[:9]] + ["", "x" * 5000]
    predictor = Predictor(model_dir, device="cpu", batch_size=1)
    one = [p.probability for p in predictor.predict(funcs)]
    predictor.batch_size = 4
    calls: list[int] = []
    four = [p.probability for p in predictor.predict(funcs, on_batch=calls.append)]
    assert four == pytest.approx(one, abs=1e-6) and sum(calls) == len(funcs)
    assert [p.probability for p in predictor.predict(funcs)] == four  # deterministic
    assert predictor.predict([]) == []


def test_threshold_and_max_seq_len_come_from_the_model_facts(model_dir: Path,
                                                             tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "exported"
    shutil.copytree(model_dir, folder)
    funcs = [r["func"] for r in ROWS]
    probs = sorted(p.probability for p in Predictor(folder).predict(funcs))
    threshold = probs[len(probs) // 2]  # the median: both labels occur
    (folder / MODEL_META_FILE).write_text(json.dumps({"threshold": threshold,
                                                      "max_seq_len": 16}))
    predictor = Predictor(folder, device="cpu")
    assert predictor.threshold == threshold and predictor.max_seq_len == 16
    got = predictor.predict(funcs)
    assert all(p.label == int(p.probability >= threshold) for p in got)
    assert {p.label for p in got} == {0, 1}

    (folder / MODEL_META_FILE).write_text(json.dumps({"threshold": 1.5}))
    with pytest.raises(CheckpointError, match="threshold 1.5"):
        read_model_facts(folder)
    (folder / MODEL_META_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        read_model_facts(folder)
    with pytest.raises(CheckpointError, match="no config.json"):
        Predictor(tmp_path)


def test_model_archive_unpacks_into_a_loadable_model(model_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "model.tar.gz"
    write_model_archive(model_dir, archive)
    folder = unpack_model_archive(archive, tmp_path / "unpacked")
    assert (folder / "config.json").is_file() and not list(tmp_path.glob(".unpacked-*"))
    funcs = [r["func"] for r in ROWS[:5]]
    assert [p.probability for p in Predictor(folder).predict(funcs)] == pytest.approx(
        [p.probability for p in Predictor(model_dir).predict(funcs)], abs=1e-7)
    with pytest.raises(CheckpointError, match="not a model archive"):
        import tarfile

        bad = tmp_path / "bad.tar.gz"
        with tarfile.open(bad, "w:gz") as tar:
            tar.add(model_dir / "config.json", arcname="config.json")
        unpack_model_archive(bad, tmp_path / "never")
    assert not (tmp_path / "never").exists()


# --- inputs and the command --------------------------------------------------------------------

def test_jsonl_rows_keep_their_fields_and_bad_lines_are_named(tmp_path: Path) -> None:
    rows = parse_jsonl('{"id": 7, "func": "int f;", "project": "x"}\n\n{"func": "g"}\n', "a")
    assert rows == [InputRow({"id": 7, "func": "int f;", "project": "x"}, "int f;"),
                    InputRow({"func": "g"}, "g")]
    text = '{"func": "ok"}\n{"id": 2}\nnot json\n[1, 2]\n{"func": 3}\n{"func": "a\\ud800"}\n'
    with pytest.raises(DataError) as err:
        parse_jsonl(text, "in.jsonl")
    assert [line for line, _ in err.value.problems] == [2, 3, 4, 5, 6]
    assert "in.jsonl: 5 bad line(s)" in err.value.message
    assert "line 6: `func` is not valid Unicode" in err.value.message
    assert "line 2: no string `func`" in err.value.message
    assert "line 3: not JSON" in err.value.message
    with pytest.raises(DataError, match="no rows"):
        parse_jsonl("\n\n", "empty.jsonl")


def test_source_files_are_one_function_each(tmp_path: Path) -> None:
    c_file = tmp_path / "parse.c"
    c_file.write_text("int parse(char *s) {\n\treturn s[0];\n}\n")
    (tmp_path / "rows.jsonl").write_text('{"id": "a", "func": "void g(void) {}"}\n')
    rows = read_inputs([str(c_file), str(tmp_path / "rows.jsonl")])
    assert rows[0] == InputRow({"file": str(c_file)}, c_file.read_text())
    assert rows[1].fields == {"id": "a", "func": "void g(void) {}"}
    (tmp_path / "x.py").write_text("print()")
    with pytest.raises(DataError, match=r"unsupported file type '\.py'; accepted: .*\.c"):
        read_inputs([str(tmp_path / "x.py")])
    (tmp_path / "empty.h").write_text("  \n")
    with pytest.raises(DataError, match="empty.h: the file is empty"):
        read_inputs([str(tmp_path / "empty.h")])
    (tmp_path / "latin.c").write_bytes(b"int caf\xe9;")
    with pytest.raises(DataError, match="latin.c: not UTF-8"):
        read_inputs([str(tmp_path / "latin.c")])
    with pytest.raises(DataError, match="missing.c: cannot read"):
        read_inputs([str(tmp_path / "missing.c")])


def test_predict_command_writes_jsonl(model_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # bars are drawn on terminals only
    rows = tmp_path / "val.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:6]))
    c_file = tmp_path / "one.c"
    c_file.write_text(ROWS[6]["func"])
    out = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(model_dir), str(rows), str(c_file), "--out",
                 str(out), "--batch-size", "4", "--device", "cpu"]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    expected = Predictor(model_dir).predict([r["func"] for r in ROWS[:7]])
    assert [s.get("id") for s in scored] == [r["id"] for r in ROWS[:6]] + [None]
    assert scored[6]["file"] == str(c_file) and "func" not in scored[6]
    assert scored[0]["target"] == ROWS[0]["target"] and scored[0]["func"] == ROWS[0]["func"]
    for row, pred in zip(scored, expected, strict=True):
        assert row["probability"] == pytest.approx(pred.probability, abs=1e-7)
        assert (row["label"], row["label_name"], row["threshold"]) == (
            pred.label, pred.label_name, 0.5)
    assert "predict" in capsys.readouterr().err  # the progress bar, on stderr
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # a log file: no bar frames
    assert main(["predict", "--model", str(model_dir), str(rows), "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""

    assert main(["predict", "--model", str(model_dir), str(rows), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 6 and captured.err == ""


def test_predict_command_errors_name_the_problem(model_dir: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"func": "a"}\n{"id": 1}\n')
    assert main(["predict", "--model", str(model_dir), str(bad)]) == 2
    assert "bad.jsonl: 1 bad line(s)" in capsys.readouterr().err
    good = tmp_path / "good.jsonl"
    good.write_text('{"func": "a"}\n')
    assert main(["predict", "--model", str(tmp_path), str(good)]) == 2
    assert "is not a model directory" in capsys.readouterr().err
    assert main(["predict", "--model", "job:123", str(good)]) == 2
    assert "job:<32 hex characters>" in capsys.readouterr().err


# --- the inference worker's task ---------------------------------------------------------------

WORKER_SCRIPT = """
import json, sys
from worker.inference import model_cache, predict
args = json.loads(sys.argv[1])
out = [predict(*call) for call in args["calls"]]
cache = model_cache()
print(json.dumps({"out": out, "cached": [list(k) for k in cache.models]}))
"""


def test_inference_task_loads_verifies_and_caches(model_dir: Path, tmp_path: Path) -> None:
    """The task body in a process of its own (its settings come from the environment)."""
    store = LocalArtifactStore(tmp_path / "artifacts")
    tenant, job_a, job_b, job_c = "t" * 32, "a" * 32, "b" * 32, "c" * 32
    for job in (job_a, job_b, job_c):
        CheckpointPublisher(store, job_prefix(tenant, job), ListSink()).publish(
            model_dir, epoch=2, is_best=True, metrics={})
    pointer_c = json.loads(store.get_bytes(checkpoint_pointer_key(tenant, job_c, "best")))
    store.put_bytes(b"not the archive", pointer_c["archive_key"])  # tampered after publishing
    funcs = [r["func"] for r in ROWS[:5]]
    calls = [[tenant, job_a, funcs], [tenant, job_a, funcs[:2]], [tenant, job_b, funcs],
             [tenant, job_c, funcs], [tenant, "d" * 32, funcs], [tenant, job_a, []]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SG_")}
    env.update({"SG_DATA_DIR": str(tmp_path / "data"), "SG_INFERENCE__CACHE_SIZE": "1",
                "SG_STORAGE__URI": (tmp_path / "artifacts").as_uri(), "OMP_NUM_THREADS": "1",
                "PYTHONPATH": str(REPO_ROOT)})
    proc = subprocess.run([sys.executable, "-c", WORKER_SCRIPT, json.dumps({"calls": calls})],
                          env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    first, again, other, tampered, missing, empty = result["out"]
    expected = [p.probability for p in Predictor(model_dir).predict(funcs)]
    pointer = json.loads(store.get_bytes(checkpoint_pointer_key(tenant, job_a, "best")))
    assert first["checkpoint"] == {"name": "best", "epoch": 2, "sha256": pointer["sha256"]}
    assert first["threshold"] == 0.5
    assert [i["probability"] for i in first["items"]] == pytest.approx(expected, abs=1e-6)
    probs = [i["probability"] for i in first["items"]]
    assert [i["probability"] for i in again["items"]] == pytest.approx(probs[:2], abs=1e-6)
    assert [i["probability"] for i in other["items"]] == pytest.approx(probs, abs=1e-6)
    assert tampered["error"]["code"] == "invalid_checkpoint"
    assert "does not match its pointer" in tampered["error"]["message"]
    assert missing == {"error": {"code": "no_checkpoint",
                                 "message": f"job {'d' * 32} has no best checkpoint in the "
                                            "store"}}
    assert empty["error"]["code"] == "invalid_request"
    # Cache size 1: job b's model replaced job a's, files and all; job c never loaded.
    sha_b = json.loads(store.get_bytes(checkpoint_pointer_key(tenant, job_b, "best")))["sha256"]
    assert result["cached"] == [[job_b, sha_b]]
    cache_dir = tmp_path / "data" / "inference-cache"
    assert sorted(p.name for p in cache_dir.iterdir()) == [f"{job_b}-{sha_b[:16]}"]


# --- the API's use case, with a fake queue -----------------------------------------------------

class FakeResult:
    def __init__(self, answer: object, state: str = "SUCCESS", timeout: bool = False) -> None:
        self.answer, self.state, self.timeout, self.forgotten = answer, state, timeout, False

    def ready(self) -> bool:
        return not self.timeout

    def get(self, *, timeout: float, propagate: bool) -> object:
        assert not propagate and timeout > 0 and not self.timeout
        return self.answer

    def forget(self) -> None:
        self.forgotten = True


class FakeClient:
    def __init__(self, result: FakeResult) -> None:
        self.result, self.sent = result, list[tuple[str, list[object], dict[str, object]]]()

    def send_task(self, name: str, *, args: list[object], **kw: object) -> FakeResult:
        self.sent.append((name, args, kw))
        return self.result


class FakeSession:
    def rollback(self) -> None:
        pass


class FakeJob:
    id, tenant_id = "a" * 32, "t" * 32

    def __init__(self, status: str) -> None:
        self.status = status


ANSWER = {"checkpoint": {"name": "best", "epoch": 3, "sha256": "ab" * 32}, "threshold": 0.4,
          "items": [{"probability": 0.45, "label": 1, "label_name": "vulnerable"}]}


def call_service(monkeypatch: pytest.MonkeyPatch, result: FakeResult, *,
                 status: str = "completed", has_best: bool = True) -> object:
    from api.services import predict as service
    from streamguard.settings import InferenceSettings, Settings

    monkeypatch.setattr(service, "POLL_MAX_S", 0.01)

    monkeypatch.setattr(service.metrics_repo, "get_checkpoint",
                        lambda **_kw: object() if has_best else None)
    client = FakeClient(result)
    settings = Settings(inference=InferenceSettings(request_timeout_s=0.3))
    response = service.predict(session=FakeSession(), settings=settings,
                               client=client, job=FakeJob(status),
                               functions=["int f;"])
    assert client.sent[0][0] == "worker.inference.predict"
    assert client.sent[0][1] == [FakeJob.tenant_id, FakeJob.id, ["int f;"]]
    assert client.sent[0][2]["queue"] == "inference" and client.sent[0][2]["expires"] == 0.3
    return response


def test_service_answers_and_forgets_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    result = FakeResult(ANSWER)
    response = call_service(monkeypatch, result)
    assert response.model_dump() == {"job_id": FakeJob.id, **ANSWER}
    assert result.forgotten


def test_service_refusals(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.services.predict import InferenceUnavailable
    from streamguard.errors import JobStateConflict

    for status, has_best in (("running", True), ("cancelled", True), ("collapsed", True),
                             ("completed", False)):
        with pytest.raises(JobStateConflict):
            call_service(monkeypatch, FakeResult(ANSWER), status=status, has_best=has_best)
    with pytest.raises(InferenceUnavailable, match="within 0.3 s") as err:
        call_service(monkeypatch, result := FakeResult(None, timeout=True))
    assert err.value.retry_after_s == 1 and result.forgotten
    with pytest.raises(JobStateConflict, match="no best checkpoint"):
        call_service(monkeypatch, FakeResult({"error": {"code": "no_checkpoint",
                                                        "message": "gone"}}))
    with pytest.raises(RuntimeError, match="ended FAILURE"):
        call_service(monkeypatch, FakeResult({"exc_type": "ValueError"}, state="FAILURE"))


def test_route_answers_503_with_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    from api.routes.predict import predict as route
    from api.services.predict import PredictRequest
    from streamguard.settings import InferenceSettings, Settings

    monkeypatch.setattr("api.services.predict.metrics_repo.get_checkpoint",
                        lambda **_kw: object())

    class FakeRequest:
        scope: dict[str, object] = {}

    settings = Settings(inference=InferenceSettings(request_timeout_s=2.5))
    response = route(PredictRequest(functions=["int f;"]), FakeJob("completed"),
                     FakeSession(), settings, FakeClient(FakeResult(None, timeout=True)),
                     FakeRequest())
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    assert json.loads(response.body)["error"]["code"] == "inference_unavailable"


def test_request_limits() -> None:
    from pydantic import ValidationError

    from api.services.predict import PredictRequest
    from streamguard.predict import MAX_FUNCTION_BYTES, MAX_FUNCTIONS

    PredictRequest(functions=["x" * MAX_FUNCTION_BYTES] + ["int f;\n\t"] * (MAX_FUNCTIONS - 1))
    PredictRequest(functions=["int f(void)\r\n{\v\f\treturn 0;\n}", "é€𝄞"])
    for functions in ([], ["a"] * (MAX_FUNCTIONS + 1), [""], ["x" * (MAX_FUNCTION_BYTES + 1)],
                      ["é" * (MAX_FUNCTION_BYTES // 2 + 1)], ["a\ud800"], ["a\x00"],
                      ["\x1b[0m"], ["\x85"]):
        with pytest.raises(ValidationError):
            PredictRequest(functions=functions)
    with pytest.raises(ValidationError):
        PredictRequest.model_validate({"functions": ["a"], "extra": 1})


# --- streamguard up runs and supervises an inference worker -------------------------------------

class FakeProc:
    def __init__(self, returncode: int | None) -> None:
        self.returncode = returncode

    def poll(self) -> int | None:
        return self.returncode


def test_up_starts_and_restarts_the_inference_worker(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    from streamguard import cli_service

    services = cli_service.Services(tmp_path, "127.0.0.1", 8000)
    spawned: list[str] = []

    def spawn(name: str, cmd: list[str], env: dict[str, str]) -> FakeProc:
        spawned.append(name)
        return FakeProc(None)

    monkeypatch.setattr(services, "_spawn", spawn)
    services.start({}, "gpu")
    assert spawned == ["api", "worker", "inference"]
    assert services._commands["inference"][1:3] == ["-m", "worker.inference"]
    assert services._commands["api"][3:] == ["api", "--host", "127.0.0.1", "--port", "8000",
                                             "--workers", "1"]
    services.procs["inference"] = FakeProc(-9)  # killed
    supervisor = threading.Thread(target=services.supervise_worker, daemon=True)
    supervisor.start()
    deadline = time.monotonic() + 10
    while len(spawned) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    services._stopping.set()
    supervisor.join(5)
    assert spawned == ["api", "worker", "inference", "inference"]
    assert services.worker_failure is None

    exits: list[float] = []
    services._stopping.clear()
    services.procs["inference"] = FakeProc(1)
    gave_up = [services._restart("inference", exits) for _ in range(5)]
    assert gave_up == [False] * 4 + [True]
    assert services.worker_failure is not None
    assert services.worker_failure.startswith("the inference worker exited 5 times")
    with pytest.raises(RuntimeError, match="inference worker exited 5 times"):
        services.check_alive()
