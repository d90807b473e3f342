"""Padding-free batches: pack a batch's sequences into few rows, attend within each sequence only.

Dynamic padding still pays for ~40 % empty tokens on Devign (mean 308 tokens at a 512 limit), and
length grouping, which would remove them, skews batches by label. Packing keeps the batch (the
same sequences, the same labels, so the same class mix) and only changes its layout:
`PackCollator` places the sequences into as few rows of at most `row_len` tokens as it can (first
fit decreasing), and `packed_logits` runs the encoder on those rows with attention confined to
each sequence, then applies the classification head to each sequence's first token (`<s>`), in
the batch's original order. With no dropout the logits equal the padded forward's (a unit test
holds them to 1e-5), so the loss, its gradients and the metrics are the padded ones.

Position ids restart at every sequence with RoBERTa's convention (`padding_idx + 1 + offset`, as
`RobertaEmbeddings.create_position_ids_from_input_ids` builds them; padding gets `padding_idx`).
Padding at a row's end forms its own segment that attends only to itself, so every query has at
least one key (no all-masked softmax rows, whose NaNs would reach the weight gradients).

Attention backends (`packed_logits(..., backend=None)` picks one by device and by the model's
attention implementation; on CPU the tests hold "mask" and "varlen" to the padded logits and
gradients, and flex's document mask to the block-diagonal one):

- `"mask"`: a block-diagonal 4D mask `[rows, 1, T, T]` through the model's own attention: boolean
  for SDPA, additive for eager (transformers 5 passes a prepared 4D mask through
  `create_bidirectional_mask` as is). Works on any stock model and device, with dropout, but
  still computes the `T x T` scores across sequences of a row.
- `"varlen"`: truly variable-length attention, no cross-sequence work. On a model whose attention
  is FlashAttention (`flash_attention_2/3`, where `flash_attn` is installed) transformers' own
  varlen path takes `cu_seq_lens_*` directly. Otherwise the model's attention is switched once
  to `PACKED_ATTENTION`, registered here through transformers' `AttentionInterface`: PyTorch
  SDPA on jagged nested tensors (FlashAttention / memory-efficient kernels on CUDA, attention
  dropout included), falling back to plain SDPA, bit for bit, for every call without packing
  arguments (the padded evaluation batches), so the switch changes nothing else.
- `"flex"`: flex attention with a document `BlockMask`. Inference or attention dropout 0 only:
  flex attention has no attention dropout (transformers' `flex_attention_forward` refuses it in
  training), and the product trains with dropout 0.1, so it is the default only for a model
  built with `attn_implementation="flex_attention"`.

Chosen: `"mask"` on CPU, measured (benchmarks/packing.py, tiny model, batch 32, max length 512,
real Devign lengths, a contended 2-core machine): a training step 1.4x padding's samples/s, while
`"varlen"` was 0.2-0.25x (jagged nested SDPA has no fused CPU kernel and runs sequence by
sequence). `"varlen"` on CUDA, where jagged inputs run in the fused flash kernel, attention
dropout included, while a dense mask rules that kernel out (SDPA falls to the memory-efficient
one with a bias) and still computes the cross-sequence scores. Not yet measured on a GPU: the
benchmark's JSON line names the fastest backend, and `choose_backend` is the one place to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.attention.flex_attention import BlockMask, create_block_mask
from transformers import AttentionInterface, AttentionMaskInterface, PreTrainedModel
from transformers.integrations.flex_attention import flex_attention_forward
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

PACKED_ATTENTION = "streamguard_packed"
BACKENDS = ("mask", "varlen", "flex")
# Heads that classify from features[:, 0, :] and embeddings that count positions from padding_idx.
_ROBERTA_LIKE = {"roberta", "xlm-roberta", "camembert", "data2vec-text"}

Batch = dict[str, torch.Tensor]


# --- the collator ------------------------------------------------------------------------------

def first_fit_decreasing(lengths: Sequence[int], row_len: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of total length <= row_len, longest placed first.

    Raises:
        ValueError: a length exceeds `row_len`.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        if lengths[i] > row_len:
            raise ValueError(f"sequence {i} has {lengths[i]} tokens, more than row_len={row_len}")
        row = next((r for r, free in enumerate(room) if free >= lengths[i]), None)
        if row is None:
            rows.append([])
            room.append(row_len)
            row = len(rows) - 1
        rows[row].append(i)
        room[row] -= lengths[i]
    return rows


class PackCollator:
    """Packs a batch's (ids, label) rows into `[rows, T]` with per-sequence positions.

    Returns input_ids, position_ids and seq_ids `[R, T]` (seq_ids: the sequence's index in the
    batch, -1 on padding), cu_seqlens `[S + 1]` int32 (segment boundaries in the flattened
    `R * T` tokens: every sequence, plus each row's trailing padding), first_index `[B]` (flat
    index of each sequence's first token, in batch order) and labels `[B]` in batch order.
    T is the fullest row's length, at most `row_len`.

    Args:
        pad_id: the tokenizer's pad id, which RoBERTa also uses as its position `padding_idx`
            (`config.pad_token_id`).
        row_len: longest row; None packs each batch into rows of its longest sequence (pass
            max_seq_len for fewer, fuller rows).
    """

    def __init__(self, pad_id: int, row_len: int | None = None) -> None:
        self.pad_id = pad_id
        self.row_len = row_len

    def __call__(self, batch: list[tuple[list[int], int]]) -> Batch:
        lengths = [len(ids) for ids, _ in batch]
        if min(lengths) == 0:
            raise ValueError("cannot pack an empty sequence (it has no first token)")
        rows = first_fit_decreasing(lengths, self.row_len or max(lengths))
        width = max(sum(lengths[i] for i in row) for row in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        position_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        seq_ids = torch.full((len(rows), width), -1, dtype=torch.long)
        first_index = torch.empty(len(batch), dtype=torch.long)
        bounds = [0]
        for r, row in enumerate(rows):
            col = 0
            for i in row:
                n = lengths[i]
                input_ids[r, col:col + n] = torch.tensor(batch[i][0], dtype=torch.long)
                position_ids[r, col:col + n] = torch.arange(self.pad_id + 1, self.pad_id + 1 + n)
                seq_ids[r, col:col + n] = i
                first_index[i] = r * width + col
                col += n
                bounds.append(r * width + col)
            if col < width:  # the row's padding: a segment of its own
                bounds.append((r + 1) * width)
        return {"input_ids": input_ids, "position_ids": position_ids, "seq_ids": seq_ids,
                "cu_seqlens": torch.tensor(bounds, dtype=torch.int32),
                "first_index": first_index,
                "labels": torch.tensor([y for _, y in batch], dtype=torch.long)}


# --- attention -------------------------------------------------------------------------------

def _varlen_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 cu_seqlens: torch.Tensor, dropout: float, scaling: float | None,
                 ) -> torch.Tensor:
    """SDPA over jagged nested tensors: one attention per segment of the flattened rows."""
    rows, heads, width, dim = query.shape
    offsets = cu_seqlens.to(torch.int64)

    def nest(x: torch.Tensor) -> torch.Tensor:  # [R, h, T, d] -> nested [S, h, j, d]
        flat = x.transpose(1, 2).reshape(rows * width, heads, dim)
        # Bounds given, so the kernels read no lengths back from the device (no host sync).
        return torch.nested.nested_tensor_from_jagged(flat, offsets, min_seqlen=1,
                                                      max_seqlen=width).transpose(1, 2)

    out = nn.functional.scaled_dot_product_attention(nest(query), nest(key), nest(value),
                                                     dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).values().reshape(rows, width, heads, dim)


def packed_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: Any, dropout: float = 0.0,
                     scaling: float | None = None, **kwargs: Any,
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`PACKED_ATTENTION`: varlen SDPA given `cu_seq_lens_q`, flex given a BlockMask, else SDPA."""
    cu_seqlens = kwargs.pop("cu_seq_lens_q", None)
    if cu_seqlens is not None:
        return _varlen_sdpa(query, key, value, cu_seqlens, dropout, scaling), None
    if isinstance(attention_mask, BlockMask):
        return flex_attention_forward(module, query, key, value, attention_mask,
                                      scaling=scaling, dropout=dropout, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                  scaling=scaling, **kwargs)


def enable_packed_attention(model: PreTrainedModel) -> None:
    """Switch the model's attention to `PACKED_ATTENTION` (idempotent; not saved in config.json).

    Unpacked calls keep SDPA's mask and kernel, so padded forwards give the same results.
    """
    if model.config._attn_implementation == PACKED_ATTENTION:
        return
    AttentionInterface.register(PACKED_ATTENTION, packed_attention)
    AttentionMaskInterface.register(PACKED_ATTENTION, sdpa_mask)
    model.set_attn_implementation(PACKED_ATTENTION)


# --- the packed forward ----------------------------------------------------------------------

def choose_backend(model: PreTrainedModel, device: torch.device) -> str:
    """The backend `packed_logits` uses by default (the reasons are in the module docstring)."""
    impl = str(model.config._attn_implementation)
    if impl.startswith("flash_attention"):
        return "varlen"
    if impl == "flex_attention":
        return "flex"
    return "varlen" if device.type == "cuda" else "mask"


def _block_diagonal(seq_ids: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    same = (seq_ids[:, None, :, None] == seq_ids[:, None, None, :])  # [R, 1, T, T]
    if impl in ("sdpa", PACKED_ATTENTION):
        return same
    if impl == "eager":  # eager adds the mask to the scores
        return torch.zeros(same.shape, dtype=dtype, device=same.device).masked_fill(
            ~same, torch.finfo(dtype).min)
    raise ValueError(f"backend 'mask' needs attention 'sdpa' or 'eager', not {impl!r}; "
                     f"use backend 'varlen'")


def _document_block_mask(seq_ids: torch.Tensor) -> BlockMask:
    def same_sequence(b: torch.Tensor, h: torch.Tensor, q: torch.Tensor,
                      kv: torch.Tensor) -> torch.Tensor:
        del h
        return seq_ids[b, q] == seq_ids[b, kv]

    rows, width = seq_ids.shape
    return create_block_mask(same_sequence, rows, None, width, width, device=seq_ids.device)


def _encoder_and_head(model: PreTrainedModel) -> tuple[nn.Module, nn.Module]:
    model_type = getattr(model.config, "model_type", "")
    if model_type not in _ROBERTA_LIKE or not hasattr(model, "classifier"):
        raise TypeError(f"packing needs a RoBERTa-style sequence classifier "
                        f"({', '.join(sorted(_ROBERTA_LIKE))}), not {type(model).__name__}")
    head = model.classifier
    assert isinstance(head, nn.Module)
    return getattr(model, model.base_model_prefix), head


def packed_logits(model: PreTrainedModel, batch: Batch, *, backend: str | None = None,
                  ) -> torch.Tensor:
    """Logits `[B, num_labels]` of a `PackCollator` batch, in the batch's order.

    The same function in training and evaluation mode: dropout applies as in the padded forward.

    Args:
        model: a RoBERTa-style `...ForSequenceClassification`.
        batch: PackCollator's tensors, on the model's device.
        backend: "mask", "varlen" or "flex"; None picks `choose_backend`'s.

    Raises:
        ValueError: an unknown backend, "flex" with attention dropout in training, or "mask"
            on a model whose attention takes no dense mask.
        TypeError: the model's head does not classify from the first token.
    """
    encoder, head = _encoder_and_head(model)
    input_ids = batch["input_ids"]
    backend = backend or choose_backend(model, input_ids.device)
    impl = str(model.config._attn_implementation)
    kwargs: dict[str, Any] = {}
    mask: Any = None
    if backend == "mask":
        mask = _block_diagonal(batch["seq_ids"], impl, next(model.parameters()).dtype)
    elif backend == "varlen":
        if not impl.startswith("flash_attention"):
            enable_packed_attention(model)
        width = input_ids.shape[1]  # bounds every segment: no host sync for the true maximum
        kwargs = {"cu_seq_lens_q": batch["cu_seqlens"], "cu_seq_lens_k": batch["cu_seqlens"],
                  "max_length_q": width, "max_length_k": width}
    elif backend == "flex":
        if model.training and getattr(model.config, "attention_probs_dropout_prob", 0.0) > 0:
            raise ValueError("flex attention has no attention dropout: use backend 'varlen' or "
                             "'mask' in training, or attention_probs_dropout_prob=0")
        if impl != "flex_attention":
            enable_packed_attention(model)
        mask = _document_block_mask(batch["seq_ids"])
    else:
        raise ValueError(f"unknown packing backend {backend!r}; choose from {', '.join(BACKENDS)}")
    hidden = encoder(input_ids=input_ids, attention_mask=mask,
                     position_ids=batch["position_ids"], **kwargs).last_hidden_state
    first = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch["first_index"])
    logits: torch.Tensor = head(first.unsqueeze(1))  # the head reads features[:, 0, :]
    return logits
