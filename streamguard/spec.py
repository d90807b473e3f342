"""TrainConfig: the frozen, validated description of one training run.

It is the *job* config (what to train), never the deployment config (where it runs; that is
`streamguard.settings.Settings`). It travels as JSON: on the job row, inside every checkpoint, and
in `POST /v1/jobs` bodies. Every out-of-range value is refused with the field and what would be
accepted, before any GPU time is spent.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from streamguard.errors import InvalidTrainConfig

#: Special `model` values that build a randomly initialised RoBERTa locally (no hub access).
SCRATCH_MODELS = {
    # ~1.3 M parameters: CPU tests, demos and benchmarks.
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 512},
    # RoBERTa-base / CodeBERT-sized (~125 M parameters) with random weights: GPU throughput checks.
    "random-roberta-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                            "intermediate_size": 3072},
}


class LrScaling(StrEnum):
    SQRT = "sqrt"
    LINEAR = "linear"
    NONE = "none"


class ClassWeighting(StrEnum):
    BALANCED = "balanced"
    NONE = "none"


class OnCollapse(StrEnum):
    STOP = "stop"  # end the run `collapsed`
    ROLLBACK = "rollback"  # back to the best passing checkpoint with a lower LR, then go on


class MixedPrecision(StrEnum):
    NONE = "none"
    BF16 = "bf16"
    FP16 = "fp16"


#: Step metrics per epoch when `log_every_steps` is not set.
STEP_POINTS_PER_EPOCH = 20

SelectionMetric = Literal["f1", "mcc", "accuracy", "roc_auc", "precision", "recall"]

#: Experiment trackers a run can also report to (`streamguard.trackers`); where they live (the
#: MLflow server, the TensorBoard folder) is deployment config: `Settings.trackers`.
Tracker = Literal["mlflow", "tensorboard"]
TRACKERS: tuple[str, ...] = get_args(Tracker)

#: Fields that say where a run reports, not what it trains: a resumed run may change them.
REPORTING_FIELDS = frozenset({"trackers"})


def _is_number(annotation: Any) -> bool:
    """`int`, `float` or either one `| None`."""
    return any(arg in (int, float) for arg in get_args(annotation) or (annotation,))


class TrainConfig(BaseModel):
    """Hyperparameters and guard thresholds of one run. Immutable; `model_dump()` is its JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False,
                              use_enum_values=False)

    model: str = Field(
        "microsoft/codebert-base", min_length=1,
        description="Hugging Face hub name, local model directory, or a from-scratch "
                    f"architecture: {', '.join(sorted(SCRATCH_MODELS))}.")
    tokenizer_vocab_size: int = Field(
        8000, ge=256, le=100_000,
        description="Vocabulary of the byte-level BPE trained on the train split (scratch models).")
    max_seq_len: int = Field(512, ge=8, le=8192,
                             description="Tokens per function; never above the model's limit.")
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(16, ge=1, le=4096)
    eval_batch_size: int | None = Field(None, ge=1, le=4096,
                                        description="Defaults to 2 x batch_size.")
    accumulation_steps: int = Field(1, ge=1, le=1024)
    lr: float = Field(2e-5, gt=0.0, le=1.0)
    base_batch: int = Field(16, ge=1, le=4096,
                            description="Batch size the lr was tuned for.")
    lr_scaling: LrScaling = LrScaling.SQRT
    weight_decay: float = Field(0.01, ge=0.0, le=1.0)
    warmup_ratio: float = Field(0.1, ge=0.0, le=1.0)
    max_warmup_ratio: float = Field(0.2, ge=0.0, le=1.0)
    label_smoothing: float = Field(0.05, ge=0.0, lt=1.0)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    class_weighting: ClassWeighting = ClassWeighting.BALANCED
    grad_clip: float = Field(1.0, gt=0.0, le=1e6)
    mixed_precision: MixedPrecision = MixedPrecision.NONE
    early_stopping_patience: int = Field(3, ge=0, le=1000,
                                         description="Epochs without improvement; 0 disables.")
    selection_metric: SelectionMetric = Field(
        "f1", description="Validation metric that picks the best checkpoint (higher is better).")
    collapse_warn_ratio: float = Field(
        0.30, gt=0.0, le=1.0,
        description="Warn when a class is predicted below this fraction of its actual count.")
    collapse_stop_ratio: float = Field(
        0.20, ge=0.0, le=1.0,
        description="Stop when a class stays below this fraction for collapse_patience epochs.")
    collapse_patience: int = Field(3, ge=1, le=1000)
    eval_every_steps: int | None = Field(
        None, ge=1, le=10_000_000,
        description="Also evaluate on the validation split every this many optimizer steps "
                    "(default: once per epoch, at its end). The guard's rules count evaluations.")
    guard_grace_steps: int | None = Field(
        None, ge=0, le=10_000_000,
        description="Optimizer steps before one-class predictions can stop the run (they warn "
                    "`not_separating_yet` instead); default: the warmup steps.")
    on_collapse: OnCollapse = Field(
        OnCollapse.STOP,
        description="`stop`: end the run `collapsed`. `rollback`: restore the best passing "
                    "checkpoint (model, optimizer, scheduler, RNG), multiply the LR by "
                    "rollback_lr_factor and continue, at most max_rollbacks times.")
    rollback_lr_factor: float = Field(0.5, gt=0.0, lt=1.0)
    max_rollbacks: int = Field(2, ge=0, le=100)
    # On by default since the buckets are stratified by label (streamguard/training/data.py):
    # unstratified length grouping made label-skewed batches on Devign (vulnerable functions are
    # longer) and a tiny model ended its first epoch predicting one class. Measured against
    # shuffled batches at equal validation metrics in benchmarks/trainer_vs_hf.py.
    group_by_length: bool = Field(
        True, description="Length-bucketed batches (little padding), each holding the "
                          "split's class mix; false: shuffled batches.")
    packing: bool = Field(
        False, description="Pack each training batch's functions into as few rows as fit "
                           "max_seq_len, attention confined to each function: no padding "
                           "at all (the same batches, labels and loss).")
    torch_compile: bool = Field(
        False, description="Compile the training forward and backward with torch.compile "
                           "(GPU; batches are padded to a few bucketed widths so it compiles "
                           "a handful of shapes). Measured slower on CPU.")
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass instead of keeping "
                           "them: less GPU memory for long sequences or big batches, ~30 % "
                           "more compute.")
    seed: int = Field(42, ge=0, le=2**32 - 1)
    log_every_steps: int | None = Field(
        None, ge=1, le=1_000_000,
        description="Optimizer steps between step metrics (training loss, learning rate, "
                    f"gradient norm); default: about {STEP_POINTS_PER_EPOCH} points per epoch.")
    trackers: list[Tracker] = Field(
        default=[], max_length=len(TRACKERS),
        description="Experiment trackers that also receive the run's parameters, metrics, "
                    "guard warnings and model: " + ", ".join(TRACKERS) + ". Where they are is "
                    "the deployment's setting; a tracker that fails never fails the run.")

    @field_validator("trackers", mode="before")
    @classmethod
    def _known_trackers(cls, value: Any) -> Any:
        # Before pydantic's own check: one message naming the unknown tracker and the accepted
        # ones (pydantic's would name a list index). Repeats are dropped, order kept.
        if not isinstance(value, list | tuple):
            return value  # pydantic's list_type error says what is wrong
        unknown = [v for v in value if v not in TRACKERS]
        if unknown:
            raise PydanticCustomError(
                "unknown_tracker", "unknown tracker(s) {unknown}; accepted: {accepted}",
                {"unknown": ", ".join(repr(v) for v in unknown),
                 "accepted": ", ".join(TRACKERS)})
        return list(dict.fromkeys(value))

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_not_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax mode reads `true` as 1 (and 1.0); a JSON `"epochs": true` is a client
        # bug, not one epoch. Only booleans are refused: 64 and "64" stay accepted numbers.
        field = cls.model_fields.get(info.field_name or "")
        if isinstance(value, bool) and field is not None and _is_number(field.annotation):
            raise PydanticCustomError("bool_not_number", "a boolean is not a number (got "
                                      "{value}); send a number", {"value": str(value).lower()})
        return value

    @model_validator(mode="after")
    def _check_relations(self) -> TrainConfig:
        if self.collapse_stop_ratio > self.collapse_warn_ratio:
            raise ValueError(
                f"collapse_stop_ratio ({self.collapse_stop_ratio}) must not exceed "
                f"collapse_warn_ratio ({self.collapse_warn_ratio})")
        if self.warmup_ratio > self.max_warmup_ratio:
            raise ValueError(
                f"warmup_ratio ({self.warmup_ratio}) must not exceed max_warmup_ratio "
                f"({self.max_warmup_ratio})")
        return self

    @property
    def effective_eval_batch_size(self) -> int:
        return self.eval_batch_size or 2 * self.batch_size

    def step_interval(self, steps_per_epoch: int) -> int:
        """Optimizer steps between step metrics: the configured value, or about
        STEP_POINTS_PER_EPOCH points per epoch."""
        return self.log_every_steps or max(1, -(-steps_per_epoch // STEP_POINTS_PER_EPOCH))

    @property
    def is_scratch_model(self) -> bool:
        return self.model in SCRATCH_MODELS

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True)


def field_path(loc: Any) -> str:
    """A dotted field name from a pydantic error location, without union member tags.

    Tagged unions put the member's name (`DatasetIdRef`) in the location; field names here are
    all lower snake case, so a capitalised part is never one.
    """
    return ".".join(str(p) for p in loc if not (isinstance(p, str) and p[:1].isupper()))


def describe_validation_error(exc: ValidationError) -> list[dict[str, str]]:
    """Flatten a pydantic error into [{field, message}] with the accepted range spelled out."""
    problems = []
    for err in exc.errors():
        field = field_path(err["loc"]) or "config"
        msg = err["msg"]
        ctx = err.get("ctx") or {}
        if "expected" in ctx:
            msg = f"{msg} (got {err.get('input')!r})"
        elif err["type"] in {"greater_than", "greater_than_equal", "less_than", "less_than_equal",
                             "finite_number"}:
            msg = f"{msg} (got {err.get('input')!r}); allowed: {_allowed_range(field)}"
        elif err["type"] == "extra_forbidden":
            msg = f"unknown field; known fields: {', '.join(sorted(TrainConfig.model_fields))}"
        problems.append({"field": field, "message": msg})
    return problems


def _allowed_range(field: str) -> str:
    info = TrainConfig.model_fields.get(field)
    if info is None:
        return "see the TrainConfig schema"
    lo = hi = None
    lo_incl = hi_incl = True
    for meta in info.metadata:
        for attr, is_lo, incl in (("gt", True, False), ("ge", True, True),
                                  ("lt", False, False), ("le", False, True)):
            value = getattr(meta, attr, None)
            if value is not None:
                if is_lo:
                    lo, lo_incl = value, incl
                else:
                    hi, hi_incl = value, incl
    left = "[" if lo_incl else "("
    right = "]" if hi_incl else ")"
    return f"finite number in {left}{lo if lo is not None else '-inf'}, " \
           f"{hi if hi is not None else 'inf'}{right}"


def parse_train_config(data: dict[str, Any]) -> TrainConfig:
    """Validate a mapping into a TrainConfig or raise InvalidTrainConfig naming each bad field."""
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise InvalidTrainConfig(describe_validation_error(exc)) from None
