"""FLOP counting rules (spec §3), fvcore style: tiny nets with hand-computed MACs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from elue.costs.flops import (
    FlopCountError,
    ModuleFlops,
    count_macs,
    default_dummy_input,
    module_flops,
)
from elue.costs.params import count_params
from elue.trace import parse_trace


def attn_macs(n: int, hidden: int, heads: int, s: int | None = None) -> int:
    """Attention core by the convention: per head QKᵀ n·s·d + PV n·s·d + n·s scaling + n·s softmax."""
    s = n if s is None else s
    d = hidden // heads
    return heads * (2 * n * s * d + 2 * n * s)


def bert_layer_macs(n: int, h: int, heads: int, ffn: int) -> int:
    return 4 * h * h * n + 2 * h * ffn * n + attn_macs(n, h, heads) + 2 * 2 * h * n


def both(module: nn.Module, *inputs) -> int:
    """MACs on meta and for real on CPU must agree; returns them."""
    meta = count_macs(module, inputs)
    real = count_macs(module, inputs, meta=False)
    assert meta == real
    return meta


# ---------------------------------------------------------------------------------------------------
# single rules


@pytest.mark.parametrize("bias", [True, False])
def test_linear_bias_free(bias):
    lin = nn.Linear(5, 3, bias=bias)
    assert both(lin, torch.zeros(1, 4, 5)) == 4 * 5 * 3
    assert both(lin, torch.zeros(1, 5)) == 5 * 3


def test_matmul_like_ops():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(6, 2))
            self.v = nn.Parameter(torch.zeros(6))

        def forward(self, x):  # x (1, 4, 6)
            a = x @ self.w  # 4·6·2
            b = torch.einsum("bnk,km->bnm", x, self.w)  # 4·6·2
            c = torch.mv(x[0], self.v)  # 4·6
            d = torch.dot(self.v, self.v)  # 6
            return a.sum() + b.sum() + c.sum() + d

    assert both(M(), torch.zeros(1, 4, 6)) == 48 + 48 + 24 + 6


def test_layernorm_two_per_element():
    assert both(nn.LayerNorm(8), torch.zeros(1, 3, 8)) == 2 * 3 * 8
    assert both(nn.LayerNorm(8, elementwise_affine=False), torch.zeros(1, 3, 8)) == 2 * 3 * 8


def test_free_ops_cost_nothing():
    class Free(nn.Module):
        def __init__(self):
            super().__init__()
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            y = F.gelu(x) + torch.tanh(x) + F.relu(x)  # activations and residual adds
            y = self.drop(y) * x  # elementwise product of activations
            y = y * 3.0 + 1.0  # scalar ops outside attention
            return y.transpose(1, 2).reshape(1, -1)

    assert both(Free(), torch.zeros(1, 3, 8)) == 0


def test_embedding_lookup_is_free_and_gets_int_input():
    emb = nn.Embedding(100, 16)
    assert default_dummy_input(emb, (7,))[0].dtype == torch.int64
    assert default_dummy_input(nn.Linear(3, 3), (3,))[0].dtype == torch.float32
    assert module_flops(emb, (7,)) == 0


def test_conv1d():
    conv = nn.Conv1d(4, 6, kernel_size=3, padding=1)
    # 6 out channels × 10 positions × 4 in channels × 3 taps
    assert both(conv, torch.zeros(1, 4, 10)) == 6 * 10 * 4 * 3


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_conv_counts_the_products_it_makes(groups):
    # every input element is multiplied by out/groups × kernel weights: 5 positions × 4 in channels ×
    # 8/groups × 3 taps (the output has 7 positions; counting per output element would charge 7/5 as much)
    conv = nn.ConvTranspose1d(4, 8, kernel_size=3, groups=groups)
    assert both(conv, torch.zeros(1, 4, 5)) == 5 * 4 * (8 // groups) * 3


def test_rms_norm_two_per_element_on_every_device():
    """On meta and CPU torch decomposes RMS norm into pointwise ops (0 by the rules): priced as a whole."""
    x = torch.zeros(1, 10, 64)
    assert both(nn.RMSNorm(64), x) == 2 * 640 == both(nn.LayerNorm(64), x)

    class Functional(nn.Module):
        def forward(self, x):
            return F.rms_norm(x, (64,)) + torch.rms_norm(x, (64,))

    assert both(Functional(), x) == 2 * 2 * 640


def test_gpt2_block_eager_equals_sdpa_with_baddbmm_scaling():
    from transformers import GPT2Config
    from transformers.models.gpt2.modeling_gpt2 import GPT2Block

    counts = set()
    for reorder in (True, False):
        for impl in ("eager", "sdpa"):
            config = GPT2Config(n_embd=64, n_head=4, n_layer=1, reorder_and_upcast_attn=reorder)
            config._attn_implementation = impl
            counts.add(module_flops(GPT2Block(config, layer_idx=0).eval(), (7, 64)))
    assert len(counts) == 1, counts


def test_softmax_one_per_element():
    class S(nn.Module):
        def forward(self, x):
            return torch.softmax(x, dim=-1)

    assert both(S(), torch.zeros(1, 5, 7)) == 35


# ---------------------------------------------------------------------------------------------------
# attention, every way of writing it


class EagerAttention(nn.Module):
    """Hand-written multi-head self-attention; `style` picks where the 1/√d scaling goes."""

    def __init__(self, hidden=32, heads=4, style="scores"):
        super().__init__()
        self.h, self.heads, self.style = hidden, heads, style
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))

    def forward(self, x, mask=None):
        b, n, _ = x.shape
        d = self.h // self.heads

        def split(t):
            return t.view(b, n, self.heads, d).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        if self.style == "sdpa":
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            if self.style == "query":  # DistilBERT style: scale Q before the product
                q = q / d**0.5
                scores = torch.matmul(q, k.transpose(-1, -2))
            elif self.style == "alpha":  # GPT-2's reorder_and_upcast_attn: the product scales (baddbmm alpha)
                q3, k3 = q.reshape(b * self.heads, n, d), k.reshape(b * self.heads, n, d)
                zeros = q3.new_zeros(b * self.heads, n, n)
                scores = torch.baddbmm(zeros, q3, k3.transpose(1, 2), beta=0, alpha=d**-0.5)
                scores = scores.view(b, self.heads, n, n)
            elif self.style == "mask_then_scale":  # the mask added first, the sum scaled
                scores = torch.matmul(q, k.transpose(-1, -2))
                if mask is not None:
                    scores = scores + mask
                    mask = None
                scores = scores / d**0.5
            else:
                scores = torch.matmul(q, k.transpose(-1, -2)) / d**0.5
            if mask is not None:
                scores = scores + mask
            ctx = torch.matmul(scores.softmax(-1), v)
        return self.o(ctx.transpose(1, 2).reshape(b, n, self.h))


@pytest.mark.parametrize("style", ["scores", "query", "sdpa", "alpha", "mask_then_scale"])
@pytest.mark.parametrize("n", [1, 5, 9])
def test_attention_hand_computed(style, n):
    h, heads = 32, 4
    expected = 4 * h * h * n + attn_macs(n, h, heads)
    assert both(EagerAttention(h, heads, style), torch.zeros(1, n, h)) == expected
    mask = torch.zeros(1, 1, n, n)  # mask adds are free
    assert both(EagerAttention(h, heads, style), torch.zeros(1, n, h), mask) == expected


class _HandSoftmaxAttention(nn.Module):
    """Attention whose softmax is written out: exp(s - max) / sum, or with a 1 added to the sum ("softmax1")."""

    def __init__(self, hidden=32, heads=4, plus_one=False):
        super().__init__()
        self.heads, self.plus_one, self.scale = heads, plus_one, (hidden // heads) ** -0.5
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)

    def forward(self, x):
        b, n, h = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) * self.scale
        e = torch.exp(scores - scores.amax(-1, keepdim=True))
        return e / (e.sum(-1, keepdim=True) + (1 if self.plus_one else 0)) @ v


@pytest.mark.parametrize("plus_one", [False, True])
def test_a_softmax_written_out_costs_what_softmax_does(plus_one):
    # its exp was free like any elementwise op: the attention cost heads * n² less than with torch.softmax
    h, heads = 32, 4
    for n in (3, 7):
        expected = 3 * h * h * n + attn_macs(n, h, heads)
        assert both(_HandSoftmaxAttention(h, heads, plus_one), torch.zeros(1, n, h)) == expected
    mods = {"a": _HandSoftmaxAttention(h, heads, plus_one)}
    fast, slow = ModuleFlops(mods, symbolic_after=2), ModuleFlops(mods, symbolic_after=None)
    assert [fast("a", (n, h)) for n in range(2, 12)] == [slow("a", (n, h)) for n in range(2, 12)]
    assert fast.stats["formula"] > 0


class _SizeScaledAttention(nn.Module):
    """Scores scaled by a factor computed from the input's size, `(h // heads) ** -0.5` (a SymFloat when symbolic)."""

    def __init__(self, hidden=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden, bias=False)

    def forward(self, x):
        b, n, h = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, h // self.heads).permute(2, 0, 3, 1, 4)
        return (q @ k.transpose(-1, -2) * (h // self.heads) ** -0.5).softmax(-1) @ v


def test_a_scale_computed_from_the_sizes_keeps_the_formula_of_the_shape():
    # in the symbolic run the scale was a SymFloat, taken for no scalar: the scaling went uncharged, the formula
    # disagreed with the concrete counts and was dropped, and every shape of the module was counted concretely
    h, heads = 32, 4
    mods = {"a": _SizeScaledAttention(h, heads)}
    fast = ModuleFlops(mods, symbolic_after=2)
    got = [fast("a", (n, h)) for n in range(2, 12)]
    assert got == [2 * (3 * h * h * n + attn_macs(n, h, heads)) for n in range(2, 12)]
    assert fast.stats["symbolic_failed"] == 0 and fast.stats["formula"] == 8


@pytest.mark.parametrize("need_weights", [True, False])
def test_torch_multihead_attention(need_weights):
    h, heads, n = 32, 4, 6
    mha = nn.MultiheadAttention(h, heads, batch_first=True).eval()

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.m = mha

        def forward(self, x):
            return self.m(x, x, x, need_weights=need_weights)[0]

    assert both(Wrap(), torch.zeros(1, n, h)) == 4 * h * h * n + attn_macs(n, h, heads)


def test_torch_transformer_encoder_layer():
    h, heads, n, ffn = 32, 4, 6, 64
    layer = nn.TransformerEncoderLayer(h, heads, dim_feedforward=ffn, batch_first=True).eval()
    assert both(layer, torch.zeros(1, n, h)) == bert_layer_macs(n, h, heads, ffn)


# ---------------------------------------------------------------------------------------------------
# Hugging Face layers, eager vs SDPA, and the reference numbers of spec §3


def _hf_layer(kind: str, impl: str, **size):
    if kind == "bert":
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        return BertLayer(BertConfig(attn_implementation=impl, **size)).eval()
    if kind == "roberta":
        from transformers import RobertaConfig
        from transformers.models.roberta.modeling_roberta import RobertaLayer

        return RobertaLayer(RobertaConfig(attn_implementation=impl, **size)).eval()
    from transformers import AlbertConfig
    from transformers.models.albert.modeling_albert import AlbertLayer

    return AlbertLayer(AlbertConfig(attn_implementation=impl, **size)).eval()


SMALL = dict(hidden_size=48, num_attention_heads=3, intermediate_size=96)


@pytest.mark.parametrize("kind", ["bert", "roberta", "albert"])
def test_hf_layers_eager_equals_sdpa_equals_formula(kind):
    eager = _hf_layer(kind, "eager", **SMALL)
    sdpa = _hf_layer(kind, "sdpa", **SMALL)
    sdpa.load_state_dict(eager.state_dict())
    for n in (1, 6, 17):
        x = torch.zeros(1, n, 48)
        expected = bert_layer_macs(n, 48, 3, 96)
        assert both(eager, x) == expected
        assert both(sdpa, x) == expected


def test_bert_base_layer_reference_numbers():
    """Spec §3: ElasticBERT-base layer MACs = 7,080,960·n + 1,560·n², exactly."""
    for impl in ("eager", "sdpa"):
        layer = _hf_layer("bert", impl)
        for n in (1, 7, 128, 512):
            assert count_macs(layer, (torch.zeros(1, n, 768),)) == 7_080_960 * n + 1_560 * n * n
    # embeddings + 12 layers + one exit at n = 128: 22,368 MFLOPs (spec §3)
    n = 128
    macs = 1_536 * n + 12 * (7_080_960 * n + 1_560 * n * n) + 589_824 + 1_536
    assert round(2 * macs / 1e6) == 22_368


def test_dtype_does_not_matter():
    layer = _hf_layer("bert", "sdpa", **SMALL)
    f32 = count_macs(layer, (torch.zeros(1, 9, 48),))
    real32 = count_macs(layer, (torch.zeros(1, 9, 48),), meta=False)
    layer = layer.to(torch.bfloat16)
    bf16 = count_macs(layer, (torch.zeros(1, 9, 48, dtype=torch.bfloat16),))
    real16 = count_macs(layer, (torch.zeros(1, 9, 48, dtype=torch.bfloat16),), meta=False)
    assert f32 == bf16 == real32 == real16 == bert_layer_macs(9, 48, 3, 96)


def test_bert_embeddings_block():
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings

    emb = BertEmbeddings(BertConfig(hidden_size=48, vocab_size=50)).eval()
    # word + position + token-type lookups are free; LayerNorm 2 per element
    assert module_flops(emb, (11,)) == 2 * (2 * 48 * 11)
    assert default_dummy_input(emb, (11,))[0].dtype == torch.int64


class Exit(nn.Module):
    """Pooler + classifier on the [CLS] vector."""

    def __init__(self, h, c):
        super().__init__()
        self.pooler = nn.Linear(h, h)
        self.classifier = nn.Linear(h, c)

    def forward(self, cls):
        return self.classifier(torch.tanh(self.pooler(cls)))


def test_exit_pooler_classifier():
    assert module_flops(Exit(16, 3), (16,)) == 2 * (16 * 16 + 16 * 3)
    assert module_flops(Exit(768, 2), (768,)) == 2 * (589_824 + 1_536)


def test_elasticbert_base_points_of_spec_section_6_follow_from_the_convention():
    """Spec §3/§6: ElasticBERT-BASE static at 3/4/6/12 layers, at the SST-2 mean length (≈24.8 tokens), costs
    the MFLOPs its published points are plotted at (±10 MFLOPs reading error; 12 layers "about 4,240"):
    per example Σ of its calls at batch 1, per test file the mean over its examples."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings

    from elue.scoring import load_baseline, mean_mflops

    with torch.device("meta"):
        emb = BertEmbeddings(BertConfig())
        layer = _hf_layer("bert", "sdpa")
        exit_ = Exit(768, 2)
    mods = {
        "emb": emb,
        **{f"layer_{i}": layer for i in range(1, 13)},
        **{f"exit_{i}": exit_ for i in (3, 4, 6, 12)},
    }
    counter = ModuleFlops(mods)
    lengths = [24, 25, 25, 25, 25]  # mean 24.8
    published = [f for f, _ in load_baseline()["sst-2"]]
    for k, expected in zip((3, 4, 6, 12), published, strict=True):
        traces = [
            parse_trace(
                "; ".join(
                    [f"({n}),emb", *(f"({n},768),layer_{i}" for i in range(1, k + 1)), f"(768),exit_{k}"]
                )
            )
            for n in lengths
        ]
        flops = [sum(counter(name, shape) for name, shape in t) for t in traces]
        assert mean_mflops(range(len(lengths)), flops) == pytest.approx(expected, abs=10)
        if k == 12:
            assert mean_mflops(range(len(lengths)), flops) == pytest.approx(4_240, abs=2)


def test_token_level_early_exit_trace_sums_two_shapes():
    h, heads, ffn = 64, 4, 128
    mods = {f"layer_{i}": EncoderLayer(h, heads, ffn) for i in (1, 2)}
    flops = ModuleFlops(mods)
    trace = parse_trace("(10,64),layer_1; (6,64),layer_2")
    total = sum(flops(name, shape) for name, shape in trace)
    assert total == 2 * (bert_layer_macs(10, h, heads, ffn) + bert_layer_macs(6, h, heads, ffn))


class EncoderLayer(nn.Module):
    def __init__(self, h, heads, ffn):
        super().__init__()
        self.attn = EagerAttention(h, heads, "sdpa")
        self.ln1, self.ln2 = nn.LayerNorm(h), nn.LayerNorm(h)
        self.ff = nn.Sequential(nn.Linear(h, ffn), nn.GELU(), nn.Linear(ffn, h))

    def forward(self, x):
        x = self.ln1(x + self.attn(x))
        return self.ln2(x + self.ff(x))


def test_module_flops_cache_and_dummy_input():
    calls = []

    def dummy(name, shape):
        calls.append((name, shape))
        return (torch.zeros(1, *shape),)

    flops = ModuleFlops({"lin": nn.Linear(4, 2)}, dummy)
    assert flops("lin", (3, 4)) == flops("lin", (3, 4)) == 2 * 3 * 4 * 2
    assert calls == [("lin", (3, 4))]
    with pytest.raises(KeyError):
        flops("nope", (3, 4))


def test_fallback_to_real_tensors_when_meta_fails():
    class BuildsCpuTensor(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x):
            bias = torch.arange(4.0)  # a CPU tensor: cannot be mixed with meta
            return self.lin(x + bias) + x.sum().item()

    assert module_flops(BuildsCpuTensor(), (3, 4)) == 2 * 3 * 4 * 4


def test_default_input_dtype_falls_back_to_the_other():
    class NormFirst(nn.Module):  # first registered leaf is a LayerNorm, but forward starts with a lookup
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(8)
            self.emb = nn.Embedding(30, 8)

        def forward(self, ids):
            return self.norm(self.emb(ids))

    assert default_dummy_input(NormFirst(), (6,))[0].dtype == torch.float32
    assert module_flops(NormFirst(), (6,)) == 2 * (2 * 6 * 8)


def test_module_failing_at_shape_raises_one_clear_error():
    with pytest.raises(FlopCountError, match="shape"):
        module_flops(nn.Linear(4, 2), (3, 5))


# ---------------------------------------------------------------------------------------------------
# parameters


def test_params_tied_once_buffers_excluded():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.out = nn.Linear(4, 10, bias=False)
            self.out.weight = self.emb.weight  # tied
            self.norm = nn.BatchNorm1d(4)  # running stats are buffers
            self.register_buffer("position_ids", torch.arange(10))

    assert count_params(Tied()) == 40 + 8


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_params_shared_tensor_once_across_parameter_objects(device):
    # distinct nn.Parameter objects over one tensor are one shared tensor (spec §3): an ALBERT-style
    # layer re-wrapped per use, a decoder tied to the transposed encoder; they used to count once each
    with torch.device(device):
        shared = nn.Linear(4, 4)
        reuse = nn.Linear(4, 4)
        decoder = nn.Linear(4, 4, bias=False)
        half = nn.Linear(4, 2, bias=False)
    reuse.weight = nn.Parameter(shared.weight)  # same tensor, own bias
    decoder.weight = nn.Parameter(shared.weight.t())
    assert count_params(nn.ModuleList([shared, reuse, decoder])) == 16 + 4 + 4
    half.weight = nn.Parameter(shared.weight[:, ::2].t())  # a strided slice of it: nothing new
    assert count_params(nn.ModuleList([shared, half])) == 16 + 4
    assert count_params(half) == 8  # alone, a slice counts its own elements
    with torch.device(device):  # distinct tensors of equal shapes stay distinct (meta pointers are all 0)
        assert count_params(nn.Linear(4, 4), nn.Linear(4, 4)) == 2 * 20


# ---------------------------------------------------------------------------------------------------
# the symbolic shortcut must give exactly the concrete counts, and only where it is valid


def _all_shapes(mods, calls, **kw):
    fast, slow = ModuleFlops(mods, **kw), ModuleFlops(mods, symbolic_after=None)
    return fast, {c: fast(*c) for c in calls}, {c: slow(*c) for c in calls}


def test_symbolic_formula_equals_concrete_counts():
    mods = {
        "layer": _hf_layer("bert", "eager", **SMALL),
        "emb": __import__("transformers").models.bert.modeling_bert.BertEmbeddings(
            __import__("transformers").BertConfig(hidden_size=48, vocab_size=50, max_position_embeddings=40)
        ),
    }
    calls = [("layer", (n, 48)) for n in range(1, 41)] + [("emb", (n,)) for n in range(1, 41)]
    fast, got, want = _all_shapes(mods, calls, symbolic_after=3)
    assert got == want
    assert fast.stats["formula"] > 50  # the shortcut was actually taken
    assert want[("layer", (17, 48))] == 2 * bert_layer_macs(17, 48, 3, 96)
    # beyond the 40 positions the embedding cannot run: the formula's guard (n <= 40) must not cover it
    with pytest.raises(FlopCountError):
        fast("emb", (41,))


class Piecewise(nn.Module):
    """Costs change with the length in ways a single polynomial cannot follow."""

    def __init__(self):
        super().__init__()
        self.small, self.big = nn.Linear(8, 8), nn.Linear(8, 64)

    def forward(self, x):
        n = x.shape[1]
        if n > 12:  # a branch on the size: recorded as a guard
            x = self.big(x)[..., :8]
        if int(n) % 3 == 0:  # int(): specialises the run to its own length
            x = self.small(x)
        return x


def test_symbolic_respects_guards():
    mods = {"p": Piecewise()}
    calls = [("p", (n, 8)) for n in range(1, 40)]
    _, got, want = _all_shapes(mods, calls, symbolic_after=2)
    assert got == want
    assert want[("p", (13, 8))] == 2 * (13 * 8 * 64)
    assert want[("p", (15, 8))] == 2 * (15 * 8 * 64 + 15 * 64)


class ParityBranch(nn.Module):
    """An even length takes the 8 -> 64 product, an odd one the 8 -> 8 product: the symbolic run records a
    guard on n % 2, which no range of n can express."""

    def __init__(self):
        super().__init__()
        self.small, self.big = nn.Linear(8, 8), nn.Linear(8, 64)

    def forward(self, x):
        return self.big(x) if x.shape[1] % 2 == 0 else self.small(x)


def test_symbolic_formula_is_used_only_where_its_guards_hold():
    # the first four lengths are even, so the formula is made (and checked) on even lengths only: the odd
    # ones must fail its guard and be counted concretely
    mods = {"p": ParityBranch()}
    calls = [("p", (n, 8)) for n in (2, 4, 6, 8)] + [("p", (n, 8)) for n in range(1, 30)]
    fast, got, want = _all_shapes(mods, calls, symbolic_after=4)
    assert fast.stats["formula"] > 5  # formulas were used (one made at an even length, one at an odd)
    assert want[("p", (7, 8))] == 2 * (7 * 8 * 8) and want[("p", (10, 8))] == 2 * (10 * 8 * 64)
    assert got == want


class SingleTokenShortcut(nn.Module):
    """One token skips the product of the activations. The symbolic run assumes every size is at least 2
    (torch specialises 0 and 1), so `n == 1` is decided without a guard: only the size range excludes 1."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        y = self.lin(x)
        if x.shape[1] == 1:
            return y
        return y @ y.transpose(1, 2)


def test_symbolic_formula_is_not_used_outside_its_size_range():
    mods = {"s": SingleTokenShortcut()}
    calls = [("s", (n, 8)) for n in range(2, 12)] + [("s", (1, 8))]
    fast, got, want = _all_shapes(mods, calls, symbolic_after=4)
    assert fast.stats["formula"] > 3  # the formula was used for 6..11
    assert want[("s", (1, 8))] == 2 * (1 * 8 * 8)
    assert want[("s", (5, 8))] == 2 * (5 * 8 * 8 + 5 * 8 * 5)
    assert got == want


class KnowsItIsTraced(nn.Module):
    """Takes another path when its length is no plain int (as code that checks for tracing or compiling
    does): the symbolic run's formula (two products) is wrong at every real length (one product)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        if not isinstance(x.shape[1], int):
            x = self.lin(x)
        return self.lin(x)


def test_symbolic_formula_that_disagrees_with_the_concrete_counts_is_refused():
    mods = {"k": KnowsItIsTraced()}
    calls = [("k", (n, 8)) for n in range(2, 30)]
    fast, got, want = _all_shapes(mods, calls, symbolic_after=4)
    assert want[("k", (9, 8))] == 2 * (9 * 8 * 8)
    assert got == want
    assert fast.stats["symbolic_runs"] >= 1 and fast.stats["symbolic_failed"] == fast.stats["symbolic_runs"]
    assert fast.stats["formula"] == 0


class Repeat(nn.Module):
    """Same structure for every k; an integer attribute changes the cost."""

    def __init__(self, k):
        super().__init__()
        self.k = k
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        for _ in range(self.k):
            x = self.lin(x)
        return x


def test_formula_shared_only_between_modules_that_agree():
    layers = {f"layer_{i}": _hf_layer("bert", "sdpa", **SMALL) for i in (1, 2, 3)}
    for i, layer in enumerate(layers.values()):
        layer.attention.self.layer_idx = i  # differs, as in a real encoder
    mods = {**layers, "rep_1": Repeat(1), "rep_2": Repeat(2)}
    calls = [(name, (n, 48)) for name in layers for n in range(2, 20)]
    calls += [(name, (n, 8)) for name in ("rep_1", "rep_2") for n in range(2, 20)]
    fast, got, want = _all_shapes(mods, calls, symbolic_after=3)
    assert got == want
    assert fast.stats["shared"] >= 2  # layer_2 and layer_3 reuse layer_1's formula
    assert want[("rep_2", (5, 8))] == 2 * want[("rep_1", (5, 8))]


class Threshold(nn.Module):
    """Takes a second Linear above `k` tokens: same signature for every k (integer attributes may differ)."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.lin = nn.Linear(8, 8)

    def forward(self, x):
        if x.shape[1] > self.k:
            x = self.lin(x)
        return self.lin(x)


def test_a_formula_guarded_on_the_size_is_not_shared():
    """`a`'s formula holds for n <= 100 (its guard), `b` takes its second Linear above 10 tokens: `b`'s first
    shapes (2-5) agree with `a`'s formula, so it was shared and `b` at n = 11 cost 1,408 FLOPs, not 2,816
    (by hand: n = 11 tokens x 2 Linear(8, 8) x 64 MACs x 2 FLOPs)."""
    mods = {"a": Threshold(100), "b": Threshold(10)}
    calls = [(m, (n, 8)) for m in "ab" for n in range(2, 30)]
    fast, got, want = _all_shapes(mods, calls, symbolic_after=4)
    assert want[("b", (11, 8))] == 11 * 2 * 64 * 2 and want[("b", (10, 8))] == 10 * 64 * 2
    assert got == want
    assert fast.stats["shared"] == 0 and fast.stats["symbolic_runs"] >= 2


def test_expect_counts_the_shapes_of_modules_that_can_share_a_formula():
    """An encoder's layers each have a few dozen lengths (too few for a symbolic run alone), several hundred
    together: one symbolic run, the others share its formula; a module unlike the rest stays concrete."""
    layers = {f"layer_{i}": _hf_layer("bert", "sdpa", **SMALL) for i in (1, 2, 3, 4)}
    mods = {**layers, "rep": Repeat(2)}
    calls = [(name, (n, 48)) for name in layers for n in range(2, 22)]  # 20 shapes each, 80 in all
    calls += [("rep", (n, 8)) for n in range(2, 22)]
    slow = ModuleFlops(mods, symbolic_after=None)
    fast = ModuleFlops(mods, symbolic_after=4)
    fast.expect(calls, min_remaining=64)
    assert [fast(*c) for c in calls] == [slow(*c) for c in calls]
    assert fast.stats["symbolic_runs"] == 1 and fast.stats["shared"] == 3
    assert fast.stats["concrete"] == 4 * 4 + 20  # 4 shapes per layer before the formula; rep: every shape
    # alone, 20 shapes per layer are not worth a symbolic run
    alone = ModuleFlops({"layer_1": layers["layer_1"]}, symbolic_after=4)
    alone.expect([c for c in calls if c[0] == "layer_1"], min_remaining=64)
    for c in calls[:20]:
        alone(*c)
    assert alone.stats["symbolic_runs"] == 0 and alone.stats["concrete"] == 20


def test_forward_caches_do_not_leak_meta_tensors():
    class Caching(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.cache = None

        def forward(self, x):
            if self.cache is None or self.cache.shape != x.shape:
                self.cache = torch.ones_like(x)  # a meta / fake tensor during counting
            return self.lin(x * self.cache)

    m = Caching()
    flops = ModuleFlops({"c": m}, symbolic_after=2)
    assert [flops("c", (n, 4)) for n in range(1, 8)] == [2 * n * 16 for n in range(1, 8)]
    assert m.cache is None
    assert m(torch.ones(1, 3, 4)).shape == (1, 3, 4)  # still usable for real


def test_symbolic_with_a_single_tensor_dummy_input():
    layers = {f"layer_{i}": _hf_layer("bert", "sdpa", **SMALL) for i in (1, 2)}

    def dummy(name, shape):
        return (torch.zeros((1, *shape), dtype=torch.float32),)

    fast = ModuleFlops(layers, dummy, symbolic_after=3)
    slow = ModuleFlops(layers, dummy, symbolic_after=None)
    calls = [(name, (n, 48)) for name in layers for n in range(2, 16)]
    assert [fast(*c) for c in calls] == [slow(*c) for c in calls]
    assert fast.stats["formula"] > 10


def test_module_built_on_meta_device():
    """A model.py may build its modules under `torch.device("meta")` (instant, no weights)."""
    from transformers import BertConfig
    from transformers.models.bert.modeling_bert import BertEmbeddings

    with torch.device("meta"):
        mods = {
            "layer": _hf_layer("bert", "sdpa", **SMALL),
            "emb": BertEmbeddings(BertConfig(hidden_size=48)),
        }
    flops = ModuleFlops(mods, symbolic_after=2)
    for n in range(1, 12):
        assert flops("layer", (n, 48)) == 2 * bert_layer_macs(n, 48, 3, 96)
        assert flops("emb", (n,)) == 2 * 2 * 48 * n
    assert flops.stats["formula"] > 10 and flops.stats["symbolic_failed"] == 0
    assert count_params(mods["layer"]) > 0


# ---------------------------------------------------------------------------------------------------
# cross-attention, products of derived weights, bilinear and recurrent products, norms written out


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
    expected = h * h * n + 2 * h * h * s + h * h * n + attn_macs(n, h, heads, s)
    for need_weights in (True, False):
        module = _CrossAttention(h, heads, need_weights).eval()
        assert both(module, torch.zeros(1, n, h), torch.zeros(1, s, h)) == expected


def test_same_tensor_given_twice_stays_one_tensor_on_meta():
    # a dummy_input passing one tensor as query, key and value: MultiheadAttention takes its self-attention
    # path when they are the same object; on meta they were three copies (the cross-attention path)
    h, heads, n = 32, 4, 6
    mha = nn.MultiheadAttention(h, heads, batch_first=True)
    x = torch.zeros(1, n, h)
    assert module_flops(mha, (n, h), lambda s: (x, x, x)) == 2 * (4 * h * h * n + attn_macs(n, h, heads))


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
    assert both(_DerivedWeights(), torch.zeros(1, n, 8)) == 6 * n * 8 * 8


def test_bilinear_is_a_product():
    # nn.Bilinear runs aten._trilinear, which was priced 0; its product is in1 x in2 per output element
    n, a, b, out = 5, 6, 7, 3
    m = nn.Bilinear(a, b, out)
    assert both(m, torch.zeros(1, n, a), torch.zeros(1, n, b)) == n * out * a * b


def test_lstm_costs_the_same_on_cpu_as_on_meta():
    # a module that cannot run on meta is priced on CPU zeros, where nn.LSTM is one mkldnn kernel: it cost 0
    lstm = nn.LSTM(16, 32, num_layers=2, bidirectional=True, batch_first=True)
    n = 10
    expected = 2 * n * 4 * 32 * (16 + 32) + 2 * n * 4 * 32 * (64 + 32)
    assert both(lstm, torch.zeros(1, n, 16)) == expected


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
    assert both(_HandNorms(h), torch.zeros(1, n, h)) == 2 * (2 * n * h)
    assert both(nn.RMSNorm(h), torch.zeros(1, n, h)) == 2 * n * h


def test_llama_layer_matches_the_formula_with_grouped_query_attention():
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    n, h, heads, kv_heads, ffn = 7, 64, 8, 2, 128
    d = h // heads
    expected = (
        2 * n * h * h  # q and o projections
        + 2 * n * h * kv_heads * d  # k and v projections
        + 3 * n * h * ffn  # gate, up, down
        + attn_macs(n, h, heads)
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
    assert both(_StatNorms(), torch.zeros(1, n, h)) == 3 * (2 * n * h)


@pytest.mark.parametrize(("cls", "gates"), [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_layers_price_their_products(cls, gates):
    # docs/costs.md: per token and direction gates × h·(i + h); gate activations and bias adds free
    with torch.device("meta"):
        rnn = cls(300, 256, batch_first=True, bidirectional=True)
    assert count_macs(rnn, (torch.zeros(1, 10, 300),), meta=True) == 2 * 10 * gates * 256 * (300 + 256)


class _PadToEight(nn.Module):
    """Pads the sequence to a multiple of 8: F.pad with a symbolic size fails on fake tensors."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x):
        n = x.shape[1]
        return self.lin(F.pad(x, (0, 0, 0, (n + 7) // 8 * 8 - n)))


def test_a_failed_symbolic_run_prints_nothing():
    """The symbolic run of a module torch cannot run on fake tensors falls back to concrete counts, but torch
    logged the failed op with a 15-line traceback on stderr first ('failed while attempting to run meta for
    aten.constant_pad_nd'), as if pricing had failed."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    logger.addHandler(handler)
    try:
        counter = ModuleFlops({"pad": _PadToEight()}, symbolic_after=2)
        got = [counter("pad", (n, 4)) for n in range(1, 10)]
    finally:
        logger.removeHandler(handler)
    assert got == [2 * ((n + 7) // 8 * 8) * 16 for n in range(1, 10)]
    assert counter.stats["symbolic_failed"] >= 1  # it was tried, and fell back
    assert [r.getMessage() for r in records] == []
    assert not logger.disabled  # and the logger is left as it was
