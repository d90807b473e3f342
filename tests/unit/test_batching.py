"""Stratified length buckets and the first-token forward (CPU).

Buckets: every example exactly once per epoch, each batch within one example of the split's
class mix, less padding than shuffled batches on real Devign lengths, and the order a pure
function of (seed, epoch). The first-token forward: the same logits and gradients as the
model's own forward.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

from streamguard.training.data import EpochBatchSampler
from streamguard.training.forward import classifier_logits, supports_first_token_forward


def devign_like(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """Token lengths with Devign's shape at max length 512: about 46 % vulnerable, vulnerable
    functions longer, about half truncated to the limit."""
    rng = random.Random(seed)
    labels = [int(rng.random() < 0.46) for _ in range(n)]
    lengths = [min(512, int(rng.lognormvariate(5.6 + 0.5 * y, 1.0)) + 3) for y in labels]
    return lengths, labels


def padded_tokens(batches: list[list[int]], lengths: list[int]) -> int:
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


@pytest.mark.parametrize("n,size", [(1000, 32), (1001, 32), (37, 8), (5, 16)])
def test_every_example_once_and_each_batch_holds_the_split_mix(n, size):
    lengths, labels = devign_like(n)
    sampler = EpochBatchSampler(lengths, size, shuffle=True, group_by_length=True, seed=3,
                                labels=labels)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert len(batches) == len(sampler) == -(-n // size)
        share = sum(labels) / n
        for batch in batches:
            vulnerable = sum(labels[i] for i in batch)
            assert abs(vulnerable - share * len(batch)) <= 1.0 + 1e-9, (epoch, batch)


def test_buckets_cut_padding_against_shuffled_batches():
    lengths, labels = devign_like(4000)
    kw = {"shuffle": True, "seed": 1, "labels": labels}
    bucketed = EpochBatchSampler(lengths, 32, group_by_length=True, **kw).epoch_batches()
    shuffled = EpochBatchSampler(lengths, 32, group_by_length=False, **kw).epoch_batches()
    real = sum(lengths)
    assert padded_tokens(bucketed, lengths) / real < 1.15
    assert padded_tokens(shuffled, lengths) / real > 1.5


def test_order_is_a_function_of_seed_and_epoch():
    lengths, labels = devign_like(500)

    def order(seed: int, epoch: int) -> list[list[int]]:
        s = EpochBatchSampler(lengths, 16, shuffle=True, group_by_length=True, seed=seed,
                              labels=labels)
        s.set_epoch(epoch)
        return list(s)

    assert order(7, 2) == order(7, 2)
    assert order(7, 2) != order(7, 3) and order(7, 2) != order(8, 2)
    resumed = EpochBatchSampler(lengths, 16, shuffle=True, group_by_length=True, seed=7,
                                labels=labels)
    resumed.set_epoch(2, start_batch=5)
    assert list(resumed) == order(7, 2)[5:]


def test_one_class_split_and_mismatched_labels():
    sampler = EpochBatchSampler([5, 9, 3, 7], 2, shuffle=True, group_by_length=True, seed=0,
                                labels=[1, 1, 1, 1])
    assert sorted(i for b in sampler for i in b) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="3 labels for 4 lengths"):
        EpochBatchSampler([1, 2, 3, 4], 2, shuffle=True, group_by_length=True, seed=0,
                          labels=[0, 1, 0])


def tiny_roberta(dropout: float = 0.0) -> RobertaForSequenceClassification:
    torch.manual_seed(0)
    config = RobertaConfig(vocab_size=300, hidden_size=32, num_hidden_layers=3,
                           num_attention_heads=4, intermediate_size=64,
                           max_position_embeddings=70, pad_token_id=1, num_labels=2,
                           hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return RobertaForSequenceClassification(config)


def padded_batch(lengths: list[int], pad: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad)
    mask = torch.zeros((len(lengths), width), dtype=torch.long)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(3, 300, (n,), generator=gen)
        mask[row, :n] = 1
    return ids, mask


@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_first_token_forward_gives_the_models_logits_and_gradients(impl):
    model = tiny_roberta()
    model.config._attn_implementation = impl
    assert supports_first_token_forward(model)
    ids, mask = padded_batch([64, 3, 17, 40, 64, 9])
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    model.train()  # dropout 0: training mode computes the same function
    own = model(input_ids=ids, attention_mask=mask).logits
    torch.nn.functional.cross_entropy(own, labels).backward()
    own_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    fast = classifier_logits(model, ids, mask)
    torch.nn.functional.cross_entropy(fast, labels).backward()
    torch.testing.assert_close(fast, own, atol=1e-5, rtol=1e-5)
    for name, grad in own_grads.items():
        param = dict(model.named_parameters())[name]
        # the last layer's query/output at positions > 0 get no gradient on either path
        torch.testing.assert_close(param.grad, grad, atol=1e-5, rtol=1e-4, msg=name)
    assert Counter(p.grad is None for p in model.parameters())[True] == \
        Counter(n not in own_grads for n, _ in model.named_parameters())[True]


def test_first_token_forward_without_padding_and_other_models_fall_back():
    model = tiny_roberta().eval()
    ids, _ = padded_batch([20, 20])
    with torch.no_grad():
        torch.testing.assert_close(classifier_logits(model, ids, None),
                                   model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    bert = BertForSequenceClassification(BertConfig(
        vocab_size=300, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
        intermediate_size=64, num_labels=2)).eval()
    assert not supports_first_token_forward(bert)
    ids, mask = padded_batch([10, 4], pad=0)
    with torch.no_grad():
        assert torch.equal(classifier_logits(bert, ids, mask),
                           bert(input_ids=ids, attention_mask=mask).logits)


def test_the_packed_loader_gives_the_padded_loaders_logits():
    """make_loader(packed_row_len=...) batches, through batch_logits, equal the padded ones."""
    from streamguard.training.data import TokenizedSplit, make_loader
    from streamguard.training.forward import batch_logits

    model = tiny_roberta().eval()
    gen = torch.Generator().manual_seed(4)
    lengths = [64, 3, 30, 17, 64, 9, 41, 5, 22, 60]
    split = TokenizedSplit([torch.randint(3, 300, (n,), generator=gen).tolist()
                            for n in lengths], [i % 2 for i in range(len(lengths))])
    kw = {"pad_id": 1, "shuffle": True, "group_by_length": True, "seed": 2}
    padded = make_loader(split, 5, **kw)
    packed = make_loader(split, 5, packed_row_len=64, **kw)
    cpu = torch.device("cpu")
    with torch.no_grad():
        for a, b in zip(padded, packed, strict=True):
            assert "seq_ids" in b and b["input_ids"].shape[0] < 5  # fewer rows than functions
            assert torch.equal(a["labels"], b["labels"])
            torch.testing.assert_close(batch_logits(model, b, cpu), batch_logits(model, a, cpu),
                                       atol=1e-5, rtol=1e-5)


def test_compiled_and_eager_forward_agree():
    """torch.compile (config.torch_compile) of the training forward: the eager logits."""
    from streamguard.training.forward import batch_logits

    model = tiny_roberta().eval()
    ids, mask = padded_batch([24, 7, 24, 15])
    batch = {"input_ids": ids, "attention_mask": mask}
    compiled = torch.compile(batch_logits)
    cpu = torch.device("cpu")
    with torch.no_grad():
        torch.testing.assert_close(compiled(model, batch, cpu), batch_logits(model, batch, cpu),
                                   atol=1e-5, rtol=1e-5)
