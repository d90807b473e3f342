"""The classifier's forward pass, computing only what the classification head reads.

A RoBERTa sequence classifier (CodeBERT is one) reads one position of the encoder's output: the
first token's final hidden state. Every layer but the last needs all positions (they are the
keys and values of the next layer), but the last layer's outputs at other positions are thrown
away: their queries, attention probabilities, attention output, feed-forward block and layer
norms are work nobody reads. `classifier_logits` runs the last layer for the first token only
(keys and values still come from every position), which gives the same logits and the same
gradients as the model's own forward (tests compare both) at a fraction of the last layer's
cost: for the 2-layer `tiny` model that is about 40 % of a training step, for 12-layer
CodeBERT about 7 %.

Models it does not know (anything but `RobertaForSequenceClassification` in its encoder-only
form) run their own forward, unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import RobertaForSequenceClassification
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.roberta import modeling_roberta

from streamguard.training.packing import packed_logits


def batch_logits(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                 device: torch.device) -> torch.Tensor:
    """Logits of a loader's batch on `device`: a packed batch (PackCollator: it has `seq_ids`)
    through `packed_logits`, a padded one through `classifier_logits`."""
    if "seq_ids" in batch:
        moved = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        return packed_logits(model, moved)  # type: ignore[arg-type]
    return classifier_logits(model, batch["input_ids"].to(device, non_blocking=True),
                             batch["attention_mask"].to(device, non_blocking=True))


def supports_first_token_forward(model: torch.nn.Module) -> bool:
    """A RoBERTa classifier in the plain encoder form this module reimplements."""
    if not isinstance(model, RobertaForSequenceClassification):
        return False
    config = model.config
    return (not config.is_decoder and not config.add_cross_attention
            and not config.chunk_size_feed_forward
            and isinstance(model.classifier, modeling_roberta.RobertaClassificationHead))


def classifier_logits(model: torch.nn.Module, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Logits [batch, labels]: the model's own result, computing the last layer at the first
    token only where the model is one `supports_first_token_forward` knows."""
    if not supports_first_token_forward(model):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits
    assert isinstance(model, RobertaForSequenceClassification)
    base = model.roberta
    hidden = base.embeddings(input_ids=input_ids)
    mask, _ = base._create_attention_masks(attention_mask=attention_mask,
                                           encoder_attention_mask=None,
                                           embedding_output=hidden,
                                           encoder_hidden_states=None, cache=None)
    layers = base.encoder.layer
    for layer in layers[:-1]:
        hidden = layer(hidden, mask)
    first = _last_layer_at_first_token(layers[-1], hidden, mask)
    return model.classifier(first)  # the head takes position 0 of what it is given


def _last_layer_at_first_token(layer: Any, hidden: torch.Tensor,
                               mask: torch.Tensor | None) -> torch.Tensor:
    """RobertaLayer.forward for the query at position 0 only: [batch, 1, hidden]."""
    attn = layer.attention.self
    batch, length, _ = hidden.shape
    heads, head_dim = attn.num_attention_heads, attn.attention_head_size
    first = hidden[:, :1]
    query = attn.query(first).view(batch, 1, heads, head_dim).transpose(1, 2)
    key = attn.key(hidden).view(batch, length, heads, head_dim).transpose(1, 2)
    value = attn.value(hidden).view(batch, length, heads, head_dim).transpose(1, 2)
    if mask is not None and mask.dim() == 4 and mask.shape[2] > 1:
        mask = mask[:, :, :1, :]  # the first query's row of a [batch, 1, query, key] mask
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation,
                                                      modeling_roberta.eager_attention_forward)
    out, _ = interface(attn, query, key, value, mask,
                       dropout=attn.dropout.p if attn.training else 0.0, scaling=attn.scaling)
    attention_output = layer.attention.output(out.reshape(batch, 1, -1), first)
    return layer.feed_forward_chunk(attention_output)
