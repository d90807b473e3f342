"""Training throughput: StreamGuard's loop vs Hugging Face `Trainer` (its defaults), one run.

Same tiny model (identical initial weights), same real Devign sample, batch size and epochs.
Prints training samples/s of each and the ratio. Evaluation is excluded from both timings.

    python benchmarks/trainer_vs_hf.py --samples 2000 --max-len 256 --batch-size 32 --epochs 1

Data: ../shared/data/devign/train.jsonl, or $STREAMGUARD_DEVIGN_DIR/train.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)
from transformers.utils import logging as hf_logging

from streamguard.datasets import read_examples
from streamguard.sinks import NullSink
from streamguard.spec import TrainConfig
from streamguard.training.data import make_loader, tokenize
from streamguard.training.loop import train
from streamguard.training.model import build_scratch

DEVIGN = Path(os.environ.get("STREAMGUARD_DEVIGN_DIR",
                             Path(__file__).resolve().parents[2] / "shared/data/devign"))


def sample(n: int, seed: int) -> tuple[list[str], list[int]]:
    path = DEVIGN / "train.jsonl"
    if not path.is_file():
        sys.exit(f"Devign data missing: {path} (set STREAMGUARD_DEVIGN_DIR)")
    examples = read_examples(path)
    random.Random(seed).shuffle(examples)
    picked = examples[:n]
    return [e.func for e in picked], [e.target for e in picked]


class HFDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    def __init__(self, ids: list[list[int]], labels: list[int]) -> None:
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, object]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def run_streamguard(model_dir: Path, tokenizer, split, cfg: TrainConfig, group: bool,
                    work: Path) -> float:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    loader = make_loader(split, cfg.batch_size, pad_id=tokenizer.pad_token_id, shuffle=True,
                         group_by_length=group, seed=cfg.seed)
    val = make_loader(tokenize(tokenizer, ["int f(void) { return 0; }"] * 2, [0, 1],
                               cfg.max_seq_len), 2, pad_id=tokenizer.pad_token_id,
                      shuffle=False, group_by_length=False, seed=0)
    counts = [split.labels.count(0), split.labels.count(1)]
    result = train(cfg, model=model, tokenizer=tokenizer, train_loader=loader, val_loader=val,
                   label_counts=counts, work_dir=work, device=torch.device("cpu"),
                   sink=NullSink())
    return result.train_samples_per_s


def run_hf(model_dir: Path, tokenizer, split, cfg: TrainConfig, work: Path) -> float:
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    args = TrainingArguments(output_dir=str(work), per_device_train_batch_size=cfg.batch_size,
                             num_train_epochs=cfg.epochs, learning_rate=cfg.lr,
                             save_strategy="no", eval_strategy="no", report_to=[],
                             use_cpu=True, seed=cfg.seed, disable_tqdm=True,
                             logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=HFDataset(split.input_ids,
                                                                      split.labels),
                      data_collator=DataCollatorWithPadding(tokenizer))
    t0 = time.perf_counter()
    out = trainer.train()
    elapsed = time.perf_counter() - t0
    return float(out.metrics.get("train_samples_per_second", len(split) * cfg.epochs / elapsed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--samples", type=int, default=2000)
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    texts, labels = sample(args.samples, args.seed)
    cfg = TrainConfig(model="tiny", max_seq_len=args.max_len, batch_size=args.batch_size,
                      epochs=args.epochs, lr=5e-4, lr_scaling="none", seed=args.seed,
                      early_stopping_patience=0)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, tokenizer = build_scratch(cfg, texts)
        model.save_pretrained(work / "init")  # identical initial weights for every contender
        split = tokenize(tokenizer, texts, labels, cfg.max_seq_len)
        pad_frac = 1 - sum(split.lengths) / (len(split) * max(split.lengths))
        print(f"{len(split)} Devign functions, max_len {cfg.max_seq_len}, batch {cfg.batch_size},"
              f" {cfg.epochs} epoch(s), threads {torch.get_num_threads()}; "
              f"{pad_frac:.0%} of a fixed-length batch would be padding")
        # HF runs second so that neither side pays the process's cold start alone.
        plain = run_streamguard(work / "init", tokenizer, split, cfg, False, work / "sg1")
        hf = run_hf(work / "init", tokenizer, split, cfg, work / "hf")
        grouped = run_streamguard(work / "init", tokenizer, split, cfg, True, work / "sg2")
    rows = {"hf_trainer_samples_per_s": hf, "streamguard_dynamic_padding_samples_per_s": plain,
            "streamguard_grouped_samples_per_s": grouped,
            "ratio_dynamic_vs_hf": plain / hf, "ratio_grouped_vs_hf": grouped / hf}
    print(f"HF Trainer (defaults)                 {hf:8.1f} samples/s")
    print(f"streamguard, dynamic padding          {plain:8.1f} samples/s  ratio {plain / hf:.2f}")
    print(f"streamguard, dynamic + length groups  {grouped:8.1f} samples/s  "
          f"ratio {grouped / hf:.2f}")
    print(json.dumps({k: round(v, 3) for k, v in rows.items()}))


if __name__ == "__main__":
    main()
