"""Sixth review round of the evaluation toolkit: each test failed before its fix."""

from __future__ import annotations

import math

import pytest
import torch
from toolkit_fixtures import forged_model_py
from torch import nn
from torch.nn import functional as F

from elue.costs.flops import count_macs, module_flops
from elue.costs.sandbox import SandboxError, price_model
from elue.scoring import rank_by_overall, size_track
from elue.tasks import TASK_NAMES


def _attn_macs(n_q: int, n_k: int, h: int, heads: int) -> int:
    d = h // heads
    return heads * (2 * n_q * n_k * d + 2 * n_q * n_k)


def _both(module: nn.Module, *inputs) -> int:
    """MACs on meta and on real CPU tensors; they must agree."""
    on_meta = count_macs(module, inputs)
    assert count_macs(module, inputs, meta=False) == on_meta
    return on_meta


class _CrossAttention(nn.Module):
    def __init__(self, h: int, heads: int, need_weights: bool):
        super().__init__()
        self.m = nn.MultiheadAttention(h, heads, batch_first=True)
        self.need_weights = need_weights

    def forward(self, x, memory):
        return self.m(x, memory, memory, need_weights=self.need_weights)[0]


def test_multihead_cross_attention_charges_the_scaling_of_the_scores():
    # query and key differ, so nn.MultiheadAttention splits its packed in_proj_weight: the pieces lost the
    # parameter tag, the projections looked like products of two activations, and Q's scaling was charged
    # per element of Q instead of per score (need_weights=True; SDPA's path was right)
    h, heads, n, s = 32, 4, 6, 9
    expected = h * h * n + 2 * h * h * s + h * h * n + _attn_macs(n, s, h, heads)
    for need_weights in (True, False):
        module = _CrossAttention(h, heads, need_weights).eval()
        assert _both(module, torch.zeros(1, n, h), torch.zeros(1, s, h)) == expected


def test_same_tensor_given_twice_stays_one_tensor_on_meta():
    # a dummy_input passing one tensor as query, key and value: MultiheadAttention takes its self-attention
    # path when they are the same object; on meta they were three copies (the cross-attention path)
    h, heads, n = 32, 4, 6
    mha = nn.MultiheadAttention(h, heads, batch_first=True)
    x = torch.zeros(1, n, h)
    assert module_flops(mha, (n, h), lambda s: (x, x, x)) == 2 * (4 * h * h * n + _attn_macs(n, n, h, heads))


class _DerivedWeights(nn.Module):
    """Weights taken apart, put together or scaled are still weights: scaling the product is free."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(16, 8))
        self.v = nn.Parameter(torch.zeros(8, 8))
        self.normed = nn.utils.parametrizations.weight_norm(nn.Linear(8, 8, bias=False))

    def forward(self, x):
        a, b = self.w.split(8)
        y = F.linear(x, a) * 0.5 + x @ self.w[8:].t() / 3.0 + F.linear(x, b) * 2.0
        y = y + F.linear(x, torch.cat([self.v, self.w[:8]])[:8]) * 2.0 + F.linear(x, self.v * 0.5) * 2.0
        return y + self.normed(x) * 2.0


def test_products_with_weights_derived_from_parameters_are_not_attention_scores():
    n = 5
    assert _both(_DerivedWeights(), torch.zeros(1, n, 8)) == 6 * n * 8 * 8


def test_bilinear_is_a_product():
    # nn.Bilinear runs aten._trilinear, which was priced 0; its product is in1 x in2 per output element
    n, a, b, out = 5, 6, 7, 3
    m = nn.Bilinear(a, b, out)
    assert _both(m, torch.zeros(1, n, a), torch.zeros(1, n, b)) == n * out * a * b


@pytest.mark.parametrize(
    ("params", "flops", "message"),
    [
        ("5", "10**400", "impossible .* costs: 401-digit number FLOPs for 'layer_1'"),
        ("10**70", "1", "impossible .* costs: 71-digit number parameters"),
        ("5", "float('inf')", "malformed result"),
    ],
)
def test_forged_huge_costs_are_refused_with_a_message(tmp_path, params, flops, message):
    # a model.py reaching the result channel with 10**400 FLOPs: the float sums of the scores overflowed
    # (OverflowError traceback from `elue evaluate`); Infinity gave one from int()
    model = tmp_path / "model.py"
    model.write_text(forged_model_py(params, flops))
    with pytest.raises(SandboxError, match=message):
        price_model(model, [("layer_1", (4, 8))], trust_model_code=True)


def test_nan_scores_count_as_missing_and_do_not_break_the_ranking():
    # NaN compared as neither larger nor smaller: 'a' (80) was ranked above 'c' (85)
    models = {
        "a": {"params_m": 10, "best": dict.fromkeys(TASK_NAMES, 80.0)},
        "b": {"params_m": 10, "best": {**dict.fromkeys(TASK_NAMES, 90.0), "sst-2": math.nan}},
        "c": {"params_m": 10, "best": dict.fromkeys(TASK_NAMES, 85.0)},
    }
    track = size_track(models, 40)
    assert [(e.name, e.rank, e.complete) for e in track] == [
        ("c", 1, True),
        ("a", 2, True),
        ("b", None, False),
    ]
    rows = rank_by_overall(
        {
            "a": dict.fromkeys(TASK_NAMES, 1.0),
            "b": dict.fromkeys(TASK_NAMES, math.nan),
            "c": dict.fromkeys(TASK_NAMES, 2.0),
        }
    )
    assert rows == [("c", 2.0, 1), ("a", 1.0, 2), ("b", None, None)]


def test_lstm_costs_the_same_on_cpu_as_on_meta():
    # a module that cannot run on meta is priced on CPU zeros, where nn.LSTM is one mkldnn kernel: it cost 0
    lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
    n = 10
    expected = 2 * n * 4 * 32 * (16 + 32) + 2 * n * 4 * 32 * (64 + 32)
    assert _both(lstm, torch.zeros(1, n, 16)) == expected


class _HandNorms(nn.Module):
    """RMSNorm as Llama and T5 write it, and a LayerNorm out of elementwise ops."""

    def __init__(self, h: int):
        super().__init__()
        self.w = nn.Parameter(torch.ones(h))

    def forward(self, x):
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        rms = self.w * (x * torch.rsqrt(variance + 1e-6))
        centred = rms - rms.mean(-1, keepdim=True)
        return centred / torch.sqrt((centred**2).mean(-1, keepdim=True) + 1e-5)


def test_hand_written_norms_cost_two_per_element_like_nn_rmsnorm():
    # Llama's, Qwen's, T5's RMSNorm are elementwise ops: they cost 0 where nn.RMSNorm costs 2 per element
    n, h = 5, 16
    assert _both(_HandNorms(h), torch.zeros(1, n, h)) == 2 * (2 * n * h)
    assert _both(nn.RMSNorm(h), torch.zeros(1, n, h)) == 2 * n * h


def test_llama_layer_matches_the_formula_with_grouped_query_attention():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    n, h, heads, kv_heads, ffn = 7, 64, 8, 2, 128
    d = h // heads
    expected = (
        2 * n * h * h  # q and o projections
        + 2 * n * h * kv_heads * d  # k and v projections
        + 3 * n * h * ffn  # gate, up, down
        + _attn_macs(n, n, h, heads)
        + 2 * (2 * n * h)  # two RMSNorms
    )
    for impl in ("eager", "sdpa"):
        config = LlamaConfig(
            hidden_size=h, num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=ffn
        )
        config._attn_implementation = impl
        layer = LlamaDecoderLayer(config, 0).eval()
        x = torch.zeros(1, n, h)
        rotary = LlamaRotaryEmbedding(config)(x, torch.arange(n)[None])
        inputs = {"hidden_states": x, "position_embeddings": rotary, "attention_mask": None}
        assert count_macs(layer, inputs) == count_macs(layer, inputs, meta=False) == expected


class _StatNorms(nn.Module):
    """LayerNorms written with torch.var / torch.var_mean (then a root) and with torch.std."""

    def forward(self, x):
        var = x.var(-1, unbiased=False, keepdim=True)
        x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(var + 1e-5)
        var, mean = torch.var_mean(x, -1, keepdim=True, unbiased=False)
        x = (x - mean) * torch.rsqrt(var + 1e-5)
        return (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + 1e-5)


def test_layer_norms_written_with_var_or_std_cost_two_per_element():
    n, h = 5, 16
    assert _both(_StatNorms(), torch.zeros(1, n, h)) == 3 * (2 * n * h)
