"""Pre-training throughput of ElasticBERT: tokens/s and model FLOPs utilisation (MFU).

    python bench/bench_pretrain.py                        # cuda + bf16 when there is a GPU, else CPU fp32
    python bench/bench_pretrain.py --seq 128 512 --batch 64 16 --steps 20
    python bench/bench_pretrain.py --device cpu --batch 4 1 --steps 2 --warmup 1   # this laptop-sized machine
    python bench/bench_pretrain.py --models elasticbert bert                      # + HF BertForPreTraining

For each sequence length, a base-sized model (12 layers, hidden 768, 12 heads, FFN 3072, vocab 30,522) is
trained on random token ids with 15 % of positions to predict and random SOP labels (the data pipeline is
not timed), with:
    all      every exit on every step (12 MLM + 12 SOP heads)
    grouped  the default exit groups {1,3,5,7,9,11,12} / {2,4,6,8,10,12}, alternating
    bert     (with --models bert) HF BertForPreTraining, one MLM + NSP head, for reference
A timed step is forward + backward + AdamW (fused on GPU) + zero_grad, synchronised.

Model FLOPs of a step = FLOPs of forward + backward counted by torch.utils.flop_counter.FlopCounterMode
(matmuls and attention, 2 per multiply-accumulate; the optimiser is not counted). MFU = FLOPs per step /
seconds per step / peak; the peak is 989 TFLOP/s (dense bf16 of an H100/H200 SXM) on a GPU, and on a CPU
only what --peak-tflops says (none by default: the achieved TFLOP/s are printed instead).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

GPU_PEAK_TFLOPS = 989.0
BASE = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    max_position_embeddings=512,
)  # fmt: skip


def make_model(
    kind: str,
    device,
    layers: int,
    bf16_residual: bool = False,
    attention_dropout: float = 0.1,
    hidden_dropout: float = 0.1,
):
    if kind == "bert":
        from transformers import BertConfig, BertForPreTraining

        cfg = BertConfig(**{**BASE, "num_hidden_layers": layers})
        return BertForPreTraining(cfg).to(device)
    from elue.elasticbert.pretraining.modeling_pretraining import load_pretraining_model

    sizes = {**BASE, "num_hidden_layers": layers, "residual_in_fp32": not bf16_residual}
    sizes["attention_probs_dropout_prob"] = attention_dropout
    sizes["hidden_dropout_prob"] = hidden_dropout
    return load_pretraining_model(None, sizes)[0].to(device)


def sdpa_backends(name: str):
    """A context that restricts SDPA to one backend (`auto`: torch's own choice)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([getattr(SDPBackend, SDPA_BACKENDS[name])])


SDPA_BACKENDS = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def make_batch(batch: int, seq: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A (batch, seq) pre-training batch on the CPU: random ids, 15 % to predict, two segments, no padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 30000, (batch, seq), generator=g)
    ids[:, 0], ids[:, -1] = 101, 102
    pick = torch.rand(batch, seq, generator=g) < 0.15
    pick[:, 0] = pick[:, -1] = False
    labels = torch.where(pick, ids, torch.full_like(ids, -100))
    masked = torch.where(pick, torch.full_like(ids, 103), ids)
    tt = torch.zeros_like(ids)
    tt[:, seq // 2 :] = 1
    return {
        "input_ids": masked,
        "token_type_ids": tt,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "sop": torch.randint(0, 2, (batch,), generator=g),
    }


def to_device(kind: str, batch: dict, device) -> dict:
    """BERT gets the batch as it is; ElasticBERT as its trainer passes it (`batch_to_device`: no all-ones
    attention mask) plus the positions to predict as its collator finds them (`mlm_positions`)."""
    if kind == "bert":
        return {k: v.to(device) for k, v in batch.items()}
    from elue.elasticbert.pretraining.modeling_pretraining import find_mlm_positions
    from elue.elasticbert.pretraining.trainer import batch_to_device

    return batch_to_device({**batch, "mlm_positions": find_mlm_positions(batch["labels"])}, device)


def step_fn(model, kind: str, groups):
    def run(batch, step: int):
        if kind == "bert":
            out = model(
                input_ids=batch["input_ids"],
                token_type_ids=batch["token_type_ids"],
                attention_mask=batch["attention_mask"],
                labels=batch["labels"],
                next_sentence_label=batch["sop"],
            )
            return out.loss
        layers = groups[step % len(groups)] if groups else None
        inputs = {k: v for k, v in batch.items() if k != "sop"}
        return model(**inputs, sop_labels=batch["sop"], exit_layers=layers).loss

    return run


def count_flops(run, batch, steps_per_cycle: int, autocast) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    total = 0
    for s in range(steps_per_cycle):  # grouped: average over one cycle of groups
        with FlopCounterMode(display=False) as fc, autocast():
            loss = run(batch, s)
        with FlopCounterMode(display=False) as fc_b:
            loss.backward()
        total += fc.get_total_flops() + fc_b.get_total_flops()
    return total / steps_per_cycle


# Kernel name -> kind of work, first match wins (cuBLAS/CUTLASS GEMMs, cuDNN/flash attention, inductor's
# generated Triton kernels, the rest: eager element-wise, reductions, copies, the optimiser).
KERNEL_KINDS = (
    ("mlm loss (triton kernel)", ("xent",)),
    ("attention", ("attention", "flash", "fmha", "cudnn", "sdpa")),
    ("gemm", ("gemm", "cutlass", "cublas", "nvjet", "sm90_xmma", "sm80_xmma", "wgmma")),
    ("triton (compiled fusions)", ("triton",)),
    ("optimizer", ("adam", "multi_tensor")),
)


def gpu_kernels(prof, steps: int):
    """(kind, ms per step, event) of each GPU kernel of a torch.profiler run of `steps` steps."""
    for evt in prof.key_averages():
        if str(getattr(evt, "device_type", "")).split(".")[-1] != "CUDA":
            continue  # CPU-side ops; their kernels are listed on their own
        us = getattr(evt, "self_device_time_total", None) or getattr(evt, "self_cuda_time_total", 0)
        name = evt.key.lower()
        kind = next((k for k, words in KERNEL_KINDS if any(w in name for w in words)), "other")
        yield kind, us / 1000 / steps, evt


def kernel_times(prof, steps: int) -> dict[str, float]:
    """GPU milliseconds per step by kind of kernel, from a torch.profiler run of `steps` steps."""
    totals: dict[str, float] = {}
    for kind, ms, _ in gpu_kernels(prof, steps):
        totals[kind] = totals.get(kind, 0.0) + ms
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))


def top_kernels(prof, steps: int, kind: str = "other", n: int = 12) -> str:
    """The `n` kernels of kind `kind` with the most GPU time, ms per step: where the unexplained time goes."""
    rows = [(ms, evt.count // steps, evt.key[:110]) for k, ms, evt in gpu_kernels(prof, steps) if k == kind]
    rows.sort(reverse=True)
    return "\n".join(f"  {ms:7.2f} ms  x{count:<4d} {name}" for ms, count, name in rows[:n])


def kernel_table(totals: dict[str, float], step_ms: float) -> str:
    """`kernel_times` as a Markdown table; the gap to the measured step is time the GPU had nothing to run."""
    all_ms = sum(totals.values()) or 1.0
    lines = ["| kernels | ms/step | share |", "|---|---|---|"]
    lines += [f"| {kind} | {ms:.2f} | {100 * ms / all_ms:.1f} % |" for kind, ms in totals.items()]
    lines.append(f"| all kernels | {all_ms:.2f} | |")
    lines.append(f"| measured step (idle: {max(step_ms - all_ms, 0):.2f}) | {step_ms:.2f} | |")
    return "\n".join(lines)


def bench_one(kind: str, mode: str, seq: int, batch: int, args, device):
    cudnn_sdp = torch.backends.cuda.cudnn_sdp_enabled()
    if args.no_cudnn_sdpa:  # a global switch: the compiled graphs choose their SDPA backend when traced
        torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        # around compilation too: the backend is chosen when the graph is traced
        with sdpa_backends(args.sdpa):
            return _bench_one(kind, mode, seq, batch, args, device)
    finally:
        torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)


def _bench_one(kind: str, mode: str, seq: int, batch: int, args, device):
    from elue.elasticbert.pretraining.modeling_pretraining import resolve_dropout_masks

    torch.manual_seed(0)
    model = make_model(
        kind, device, args.layers, args.bf16_residual, args.attention_dropout, args.hidden_dropout
    )
    model.train()
    if args.compile:
        from elue.elasticbert.pretraining.modeling_pretraining import compile_regions, raise_recompile_limit

        if kind == "bert":  # the same regional compilation for the reference: each encoder layer
            raise_recompile_limit()
            for layer in model.bert.encoder.layer:
                layer.compile(mode=args.compile_mode)
        else:
            compile_regions(
                model,
                mode=args.compile_mode,
                embeddings=not args.eager_embeddings,
                xent=args.xent,
                dropout_masks=args.dropout_masks,
            )
    elif kind == "elasticbert":
        from elue.elasticbert.pretraining.modeling_pretraining import xent_step

        model._xent_step = xent_step(args.xent)
    if kind == "elasticbert":
        model.gather_exit_rows = not args.dense_exits
    groups = None
    if mode == "grouped":
        from elue.elasticbert.pretraining.config import default_exit_groups

        groups = [[i - 1 for i in g] for g in default_exit_groups(args.layers)]
    run = step_fn(model, kind, groups)
    fused = device.type == "cuda"
    opt = (
        torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)
        if fused
        else torch.optim.AdamW(model.parameters(), lr=1e-4)
    )
    bf16 = device.type == "cuda" and not args.fp32

    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    data = to_device(kind, make_batch(batch, seq), device)
    # FLOPs counted eagerly: a first call under FlopCounterMode (a dispatch mode) makes dynamo skip the compiled
    # code for good, and compiled kernels would hide their FLOPs from the counter anyway
    with torch.compiler.set_stance("force_eager") if args.compile else contextlib.nullcontext():
        flops = count_flops(run, data, len(groups) if groups else 1, autocast)
    opt.zero_grad(set_to_none=True)
    if kind == "elasticbert":
        # engine options, set after the count (model FLOPs are those of the plain formula); none given: the
        # model's defaults by device (mlm_loss_engine)
        forced = {"bias_in_gemm": args.bias_in_gemm, "bias_grad_in_gemm": args.bias_grad_in_gemm}
        if args.keep_logit_grads:
            forced["keep_logit_grads"] = True
        model.mlm_loss_options = forced if args.plain_mlm_loss or any(forced.values()) else None

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def train_step(s, optimizer):
        with autocast():
            loss = run(data, s)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for s in range(args.warmup):
        train_step(s, opt)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for s in range(args.steps):
        train_step(s, opt)
    sync()
    dt = (time.perf_counter() - t0) / args.steps
    kernels = None
    if args.profile and device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for s in range(2):
                train_step(s, opt)
            sync()
        print(f"profile of 2 steps: {kind} {mode} seq {seq} batch {batch}, compiled {bool(args.compile)}")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=args.profile))
        kernels = kernel_times(prof, steps=2)
        print(kernel_table(kernels, 1000 * dt))
        print("top 'other' kernels (ms/step, calls/step):")
        print(top_kernels(prof, steps=2))
    tflops = flops / dt / 1e12
    peak = args.peak_tflops or (GPU_PEAK_TFLOPS if device.type == "cuda" else None)
    row = {
        "model": kind,
        "mode": mode,
        "seq": seq,
        "batch": batch,
        "device": device.type if device.type == "cpu" else torch.cuda.get_device_name(device),
        "dtype": "bf16" if bf16 else "fp32",
        "compiled": (args.compile_mode or True) if args.compile else False,
        "sdpa": args.sdpa if not args.no_cudnn_sdpa else f"{args.sdpa}, no cudnn",
        "bf16_residual": bool(args.bf16_residual) and kind == "elasticbert",
        "attention_dropout": args.attention_dropout if kind == "elasticbert" else 0.1,
        "hidden_dropout": args.hidden_dropout if kind == "elasticbert" else 0.1,
        "xent": args.xent if kind == "elasticbert" else None,
        "dropout_masks": resolve_dropout_masks(args.dropout_masks, device)
        if kind == "elasticbert" and args.compile
        else None,
        "exit_rows": not args.dense_exits if kind == "elasticbert" else None,
        "mlm_loss_options": model.mlm_loss_options if kind == "elasticbert" else None,  # None: by device
        "step_s": round(dt, 4),
        "tokens_per_s": round(batch * seq / dt, 1),
        "gflops_per_step": round(flops / 1e9, 1),
        "achieved_tflops": round(tflops, 3),
        "mfu_percent": round(100 * tflops / peak, 2) if peak else None,
    }
    if device.type == "cuda":  # of the timed steps: activations, gradients, optimiser state
        row["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if kernels:
        row["kernel_ms_per_step"] = {k: round(v, 3) for k, v in kernels.items()}
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv=None) -> list[dict]:
    from elue.elasticbert.pretraining.modeling_pretraining import DROPOUT_MASKS, XENT_STEPS

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    p.add_argument(
        "--batch", type=int, nargs="+", default=None, help="one per --seq (default GPU 64/16, CPU 4/1)"
    )
    p.add_argument("--modes", nargs="+", default=["all", "grouped"], choices=["all", "grouped"])
    p.add_argument("--models", nargs="+", default=["elasticbert"], choices=["elasticbert", "bert"])
    p.add_argument("--layers", type=int, default=12)
    p.add_argument("--steps", type=int, default=None, help="timed steps (default GPU 20, CPU 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps (default GPU 5, CPU 1)")
    p.add_argument("--fp32", action="store_true", help="no bf16 autocast on GPU")
    p.add_argument("--profile", type=int, default=0, help="GPU: print the N ops of most CUDA time of 2 steps")
    p.add_argument("--compile", action="store_true", help="torch.compile each encoder layer (regional)")
    p.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode, e.g. max-autotune-no-cudagraphs (with --compile)",
    )
    p.add_argument("--eager-embeddings", action="store_true", help="--compile: leave the embeddings eager")
    p.add_argument(
        "--bf16-residual", action="store_true", help="ElasticBERT: residual_in_fp32=False (bf16 stream)"
    )
    p.add_argument(
        "--attention-dropout", type=float, default=0.1, help="ElasticBERT: attention dropout (BERT's 0.1)"
    )
    p.add_argument(
        "--hidden-dropout", type=float, default=0.1, help="ElasticBERT: hidden dropout (BERT's 0.1)"
    )
    p.add_argument(
        "--xent",
        default="auto",
        choices=XENT_STEPS,
        help="ElasticBERT's MLM loss step (auto: the Triton kernel on CUDA; compiled: needs --compile)",
    )
    p.add_argument(
        "--dropout-masks",
        default="auto",
        choices=DROPOUT_MASKS,
        help="ElasticBERT with --compile: hidden dropout masks drawn by inductor or by torch's bernoulli kernel "
        "(auto: aten on CUDA, inductor elsewhere)",
    )
    p.add_argument(
        "--dense-exits",
        action="store_true",
        help="ElasticBERT: full (B, S, H) exit states gathered by the heads (the earlier way), not exit_rows",
    )
    p.add_argument(
        "--bias-in-gemm", action="store_true", help="ElasticBERT: the MLM bias added in the logits GEMM"
    )
    p.add_argument(
        "--keep-logit-grads",
        action="store_true",
        help="ElasticBERT: keep the (E, M, V) logit gradients for backward (one GEMM over all exits there)",
    )
    p.add_argument(
        "--plain-mlm-loss",
        action="store_true",
        help="ElasticBERT: only the MLM loss engine options given here (default: the model's by device)",
    )
    p.add_argument(
        "--bias-grad-in-gemm",
        action="store_true",
        help="ElasticBERT, with --keep-logit-grads: the MLM bias gradients from the backward weight GEMM",
    )
    p.add_argument(
        "--no-cudnn-sdpa",
        action="store_true",
        help="switch cuDNN attention off globally (torch then takes FlashAttention)",
    )
    p.add_argument("--sdpa", default="auto", choices=["auto", *SDPA_BACKENDS], help="SDPA backend")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default 989 on GPU)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
    args.steps = args.steps or (20 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)
    batches = args.batch or [64 if gpu else 4, 16 if gpu else 1][: len(args.seq)]
    if len(batches) > len(args.seq):
        p.error(
            f"--batch gives {len(batches)} sizes for {len(args.seq)} --seq lengths: one per length at most"
        )
    if len(batches) < len(args.seq):
        batches += [batches[-1]] * (len(args.seq) - len(batches))
    rows = []
    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, threads {torch.get_num_threads()}", flush=True)
    for seq, batch in zip(args.seq, batches, strict=True):
        for kind in args.models:
            for mode in args.modes if kind == "elasticbert" else ["all"]:
                row = bench_one(kind, mode, seq, batch, args, device)
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(
        "| model | exits | seq | batch | device | dtype | compiled | s/step | tokens/s | GFLOP/step | TFLOP/s "
        "| MFU % |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mfu = "–" if r["mfu_percent"] is None else f"{r['mfu_percent']:.2f}"
        print(
            f"| {r['model']} | {r['mode']} | {r['seq']} | {r['batch']} | {r['device']} | {r['dtype']} "
            f"| {r['compiled'] if isinstance(r['compiled'], str) else 'yes' if r['compiled'] else 'no'} "
            f"| {r['step_s']} "
            f"| {r['tokens_per_s']:.0f} | {r['gflops_per_step']:.0f} | {r['achieved_tflops']:.3f} | {mfu} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    main()
