"""ElasticBERT pre-training: multi-exit MLM + SOP with gradient equilibrium and grouped training, on
Hugging Face Accelerate (one CPU, one GPU, many GPUs, many nodes).

    config.py                 PretrainConfig: every setting of a run (YAML/JSON + key=value overrides)
    data.py                   raw text -> documents -> SOP pairs -> dynamic MLM masks (streaming, sharded)
    modeling_pretraining.py   ElasticBertForPreTraining (heads per exit), ElasticBertForMaskedLM
    linear_cross_entropy.py   the multi-exit MLM loss without every exit's (M, V) logits in memory
    triton_cross_entropy.py   one exit's loss-and-gradient step as a Triton kernel (CUDA)
    dropout_masks.py          hidden dropout with torch's own mask kernel, for the compiled step
    optim.py                  AdamW / LAMB, warm-up and decay
    trainer.py                the training loop: grouped steps, accumulation, exact resume
    checkpoints.py            checkpoints: finding, checking a resume against, saving
    logs.py                   the CSV/TensorBoard logs and the per-exit loss window between log rows

`elue pretrain --config FILE [key=value ...]` (or `python -m elue.elasticbert.pretraining`, __main__.py) runs
`trainer.pretrain`. See docs/pretraining.md.
Heavy modules are not imported here.
"""

from .config import PretrainConfig, default_exit_groups

__all__ = ["PretrainConfig", "default_exit_groups"]
