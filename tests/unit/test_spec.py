"""TrainConfig validation: defaults, and refusals that name the field and the allowed range."""

import pytest

from streamguard.errors import InvalidTrainConfig
from streamguard.spec import TrainConfig, parse_train_config


def test_defaults_match_the_product_rules():
    c = TrainConfig()
    assert (c.max_seq_len, c.epochs, c.batch_size, c.accumulation_steps, c.lr, c.base_batch) == \
        (512, 10, 16, 1, 2e-5, 16)
    assert (c.lr_scaling, c.class_weighting, c.mixed_precision) == ("sqrt", "balanced", "none")
    assert (c.weight_decay, c.warmup_ratio, c.max_warmup_ratio, c.label_smoothing) == \
        (0.01, 0.1, 0.2, 0.05)
    assert (c.collapse_warn_ratio, c.collapse_stop_ratio, c.collapse_patience) == (0.3, 0.2, 3)
    assert (c.grad_clip, c.early_stopping_patience, c.selection_metric, c.seed) == \
        (1.0, 3, "f1", 42)


def test_frozen_and_json_round_trip():
    c = parse_train_config({"model": "tiny", "batch_size": "64", "lr": "3e-5"})
    assert c.batch_size == 64
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error
        c.lr = 1.0  # type: ignore[misc]
    assert TrainConfig.model_validate_json(c.to_json()) == c


@pytest.mark.parametrize(("data", "field", "fragment"), [
    ({"lr": float("nan")}, "lr", "finite"),
    ({"lr": "inf"}, "lr", "finite"),
    ({"lr": 0}, "lr", "(0.0, 1.0]"),
    ({"lr": -1e-5}, "lr", "greater than 0"),
    ({"batch_size": 0}, "batch_size", "[1, 4096]"),
    ({"warmup_ratio": 1.5}, "warmup_ratio", "[0.0, 1.0]"),
    ({"mixed_precision": "fp8"}, "mixed_precision", "'none', 'bf16' or 'fp16'"),
    ({"lr_scaling": "cubic"}, "lr_scaling", "'sqrt', 'linear' or 'none'"),
    ({"selection_metric": "loss"}, "selection_metric", "'f1'"),
    ({"bacth_size": 4}, "bacth_size", "known fields"),
    ({"collapse_stop_ratio": 0.5}, "config", "must not exceed collapse_warn_ratio"),
])
def test_bad_values_name_the_field_and_what_is_allowed(data, field, fragment):
    with pytest.raises(InvalidTrainConfig) as err:
        parse_train_config(data)
    problem = err.value.problems[0]
    assert problem["field"] == field, err.value.problems
    assert fragment in problem["message"], problem["message"]
