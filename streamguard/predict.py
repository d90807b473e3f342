"""Predictions from a trained model: the `Predictor`, and what the API and the inference workers
agree on (the task name, the request limits, the Celery configuration of the inference queue).

    predictor = Predictor(Path("model"), device="cpu")       # an exported model or checkpoint
    predictor.predict(["int f(char *s) { return s[8]; }"])   # [Prediction(0.73, 1, "vulnerable")]

A `Predictor` tokenizes exactly as the training loop's evaluation does (`training.data.tokenize`
with the job's `max_seq_len`, special tokens, truncation, then `PadCollator`'s right padding) and
runs under the same autocast as that evaluation (the job's `mixed_precision`), so its
probabilities are the ones behind the job's recorded validation metrics. The probability is the
softmax of the "vulnerable" logit; the label is 1 when it is at least the model's threshold
(MODEL_META_FILE, else 0.5).

torch and transformers are imported inside the Predictor only: the API process imports the
constants and `inference_celery_config` from here and must never load torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streamguard.contract import MODEL_META_FILE, celery_config
from streamguard.errors import CheckpointError

if TYPE_CHECKING:
    from streamguard.settings import Settings

#: The Celery task the API sends by name to the inference queue:
#: `(tenant_id, job_id, functions)` -> `{"checkpoint", "threshold", "items"}` or `{"error"}`.
INFERENCE_TASK = "worker.inference.predict"
#: Functions per `POST /v1/jobs/{id}/predict` request.
MAX_FUNCTIONS = 64
#: Longest function of a request, in UTF-8 bytes (a Devign function: median 937 characters).
MAX_FUNCTION_BYTES = 256 * 1024
DEFAULT_THRESHOLD = 0.5
#: Longest input when neither the model's facts nor its training config name one.
FALLBACK_MAX_SEQ_LEN = 512
LABEL_NAMES = ("safe", "vulnerable")
TRAIN_CONFIG_FILE = "train_config.json"  # = training.checkpoint.CONFIG_FILE (no torch here)


def inference_celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings of the inference queue, shared by the API's client and the inference
    workers: the training broker, plus a result backend (training keeps results off).

    The `db+` SQLAlchemy backend works in both deployments (SQLite beside the filesystem
    broker, PostgreSQL beside Redis); results are deleted once read (`forget`) and, if nobody
    read them, after `inference.result_expires_s` by the worker's periodic cleanup.
    """
    inference = settings.inference
    backend = settings.inference_result_backend()
    engine: dict[str, Any] = {"pool_pre_ping": True}
    if backend.startswith("db+sqlite"):
        engine["connect_args"] = {"timeout": settings.db.sqlite_busy_timeout_ms / 1000}
    elif backend.startswith("db+postgresql"):
        engine["connect_args"] = {
            "connect_timeout": settings.db.connect_timeout_s,
            "options": f"-c statement_timeout={settings.db.statement_timeout_ms}"}
    return {
        **celery_config(settings),
        "task_default_queue": inference.queue,
        "task_routes": {INFERENCE_TASK: {"queue": inference.queue}},
        "result_backend": backend,
        "result_serializer": "json",
        "result_accept_content": ["json"],
        "result_expires": inference.result_expires_s,
        "database_engine_options": engine,
    }


# --- the model's facts ------------------------------------------------------------------------

def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise CheckpointError(f"{path} holds {type(value).__name__}, expected an object")
    return value


@dataclass(frozen=True)
class ModelFacts:
    """What a model directory says about its use: threshold, input limit, training precision."""

    threshold: float
    max_seq_len: int | None
    mixed_precision: str


def read_model_facts(model_dir: Path) -> ModelFacts:
    """MODEL_META_FILE first (an exported model), then train_config.json (a checkpoint).

    Raises:
        CheckpointError: a threshold outside [0, 1] or a max_seq_len below 1.
    """
    meta = _read_json(model_dir / MODEL_META_FILE)
    config = _read_json(model_dir / TRAIN_CONFIG_FILE)
    threshold = meta.get("threshold")
    threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) \
            or not 0.0 <= threshold <= 1.0:
        raise CheckpointError(f"{model_dir / MODEL_META_FILE}: threshold {threshold!r} is not "
                              "a number in [0, 1]")
    max_len = meta.get("max_seq_len", config.get("max_seq_len"))
    if max_len is not None and (isinstance(max_len, bool) or not isinstance(max_len, int)
                                or max_len < 1):
        raise CheckpointError(f"{model_dir}: max_seq_len {max_len!r} is not a positive integer")
    return ModelFacts(float(threshold), max_len,
                      str(config.get("mixed_precision") or "none"))


@dataclass(frozen=True)
class Prediction:
    probability: float  # softmax probability of "vulnerable"
    label: int  # 1 when probability >= threshold
    label_name: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Predictor:
    """A loaded classifier that scores function source texts in batches.

    Args:
        model_dir: a Hugging Face model directory: an exported model (with MODEL_META_FILE) or a
            checkpoint folder (with train_config.json), e.g. a downloaded `best` checkpoint.
        device: "cpu", "cuda", "cuda:1"; default: CUDA when present, else the CPU.
        batch_size: functions per forward pass.

    Raises:
        CheckpointError: the folder is not a loadable model, or its facts are invalid.
    """

    def __init__(self, model_dir: str | Path, *, device: str | None = None,
                 batch_size: int = 32) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from streamguard.training.model import position_limit

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise CheckpointError(f"{self.model_dir} is not a model directory (no config.json);"
                                  " pass an exported model or a checkpoint folder")
        facts = read_model_facts(self.model_dir)
        self.threshold = facts.threshold
        self.batch_size = max(1, int(batch_size))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir, use_fast=True)
        model = AutoModelForSequenceClassification.from_pretrained(self.model_dir)
        self.model = model.to(self.device).eval()
        limit = position_limit(self.model.config)
        self.max_seq_len = facts.max_seq_len or limit or FALLBACK_MAX_SEQ_LEN
        if limit is not None and self.max_seq_len > limit:  # training refuses this too
            raise CheckpointError(f"{self.model_dir}: max_seq_len {self.max_seq_len} exceeds "
                                  f"the model's position limit {limit}")
        # The evaluation's precision: bf16 autocast when the job trained in bf16 (fp16 needs a
        # GPU; on a CPU such a model is run in fp32).
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(facts.mixed_precision)
        if dtype is torch.float16 and self.device.type != "cuda":
            dtype = None
        self._dtype = dtype
        self.pad_id = int(self.tokenizer.pad_token_id
                          if self.tokenizer.pad_token_id is not None else 0)

    def predict(self, functions: Sequence[str], *,
                on_batch: Callable[[int], None] | None = None) -> list[Prediction]:
        """One Prediction per function, in input order; `on_batch(n)` after each batch."""
        import torch

        from streamguard.training.data import PadCollator, tokenize

        if not functions:
            return []
        split = tokenize(self.tokenizer, list(functions), [0] * len(functions),
                         self.max_seq_len)
        collate = PadCollator(self.pad_id)
        # Longest first, so each batch pads little; rows are independent (attention masks).
        order = sorted(range(len(split)), key=lambda i: -len(split.input_ids[i]))
        probs = [0.0] * len(split)
        autocast = (torch.autocast(self.device.type, dtype=self._dtype)
                    if self._dtype is not None else None)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = collate([split[i] for i in rows])
                inputs = {"input_ids": batch["input_ids"].to(self.device),
                          "attention_mask": batch["attention_mask"].to(self.device)}
                if autocast is not None:
                    with autocast:
                        logits = self.model(**inputs).logits
                else:
                    logits = self.model(**inputs).logits
                scores = torch.softmax(logits.float(), dim=-1)[:, 1].cpu().tolist()
                for i, p in zip(rows, scores, strict=True):
                    probs[i] = float(p)
                if on_batch is not None:
                    on_batch(len(rows))
        return [self.decide(p) for p in probs]

    def decide(self, probability: float) -> Prediction:
        label = int(probability >= self.threshold)
        return Prediction(probability, label, LABEL_NAMES[label])


# --- model archives ---------------------------------------------------------------------------

def unpack_model_archive(archive: Path, dest: Path) -> Path:
    """Unpack a checkpoint archive's `model/` folder (`training.publish.write_model_archive`)
    into `dest`, atomically: `dest` appears complete or not at all.

    Raises:
        CheckpointError: the archive is not a model archive.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        with tarfile.open(archive, mode="r:gz") as tar:
            names = tar.getnames()
            if not names or not all(n == "model" or n.startswith("model/") for n in names):
                raise CheckpointError(f"{archive.name} is not a model archive (expected files "
                                      f"under model/, found {names[:5]})")
            tar.extractall(tmp, filter="data")
        os.replace(tmp / "model", dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
