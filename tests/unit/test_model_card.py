"""The model card and streamguard.json of an exported model, from hand-built records."""

import hashlib
import json
import re

import pytest
import torch

from streamguard.contract import MODEL_META_FILE
from streamguard.spec import TrainConfig
from streamguard.training import model_card
from streamguard.training.metrics import at_threshold, compute_metrics
from streamguard.training.model_card import describe_split, guard_events, md, write_model_card

HOSTILE = "evil | name\n---\n<script>alert(1)</script> `x` *bold* [link](http://x) \\| $x$"
CONFIG = TrainConfig(model="roberta-tiny", max_seq_len=256, epochs=3)


def logits_for(probs):
    p = torch.tensor(probs, dtype=torch.float64)
    return torch.stack([torch.zeros_like(p), torch.log(p / (1 - p))], dim=1).float()


def record(epoch, probs, labels, *, is_best=False, warnings=()):
    m = compute_metrics(logits_for(probs), torch.tensor(labels), 0.6)
    r = {"epoch": epoch, "step": 10 * epoch, "train_loss": 0.7, "val_loss": m.loss,
         **m.as_dict(), "is_best": is_best, "warnings": list(warnings), "collapse_streak": 0}
    r.pop("loss")
    return r, m


def build(tmp_path, *, threshold=0.35, test=True, history=None, **kw):
    r1, _ = record(1, [0.4, 0.6, 0.45, 0.7], [0, 1, 0, 1], is_best=True)
    r2, _ = record(2, [0.2, 0.6, 0.3, 0.8], [0, 0, 0, 0],  # a one-class split: AUCs n/a
                   warnings=[f"class safe predicted 1 times | {HOSTILE}"])
    test_m = compute_metrics(logits_for([0.3, 0.4, 0.6, 0.9, 0.2]), torch.tensor([0, 1, 1, 1, 0]),
                             0.5)
    test_record = {**test_m.as_dict(), "best_epoch": 1, "threshold": threshold,
                   "at_threshold": at_threshold(test_m, threshold or 0.5)} if test else None
    args = {
        "config": CONFIG, "history": [r1, r2] if history is None else history,
        "events": [("warning", {"epoch": 2, "step": 20, "message": HOSTILE}),
                   ("rollback", {"epoch": 2, "step": 20, "to_epoch": 1, "to_step": 10,
                                 "lr_factor": 0.5, "reason": HOSTILE})],
        "outcome": "completed", "message": f"done | {HOSTILE}", "best_epoch": 1,
        "test_metrics": test_record, "threshold": threshold,
        "data": {"train": {"name": "train.jsonl", "sha256": "ab" * 32, "rows": 10,
                           "label_counts": {"safe": 6, "vulnerable": 4}},
                 "validation": {"name": "va|l.jsonl", "sha256": "not hex | x", "rows": 4,
                                "label_counts": [2, 2]}},
        "created_by": f"job 0123 ({HOSTILE})", **kw}
    card_path, meta_path = write_model_card(tmp_path, **args)
    return card_path.read_text(), json.loads(meta_path.read_text())


def front_matter(card):
    assert card.startswith("---\n")
    end = card.index("\n---\n", 4)
    return card[4:end], card[end + 5:]


def test_meta_file_for_predict(tmp_path):
    _, meta = build(tmp_path)
    assert model_card.MODEL_META_FILE == MODEL_META_FILE  # training/ cannot import the contract
    assert meta == {"threshold": 0.35, "threshold_source": "validation best-F1 at epoch 1",
                    "labels": ["safe", "vulnerable"], "positive_label": 1, "max_seq_len": 256,
                    "best_epoch": 1, "model": "roberta-tiny",
                    "streamguard_version": meta["streamguard_version"]}
    assert isinstance(meta["streamguard_version"], str) and meta["streamguard_version"]


def test_no_threshold_means_default_half(tmp_path):
    card, meta = build(tmp_path, threshold=None)
    assert (meta["threshold"], meta["threshold_source"]) == (0.5, "default")
    assert "**0.5** (default)" in card


@pytest.mark.parametrize("bad", [1.5, -0.1, float("nan")])
def test_threshold_outside_unit_interval_is_refused(tmp_path, bad):
    with pytest.raises(ValueError, match="threshold"):
        build(tmp_path, threshold=bad, test=False)


def test_front_matter_is_yaml(tmp_path):
    yaml = pytest.importorskip("yaml")
    card, _ = build(tmp_path)
    head, _ = front_matter(card)
    meta = yaml.safe_load(head)
    assert meta["license"] == "other" and meta["library_name"] == "transformers"
    assert {"streamguard", "vulnerability-detection"} <= set(meta["tags"])
    assert {"f1", "mcc", "roc_auc", "pr_auc", "brier_score", "ece"} <= set(meta["metrics"])
    assert meta["streamguard_threshold"] == 0.35
    result = meta["model-index"][0]
    assert result["name"] == f"job 0123 ({HOSTILE})"  # hostile text survives as data
    values = {m["type"]: m["value"] for m in result["results"][0]["metrics"]}
    assert values["pr_auc"] == pytest.approx(1.0) and set(values) >= {"f1", "brier", "ece"}
    assert result["results"][0]["dataset"]["type"] == "custom"  # no Devign sha256 here


def test_front_matter_without_test_metrics(tmp_path):
    yaml = pytest.importorskip("yaml")
    card, _ = build(tmp_path, test=False)
    meta = yaml.safe_load(front_matter(card)[0])
    assert "model-index" not in meta
    assert "No test split was given" in card


def unescaped_pipes(line):
    """Pipes not escaped by a backslash (an escaped backslash does not escape the pipe)."""
    return len(re.findall(r"(?<!\\)(?:\\\\)*\|", line))


def test_hostile_text_cannot_break_tables_or_inject_html(tmp_path):
    card, _ = build(tmp_path)
    _, body = front_matter(card)
    assert "<script>" not in card and "\n---\n" not in body
    for block in re.split(r"\n\n+", body):
        lines = block.splitlines()
        if lines and lines[0].startswith("| "):
            widths = {unescaped_pipes(line) for line in lines}
            assert len(widths) == 1, block  # every row has the header's cell count
    assert md("a | b\nc <d> \\") == "a \\| b c \\<d\\> \\\\"


def test_markdown_renders_with_the_right_cells(tmp_path):
    markdown_it = pytest.importorskip("markdown_it")
    card, _ = build(tmp_path)
    html = markdown_it.MarkdownIt("commonmark").enable("table").render(front_matter(card)[1])
    assert "<script" not in html
    for table in re.findall(r"<table>.*?</table>", html, flags=re.S):
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)
        cells = {len(re.findall(r"<t[hd][ >]", row)) for row in rows}
        assert len(cells) == 1, table
    assert "evil | name --- &lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_sections_epochs_events_and_test_scores(tmp_path):
    card, _ = build(tmp_path)
    for heading in ("## Model", "## Intended use and limits", "## Training data", "## Config",
                    "## Evaluation per epoch", "## Guard events", "## Decision threshold",
                    "## Test metrics", "## How to use"):
        assert heading in card
    assert "not a vulnerability scanner" in card and "C-UDA" in card
    assert f"`{'ab' * 32}`" in card and "not hex \\| x" in card
    assert "| train | train.jsonl |" in card and "40.0%" in card
    epochs = [line for line in card.splitlines() if re.match(r"\| [12] \| ", line)]
    assert len(epochs) == 2
    assert "best" in epochs[0] and "1 warning(s)" in epochs[1]
    # the one-class epoch: ROC-AUC, PR-AUC, recall@FPR10 and the threshold are n/a
    assert epochs[1].count("n/a") >= 4 and "actual 0 / 4" in epochs[1]
    assert "not the project's Devign copy" in card
    assert "| rollback | 2 | 20 | back to epoch 1 (step 10), LR x0.5000:" in card
    assert "at the threshold 0.3500" in card
    assert "| TN / FP / FN / TP | 2 / 0 / 1 / 2 | 2 / 0 / 0 / 3 |" in card
    assert '"max_seq_len": 256' in card  # the config block
    assert "streamguard predict --model" in card and "from_pretrained" in card


def test_resumed_history_and_dict_config(tmp_path):
    r3, _ = record(3, [0.4, 0.6], [0, 1])
    card, meta = build(tmp_path, history=[r3], config=CONFIG.model_dump(mode="json"))
    assert "Epochs before 3 ran in an earlier attempt" in card
    assert meta["max_seq_len"] == 256
    card, _ = build(tmp_path, history=[])
    assert "No epoch finished." in card


def test_none_and_non_finite_render_as_na():
    assert model_card.num(None) == "n/a" and model_card.num(float("nan")) == "n/a"
    assert model_card.num(True) == "n/a" and model_card.num(0.12345) == "0.1235"


def test_devign_hashes_are_recognised(tmp_path):
    train_sha = "1353c0329ddb383ac91963b153d970efbec763625c51b7b3b4a6c350b91bd070"
    valid_sha = "af4b8a61f4d9fda251acea4c0f150fb75c3b041dc629fcae9331e69041adce23"
    data = {"train": {"name": "train.jsonl", "rows": 21854, "label_counts": [11887, 9967],
                      "sha256": train_sha},
            "validation": {"name": "valid.jsonl", "rows": 2732, "label_counts": [1486, 1246],
                           "sha256": valid_sha}}
    card, _ = build(tmp_path, data=data)
    assert "the project's copy of Devign" in card and "validation = Devign valid.jsonl" in card
    assert "45.6%" in card  # the train split's vulnerable share
    assert "dataset: {type: devign" in card


def test_describe_split(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_bytes(b'{"func": "int f(void);", "target": 1}\n{"func": "x", "target": 0}\n')
    assert describe_split(path, [1, 0]) == {
        "name": "train.jsonl", "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "rows": 2, "label_counts": {"safe": 1, "vulnerable": 1}}


def test_guard_events_follow_the_evaluations_not_the_step_numbers():
    earlier = {"epoch": 1, "step": 4, "to_epoch": 0, "to_step": 0, "reason": "before resume"}
    rollback = {"epoch": 3, "step": 30, "to_epoch": 2, "to_step": 20, "reason": "collapsed"}
    evaluations = [
        {"epoch": 2, "step": 20, "warnings": ["w1"]},
        {"epoch": 3, "step": 30, "warnings": ["w2", "w3"]},  # collapsed: rolled back to step 20
        {"epoch": 3, "step": 25, "warnings": ["w4"]},  # the epoch again, after the rollback
    ]
    events = guard_events(evaluations, [earlier, rollback])
    assert [(k, p.get("message") or p["reason"]) for k, p in events] == [
        ("rollback", "before resume"), ("warning", "w1"), ("warning", "w2"),
        ("warning", "w3"), ("rollback", "collapsed"), ("warning", "w4")]
    assert events[1][1] == {"epoch": 2, "step": 20, "message": "w1"}
