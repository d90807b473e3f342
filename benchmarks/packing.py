"""Padded vs packed training steps (forward + backward) on real Devign lengths, in one run.

The same batches (the same sequences in each) go through dynamic padding (`PadCollator`, the
loop's path today) and through `PackCollator` + `packed_logits` with each attention backend of
streamguard/training/packing.py; every variant starts from the same weights. Collation is timed
with the step, as the loop collates in its own process. Before timing, each backend's logits on
the first batch are checked against the padded ones (eval mode, fp32). On CUDA each variant runs
its steps back to back; on a shared CPU the variants alternate step by step, so that the load's
drift slows them alike. TFLOP/s counts 6 x non-embedding parameters x real (unpadded) tokens.

    python benchmarks/packing.py --model tiny --max-len 512 --batch-size 32 --steps 10
    python benchmarks/packing.py --model random-roberta-base --steps 30      # GPU: bf16 autocast

Runs where pydantic is absent (the GPU machine): it imports packing.py and data.py by path, not
through `streamguard.training` (whose package imports the pydantic TrainConfig).
Data: ../shared/data/devign/train.jsonl, or $STREAMGUARD_DEVIGN_DIR/train.jsonl.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import json
import os
import random
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import RobertaConfig, RobertaForSequenceClassification  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from streamguard.datasets import read_examples  # noqa: E402
from streamguard.tokenizer import train_bpe_tokenizer  # noqa: E402

DEVIGN = Path(os.environ.get("STREAMGUARD_DEVIGN_DIR", ROOT.parent / "shared/data/devign"))
# streamguard/spec.py SCRATCH_MODELS (spec imports pydantic; a unit test keeps the two equal).
MODEL_SIZES = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
             "intermediate_size": 512},
    "random-roberta-base": {"hidden_size": 768, "num_hidden_layers": 12,
                            "num_attention_heads": 12, "intermediate_size": 3072},
}


def load_by_path(name: str, relpath: str) -> ModuleType:
    """Import one module file without running its package's __init__."""
    spec = importlib.util.spec_from_file_location(name, ROOT / relpath)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


packing = load_by_path("streamguard_packing", "streamguard/training/packing.py")
data = load_by_path("streamguard_data", "streamguard/training/data.py")


def devign_sample(n: int, seed: int) -> tuple[list[str], list[int]]:
    path = DEVIGN / "train.jsonl"
    if not path.is_file():
        sys.exit(f"Devign data missing: {path} (set STREAMGUARD_DEVIGN_DIR)")
    examples = read_examples(path)
    random.Random(seed).shuffle(examples)
    return [e.func for e in examples[:n]], [e.target for e in examples[:n]]


def build_model(size: str, tokenizer: Any, max_len: int, dropout: float,
                ) -> RobertaForSequenceClassification:
    """As streamguard/training/model.py build_scratch does, with SDPA attention."""
    config = RobertaConfig(
        vocab_size=len(tokenizer), max_position_embeddings=max_len + 2, type_vocab_size=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout, num_labels=2, attn_implementation="sdpa",
        **MODEL_SIZES[size])
    return RobertaForSequenceClassification(config)


Rows = list[tuple[list[int], int]]
Forward = Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]


def padded_forward(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits: torch.Tensor = model(input_ids=batch["input_ids"],
                                 attention_mask=batch["attention_mask"]).logits
    return logits


def packed_forward(backend: str) -> Forward:
    return lambda model, batch: packing.packed_logits(model, batch, backend=backend)


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class Runner:
    """One variant: its own copy of the weights, optimizer and loss; one training step at a time."""

    def __init__(self, name: str, base: torch.nn.Module, collate: Callable[[Rows], Any],
                 forward: Forward, device: torch.device, autocast: Any,
                 optimizer_step: bool) -> None:
        self.name, self.collate, self.forward = name, collate, forward
        self.device, self.autocast = device, autocast
        self.model = copy.deepcopy(base).train()
        self.optimizer = (torch.optim.AdamW(self.model.parameters(), lr=1e-4,
                                            fused=device.type == "cuda")
                          if optimizer_step else None)
        self.criterion = torch.nn.CrossEntropyLoss(weight=torch.tensor([1.0, 1.2],
                                                                       device=device))
        self.seconds = 0.0

    def step(self, rows: Rows) -> None:
        """Collate, forward, class-weighted CE, backward (and the optimizer step if asked)."""
        batch = to_device(self.collate(rows), self.device)
        with self.autocast:
            logits = self.forward(self.model, batch)
        self.criterion(logits.float(), batch["labels"]).backward()
        if self.optimizer is not None:
            self.optimizer.step()
        self.model.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_runners(runners: list[Runner], batches: list[Rows], warmup: int,
                 device: torch.device, errors: dict[str, str]) -> None:
    """Sets each runner's seconds for the batches after `warmup`; a failing one goes to errors.

    On CUDA (a device of its own) each variant runs its steps back to back between two syncs.
    On a shared CPU the load drifts, so the variants alternate step by step and each step is
    timed on its own: drift then slows every variant alike.
    """
    def guarded(runner: Runner, rows: Rows) -> bool:
        try:
            runner.step(rows)
            return True
        except Exception as exc:  # one backend failing must not lose the others' figures
            errors[runner.name] = f"{type(exc).__name__}: {exc}"[:300]
            return False

    if device.type == "cuda":
        for runner in list(runners):
            for i, rows in enumerate(batches):
                if i == warmup:
                    sync(device)
                    start = time.perf_counter()
                if not guarded(runner, rows):
                    break
            else:
                sync(device)
                runner.seconds = time.perf_counter() - start
    else:
        for i, rows in enumerate(batches):
            for runner in list(runners):
                if runner.name in errors:
                    continue
                start = time.perf_counter()
                if guarded(runner, rows) and i >= warmup:
                    runner.seconds += time.perf_counter() - start


def logit_gap(model: torch.nn.Module, rows: Rows, pad: Any, pack: Any, backend: str,
              device: torch.device, autocast: Any) -> float:
    """Largest |packed - padded| logit on one batch, eval mode (fp32 unless autocast given)."""
    model.eval()
    with torch.no_grad(), autocast:
        ref = padded_forward(model, to_device(pad(rows), device))
        out = packing.packed_logits(model, to_device(pack(rows), device), backend=backend)
    return float((out - ref).abs().max())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(MODEL_SIZES), default="tiny")
    p.add_argument("--max-len", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--samples", type=int, default=2000, help="Devign functions to draw from")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--dropout", type=float, default=0.1, help="0 also measures 'flex'")
    p.add_argument("--backends", default="mask,varlen,flex")
    p.add_argument("--row-len", type=int, default=None, help="default: --max-len")
    p.add_argument("--optimizer-step", action="store_true", help="add a (fused) AdamW step")
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    hf_logging.set_verbosity_error()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else "cpu" if args.device == "auto" else args.device)
    bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()
    torch.manual_seed(args.seed)

    texts, labels = devign_sample(args.samples, args.seed)
    tokenizer = train_bpe_tokenizer(texts, vocab_size=args.vocab, max_len=args.max_len)
    ids = [tokenizer(t, truncation=True, max_length=args.max_len)["input_ids"] for t in texts]
    rng = random.Random(args.seed)
    batches = [[(ids[i], labels[i]) for i in rng.sample(range(len(ids)), args.batch_size)]
               for _ in range(args.warmup + args.steps)]
    pad = data.PadCollator(tokenizer.pad_token_id)
    pack = packing.PackCollator(tokenizer.pad_token_id, row_len=args.row_len or args.max_len)

    timed = batches[args.warmup:]
    real = sum(len(r[0]) for b in timed for r in b)
    padded_slots = sum(pad(b)["input_ids"].numel() for b in timed)
    packed_shapes = [pack(b)["input_ids"].shape for b in timed]
    packed_slots = sum(s[0] * s[1] for s in packed_shapes)
    rows_mean = sum(s[0] for s in packed_shapes) / len(packed_shapes)

    base = build_model(args.model, tokenizer, args.max_len, args.dropout).to(device)
    n_params = sum(q.numel() for n, q in base.named_parameters() if "embeddings" not in n)
    print(f"{args.model} ({n_params / 1e6:.1f} M non-embedding params) on {device} "
          f"({'bf16 autocast' if bf16 else 'fp32'}), max_len {args.max_len}, batch "
          f"{args.batch_size}, {args.steps} timed steps after {args.warmup}, dropout "
          f"{args.dropout}, threads {torch.get_num_threads()}")
    print(f"real tokens per batch {real / len(timed):.0f}; padding: dynamic "
          f"{1 - real / padded_slots:.1%}, packed {1 - real / packed_slots:.1%} "
          f"({rows_mean:.1f} rows of <= {args.row_len or args.max_len} per batch)")

    variants: list[tuple[str, Any, Forward]] = [("padded", pad, padded_forward)]
    skipped: dict[str, str] = {}
    for backend in args.backends.split(","):
        if backend == "flex" and args.dropout > 0:
            skipped[backend] = "flex attention has no attention dropout (use --dropout 0)"
        elif backend == "flex" and device.type == "cpu":
            skipped[backend] = "flex attention has no backward on CPU"
        else:
            variants.append((backend, pack, packed_forward(backend)))
    if device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None:
        variants.append(("varlen-fa2", pack, packed_forward("varlen")))

    gaps: dict[str, float] = {}
    errors: dict[str, str] = {}
    runners: list[Runner] = []
    for name, collate, forward in variants:
        runner = Runner(name, base, collate, forward, device, autocast, args.optimizer_step)
        try:
            if name == "varlen-fa2":
                runner.model.set_attn_implementation("flash_attention_2")
            if name != "padded":
                # FlashAttention takes no fp32: its check runs under the autocast
                gaps[name] = logit_gap(runner.model, batches[0], pad, pack, name.split("-")[0],
                                       device, autocast if name == "varlen-fa2"
                                       else nullcontext())
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        runner.model.train()
        runners.append(runner)
    time_runners(runners, batches, args.warmup, device, errors)

    results: dict[str, float] = {}
    for runner in runners:
        name = runner.name
        if name in errors:
            continue
        results[name] = args.steps * args.batch_size / runner.seconds
        tflops = 6 * n_params * real / runner.seconds / 1e12
        ratio = results[name] / results["padded"] if "padded" in results else float("nan")
        print(f"{name:<11} {results[name]:9.1f} samples/s  {real / runner.seconds:10.0f} real "
              f"tokens/s  {tflops:7.2f} TFLOP/s on real tokens  x{ratio:.2f} vs padded"
              + (f"  (max |logit gap| {gaps[name]:.1e})" if name in gaps else ""))
    for name, why in errors.items():
        print(f"{name:<11} FAILED {why}")
    for name, why in skipped.items():
        print(f"{name:<11} skipped: {why}")

    packed = {k: v for k, v in results.items() if k != "padded"}
    best = max(packed, key=lambda k: packed[k]) if packed else None
    padded_sps = results.get("padded")
    print(json.dumps({
        "benchmark": "packing", "device": torch.cuda.get_device_name(device)
        if device.type == "cuda" else "cpu", "model": args.model, "max_len": args.max_len,
        "batch_size": args.batch_size, "steps": args.steps, "precision": "bf16" if bf16
        else "fp32", "dropout": args.dropout, "optimizer_step": args.optimizer_step,
        "padding_fraction_dynamic": round(1 - real / padded_slots, 4),
        "padding_fraction_packed": round(1 - real / packed_slots, 4),
        "packed_rows_per_batch": round(rows_mean, 2),
        "padded_samples_per_s": round(padded_sps, 2) if padded_sps else None,
        "packed_samples_per_s": {k: round(v, 2) for k, v in packed.items()},
        "best_backend": best,
        "speedup_best_vs_padded": round(packed[best] / padded_sps, 3)
        if best and padded_sps else None,
        "max_abs_logit_gap": {k: float(f"{v:.2e}") for k, v in gaps.items()},
        "skipped": skipped, "errors": errors}))


if __name__ == "__main__":
    main()
