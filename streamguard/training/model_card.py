"""The model card (`README.md`) and StreamGuard's facts file of an exported model directory.

    write_model_card(work_dir / "model", config=config, history=result.history, events=...,
                     outcome=result.outcome, message=result.message, best_epoch=...,
                     test_metrics=result.test_metrics, threshold=..., data=..., created_by=...)

`README.md` is a Hugging Face-style card: YAML front matter (license, tags, metrics, the test
results as `model-index`), then what the model is, what it is not, its data (hashes, counts),
config, every epoch's metrics and prediction distribution, the guard's events, the decision
threshold, the test scores at 0.5 and at that threshold, and how to load it.
`streamguard.json` (MODEL_META_FILE) is what `streamguard predict` and the inference worker read:
the threshold (0.5 when none was chosen) and `max_seq_len`.

Job names and messages are user text: every free-text value is escaped for markdown (one line,
no table breaks, no HTML) and every YAML scalar is written as a JSON string.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from streamguard.spec import TrainConfig

#: = `streamguard.contract.MODEL_META_FILE` (training/ never imports the contract; a test pins it)
MODEL_META_FILE = "streamguard.json"
MODEL_CARD_FILE = "README.md"
DEFAULT_THRESHOLD = 0.5
LABELS = ["safe", "vulnerable"]

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|&~$#])")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def md(value: Any) -> str:
    """User text as one line of inert markdown (also safe inside a table cell)."""
    text = " ".join(str(value).splitlines())
    text = "".join(c if c.isprintable() else " " for c in text)
    return _MD_SPECIAL.sub(r"\\\1", text).strip()


def num(value: Any, digits: int = 4) -> str:
    """A number, or "n/a" for None, a missing value or a non-finite float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return "n/a"
    return str(value) if isinstance(value, int) else f"{value:.{digits}f}"


def _yaml(value: Any) -> str:
    """A YAML scalar: JSON (a YAML subset) with non-finite numbers as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return "null"
    # JSON strings are YAML double-quoted scalars; <, > and & as \u escapes so that a
    # renderer showing the front matter never meets markup
    return (json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("&", "\\u0026"))


def _fence(text: str, lang: str = "") -> str:
    """A fenced code block whose fence is longer than any backtick run inside."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def describe_split(path: str | Path, labels: Sequence[int]) -> dict[str, Any]:
    """A split for the card: file name (no server path), sha256 of its bytes, rows, labels."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    vulnerable = sum(1 for y in labels if int(y) == 1)
    return {"name": Path(path).name, "sha256": digest.hexdigest(), "rows": len(labels),
            "label_counts": {"safe": len(labels) - vulnerable, "vulnerable": vulnerable}}


def _counts(split: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(safe, vulnerable) from `label_counts` as a dict or a [safe, vulnerable] list."""
    counts = split.get("label_counts")
    if isinstance(counts, Mapping):
        return counts.get("safe"), counts.get("vulnerable")
    if isinstance(counts, Sequence) and len(counts) == 2:
        return counts[0], counts[1]
    return None, None


def _distribution(record: Mapping[str, Any]) -> str:
    d = record.get("prediction_distribution") or {}
    pv, ps = d.get("predicted_vulnerable"), d.get("predicted_safe")
    av, as_ = d.get("actual_vulnerable"), d.get("actual_safe")
    if not isinstance(pv, int) or not isinstance(ps, int):
        return "n/a"
    share = f" ({pv / (pv + ps):.1%} vulnerable)" if pv + ps else ""
    return f"{pv} / {ps}{share}; actual {num(av)} / {num(as_)}"


#: sha256 of the project's Devign files (../shared/data/devign/PROVENANCE.md)
DEVIGN_SHA256 = {
    "1353c0329ddb383ac91963b153d970efbec763625c51b7b3b4a6c350b91bd070": "train.jsonl",
    "af4b8a61f4d9fda251acea4c0f150fb75c3b041dc629fcae9331e69041adce23": "valid.jsonl",
    "b82b672981ea80cb6c4b199764b5c930a864aab88d065cd0d674b1ee0b2e4509": "test.jsonl",
}


def _all_devign(data: Mapping[str, Mapping[str, Any]]) -> bool:
    return bool(data) and all(str(s.get("sha256")) in DEVIGN_SHA256 for s in data.values())


def _provenance(data: Mapping[str, Mapping[str, Any]]) -> str:
    known = [f"{md(split)} = Devign {DEVIGN_SHA256[str(s.get('sha256'))]}"
             for split, s in data.items() if str(s.get("sha256")) in DEVIGN_SHA256]
    if not any(s.get("sha256") for s in data.values()):
        return "Data: provenance not recorded (no file hashes were given)."
    if _all_devign(data):
        return ("Data: the project's copy of Devign (all 27,318 FFmpeg/QEMU functions of "
                f"CodeXGLUE defect detection; {', '.join(known)} by sha256). Its split is "
                "deterministic but not the official CodeXGLUE split: scores are not comparable "
                "with CodeXGLUE leaderboard numbers.")
    return ("Data: " + (f"partly the project's Devign copy ({', '.join(known)}); " if known
                        else "not the project's Devign copy (no sha256 matches); ")
            + "the provenance of the other files is whoever supplied them (hashes below).")


def guard_events(evaluations: Sequence[Mapping[str, Any]],
                 rollbacks: Sequence[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Warnings and rollbacks in the order they happened (RunResult.evaluations, .rollbacks).

    Steps are no clock (a rollback sets the step back), so each rollback follows the evaluation
    it came from (same epoch and step); one matching none is an earlier attempt's and leads.
    """
    pending = [dict(r) for r in rollbacks]
    ordered: list[tuple[str, dict[str, Any]]] = []
    for r in evaluations:
        ordered += [("warning", {"epoch": r.get("epoch"), "step": r.get("step"), "message": w})
                    for w in r.get("warnings") or []]
        at = (r.get("epoch"), r.get("step"))
        match = next((i for i, p in enumerate(pending) if (p.get("epoch"), p.get("step")) == at),
                     None)
        if match is not None:
            ordered.append(("rollback", pending.pop(match)))
    return [("rollback", p) for p in pending] + ordered


def _confusion(record: Mapping[str, Any]) -> str:
    try:
        (tn, fp), (fn, tp) = record["confusion_matrix"]
    except (KeyError, TypeError, ValueError):
        return "n/a"
    return " / ".join(num(v) for v in (tn, fp, fn, tp))


def _threshold_source(threshold: float | None, best_epoch: int | None) -> str:
    if threshold is None:
        return "default"
    return f"validation best-F1 at epoch {best_epoch}" if best_epoch else "validation best-F1"


SCORE_ROWS = [("accuracy", "Accuracy"), ("precision", "Precision (vulnerable)"),
              ("recall", "Recall (vulnerable)"), ("f1", "F1 (vulnerable)"), ("mcc", "MCC")]
RANK_ROWS = [("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC (average precision)"),
             ("recall_at_fpr10", "Recall at FPR <= 10 %"), ("brier", "Brier score"),
             ("ece", "ECE (10 bins)"), ("loss", "Loss")]


def _test_section(test: Mapping[str, Any] | None, threshold: float) -> str:
    if not test:
        return "No test split was given (or no checkpoint passed the guard): no test scores."
    at = test.get("at_threshold") or {}
    head = ["Metric", "at 0.5 (argmax)", f"at the threshold {num(threshold)}"]
    rows = [[label, num(test.get(key)), num(at.get(key)) if at else "n/a"]
            for key, label in SCORE_ROWS]
    rows.append(["Predicted vulnerable / safe", _distribution(test),
                 _distribution(at) if at else "n/a"])
    rows.append(["TN / FP / FN / TP", _confusion(test), _confusion(at)])
    ranking = _table(["Threshold-free metric", "Test"],
                     [[label, num(test.get(key))] for key, label in RANK_ROWS])
    return f"{_table(head, rows)}\n\n{ranking}"


def _epoch_rows(history: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    rows = []
    for r in history:
        notes = (["best"] if r.get("is_best") else []) + (
            [f"{len(r['warnings'])} warning(s)"] if r.get("warnings") else [])
        rows.append([num(r.get("epoch")), num(r.get("step")), num(r.get("train_loss")),
                     num(r.get("val_loss")), num(r.get("f1")), num(r.get("mcc")),
                     num(r.get("roc_auc")), num(r.get("pr_auc")), num(r.get("recall_at_fpr10")),
                     num(r.get("brier")), num(r.get("ece")), num(r.get("best_threshold")),
                     _distribution(r), md(", ".join(notes))])
    return rows


def _event_rows(events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[list[str]]:
    rows = []
    for kind, p in events:
        if kind == "rollback":
            detail = (f"back to epoch {num(p.get('to_epoch'))} (step {num(p.get('to_step'))}), "
                      f"LR x{num(p.get('lr_factor'))}: {p.get('reason', '')}")
        else:
            detail = str(p.get("message", "")) or json.dumps(p, sort_keys=True, default=str)
        rows.append([md(kind), num(p.get("epoch")), num(p.get("step")), md(detail)])
    return rows


def write_model_card(model_dir: Path, *, config: TrainConfig | Mapping[str, Any],
                     history: Sequence[Mapping[str, Any]],
                     events: Sequence[tuple[str, Mapping[str, Any]]] = (),
                     outcome: str, message: str, best_epoch: int | None,
                     test_metrics: Mapping[str, Any] | None, threshold: float | None,
                     data: Mapping[str, Mapping[str, Any]],
                     created_by: str = "streamguard") -> tuple[Path, Path]:
    """Write `model_dir/README.md` and `model_dir/streamguard.json`; returns both paths.

    Args:
        config: the run's TrainConfig (or its JSON dict).
        history: the epoch records in order (RunResult.history).
        events: guard warnings and rollbacks as (kind, payload), in order.
        outcome, message: how the run ended (RunResult.outcome, .message).
        best_epoch: the epoch of the exported checkpoint.
        test_metrics: the test record (EvalMetrics.as_dict plus `at_threshold`), or None.
        threshold: the validation-chosen threshold; None means the default 0.5.
        data: per split ("train", "validation", "test"): `describe_split`'s dict.
        created_by: who trained it (e.g. "streamguard train", "job 0123… (name)").
    Raises:
        ValueError: a threshold outside [0, 1] or not finite.
    """
    if threshold is not None and not (math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"threshold must lie in [0, 1], got {threshold}")
    cfg = config.model_dump(mode="json") if isinstance(config, TrainConfig) else dict(config)
    used = DEFAULT_THRESHOLD if threshold is None else float(threshold)
    source = _threshold_source(threshold, best_epoch)
    try:
        sg_version = version("streamguard")
    except PackageNotFoundError:  # a source tree that was never installed
        sg_version = "0.0.0+unknown"
    model_dir.mkdir(parents=True, exist_ok=True)
    meta = {"threshold": used, "threshold_source": source, "labels": LABELS,
            "positive_label": 1, "max_seq_len": cfg.get("max_seq_len"),
            "best_epoch": best_epoch, "model": cfg.get("model"),
            "streamguard_version": sg_version}
    meta_path = model_dir / MODEL_META_FILE
    meta_path.write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")

    best = next((r for r in reversed(history) if r.get("epoch") == best_epoch
                 and r.get("is_best")), None)
    front = ["---", "license: other", 'license_name: "research-use-see-card"',
             "library_name: transformers", "pipeline_tag: text-classification",
             "tags:", *(f"- {t}" for t in ("streamguard", "vulnerability-detection", "code",
                                            "c", "devign")),
             "metrics:", *(f"- {m}" for m in ("f1", "mcc", "roc_auc", "pr_auc",
                                               "recall_at_fpr10", "brier_score", "ece")),
             f"streamguard_threshold: {_yaml(used)}", f"outcome: {_yaml(str(outcome))}"]
    if test_metrics:
        front += ["model-index:", f"- name: {_yaml(created_by)}", "  results:",
                  "  - task: {type: text-classification, name: vulnerable function "
                  "classification}",
                  "    dataset: {type: " + ("devign, name: \"Devign (StreamGuard split)\""
                                         if _all_devign(data) else "custom, name: \"custom\"")
                  + ", split: test}", "    metrics:"]
        at = test_metrics.get("at_threshold") or {}
        scores = [(k, f"{k} (test, p >= 0.5)", test_metrics.get(k)) for k in ("f1", "mcc")]
        scores += [(k, f"{k} (test, p >= {used:.4f})", at.get(k)) for k in ("f1", "mcc") if at]
        scores += [(k, f"{k} (test)", test_metrics.get(k))
                   for k in ("roc_auc", "pr_auc", "recall_at_fpr10", "brier", "ece")]
        front += [f"    - {{type: {k}, name: {_yaml(name)}, value: {_yaml(v)}}}"
                  for k, name, v in scores]
    front.append("---")

    split_rows = []
    for name, split in data.items():
        safe, vuln = _counts(split)
        total = (safe or 0) + (vuln or 0)
        sha = str(split.get("sha256", ""))
        split_rows.append([md(name), md(split.get("name", "n/a")),
                           f"`{sha}`" if _HEX64.match(sha) else md(sha or "n/a"),
                           num(split.get("rows")), num(safe), num(vuln),
                           f"{vuln / total:.1%}" if total and vuln is not None else "n/a"])
    first_epoch = history[0].get("epoch") if history else None
    resumed_note = (f"\n\nEpochs before {first_epoch} ran in an earlier attempt of this job "
                    "(it was resumed); their records are in the job's metrics history."
                    if isinstance(first_epoch, int) and first_epoch > 1 else "")
    threshold_text = (
        f"**{num(used)}** ({md(source)}; validation F1 there "
        f"{num(best.get('best_threshold_f1') if best else None)}). It was chosen on the "
        "validation split, never on test."
        if threshold is not None else
        "**0.5** (default): no threshold was chosen (no best epoch, or a validation split "
        "with one class).")
    sections = [
        "\n".join(front),
        f"# {md(created_by)}: vulnerable-function classifier",
        "## Model\n\n"
        f"- Base model: {md(cfg.get('model', 'n/a'))}; max sequence length "
        f"{num(cfg.get('max_seq_len'))} tokens (longer functions are truncated).\n"
        f"- Trained by StreamGuard {md(sg_version)}: outcome **{md(outcome)}**: {md(message)}\n"
        f"- Exported checkpoint: epoch {num(best_epoch)}. Labels: 0 = safe, 1 = vulnerable.",
        "## Intended use and limits\n\n"
        "- A Devign-style classifier of single C/C++ functions (FFmpeg and QEMU in training): it "
        "ranks functions for human review. It is **not a vulnerability scanner**: it sees one "
        "function without its callers, build or history, names no vulnerability type or line, "
        "and a \"safe\" score is no evidence of safety.\n"
        f"- {_provenance(data)}\n"
        "- Devign labels come from vulnerability-fixing commits and are noisy (60 pairs of "
        "identical functions carry opposite labels); accuracies reported on this task are about "
        "0.6-0.7 (CodeBERT about 0.62 on CodeXGLUE). Expect lower scores on code unlike "
        "FFmpeg/QEMU.\n"
        "- Data licence: CodeXGLUE's C-UDA (computational use); the functions are excerpts of "
        "LGPL/GPL code. Research use; review the licences before shipping the model in a "
        "product. Cite Devign (Zhou et al., NeurIPS 2019) and CodeXGLUE (Lu et al., 2021).",
        "## Training data\n\n" + (_table(["Split", "File", "sha256", "Rows", "Safe",
                                           "Vulnerable", "Vulnerable share"], split_rows)
                                   if split_rows else "Not recorded."),
        "## Config\n\n" + _fence(json.dumps(cfg, indent=2, sort_keys=True), "json"),
        "## Evaluation per epoch (validation)\n\n" + (_table(
            ["Epoch", "Step", "Train loss", "Val loss", "F1", "MCC", "ROC-AUC", "PR-AUC",
             "Recall@FPR10", "Brier", "ECE", "Best-F1 threshold",
             "Predicted vulnerable / safe", "Notes"], _epoch_rows(history))
            if history else "No epoch finished.") + resumed_note
        + "\n\nF1, MCC and the predicted counts are at the argmax (p >= 0.5). An epoch listed "
          "twice ran again after a rollback.",
        "## Guard events\n\n" + (_table(["Kind", "Epoch", "Step", "Detail"],
                                        _event_rows(events)) if events else "None."),
        "## Decision threshold\n\n"
        f"A function is reported vulnerable when p(vulnerable) >= the threshold: {threshold_text} "
        f"`{MODEL_META_FILE}` holds it.",
        "## Test metrics (best checkpoint)\n\n" + _test_section(test_metrics, used),
        "## How to use\n\n" + _fence(
            "streamguard predict --model ./model functions.jsonl --out scored.jsonl", "bash")
        + "\n\n" + _fence(
            "import json, torch\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n"
            "tok = AutoTokenizer.from_pretrained(\"./model\")\n"
            "model = AutoModelForSequenceClassification.from_pretrained(\"./model\").eval()\n"
            f"meta = json.load(open(\"./model/{MODEL_META_FILE}\"))\n"
            "enc = tok(code, truncation=True, max_length=meta[\"max_seq_len\"], "
            "return_tensors=\"pt\")\n"
            "with torch.no_grad():\n"
            "    p = torch.softmax(model(**enc).logits.double(), dim=-1)[0, 1].item()\n"
            "vulnerable = p >= meta[\"threshold\"]", "python"),
    ]
    card_path = model_dir / MODEL_CARD_FILE
    card_path.write_text("\n\n".join(sections) + "\n", encoding="utf-8")
    return card_path, meta_path
