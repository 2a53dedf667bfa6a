"""Two grouped pre-training steps of a tiny ElasticBERT, with or without FSDP2 sharding (run by
test_pretrain_fsdp.py: in-process for the reference, under `torchrun --nproc_per_node 2` with gloo for FSDP).

The sharding is what Accelerate's FSDP2 plugin does for `distributed: fsdp` on GPUs (each `ElasticBertLayer`,
then the root, reshard after forward); the loss scaling and the dropping of idle heads' gradients are the
trainer's. Accelerate itself only uses FSDP on accelerators, so this is how the model's side of it is tested
on the CPU.
"""

from __future__ import annotations

import sys

import torch

from elue.elasticbert.configuration_elasticbert import ElasticBertConfig
from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForPreTraining

GROUPS = [[0, 3], [2, 3]]  # 0-based; step t trains group t % 2; exit 1 (0-based) is never trained
BATCH, SEQ = 8, 16


def tiny_model() -> ElasticBertForPreTraining:
    torch.manual_seed(0)
    cfg = ElasticBertConfig(
        vocab_size=200, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        num_output_layers=4, max_output_layers=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return ElasticBertForPreTraining(cfg)


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 200, (BATCH, SEQ), generator=g)
    labels = torch.where(torch.rand(BATCH, SEQ, generator=g) < 0.3, ids, -100)
    return {"input_ids": ids, "labels": labels, "sop_labels": torch.randint(0, 2, (BATCH,), generator=g)}


def train(model, rank: int = 0, world: int = 1, steps: int = 2) -> list[float]:
    """`steps` SGD steps on this rank's share of `batch()`; the loss is scaled as the trainer does it (sums over
    global counts x world, which the gradient average divides out). Returns the global loss of each step."""
    full = batch()
    share = BATCH // world
    mine = {k: v[rank * share : (rank + 1) * share] for k, v in full.items()}
    n_mask = int((full["labels"] != -100).sum())
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=0.01)  # SGD: a wrong gradient scale shows
    losses = []
    for step in range(steps):
        layers = GROUPS[step % len(GROUPS)]
        out = model(**mine, exit_layers=layers)
        loss = (out.mlm_loss_sums.sum() / n_mask + out.sop_loss_sums.sum() / BATCH) * world
        loss.backward()
        for layer in range(4):
            if layer not in layers:
                for p in model.head_parameters(layer).values():
                    p.grad = None  # the trainer's rule: idle heads get no update
        opt.step()
        opt.zero_grad(set_to_none=True)
        total = loss.detach() / world
        if world > 1:
            torch.distributed.all_reduce(total)
        losses.append(float(total))
    return losses


def main(out_path: str) -> None:
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = tiny_model()
    mesh = init_device_mesh("cpu", (world,))
    for layer in model.elasticbert.encoder.layer:
        fully_shard(layer, mesh=mesh, reshard_after_forward=True)
    fully_shard(model, mesh=mesh, reshard_after_forward=True)
    sharded = sum(isinstance(p, torch.distributed.tensor.DTensor) for p in model.parameters())
    losses = train(model, rank, world)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if rank == 0:
        torch.save({"losses": losses, "state": state, "sharded": sharded, "world": world}, out_path)
    # leave together: a rank that tears gloo down while the other still gathers aborts ("terminate called
    # without an active exception")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
