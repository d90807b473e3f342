"""Mixed precision: bf16 autocast runs on the CPU path; fp16 (GradScaler) needs CUDA and is
refused elsewhere with the field named. The fp16 run itself is a `gpu` test."""

from __future__ import annotations

import math

import pytest
import torch

from streamguard.errors import InvalidTrainConfig
from streamguard.sinks import ListSink
from streamguard.spec import TrainConfig
from streamguard.training import StopReason, run
from streamguard.training.run import pick_device
from tests.unit.test_loop import FAST, write_splits


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("amp"))


def test_bf16_autocast_trains_with_finite_losses(splits, tmp_path):
    sink = ListSink()
    result = run(TrainConfig(**{**FAST, "mixed_precision": "bf16", "epochs": 1}),
                 train_path=splits["train"], val_path=splits["val"], work_dir=tmp_path,
                 sink=sink, device="cpu")
    assert result.outcome != StopReason.NON_FINITE_LOSS
    assert sink.config["mixed_precision"] == "bf16"
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["val_loss"])
               for r in sink.epochs)


def test_fp16_without_cuda_is_refused():
    with pytest.raises(InvalidTrainConfig) as err:
        pick_device(TrainConfig(model="tiny", mixed_precision="fp16"), "cpu")
    assert err.value.problems[0]["field"] == "mixed_precision"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 loss scaling needs CUDA")
def test_fp16_on_cuda_trains_with_finite_losses(splits, tmp_path):
    sink = ListSink()
    result = run(TrainConfig(**{**FAST, "mixed_precision": "fp16", "epochs": 1}),
                 train_path=splits["train"], val_path=splits["val"], work_dir=tmp_path,
                 sink=sink, device="cuda")
    assert result.outcome != StopReason.NON_FINITE_LOSS
    assert all(math.isfinite(r["train_loss"]) for r in sink.epochs)
