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
    return fully_shard_model(
        model,
        reshard_after_forward=plugin.reshard_after_forward,
        mp_policy=mixed_precision_policy(plugin),
        offload_policy=plugin.cpu_offload,
    )


def mixed_precision_policy(plugin: Any):  # noqa: ANN401, ANN201 (Accelerate's plugin; FSDP's policy)
    """The plugin's mixed precision policy (bf16 parameters in the forward and backward under bf16), with the
    gradients reduced in fp32 and the model's outputs left as it made them. Accelerate's bf16 policy also reduces
    the gradients in bf16 and casts the outputs to bf16: the outputs are the per-exit loss sums, computed in fp32,
    and a batch's summed MLM loss came out 0.35 % off (8546.26 as 8576), in the logged and evaluated losses and in
    the gradient's scale; DDP under autocast keeps both in fp32."""
    import dataclasses

    import torch
    from torch.distributed.fsdp import MixedPrecisionPolicy

    policy = plugin.mixed_precision_policy or MixedPrecisionPolicy()
    return dataclasses.replace(policy, reduce_dtype=torch.float32, output_dtype=None)
