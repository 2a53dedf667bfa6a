"""The trainer under FSDP2 through Accelerate (`distributed: fsdp`), 2 CPU processes (gloo; Accelerate told FSDP,
see fsdp_on_cpu.py): every parameter sharded, the same losses and weights as one unsharded process, and a run
stopped at its checkpoint and resumed from Accelerate's sharded state ends like the uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from subprocesses import run_torchrun, torchrun

from elue.elasticbert.pretraining.config import PretrainConfig
from elue.elasticbert.pretraining.trainer import pretrain

from .test_pretrain_trainer import NO_DROPOUT, _close, _log

LAUNCHER = Path(__file__).with_name("fsdp_on_cpu.py")


def _fsdp(settings: dict, cfg_file: Path) -> str:
    cfg_file.write_text(json.dumps(settings))
    proc = run_torchrun([str(LAUNCHER), "--config", str(cfg_file)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _model(out_dir, step: int) -> dict[str, torch.Tensor]:
    return load_file(Path(out_dir) / "checkpoints" / f"step-{step:07d}" / "model" / "model.safetensors")


@pytest.mark.skipif(torchrun() is None, reason="no torchrun")
def test_fsdp_two_processes_match_one_and_resume_from_the_sharded_state(tiny_settings, tmp_path):
    base = tiny_settings(
        max_steps=4, save_steps=2, num_data_shards=2, exit_groups=[[1, 4], [3, 4]],  # exit 2 is never trained
        model_config={**tiny_settings()["model_config"], **NO_DROPOUT},
    )  # fmt: skip
    one = dict(base, per_device_batch_size=8, output_dir=str(tmp_path / "one"))
    two = dict(base, per_device_batch_size=4, output_dir=str(tmp_path / "two"), distributed="fsdp")
    pretrain(PretrainConfig.from_dict(one))

    out = _fsdp(dict(two, stop_after_steps=2), tmp_path / "two.json")
    assert "pre-training: 2 processes (FSDP), " in out
    n = len(list(_model(one["output_dir"], 4)))
    assert f"sharded {n} of {n} parameters" in out
    state = Path(two["output_dir"]) / "checkpoints" / "step-0000002" / "state"
    assert (state / "pytorch_model_fsdp_0").is_dir() and (
        state / "optimizer_0"
    ).is_dir()  # Accelerate's shards
    out = _fsdp(two, tmp_path / "two.json")
    assert "resumed from" in out and "step-0000002 at step 2" in out

    rows_one, rows_two = _log(one["output_dir"]), _log(two["output_dir"])
    # the gradient norm differs in the 5th digit (2e-5 relative here) though every gradient agrees to 1e-6: a float32
    # norm of the word-embedding gradient taken whole (one process) or per shard (FSDP) rounds differently, and the
    # shards' is the nearer to float64's. Compared on its own; the rest of the log as DDP's is
    norms = [[float(r.pop("grad_norm")) for r in rows] for rows in (rows_one, rows_two)]
    assert norms[1] == pytest.approx(norms[0], rel=1e-4)
    _close(rows_one, rows_two, 1e-4)
    a, b = _model(one["output_dir"], 4), _model(two["output_dir"], 4)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    idle = [
        k
        for k in a
        if k.startswith(("elasticbert.encoder.pooler.1.", "cls.predictions.1.", "cls.seq_relationship.1."))
    ]
    assert idle and all(torch.equal(a[k], b[k]) for k in idle)  # as initialised, bit for bit, in both


def test_bf16_under_fsdp_reduces_gradients_and_returns_the_loss_sums_in_fp32():
    from accelerate import FullyShardedDataParallelPlugin

    from elue.elasticbert.pretraining.fsdp import mixed_precision_policy

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="no_wrap")
    plugin.set_mixed_precision("bf16")  # what Accelerate does with mixed_precision bf16 on GPUs
    policy = mixed_precision_policy(plugin)
    assert (policy.param_dtype, policy.reduce_dtype, policy.output_dtype) == (
        torch.bfloat16,
        torch.float32,
        None,
    )
    assert mixed_precision_policy(FullyShardedDataParallelPlugin(fsdp_version=2)).param_dtype is None  # fp32
