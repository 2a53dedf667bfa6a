"""`elue pretrain` with `distributed: fsdp` on CPU processes (run by test_pretrain_fsdp.py under
`torchrun --nproc_per_node 2`, gloo).

Accelerate only turns FSDP on for accelerators: on the CPU it runs multi-process jobs as DDP. Here its state is
told FSDP (the distributed type, the FSDP2 plugin the trainer asked for) after the trainer made its Accelerator,
so that everything after it is Accelerate's and the trainer's own FSDP path: the trainer's sharding (fsdp.py),
Accelerate's FSDP2 `prepare`, sharded `save_state` / `load_state`, the full-weights model export. It prints how
many of the model's parameters were sharded.
"""

from __future__ import annotations

import sys

import torch
from accelerate import FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType

import elue.elasticbert.pretraining.fsdp as fsdp
import elue.elasticbert.pretraining.trainer as trainer
from elue.cli.pretrain_commands import app_for_module

make_accelerator = trainer.make_accelerator
fully_shard_with_plugin = fsdp.fully_shard_with_plugin


def _fsdp_accelerator(cfg, grouped: bool):  # noqa: ANN001, ANN202
    accelerator = make_accelerator(cfg, grouped)
    assert cfg.distributed == "fsdp"
    state = accelerator.state
    PartialState._shared_state["distributed_type"] = state.distributed_type = DistributedType.FSDP
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="no_wrap", reshard_after_forward=True
    )
    if state.mixed_precision != "no":  # what Accelerate does on accelerators: FSDP's mixed precision policy
        plugin.set_mixed_precision(state.mixed_precision)
    state.fsdp_plugin = plugin
    return accelerator


def _counted(model, plugin):  # noqa: ANN001, ANN202
    fully_shard_with_plugin(model, plugin)
    params = list(model.parameters())
    sharded = sum(isinstance(p, torch.distributed.tensor.DTensor) for p in params)
    print(f"sharded {sharded} of {len(params)} parameters", flush=True)
    return model


trainer.make_accelerator = _fsdp_accelerator
fsdp.fully_shard_with_plugin = _counted

if __name__ == "__main__":
    sys.exit(app_for_module()())
