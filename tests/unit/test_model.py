"""The hub/local-directory path of build_model (the one `microsoft/codebert-base` takes), tested
on a local directory since there is no model hub here."""

import pytest

from streamguard.errors import InvalidTrainConfig
from streamguard.spec import TrainConfig
from streamguard.synth import synth_examples
from streamguard.training.model import build_model, build_scratch, position_limit


@pytest.fixture(scope="module")
def local_model_dir(tmp_path_factory):
    texts = [r["func"] for r in synth_examples(50, seed=0)]
    model, tokenizer = build_scratch(TrainConfig(model="tiny", max_seq_len=64,
                                                 tokenizer_vocab_size=400), texts)
    folder = tmp_path_factory.mktemp("pretrained")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_directory_loads_with_fresh_two_label_head_and_dropout(local_model_dir):
    cfg = TrainConfig(model=str(local_model_dir), max_seq_len=64, dropout=0.25)
    model, tokenizer = build_model(cfg, [])
    assert tokenizer.is_fast and model.config.num_labels == 2
    assert model.config.hidden_dropout_prob == 0.25
    assert model.config.id2label == {0: "safe", 1: "vulnerable"}
    assert position_limit(model.config) == 64  # 66 positions, 2 lost to RoBERTa's pad offset


def test_max_seq_len_above_the_position_limit_is_refused(local_model_dir):
    with pytest.raises(InvalidTrainConfig) as err:
        build_model(TrainConfig(model=str(local_model_dir), max_seq_len=128), [])
    assert err.value.problems[0]["field"] == "max_seq_len"
    assert "allowed: 8..64" in err.value.problems[0]["message"]
