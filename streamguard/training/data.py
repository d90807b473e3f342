"""Tokenized datasets and loaders: pre-tokenize once, pad per batch, optionally group by length.

Dynamic padding pads each batch to its own longest row; length grouping puts rows of similar
length together so less of every batch is padding. Both keep the data order a pure function of
(seed, epoch), which is what makes a resumed run replay exactly the batches it would have seen;
a run preempted mid-epoch resumes with `set_epoch(epoch, start_batch=k)`, which skips the first k
batches of that same order without loading them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from transformers import PreTrainedTokenizerBase


@dataclass
class TokenizedSplit(Dataset[tuple[list[int], int]]):
    input_ids: list[list[int]]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, idx: int) -> tuple[list[int], int]:
        return self.input_ids[idx], self.labels[idx]

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], labels: Sequence[int],
             max_len: int, *, chunk: int = 2048) -> TokenizedSplit:
    """Encode with special tokens, truncated to max_len; no padding (that happens per batch)."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), chunk):
        enc = tokenizer(list(texts[start:start + chunk]), add_special_tokens=True,
                        truncation=True, max_length=max_len)
        ids.extend(enc["input_ids"])
    return TokenizedSplit(ids, [int(y) for y in labels])


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices, reshuffled each epoch from (seed, epoch), optionally length-bucketed.

    Length bucketing is stratified by label. Plain length grouping (Hugging Face's
    LengthGroupedSampler: sort mega-batches by length, cut) makes label-skewed batches wherever
    length correlates with the label, as it does on Devign (vulnerable functions are longer):
    the classifier bias then swings from batch to batch, and a tiny model was seen ending its
    first epoch predicting one class. Here every batch gets its class quota first (the split's
    class mix, spread with error diffusion so each batch is within one example of it), and
    each class's examples are length-sorted inside mega-batches of `MEGA_BATCHES` batches, so a
    batch takes the next-longest examples of each class: similar lengths, the split's mix.
    """

    #: batches per mega-batch: the window inside which examples are sorted by length
    MEGA_BATCHES = 50

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool,
                 group_by_length: bool, seed: int, labels: Sequence[int] | None = None) -> None:
        self.lengths = list(lengths)
        self.labels = list(labels) if labels is not None else [0] * len(self.lengths)
        if len(self.labels) != len(self.lengths):
            raise ValueError(f"{len(self.labels)} labels for {len(self.lengths)} lengths")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.group_by_length = group_by_length
        self.seed = seed
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, *, start_batch: int = 0) -> None:
        """Select the epoch's order; `start_batch` > 0 resumes it after that many batches."""
        self.epoch = epoch
        self.start_batch = start_batch

    def __len__(self) -> int:
        """The full epoch's batch count, also while resuming mid-epoch (the schedule's unit)."""
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches()[self.start_batch:]

    def epoch_batches(self) -> list[list[int]]:
        """Every batch of the current epoch, in order: a pure function of (seed, epoch)."""
        n = len(self.lengths)
        if not self.shuffle:
            order = list(range(n))
            if self.group_by_length:  # evaluation: sort by length, order does not matter
                order.sort(key=lambda i: self.lengths[i])
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if not self.group_by_length:
            order = torch.randperm(n, generator=gen).tolist()
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        batches = self._stratified_buckets(gen)
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[p] for p in perm]

    def _stratified_buckets(self, gen: torch.Generator) -> list[list[int]]:
        """Length-sorted batches, each holding its quota of every class."""
        n, size = len(self.lengths), self.batch_size
        sizes = [min(size, n - start) for start in range(0, n, size)]
        classes = sorted(set(self.labels))
        pools = {c: [i for i in torch.randperm(n, generator=gen).tolist() if self.labels[i] == c]
                 for c in classes}
        # Quotas: each slot of a batch goes to the class furthest behind its share of the
        # examples batched so far (and with examples left), so every batch is within one
        # example of the split's mix and each class is used up exactly at the end.
        quotas: list[dict[int, int]] = []
        given = dict.fromkeys(classes, 0)
        seen = 0
        for batch_size in sizes:
            seen += batch_size
            quota = dict.fromkeys(classes, 0)
            for _ in range(batch_size):
                open_ = [c for c in classes if given[c] + quota[c] < len(pools[c])]
                c = max(open_, key=lambda c: seen * len(pools[c]) / n - given[c] - quota[c])
                quota[c] += 1
            for c in classes:
                given[c] += quota[c]
            quotas.append(quota)
        # Each class's examples, sorted by length (longest first) within windows that cover
        # MEGA_BATCHES batches' worth of that class.
        streams: dict[int, list[int]] = {}
        for c in classes:
            pool, window = pools[c], [0]
            for b in range(0, len(quotas), self.MEGA_BATCHES):
                window.append(window[-1] + sum(q[c] for q in quotas[b:b + self.MEGA_BATCHES]))
            streams[c] = [i for lo, hi in itertools.pairwise(window)
                          for i in sorted(pool[lo:hi], key=lambda i: -self.lengths[i])]
        taken = dict.fromkeys(classes, 0)
        batches = []
        for quota in quotas:
            batch: list[int] = []
            for c in classes:
                batch.extend(streams[c][taken[c]:taken[c] + quota[c]])
                taken[c] += quota[c]
            batches.append(batch)
        return batches


class PadCollator:
    """Pads a batch to its longest row (dynamic padding), optionally rounded up to a multiple
    (`multiple`: a few distinct widths for torch.compile, tensor-core friendly shapes)."""

    def __init__(self, pad_id: int, multiple: int = 1) -> None:
        self.pad_id = pad_id
        self.multiple = max(1, multiple)

    def __call__(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in batch)
        width = -(-width // self.multiple) * self.multiple
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        labels = torch.tensor([y for _, y in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def make_loader(split: TokenizedSplit, batch_size: int, *, pad_id: int, shuffle: bool,
                group_by_length: bool, seed: int, num_workers: int = 0,
                pin_memory: bool = False, packed_row_len: int | None = None,
                pad_multiple: int = 1) -> DataLoader[dict[str, torch.Tensor]]:
    """`packed_row_len`: pack each batch into rows of at most that many tokens (PackCollator)
    instead of padding it; `pad_multiple`: round padded widths up to a multiple."""
    sampler = EpochBatchSampler(split.lengths, batch_size, shuffle=shuffle,
                                group_by_length=group_by_length, seed=seed, labels=split.labels)
    dataset: Dataset[Any] = split  # the collator turns its (ids, label) rows into a batch dict
    collate: Any = PadCollator(pad_id, pad_multiple)
    if packed_row_len is not None:
        # imported here: benchmarks load this file by path, without the `streamguard.training`
        # package (whose __init__ pulls the pydantic config the GPU machine lacks)
        from streamguard.training.packing import PackCollator

        collate = PackCollator(pad_id, row_len=packed_row_len)
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                      num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))
