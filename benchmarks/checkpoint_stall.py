"""How long saving `last` blocks the training thread: synchronous vs background (issue 10, item 4).

A RoBERTa-base-sized random model (`SCRATCH_MODELS["random-roberta-base"]`, vocabulary 50,265,
~125 M parameters) on CPU with populated AdamW state (one optimizer step) is saved the way the
loop saves `last` at an epoch end: the checkpoint folder (safetensors + training_state.pt), its
model card, the `best` copy, then the publish to a LocalArtifactStore in a temp dir (every file,
the sha256 manifest, the model .tar.gz, then the pointers).

- sync: all of it on the calling thread (the loop before issue 10);
- async: the calling thread builds the state and takes the snapshot (`async_save.snapshot`), then
  one background thread does the rest (`BackgroundSaver`). `stall` is the time until the
  training thread is free again; `background` the time until the checkpoint is durable.
  Before the first save, as the loop does after its first optimizer step, `saver.prepare`
  maps the snapshot memory on the background thread while training steps run (printed:
  how long, and how many steps ran meanwhile); without it the first save's stall also paid
  for faulting in ~1.5 GB of fresh pages (1.38 s against 0.11 s for later saves, 2 CPU cores).

Each repetition saves once each way (alternating which goes first); the figures are medians.

    python benchmarks/checkpoint_stall.py --repeats 3

`--model tiny --vocab 600` for a quick check; `--device cuda` snapshots from the GPU (pinned,
non-blocking copies); `--train-while-saving` also runs training steps on the calling
thread while the background save runs and reports their step time (the two compete for the
CPU cores here; on a GPU host the training thread mostly waits on the device). Prints each
repetition, then one JSON line: stall_s_sync, stall_s_async, background_s, target_stall_s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import RobertaConfig, RobertaForSequenceClassification
from transformers import logging as hf_logging
from transformers.optimization import get_linear_schedule_with_warmup

from streamguard.sinks import ListSink
from streamguard.spec import SCRATCH_MODELS, TrainConfig
from streamguard.storage import LocalArtifactStore
from streamguard.training import checkpoint as ckpt
from streamguard.training.async_save import BackgroundSaver, Event
from streamguard.training.loop import make_optimizer
from streamguard.training.model_card import write_model_card
from streamguard.training.publish import CheckpointPublisher

TARGET_STALL_S = 1.0


class Run:
    """One model, optimizer and scheduler, and what the loop saves with them."""

    def __init__(self, model_name: str, vocab: int, seq_len: int, batch: int,
                 device: torch.device) -> None:
        torch.manual_seed(0)
        self.device = device
        self.config = TrainConfig(model=model_name, max_seq_len=seq_len)
        sizes: dict[str, Any] = dict(SCRATCH_MODELS[model_name])
        self.model = RobertaForSequenceClassification(RobertaConfig(
            vocab_size=vocab, max_position_embeddings=seq_len + 2, type_vocab_size=1,
            num_labels=2, **sizes)).to(device)
        self.optimizer = make_optimizer(self.model, 1e-4, 0.01)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, 10, 1000)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.batch = {"input_ids": torch.randint(3, vocab, (batch, seq_len), device=device),
                      "labels": torch.randint(0, 2, (batch,), device=device)}
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.step()  # AdamW's exp_avg / exp_avg_sq now exist for every parameter
        self.record = {"epoch": 1, "step": 1, "f1": 0.5, "val_loss": 0.69, "is_best": True,
                       "best_threshold": 0.5, "prediction_distribution": {}}

    def step(self) -> float:
        """One optimizer step on the fixed batch; its wall time."""
        t0 = time.perf_counter()
        self.model.train()
        loss = self.model(**self.batch).loss
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.loss_sum += loss.detach().double()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def state(self) -> dict[str, Any]:
        """What `save_last` builds: live references until snapshotted."""
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "rng": ckpt.rng_state(), "epoch": 1, "global_step": 1,
                "batches_done_in_epoch": 0, "epoch_loss_sum": self.loss_sum,
                "rollback": {"lr_factor": 1.0, "log": []}, "callbacks": {}}

    def write(self, folder: Path, publisher: CheckpointPublisher, epoch: int,
              tree: dict[str, Any], model_state: Any = None) -> list[Event]:
        """Folder, card, best copy, publish: the loop's save job (the events are returned)."""
        last = ckpt.save_checkpoint(folder / "last", model=self.model, tokenizer=None,
                                    state=tree["state"], meta=tree["meta"],
                                    train_config_json=self.config.to_json(),
                                    model_state=model_state)
        write_model_card(last, config=self.config, history=tree["history"], outcome="running",
                         message=f"checkpoint at epoch {epoch}", best_epoch=epoch,
                         test_metrics=None, threshold=0.5,
                         data={"train": {"rows": 2, "label_counts": [1, 1]}})
        ckpt.copy_checkpoint(last, folder / "best")
        return [("checkpoint", p) for p in publisher.upload(
            last, epoch=epoch, is_best=True, metrics=tree["meta"]["metrics"])]

    def tree(self) -> dict[str, Any]:
        return {"state": self.state(), "meta": {"epoch": 1, "metrics": self.record},
                "history": [self.record]}


def save_sync(run: Run, folder: Path, publisher: CheckpointPublisher, epoch: int) -> float:
    t0 = time.perf_counter()
    for kind, payload in run.write(folder, publisher, epoch, run.tree()):
        publisher.sink.event(kind, payload)
    return time.perf_counter() - t0


def save_async(run: Run, folder: Path, publisher: CheckpointPublisher, epoch: int,
               saver: BackgroundSaver, train_while_saving: bool,
               ) -> tuple[float, float, list[float]]:
    t0 = time.perf_counter()
    tree = saver.snapshot({**run.tree(), "model": run.model.state_dict()})
    saver.submit(lambda: run.write(folder, publisher, epoch, tree, tree["model"]),
                 emit=publisher.sink.event)
    stall = time.perf_counter() - t0
    steps: list[float] = []
    while train_while_saving and saver.busy:
        steps.append(run.step())
        saver.poll()
    saver.wait()
    return stall, time.perf_counter() - t0, steps


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="random-roberta-base", choices=sorted(SCRATCH_MODELS))
    p.add_argument("--vocab", type=int, default=50265, help="RoBERTa-base's vocabulary")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seq-len", type=int, default=64, help="of the batch that fills AdamW")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--train-while-saving", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu (the issue's figure) or cuda")
    p.add_argument("--tmp", type=Path, default=None, help="where to write (default: system tmp)")
    args = p.parse_args()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()

    device = torch.device(args.device)
    run = Run(args.model, args.vocab, args.seq_len, args.batch, device)
    n_params = sum(t.numel() for t in run.model.parameters())
    base_step = statistics.median(run.step() for _ in range(3)) if args.train_while_saving \
        else None
    print(f"{args.model}: {n_params / 1e6:.1f} M parameters + AdamW state on {device} "
          f"({torch.get_num_threads()} torch threads)")
    sync_s, stall_s, background_s, size = [], [], [], 0
    steps: list[float] = []
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, BackgroundSaver() as saver:
        # As the loop does after its first optimizer step: the snapshot memory is mapped on the
        # background thread while training goes on (steps here), not in the first save's stall.
        t0 = time.perf_counter()
        saver.prepare({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict()})
        prepare_steps = 0
        while saver.busy:
            run.step()
            prepare_steps += 1
            saver.poll()
        prepare_s = time.perf_counter() - t0
        print(f"snapshot memory mapped in the background in {prepare_s:.2f} s "
              f"({prepare_steps} training steps ran meanwhile)")
        root = Path(tmp)
        pubs = {name: CheckpointPublisher(LocalArtifactStore(root / name / "store"), "p/",
                                          ListSink()) for name in ("sync", "async")}
        for rep in range(args.repeats):
            epoch = rep + 1
            order = ("sync", "async") if rep % 2 == 0 else ("async", "sync")
            for name in order:
                if name == "sync":
                    sync_s.append(save_sync(run, root / "sync", pubs["sync"], epoch))
                else:
                    stall, total, steps = save_async(run, root / "async", pubs["async"], epoch,
                                                     saver, args.train_while_saving)
                    stall_s.append(stall)
                    background_s.append(total)
            size = folder_bytes(root / "sync" / "last")
            line = (f"rep {rep + 1}: sync {sync_s[-1]:6.2f} s blocked | async {stall_s[-1]:5.2f} s "
                    f"blocked, durable after {background_s[-1]:6.2f} s")
            if args.train_while_saving and steps:
                line += (f" | {len(steps)} steps trained meanwhile, "
                         f"{statistics.median(steps):.3f} s/step (alone {base_step:.3f})")
            print(line)
        sink = pubs["async"].sink
        assert isinstance(sink, ListSink) and len(sink.events) == 2 * args.repeats  # last+best
    result = {"benchmark": "checkpoint_stall", "model": args.model, "device": str(device),
              "parameters": n_params,
              "checkpoint_bytes": size, "repeats": args.repeats,
              "torch_threads": torch.get_num_threads(),
              "stall_s_sync": round(statistics.median(sync_s), 3),
              "stall_s_async": round(statistics.median(stall_s), 3),
              # the run's first snapshot maps its host memory; later ones copy into it
              "stall_s_async_first": round(stall_s[0], 3),
              "stall_s_async_later": round(statistics.median(stall_s[1:] or stall_s), 3),
              "background_s": round(statistics.median(background_s), 3),
              "prepare_s": round(prepare_s, 3), "prepare_steps": prepare_steps,
              "target_stall_s": TARGET_STALL_S}
    print(f"`last` is {size / 1e9:.2f} GB. Training thread blocked per save (median): "
          f"sync {result['stall_s_sync']:.2f} s, async {result['stall_s_async']:.2f} s "
          f"(first {result['stall_s_async_first']:.2f} s, later "
          f"{result['stall_s_async_later']:.2f} s) "
          f"(target <= {TARGET_STALL_S:.1f} s); the background save is durable after "
          f"{result['background_s']:.2f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
