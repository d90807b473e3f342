from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar, cast

from attrs import define as _attrs_define

from ..models.class_weighting import ClassWeighting
from ..models.job_config_selection_metric import JobConfigSelectionMetric
from ..models.job_config_trackers_item import JobConfigTrackersItem
from ..models.lr_scaling import LrScaling
from ..models.mixed_precision import MixedPrecision
from ..models.on_collapse import OnCollapse
from ..types import UNSET, Unset

T = TypeVar("T", bound="JobConfig")


@_attrs_define
class JobConfig:
    """`TrainConfig` as a service job takes it: `model` never names a server path.

    Attributes:
        accumulation_steps (int | Unset):  Default: 1.
        base_batch (int | Unset): Batch size the lr was tuned for. Default: 16.
        batch_size (int | Unset):  Default: 16.
        class_weighting (ClassWeighting | Unset):
        collapse_patience (int | Unset):  Default: 3.
        collapse_stop_ratio (float | Unset): Stop when a class stays below this fraction for collapse_patience epochs.
            Default: 0.2.
        collapse_warn_ratio (float | Unset): Warn when a class is predicted below this fraction of its actual count.
            Default: 0.3.
        dropout (float | Unset):  Default: 0.1.
        early_stopping_patience (int | Unset): Epochs without improvement; 0 disables. Default: 3.
        epochs (int | Unset):  Default: 10.
        eval_batch_size (int | None | Unset): Defaults to 2 x batch_size.
        eval_every_steps (int | None | Unset): Also evaluate on the validation split every this many optimizer steps
            (default: once per epoch, at its end). The guard's rules count evaluations.
        grad_clip (float | Unset):  Default: 1.0.
        gradient_checkpointing (bool | Unset): Recompute activations in the backward pass instead of keeping them: less
            GPU memory for long sequences or big batches, ~30 % more compute. Default: False.
        group_by_length (bool | Unset): Length-bucketed batches (little padding), each holding the split's class mix;
            false: shuffled batches. Default: True.
        guard_grace_steps (int | None | Unset): Optimizer steps before one-class predictions can stop the run (they warn
            `not_separating_yet` instead); default: the warmup steps.
        label_smoothing (float | Unset):  Default: 0.05.
        log_every_steps (int | None | Unset): Optimizer steps between step metrics (training loss, learning rate,
            gradient norm); default: about 20 points per epoch.
        lr (float | Unset):  Default: 2e-05.
        lr_scaling (LrScaling | Unset):
        max_rollbacks (int | Unset):  Default: 2.
        max_seq_len (int | Unset): Tokens per function; never above the model's limit. Default: 512.
        max_warmup_ratio (float | Unset):  Default: 0.2.
        mixed_precision (MixedPrecision | Unset):
        model (str | Unset): Base model: a from-scratch architecture (random-roberta-base, tiny), a Hugging Face hub
            name `owner/name` (letters, digits, `_`, `.`, `-`), or `job:<job id>[/best|/last]` naming one of your finished
            jobs. Default: 'microsoft/codebert-base'.
        on_collapse (OnCollapse | Unset):
        packing (bool | Unset): Pack each training batch's functions into as few rows as fit max_seq_len, attention
            confined to each function: no padding at all (the same batches, labels and loss). Default: False.
        rollback_lr_factor (float | Unset):  Default: 0.5.
        seed (int | Unset):  Default: 42.
        selection_metric (JobConfigSelectionMetric | Unset): Validation metric that picks the best checkpoint (higher is
            better). Default: JobConfigSelectionMetric.F1.
        tokenizer_vocab_size (int | Unset): Vocabulary of the byte-level BPE trained on the train split (scratch
            models). Default: 8000.
        torch_compile (bool | Unset): Compile the training forward and backward with torch.compile (GPU; batches are
            padded to a few bucketed widths so it compiles a handful of shapes). Measured slower on CPU. Default: False.
        trackers (list[JobConfigTrackersItem] | Unset): Experiment trackers that also receive the run's parameters,
            metrics, guard warnings and model: mlflow, tensorboard. Where they are is the deployment's setting; a tracker
            that fails never fails the run.
        warmup_ratio (float | Unset):  Default: 0.1.
        weight_decay (float | Unset):  Default: 0.01.
    """

    accumulation_steps: int | Unset = 1
    base_batch: int | Unset = 16
    batch_size: int | Unset = 16
    class_weighting: ClassWeighting | Unset = UNSET
    collapse_patience: int | Unset = 3
    collapse_stop_ratio: float | Unset = 0.2
    collapse_warn_ratio: float | Unset = 0.3
    dropout: float | Unset = 0.1
    early_stopping_patience: int | Unset = 3
    epochs: int | Unset = 10
    eval_batch_size: int | None | Unset = UNSET
    eval_every_steps: int | None | Unset = UNSET
    grad_clip: float | Unset = 1.0
    gradient_checkpointing: bool | Unset = False
    group_by_length: bool | Unset = True
    guard_grace_steps: int | None | Unset = UNSET
    label_smoothing: float | Unset = 0.05
    log_every_steps: int | None | Unset = UNSET
    lr: float | Unset = 2e-05
    lr_scaling: LrScaling | Unset = UNSET
    max_rollbacks: int | Unset = 2
    max_seq_len: int | Unset = 512
    max_warmup_ratio: float | Unset = 0.2
    mixed_precision: MixedPrecision | Unset = UNSET
    model: str | Unset = "microsoft/codebert-base"
    on_collapse: OnCollapse | Unset = UNSET
    packing: bool | Unset = False
    rollback_lr_factor: float | Unset = 0.5
    seed: int | Unset = 42
    selection_metric: JobConfigSelectionMetric | Unset = JobConfigSelectionMetric.F1
    tokenizer_vocab_size: int | Unset = 8000
    torch_compile: bool | Unset = False
    trackers: list[JobConfigTrackersItem] | Unset = UNSET
    warmup_ratio: float | Unset = 0.1
    weight_decay: float | Unset = 0.01

    def to_dict(self) -> dict[str, Any]:
        accumulation_steps = self.accumulation_steps

        base_batch = self.base_batch

        batch_size = self.batch_size

        class_weighting: str | Unset = UNSET
        if not isinstance(self.class_weighting, Unset):
            class_weighting = self.class_weighting.value

        collapse_patience = self.collapse_patience

        collapse_stop_ratio = self.collapse_stop_ratio

        collapse_warn_ratio = self.collapse_warn_ratio

        dropout = self.dropout

        early_stopping_patience = self.early_stopping_patience

        epochs = self.epochs

        eval_batch_size: int | None | Unset
        if isinstance(self.eval_batch_size, Unset):
            eval_batch_size = UNSET
        else:
            eval_batch_size = self.eval_batch_size

        eval_every_steps: int | None | Unset
        if isinstance(self.eval_every_steps, Unset):
            eval_every_steps = UNSET
        else:
            eval_every_steps = self.eval_every_steps

        grad_clip = self.grad_clip

        gradient_checkpointing = self.gradient_checkpointing

        group_by_length = self.group_by_length

        guard_grace_steps: int | None | Unset
        if isinstance(self.guard_grace_steps, Unset):
            guard_grace_steps = UNSET
        else:
            guard_grace_steps = self.guard_grace_steps

        label_smoothing = self.label_smoothing

        log_every_steps: int | None | Unset
        if isinstance(self.log_every_steps, Unset):
            log_every_steps = UNSET
        else:
            log_every_steps = self.log_every_steps

        lr = self.lr

        lr_scaling: str | Unset = UNSET
        if not isinstance(self.lr_scaling, Unset):
            lr_scaling = self.lr_scaling.value

        max_rollbacks = self.max_rollbacks

        max_seq_len = self.max_seq_len

        max_warmup_ratio = self.max_warmup_ratio

        mixed_precision: str | Unset = UNSET
        if not isinstance(self.mixed_precision, Unset):
            mixed_precision = self.mixed_precision.value

        model = self.model

        on_collapse: str | Unset = UNSET
        if not isinstance(self.on_collapse, Unset):
            on_collapse = self.on_collapse.value

        packing = self.packing

        rollback_lr_factor = self.rollback_lr_factor

        seed = self.seed

        selection_metric: str | Unset = UNSET
        if not isinstance(self.selection_metric, Unset):
            selection_metric = self.selection_metric.value

        tokenizer_vocab_size = self.tokenizer_vocab_size

        torch_compile = self.torch_compile

        trackers: list[str] | Unset = UNSET
        if not isinstance(self.trackers, Unset):
            trackers = []
            for trackers_item_data in self.trackers:
                trackers_item = trackers_item_data.value
                trackers.append(trackers_item)

        warmup_ratio = self.warmup_ratio

        weight_decay = self.weight_decay

        field_dict: dict[str, Any] = {}

        field_dict.update({})
        if accumulation_steps is not UNSET:
            field_dict["accumulation_steps"] = accumulation_steps
        if base_batch is not UNSET:
            field_dict["base_batch"] = base_batch
        if batch_size is not UNSET:
            field_dict["batch_size"] = batch_size
        if class_weighting is not UNSET:
            field_dict["class_weighting"] = class_weighting
        if collapse_patience is not UNSET:
            field_dict["collapse_patience"] = collapse_patience
        if collapse_stop_ratio is not UNSET:
            field_dict["collapse_stop_ratio"] = collapse_stop_ratio
        if collapse_warn_ratio is not UNSET:
            field_dict["collapse_warn_ratio"] = collapse_warn_ratio
        if dropout is not UNSET:
            field_dict["dropout"] = dropout
        if early_stopping_patience is not UNSET:
            field_dict["early_stopping_patience"] = early_stopping_patience
        if epochs is not UNSET:
            field_dict["epochs"] = epochs
        if eval_batch_size is not UNSET:
            field_dict["eval_batch_size"] = eval_batch_size
        if eval_every_steps is not UNSET:
            field_dict["eval_every_steps"] = eval_every_steps
        if grad_clip is not UNSET:
            field_dict["grad_clip"] = grad_clip
        if gradient_checkpointing is not UNSET:
            field_dict["gradient_checkpointing"] = gradient_checkpointing
        if group_by_length is not UNSET:
            field_dict["group_by_length"] = group_by_length
        if guard_grace_steps is not UNSET:
            field_dict["guard_grace_steps"] = guard_grace_steps
        if label_smoothing is not UNSET:
            field_dict["label_smoothing"] = label_smoothing
        if log_every_steps is not UNSET:
            field_dict["log_every_steps"] = log_every_steps
        if lr is not UNSET:
            field_dict["lr"] = lr
        if lr_scaling is not UNSET:
            field_dict["lr_scaling"] = lr_scaling
        if max_rollbacks is not UNSET:
            field_dict["max_rollbacks"] = max_rollbacks
        if max_seq_len is not UNSET:
            field_dict["max_seq_len"] = max_seq_len
        if max_warmup_ratio is not UNSET:
            field_dict["max_warmup_ratio"] = max_warmup_ratio
        if mixed_precision is not UNSET:
            field_dict["mixed_precision"] = mixed_precision
        if model is not UNSET:
            field_dict["model"] = model
        if on_collapse is not UNSET:
            field_dict["on_collapse"] = on_collapse
        if packing is not UNSET:
            field_dict["packing"] = packing
        if rollback_lr_factor is not UNSET:
            field_dict["rollback_lr_factor"] = rollback_lr_factor
        if seed is not UNSET:
            field_dict["seed"] = seed
        if selection_metric is not UNSET:
            field_dict["selection_metric"] = selection_metric
        if tokenizer_vocab_size is not UNSET:
            field_dict["tokenizer_vocab_size"] = tokenizer_vocab_size
        if torch_compile is not UNSET:
            field_dict["torch_compile"] = torch_compile
        if trackers is not UNSET:
            field_dict["trackers"] = trackers
        if warmup_ratio is not UNSET:
            field_dict["warmup_ratio"] = warmup_ratio
        if weight_decay is not UNSET:
            field_dict["weight_decay"] = weight_decay

        return field_dict

    @classmethod
    def from_dict(cls: type[T], src_dict: Mapping[str, Any]) -> T:
        d = dict(src_dict)
        accumulation_steps = d.pop("accumulation_steps", UNSET)

        base_batch = d.pop("base_batch", UNSET)

        batch_size = d.pop("batch_size", UNSET)

        _class_weighting = d.pop("class_weighting", UNSET)
        class_weighting: ClassWeighting | Unset
        if isinstance(_class_weighting, Unset):
            class_weighting = UNSET
        else:
            class_weighting = ClassWeighting(_class_weighting)

        collapse_patience = d.pop("collapse_patience", UNSET)

        collapse_stop_ratio = d.pop("collapse_stop_ratio", UNSET)

        collapse_warn_ratio = d.pop("collapse_warn_ratio", UNSET)

        dropout = d.pop("dropout", UNSET)

        early_stopping_patience = d.pop("early_stopping_patience", UNSET)

        epochs = d.pop("epochs", UNSET)

        def _parse_eval_batch_size(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        eval_batch_size = _parse_eval_batch_size(d.pop("eval_batch_size", UNSET))

        def _parse_eval_every_steps(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        eval_every_steps = _parse_eval_every_steps(d.pop("eval_every_steps", UNSET))

        grad_clip = d.pop("grad_clip", UNSET)

        gradient_checkpointing = d.pop("gradient_checkpointing", UNSET)

        group_by_length = d.pop("group_by_length", UNSET)

        def _parse_guard_grace_steps(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        guard_grace_steps = _parse_guard_grace_steps(d.pop("guard_grace_steps", UNSET))

        label_smoothing = d.pop("label_smoothing", UNSET)

        def _parse_log_every_steps(data: object) -> int | None | Unset:
            if data is None:
                return data
            if isinstance(data, Unset):
                return data
            return cast(int | None | Unset, data)

        log_every_steps = _parse_log_every_steps(d.pop("log_every_steps", UNSET))

        lr = d.pop("lr", UNSET)

        _lr_scaling = d.pop("lr_scaling", UNSET)
        lr_scaling: LrScaling | Unset
        if isinstance(_lr_scaling, Unset):
            lr_scaling = UNSET
        else:
            lr_scaling = LrScaling(_lr_scaling)

        max_rollbacks = d.pop("max_rollbacks", UNSET)

        max_seq_len = d.pop("max_seq_len", UNSET)

        max_warmup_ratio = d.pop("max_warmup_ratio", UNSET)

        _mixed_precision = d.pop("mixed_precision", UNSET)
        mixed_precision: MixedPrecision | Unset
        if isinstance(_mixed_precision, Unset):
            mixed_precision = UNSET
        else:
            mixed_precision = MixedPrecision(_mixed_precision)

        model = d.pop("model", UNSET)

        _on_collapse = d.pop("on_collapse", UNSET)
        on_collapse: OnCollapse | Unset
        if isinstance(_on_collapse, Unset):
            on_collapse = UNSET
        else:
            on_collapse = OnCollapse(_on_collapse)

        packing = d.pop("packing", UNSET)

        rollback_lr_factor = d.pop("rollback_lr_factor", UNSET)

        seed = d.pop("seed", UNSET)

        _selection_metric = d.pop("selection_metric", UNSET)
        selection_metric: JobConfigSelectionMetric | Unset
        if isinstance(_selection_metric, Unset):
            selection_metric = UNSET
        else:
            selection_metric = JobConfigSelectionMetric(_selection_metric)

        tokenizer_vocab_size = d.pop("tokenizer_vocab_size", UNSET)

        torch_compile = d.pop("torch_compile", UNSET)

        _trackers = d.pop("trackers", UNSET)
        trackers: list[JobConfigTrackersItem] | Unset = UNSET
        if _trackers is not UNSET:
            trackers = []
            for trackers_item_data in _trackers:
                trackers_item = JobConfigTrackersItem(trackers_item_data)

                trackers.append(trackers_item)

        warmup_ratio = d.pop("warmup_ratio", UNSET)

        weight_decay = d.pop("weight_decay", UNSET)

        job_config = cls(
            accumulation_steps=accumulation_steps,
            base_batch=base_batch,
            batch_size=batch_size,
            class_weighting=class_weighting,
            collapse_patience=collapse_patience,
            collapse_stop_ratio=collapse_stop_ratio,
            collapse_warn_ratio=collapse_warn_ratio,
            dropout=dropout,
            early_stopping_patience=early_stopping_patience,
            epochs=epochs,
            eval_batch_size=eval_batch_size,
            eval_every_steps=eval_every_steps,
            grad_clip=grad_clip,
            gradient_checkpointing=gradient_checkpointing,
            group_by_length=group_by_length,
            guard_grace_steps=guard_grace_steps,
            label_smoothing=label_smoothing,
            log_every_steps=log_every_steps,
            lr=lr,
            lr_scaling=lr_scaling,
            max_rollbacks=max_rollbacks,
            max_seq_len=max_seq_len,
            max_warmup_ratio=max_warmup_ratio,
            mixed_precision=mixed_precision,
            model=model,
            on_collapse=on_collapse,
            packing=packing,
            rollback_lr_factor=rollback_lr_factor,
            seed=seed,
            selection_metric=selection_metric,
            tokenizer_vocab_size=tokenizer_vocab_size,
            torch_compile=torch_compile,
            trackers=trackers,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
        )

        return job_config
