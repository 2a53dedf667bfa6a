"""The pre-training model under FSDP2 (fully_shard per layer + root, 2 CPU processes, gloo) trains exactly like
one unsharded process: same losses, same weights, and a grouped step leaves the other group's heads alone."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from subprocesses import run_torchrun, torchrun

from .fsdp_steps import GROUPS, tiny_model, train


@pytest.mark.skipif(torchrun() is None, reason="no torchrun")
def test_fsdp2_two_processes_match_one(tmp_path):
    out = tmp_path / "fsdp.pt"
    worker = Path(__file__).with_name("fsdp_steps.py")
    proc = run_torchrun([str(worker), str(out)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = torch.load(out, weights_only=False)
    assert got["world"] == 2 and got["sharded"] == len(list(tiny_model().parameters()))  # every one sharded

    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    losses = train(model)
    assert got["losses"] == pytest.approx(losses, rel=1e-5)
    after = model.state_dict()
    for k, v in after.items():
        assert torch.allclose(got["state"][k], v, atol=1e-5), k
    # the exit outside every group keeps its heads bit for bit (no zero gradient, no weight decay); the others moved
    idle = [layer for layer in range(4) if all(layer not in g for g in GROUPS)]
    assert idle == [1]
    for layer in range(4):
        for name in model.head_parameters(layer):
            assert torch.equal(before[name], got["state"][name]) == (layer in idle), name
