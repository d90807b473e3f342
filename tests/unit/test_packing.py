"""Packed batches: the collator's layout, and packed logits/gradients equal the padded ones."""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention.flex_attention import flex_attention
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from streamguard.spec import SCRATCH_MODELS
from streamguard.training.data import PadCollator
from streamguard.training.packing import (
    PACKED_ATTENTION,
    PackCollator,
    _block_diagonal,
    _document_block_mask,
    choose_backend,
    enable_packed_attention,
    first_fit_decreasing,
    packed_logits,
)

ROOT = Path(__file__).resolve().parents[2]
PAD, ROW = 1, 40
# One full row, one of length 3, and a spread of others (the "<s> ... </s>" layout of real rows).
LENGTHS = [ROW, 3, 17, 25, 9, ROW, 12, 2, 31, 8, 20]


def tiny_model(*, dropout: float = 0.0, attn: str = "sdpa") -> RobertaForSequenceClassification:
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=ROW + PAD + 1, type_vocab_size=1,
                           pad_token_id=PAD, hidden_dropout_prob=dropout,
                           attention_probs_dropout_prob=dropout, num_labels=2,
                           attn_implementation=attn)
    return RobertaForSequenceClassification(config)


def make_batch(lengths: list[int], seed: int = 0) -> list[tuple[list[int], int]]:
    rng = random.Random(seed)
    return [([0] + [rng.randrange(5, 120) for _ in range(n - 2)] + [2], rng.randrange(2))
            for n in lengths]


def padded_logits(model: torch.nn.Module, rows: list[tuple[list[int], int]]) -> torch.Tensor:
    batch = PadCollator(PAD)(rows)
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor([1.0, 1.7]))


# --- the collator ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_first_fit_decreasing_places_each_sequence_once_within_row_len(seed):
    rng = random.Random(seed)
    lengths = [rng.randint(1, 64) for _ in range(rng.randint(1, 50))]
    rows = first_fit_decreasing(lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    fills = [sum(lengths[i] for i in row) for row in rows]
    assert sum(fill <= 32 for fill in fills) <= 1  # first fit: else the later row would fit


def test_collator_keeps_every_sequence_once_with_its_positions_and_labels_in_order():
    rows = make_batch(LENGTHS)
    batch = PackCollator(PAD, row_len=ROW)(rows)
    ids, pos, seq = batch["input_ids"], batch["position_ids"], batch["seq_ids"]
    assert ids.shape[1] <= ROW and ids.shape[0] < len(rows)
    assert batch["labels"].tolist() == [y for _, y in rows]
    for i, (tokens, _) in enumerate(rows):
        where = seq == i
        assert where.sum() == len(tokens)  # exactly once, in one row
        assert where.any(dim=1).sum() == 1
        assert ids[where].tolist() == tokens
        assert pos[where].tolist() == list(range(PAD + 1, PAD + 1 + len(tokens)))
        assert ids.flatten()[batch["first_index"][i]] == 0  # its <s>
        assert seq.flatten()[batch["first_index"][i]] == i
    padding = seq == -1
    assert (ids[padding] == PAD).all() and (pos[padding] == PAD).all()
    # cu_seqlens: the flattened boundaries of every sequence and of each row's padding
    bounds = batch["cu_seqlens"].tolist()
    flat = seq.flatten().tolist()
    changes = [0] + [k for k in range(1, len(flat))
                     if flat[k] != flat[k - 1] or k % ids.shape[1] == 0] + [len(flat)]
    assert bounds == changes and batch["cu_seqlens"].dtype == torch.int32


def test_full_length_sequences_get_one_row_each():
    batch = PackCollator(PAD, row_len=ROW)(make_batch([ROW] * 4))
    assert batch["input_ids"].shape == (4, ROW)
    assert [set(r.tolist()) for r in batch["seq_ids"]] == [{0}, {1}, {2}, {3}]


def test_row_len_defaults_to_the_longest_sequence_and_refuses_longer_ones():
    batch = PackCollator(PAD)(make_batch([10, 6, 4, 3]))
    assert batch["input_ids"].shape == (3, 10)  # 10 | 6+4 | 3
    with pytest.raises(ValueError, match="row_len=8"):
        PackCollator(PAD, row_len=8)(make_batch([9, 3]))


# --- the packed forward ------------------------------------------------------------------------

@pytest.mark.parametrize("backend,attn", [("mask", "sdpa"), ("mask", "eager"),
                                          ("varlen", "sdpa")])
def test_packed_logits_equal_padded_logits(backend, attn):
    model = tiny_model(attn=attn).eval()
    rows = make_batch(LENGTHS)
    with torch.no_grad():
        expected = padded_logits(model, rows)
        got = packed_logits(model, PackCollator(PAD, row_len=ROW)(rows), backend=backend)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("backend", ["mask", "varlen"])
def test_packed_gradients_equal_padded_gradients(backend):
    rows = make_batch(LENGTHS, seed=1)
    labels = torch.tensor([y for _, y in rows])
    padded, packed = tiny_model().train(), tiny_model().train()  # dropout 0: deterministic
    weighted_loss(padded_logits(padded, rows), labels).backward()
    batch = PackCollator(PAD, row_len=ROW)(rows)
    weighted_loss(packed_logits(packed, batch, backend=backend), batch["labels"]).backward()
    for (name, a), (_, b) in zip(padded.named_parameters(), packed.named_parameters(),
                                 strict=True):
        assert b.grad is not None, name
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("backend", ["mask", "varlen"])
def test_training_with_dropout_reaches_every_parameter(backend):
    model = tiny_model(dropout=0.1).train()
    batch = PackCollator(PAD, row_len=ROW)(make_batch(LENGTHS))
    weighted_loss(packed_logits(model, batch, backend=backend), batch["labels"]).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all() and param.grad.abs().sum() > 0, name


def test_packed_attention_leaves_padded_forwards_unchanged():
    model = tiny_model().eval()
    rows = make_batch(LENGTHS)
    with torch.no_grad():
        before = padded_logits(model, rows)
        enable_packed_attention(model)
        assert model.config._attn_implementation == PACKED_ATTENTION
        assert torch.equal(padded_logits(model, rows), before)


def test_the_flex_document_mask_confines_attention_to_each_sequence():
    """The BlockMask's rule equals the block-diagonal mask (flex attention run eagerly on CPU)."""
    seq_ids = PackCollator(PAD, row_len=ROW)(make_batch(LENGTHS))["seq_ids"]
    rows, width = seq_ids.shape
    q, k, v = (torch.randn(rows, 2, width, 8) for _ in range(3))
    with torch.no_grad():
        got = flex_attention(q, k, v, block_mask=_document_block_mask(seq_ids))
        expected = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=_block_diagonal(seq_ids, "sdpa", torch.float32))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_flex_is_refused_in_training_with_attention_dropout():
    model = tiny_model(dropout=0.1).train()
    with pytest.raises(ValueError, match="no attention dropout"):
        packed_logits(model, PackCollator(PAD)(make_batch([5, 4])), backend="flex")


def test_backend_choice_and_refusals():
    model = tiny_model()
    assert choose_backend(model, torch.device("cpu")) == "mask"
    assert choose_backend(model, torch.device("cuda")) == "varlen"
    batch = PackCollator(PAD)(make_batch([5, 4]))
    with pytest.raises(ValueError, match="choose from mask, varlen, flex"):
        packed_logits(model, batch, backend="nested")
    bert = BertForSequenceClassification(BertConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64))
    with pytest.raises(TypeError, match="RoBERTa-style"):
        packed_logits(bert, batch)


# --- the benchmark runs where pydantic is absent (the GPU machine) ---------------------------

def test_benchmark_imports_without_pydantic_and_knows_the_scratch_sizes():
    code = ("import json, runpy, sys; sys.modules['pydantic'] = None; "
            "ns = runpy.run_path('benchmarks/packing.py', run_name='imported'); "
            "print(json.dumps(ns['MODEL_SIZES']))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == SCRATCH_MODELS
