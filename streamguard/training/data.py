"""Tokenized datasets and loaders: pre-tokenize once, pad per batch, optionally group by length.

Dynamic padding pads each batch to its own longest row; length grouping puts rows of similar
length together so less of every batch is padding. Both keep the data order a pure function of
(seed, epoch), which is what makes a resumed run replay exactly the batches it would have seen;
a run preempted mid-epoch resumes with `set_epoch(epoch, start_batch=k)`, which skips the first k
batches of that same order without loading them.
"""

from __future__ import annotations

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
    """Batches of indices, reshuffled each epoch from (seed, epoch), optionally length-grouped.

    Length grouping (as in Hugging Face's LengthGroupedSampler): shuffle, cut into mega-batches
    of 50 batches, sort each by length, cut into batches, then shuffle the batch order so long and
    short batches interleave.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, *, shuffle: bool,
                 group_by_length: bool, seed: int) -> None:
        self.lengths = list(lengths)
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
        order = torch.randperm(n, generator=gen).tolist()
        if not self.group_by_length:
            return [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
        mega = self.batch_size * 50
        batches: list[list[int]] = []
        for m in range(0, n, mega):
            group = sorted(order[m:m + mega], key=lambda i: -self.lengths[i])
            batches.extend(group[i:i + self.batch_size] for i in range(0, len(group),
                                                                        self.batch_size))
        perm = torch.randperm(len(batches), generator=gen).tolist()
        return [batches[p] for p in perm]


class PadCollator:
    """Pads a batch to its longest row (dynamic padding)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, batch: list[tuple[list[int], int]]) -> dict[str, torch.Tensor]:
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, _) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, :len(ids)] = 1
        labels = torch.tensor([y for _, y in batch], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def make_loader(split: TokenizedSplit, batch_size: int, *, pad_id: int, shuffle: bool,
                group_by_length: bool, seed: int, num_workers: int = 0,
                pin_memory: bool = False) -> DataLoader[dict[str, torch.Tensor]]:
    sampler = EpochBatchSampler(split.lengths, batch_size, shuffle=shuffle,
                                group_by_length=group_by_length, seed=seed)
    dataset: Dataset[Any] = split  # the collator turns its (ids, label) rows into a batch dict
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=PadCollator(pad_id),
                      num_workers=num_workers, pin_memory=pin_memory,
                      generator=torch.Generator().manual_seed(seed))
