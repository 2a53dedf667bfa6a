"""The Triton MLM loss kernel (CUDA): its numbers under Triton's interpreter on the CPU, its compilation for
Hopper (sm_90) without a GPU, and how the model chooses its loss step."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from elue.elasticbert.pretraining import triton_cross_entropy
from elue.elasticbert.pretraining.linear_cross_entropy import softmax_cross_entropy_grad
from elue.elasticbert.pretraining.modeling_pretraining import xent_step

HERE = Path(__file__).resolve().parent
needs_triton = pytest.mark.skipif(triton_cross_entropy.triton is None, reason="triton is not installed")


@needs_triton
def test_kernel_matches_torch_under_the_interpreter():
    """Step against the torch step (fp32, bf16, one and several blocks a row, ties, padded vocabulary),
    LinearCrossEntropy against plain autograd, and the model's default step taking the kernel."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(HERE.parents[2] / "src")}
    proc = subprocess.run(
        [sys.executable, str(HERE / "triton_interpret_checks.py")], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "triton checks ok" in proc.stdout


@needs_triton
@pytest.mark.parametrize(
    ("block", "warps", "has_bias"), [(32768, 32, True), (4096, 8, True), (2048, 4, False)]
)
def test_kernel_compiles_for_hopper_without_spills(block, warps, has_bias):
    """The real compiler (not the interpreter) on the bf16 signature the model uses, to sm_90 machine code:
    catches what the interpreter lets through (types of loop-carried values, unsupported ops)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    sig = {
        "logits_ptr": "*bf16", "bias_ptr": "*fp32", "targets_ptr": "*i64", "grad_ptr": "*bf16",
        "loss_ptr": "*fp32", "hit_ptr": "*i32", "stride_logits": "i32", "stride_grad": "i32", "n_cols": "i32",
        "HAS_BIAS": "constexpr", "BLOCK": "constexpr",
    }  # fmt: skip
    kernel = triton_cross_entropy._softmax_xent_grad_kernel
    src = ASTSource(fn=kernel, signature=sig, constexprs={"HAS_BIAS": has_bias, "BLOCK": block})
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
    ptx = compiled.asm["ptx"]
    assert ".target sm_90" in ptx and "ld.global" in ptx
    assert ".local" not in ptx  # no register spills to local memory


def test_xent_step_choices(monkeypatch):
    with pytest.raises(ValueError, match="auto, triton, compiled, eager"):
        xent_step("fast")
    with pytest.raises(ValueError, match="compile_regions"):
        xent_step("compiled")
    assert xent_step("eager") is softmax_cross_entropy_grad
    fake_compiled = object()
    assert xent_step("compiled", compiled=fake_compiled) is fake_compiled
    # "auto" decides per call: torch where the kernel cannot run (a CPU tensor without the interpreter)
    monkeypatch.setattr(triton_cross_entropy, "available", lambda device: False)
    logits, bias, targets = torch.randn(3, 5), torch.zeros(5), torch.tensor([0, 1, 2])
    got = xent_step("auto")(logits.clone(), bias, targets)
    want = softmax_cross_entropy_grad(logits.clone(), bias, targets)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    monkeypatch.setattr(triton_cross_entropy, "available", lambda device: True)
    monkeypatch.setattr(triton_cross_entropy, "softmax_cross_entropy_grad_triton", lambda *a, **kw: "kernel")
    assert xent_step("auto")(logits, bias, targets) == "kernel"


def test_available_needs_cuda_or_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert not triton_cross_entropy.available("cpu")
    if triton_cross_entropy.triton is None:
        assert not triton_cross_entropy.available("cuda")
        with pytest.raises(RuntimeError, match="triton"):
            triton_cross_entropy.softmax_cross_entropy_grad_triton(
                torch.zeros(1, 2), torch.zeros(2), torch.zeros(1)
            )
    else:
        assert triton_cross_entropy.available("cuda")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert triton_cross_entropy.available("cpu")


def test_mlm_loss_engine_defaults(monkeypatch):
    """CPU: the plain formulation. CUDA: bias in the GEMM; logit gradients kept (and the bias gradients taken
    from the weight GEMM) only when they fit in 1/16 of the GPU's memory."""
    from types import SimpleNamespace

    from elue.elasticbert.pretraining.modeling_pretraining import mlm_loss_engine

    assert mlm_loss_engine(torch.device("cpu"), 12, 9830, 30528, torch.float32) == {}
    cuda = torch.device("cuda")
    gib = 2**30
    for total, keep in ((141 * gib, True), (80 * gib, False)):  # 12 x 9,830 x 30,528 bf16 = 7.2 GB
        props = SimpleNamespace(total_memory=total)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device, props=props: props)
        got = mlm_loss_engine(cuda, 12, 9830, 30528, torch.bfloat16)
        assert got == {
            "bias_in_gemm": True,
            "keep_logit_grads": True if keep else None,
            "bias_grad_in_gemm": keep,
        }
