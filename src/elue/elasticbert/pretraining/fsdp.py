"""FSDP2 units of ElasticBertForPreTraining (`distributed: fsdp`): each `ElasticBertLayer`, then the root.

The trainer shards the model itself, before Accelerate's `prepare`, which then leaves an already sharded model as it
is. Accelerate's own carving (1.1x) also gives the input embeddings a unit of their own, resharded after their
forward, unless `get_output_embeddings()` shares their weight; the MLM heads read the word-embedding matrix (the
tied decoder) in the root's forward, after the embeddings ran, and found it sharded there: "aten.mm.default got
mixed torch.Tensor and DTensor" at the first step (seen on an H200). In the root's unit the matrix is gathered for
the whole forward and backward.
"""

from __future__ import annotations

from typing import Any

from torch import nn


def fully_shard_model(model: nn.Module, **kwargs: Any) -> nn.Module:
    """`fully_shard` (FSDP2) each encoder layer, then the root (embeddings, poolers, heads), in place; `kwargs` go to
    every call (mesh, reshard_after_forward, mp_policy, offload_policy). Returns the model."""
    from torch.distributed.fsdp import fully_shard

    for layer in model.elasticbert.encoder.layer:
        fully_shard(layer, **kwargs)
    fully_shard(model, **kwargs)
    return model


def fully_shard_with_plugin(model: nn.Module, plugin: Any) -> nn.Module:  # noqa: ANN401 (Accelerate's plugin)
    """`fully_shard_model` with the settings of Accelerate's FSDP plugin (its mixed precision policy, CPU offload
    and resharding), on the default device mesh (every process)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return fully_shard_model(
        model,
        reshard_after_forward=plugin.reshard_after_forward,
        mp_policy=plugin.mixed_precision_policy or MixedPrecisionPolicy(),
        offload_policy=plugin.cpu_offload,
    )
