"""ElasticBERT under the parts of the transformers / torch API a Hugging Face user reaches for beyond training
and the classification pipeline: tracing, the masked LM's forward options and vocabulary resizing, the Auto
classes and pipelines on saved folders."""

from __future__ import annotations

import warnings

import elasticbert_fixtures as fixtures
import pytest
import torch

from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification

VOCAB = 99
SIZES = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    max_position_embeddings=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
)


def tiny(seed: int = 0, **kw) -> ElasticBertForSequenceClassification:
    torch.manual_seed(seed)
    return ElasticBertForSequenceClassification(ElasticBertConfig(**{**SIZES, **kw})).eval()


def padded_batch(b: int = 4, s: int = 9, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return fixtures.padded_batch(VOCAB, b, s, seed)


@pytest.mark.parametrize("exits", [1, 2])
def test_jit_trace_on_an_unpadded_batch_still_reads_the_mask(exits):
    """The forward drops an all-ones mask (no padding: SDPA's fast path), a branch on the mask's values:
    traced on an unpadded example, the traced model ignored the mask of every later batch."""
    model = tiny(num_labels=3, num_output_layers=exits, return_dict=False)
    with torch.no_grad():  # weights under which padding changes the logits clearly
        for name, param in model.named_parameters():
            if name.endswith("weight") and "LayerNorm" not in name:
                param.normal_(0, 0.5)
    ids, mask = padded_batch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation
        traced = torch.jit.trace(model, (ids, torch.ones_like(mask)), check_trace=False)
    with torch.no_grad():
        want = model(ids, attention_mask=mask)[1]  # exit_logits
        unmasked = model(ids)[1]
        got = traced(ids, mask)[1]
    assert not torch.allclose(want, unmasked, atol=1e-3)
    torch.testing.assert_close(got, want)
