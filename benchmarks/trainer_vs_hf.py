"""Training throughput: StreamGuard's loop against Hugging Face `Trainer`, in one process.

Same model (identical initial weights), same real Devign functions, batch size, epochs and
precision for every contender. `Trainer` runs twice: dynamic padding (its default) and
`train_sampling_strategy="group_by_length"`. StreamGuard runs with its defaults (stratified
length buckets, the first-token forward, fused AdamW, no host sync in the step) and, where
asked, with packing or torch.compile. Each then predicts the validation rows, so speed is
compared at validation metrics (accuracy, F1, ROC-AUC and their binomial noise) side by side.

Throughput is training samples per second with evaluation excluded on both sides: `Trainer`'s
own `train_samples_per_second`, StreamGuard's epoch timer. On a GPU the script also prints model
FLOP utilisation: 6 x non-embedding parameters x real (non-padding) tokens, over the GPU's
dense bf16 peak.

CPU (the README's figure; about 10 minutes on 2 idle cores):
    python benchmarks/trainer_vs_hf.py
GPU (what benchmarks/gpu.sh runs):
    python benchmarks/trainer_vs_hf.py --model random-roberta-base --precision bf16 \\
        --samples 6000 --variants default,packed,compiled

Data: ../shared/data/devign/{train,valid}.jsonl, or $STREAMGUARD_DEVIGN_DIR. The last line is
one JSON object (`ratio_vs_hf_dynamic`, `ratio_vs_hf_grouped`, the metrics of each contender).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging  # noqa: E402

from streamguard.datasets import read_examples  # noqa: E402
from streamguard.sinks import NullSink  # noqa: E402
from streamguard.spec import TrainConfig  # noqa: E402
from streamguard.training.data import TokenizedSplit, make_loader, tokenize  # noqa: E402
from streamguard.training.loop import train  # noqa: E402
from streamguard.training.metrics import compute_metrics  # noqa: E402
from streamguard.training.model import build_scratch  # noqa: E402

DEVIGN = Path(os.environ.get("STREAMGUARD_DEVIGN_DIR", REPO_ROOT.parent / "shared/data/devign"))
#: dense bf16 tensor-core peak, FLOP/s, by device name
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12}
VARIANTS = {
    "default": {},
    "packed": {"packing": True},
    "compiled": {"torch_compile": True},
    "unbucketed": {"group_by_length": False},
}


def sample(name: str, n: int, seed: int) -> tuple[list[str], list[int]]:
    path = DEVIGN / name
    if not path.is_file():
        sys.exit(f"Devign data missing: {path} (set STREAMGUARD_DEVIGN_DIR)")
    examples = read_examples(path)
    random.Random(seed).shuffle(examples)
    picked = examples[:n]
    return [e.func for e in picked], [e.target for e in picked]


class HFDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, split: TokenizedSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"input_ids": self.split.input_ids[i], "labels": self.split.labels[i]}


def metrics_of(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    m = compute_metrics(logits, labels, float("nan"))
    return {"accuracy": m.accuracy, "f1": m.f1, "roc_auc": m.roc_auc}


def run_streamguard(model_dir: Path, tokenizer: Any, train_split: TokenizedSplit,
                    val_split: TokenizedSplit, cfg: TrainConfig, device: torch.device,
                    work: Path) -> dict[str, Any]:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    pad = int(tokenizer.pad_token_id)
    loader = make_loader(train_split, cfg.batch_size, pad_id=pad, shuffle=True,
                         group_by_length=cfg.group_by_length, seed=cfg.seed,
                         pin_memory=device.type == "cuda",
                         packed_row_len=cfg.max_seq_len if cfg.packing else None,
                         pad_multiple=64 if cfg.torch_compile else 1)
    val = make_loader(val_split, cfg.effective_eval_batch_size, pad_id=pad, shuffle=False,
                      group_by_length=True, seed=0, pin_memory=device.type == "cuda")
    counts = [train_split.labels.count(0), train_split.labels.count(1)]
    result = train(cfg, model=model, tokenizer=tokenizer, train_loader=loader, val_loader=val,
                   label_counts=counts, work_dir=work, device=device, sink=NullSink())
    last = result.history[-1] if result.history else {}
    return {"samples_per_s": result.train_samples_per_s, "outcome": result.outcome.value,
            "accuracy": last.get("accuracy"), "f1": last.get("f1"),
            "roc_auc": last.get("roc_auc")}


def run_hf(model_dir: Path, tokenizer: Any, train_split: TokenizedSplit,
           val_split: TokenizedSplit, cfg: TrainConfig, device: torch.device, grouped: bool,
           work: Path) -> dict[str, Any]:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    extra: dict[str, Any] = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    args = TrainingArguments(output_dir=str(work), per_device_train_batch_size=cfg.batch_size,
                             per_device_eval_batch_size=cfg.effective_eval_batch_size,
                             num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
                             weight_decay=cfg.weight_decay,
                             save_strategy="no", eval_strategy="no", report_to=[],
                             use_cpu=device.type == "cpu", seed=cfg.seed, disable_tqdm=True,
                             logging_strategy="no", bf16=cfg.mixed_precision.value == "bf16",
                             **extra)
    trainer = Trainer(model=model, args=args, train_dataset=HFDataset(train_split),
                      data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.perf_counter()
    out = trainer.train()
    elapsed = time.perf_counter() - t0
    rate = float(out.metrics.get("train_samples_per_second",
                                 len(train_split) * cfg.epochs / elapsed))
    pred = trainer.predict(HFDataset(val_split))
    logits = torch.as_tensor(pred.predictions)
    return {"samples_per_s": rate, **metrics_of(logits, torch.tensor(val_split.labels))}


def non_embedding_params(model_dir: Path) -> int:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    total = sum(p.numel() for p in model.parameters())
    return total - sum(p.numel() for n, p in model.named_parameters() if "embeddings" in n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=4000, help="training functions")
    p.add_argument("--val-samples", type=int, default=1000)
    p.add_argument("--model", default="tiny", choices=["tiny", "random-roberta-base"])
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--precision", default="none", choices=["none", "bf16"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--variants", default="default",
                   help=f"StreamGuard variants, comma-separated: {', '.join(VARIANTS)}")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    texts, labels = sample("train.jsonl", args.samples, args.seed)
    val_texts, val_labels = sample("valid.jsonl", args.val_samples, args.seed)
    cfg = TrainConfig(model=args.model, max_seq_len=args.max_len, batch_size=args.batch_size,
                      epochs=args.epochs, lr=args.lr, lr_scaling="none", seed=args.seed,
                      early_stopping_patience=0, mixed_precision=args.precision,
                      collapse_patience=1000)
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, tokenizer = build_scratch(cfg, texts)
        model.save_pretrained(work / "init")  # identical initial weights for every contender
        train_split = tokenize(tokenizer, texts, labels, cfg.max_seq_len)
        val_split = tokenize(tokenizer, val_texts, val_labels, cfg.max_seq_len)
        lengths = train_split.lengths
        real_tokens = sum(lengths) * cfg.epochs
        print(f"{len(train_split)} Devign functions (mean {sum(lengths) / len(lengths):.0f} "
              f"tokens at max length {cfg.max_seq_len}), {len(val_split)} validation, model "
              f"{cfg.model}, batch {cfg.batch_size}, {cfg.epochs} epoch(s), precision "
              f"{cfg.mixed_precision.value}, device {device}, threads "
              f"{torch.get_num_threads()}", flush=True)
        # Trainer first, then StreamGuard: neither side pays the process's cold start alone
        # (the first contender also warms the allocator and kernels).
        rows["hf_dynamic"] = run_hf(work / "init", tokenizer, train_split, val_split, cfg,
                                    device, False, work / "hf1")
        rows["hf_grouped"] = run_hf(work / "init", tokenizer, train_split, val_split, cfg,
                                    device, True, work / "hf2")
        for name in args.variants.split(","):
            variant = TrainConfig(**{**cfg.model_dump(), **VARIANTS[name]})
            rows[f"streamguard_{name}"] = run_streamguard(
                work / "init", tokenizer, train_split, val_split, variant, device,
                work / f"sg-{name}")
        n_params = non_embedding_params(work / "init")
    peak = next((v for k, v in PEAK_BF16.items()
                 if device.type == "cuda" and k in torch.cuda.get_device_name(device)), None)
    noise = math.sqrt(0.25 / len(val_split))  # binomial std of an accuracy near 0.5
    hf = rows["hf_dynamic"]["samples_per_s"]
    print(f"\n{'contender':28s} {'samples/s':>10s} {'vs HF dyn':>9s} {'vs HF grp':>9s} "
          f"{'MFU':>6s} {'acc':>6s} {'F1':>6s} {'AUC':>6s}")
    for name, row in rows.items():
        tokens_per_s = real_tokens / (len(train_split) * cfg.epochs / row["samples_per_s"])
        row["mfu"] = 6 * n_params * tokens_per_s / peak if peak else None
        mfu = "n/a" if row["mfu"] is None else f"{row['mfu']:.1%}"
        print(f"{name:28s} {row['samples_per_s']:10.1f} {row['samples_per_s'] / hf:9.2f} "
              f"{row['samples_per_s'] / rows['hf_grouped']['samples_per_s']:9.2f} {mfu:>6s} "
              f"{row['accuracy'] or 0:6.3f} {row['f1'] or 0:6.3f} {row['roc_auc'] or 0:6.3f}")
    print(f"(validation accuracy noise: one binomial std = {noise:.3f} on {len(val_split)} rows)")
    best = rows[f"streamguard_{args.variants.split(',')[0]}"]
    summary = {
        "samples": len(train_split), "max_len": cfg.max_seq_len, "model": cfg.model,
        "device": str(device), "precision": cfg.mixed_precision.value,
        "ratio_vs_hf_dynamic": round(best["samples_per_s"] / hf, 3),
        "ratio_vs_hf_grouped": round(best["samples_per_s"]
                                     / rows["hf_grouped"]["samples_per_s"], 3),
        "accuracy_noise": round(noise, 4), "non_embedding_params": n_params,
        "contenders": {k: {m: (round(v, 4) if isinstance(v, float) else v)
                           for m, v in r.items()} for k, r in rows.items()},
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
