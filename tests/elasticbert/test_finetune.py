"""Fine-tuning on a tiny random ElasticBERT and made-up SST-2 rows in ELUE layout (fast, CPU)."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from elasticbert_fixtures import NEG, POS, invoke_cli, write_sst2, write_tiny_checkpoint
from subprocesses import child_env, run_torchrun, torchrun

from elue.elasticbert.finetune import finetune
from elue.elasticbert.finetune_config import FinetuneConfig


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return write_sst2(root / "data"), write_tiny_checkpoint(root / "ckpt")


def _cfg(tiny, out: Path, **kw) -> FinetuneConfig:
    data, ckpt = tiny
    base = dict(
        task="sst-2",
        model=str(ckpt),
        output_dir=str(out),
        data_dir=str(data),
        batch_size=8,
        eval_batch_size=16,
        learning_rate=1e-3,
        max_length=32,
        cpu=True,
        progress=False,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def _quiet(_msg: str) -> None:
    pass


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    """Two runs' checkpoints hold the same weights (within float noise): a resumed run against an uninterrupted one."""
    a, b = _weights(a_dir), _weights(b_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_joint_training_saves_best_and_last(tiny, tmp_path):
    res = finetune(_cfg(tiny, tmp_path / "run", max_steps=6, eval_every=3), log=_quiet)
    assert res.global_step == 6
    best, last = tmp_path / "run" / "best", tmp_path / "run" / "last"
    info = json.loads((best / "finetune.json").read_text())
    assert info["task"] == "sst-2" and info["mode"] == "joint"
    assert set(info["dev"]) == {"1", "2", "3"}  # a dev score for every exit
    assert all(0.0 <= m["performance"] <= 100.0 for m in info["dev"].values())
    for name in ("optimizer.pt", "scheduler.pt", "trainer_state.json", "model.safetensors", "tokenizer.json"):
        assert (last / name).is_file(), name
    assert (best / "model.safetensors").is_file() and (best / "tokenizer.json").is_file()
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6]
    assert res.best_step in (3, 6)

    from elue.elasticbert import ElasticBertForSequenceClassification

    model = ElasticBertForSequenceClassification.from_pretrained(str(best))
    assert model.config.num_output_layers == 3 and model.config.gradient_equilibrium


def test_resume_continues_where_it_stopped(tiny, tmp_path):
    full = finetune(_cfg(tiny, tmp_path / "full", max_steps=8, eval_every=4), log=_quiet)
    part = finetune(_cfg(tiny, tmp_path / "part", max_steps=8, eval_every=4, stop_after=5), log=_quiet)
    assert part.global_step == 5
    state = json.loads((tmp_path / "part" / "last" / "trainer_state.json").read_text())
    assert state["global_step"] == 5 and state["epoch"] == 0 and state["step_in_epoch"] == 5
    same = finetune(
        _cfg(tiny, tmp_path / "part", max_steps=8, eval_every=4, stop_after=5, resume=True), log=_quiet
    )
    assert same.global_step == 5  # already there: nothing to do
    again = finetune(_cfg(tiny, tmp_path / "part", max_steps=8, eval_every=4, resume=True), log=_quiet)
    assert again.global_step == full.global_step == 8
    assert [h["step"] for h in again.history] == [4, 8]
    _assert_same_weights(tmp_path / "full" / "last", tmp_path / "part" / "last")


def test_early_stopping(tiny, tmp_path):
    # learning rate 0: dev never improves after the first evaluation
    res = finetune(
        _cfg(tiny, tmp_path / "es", learning_rate=0.0, epochs=5, eval_every=1, early_stopping_patience=2),
        log=_quiet,
    )
    assert res.stopped_early
    assert res.global_step == 3 and res.best_step == 1
    assert len(res.history) == 3


def test_a_diverged_run_is_refused_and_best_keeps_its_last_finite_step(tiny, tmp_path, monkeypatch):
    """A run whose loss became NaN (an STS-B run at a too-high --lr) trained on, scored its NaN exits 0.00 (the
    correlation of NaN) or class 0 (argmax of NaN), and saved the NaN weights as best/ without a word; `elue
    predict` then wrote class 0 for every example. Now the evaluation that meets NaN outputs fails with one
    line, and best/ keeps the last evaluation with finite ones."""
    import elue.elasticbert.finetune as ft

    calls = {"n": 0}
    real_loss = ft.per_exit_loss

    def nan_from_step_3(logits, labels, regression):
        calls["n"] += 1
        loss = real_loss(logits, labels, regression)
        return loss * float("nan") if calls["n"] >= 3 else loss

    monkeypatch.setattr(ft, "per_exit_loss", nan_from_step_3)
    out = tmp_path / "run"
    with pytest.raises(
        ValueError, match=r"training diverged: at step 4 the dev outputs of exit\(s\) \[1, 2, 3\]"
    ):
        finetune(_cfg(tiny, out, max_steps=6, eval_every=2), log=_quiet)
    info = json.loads((out / "best" / "finetune.json").read_text())
    assert info["step"] == 2
    assert all(torch.isfinite(w).all() for w in _weights(out / "best").values())
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()] == [2]

    monkeypatch.undo()  # the CLI: a real divergence (a learning rate of 1e30), one line, nothing saved
    data, ckpt = tiny
    result = invoke_cli(
        ["finetune", "sst-2", "--model", ckpt, "--output", tmp_path / "cli", "--data", data, "--max-steps", "2",
         "--batch-size", "8", "--max-length", "32", "--lr", "1e30", "--cpu", "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "training diverged: at step 2" in result.output and "no best/ was saved" in result.output
    assert not (tmp_path / "cli" / "best").exists()


def test_the_checkpoint_names_the_tasks_classes(tiny, tmp_path):
    """best/config.json's id2label holds the task's class names (spec §1), replacing a checkpoint's own: an
    ELUE checkpoint said LABEL_2 for contradiction in a pipeline, and one trained on after another task of as
    many classes kept that task's names."""
    from elue.elasticbert import ElasticBertConfig

    data, ckpt = tiny
    other = tmp_path / "other"
    shutil.copytree(ckpt, other)
    config = ElasticBertConfig.from_pretrained(other)
    config.id2label, config.label2id = {0: "yes", 1: "no"}, {"yes": 0, "no": 1}
    config.save_pretrained(other)
    finetune(_cfg((data, other), tmp_path / "run", max_steps=1), log=_quiet)
    saved = ElasticBertConfig.from_pretrained(tmp_path / "run" / "best")
    assert saved.id2label == {0: "negative", 1: "positive"}
    assert saved.label2id == {"negative": 0, "positive": 1}


def test_static_k_layers_via_cli(tiny, tmp_path):
    from typer.testing import CliRunner

    from elue.cli import app

    data, ckpt = tiny
    out = tmp_path / "static"
    result = CliRunner().invoke(
        app,
        [
            "finetune", "sst-2", "--model", str(ckpt), "--output", str(out), "--data", str(data),
            "--layers", "2", "--max-steps", "3", "--batch-size", "8", "--max-length", "32",
            "--lr", "1e-3", "--cpu", "--no-progress",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout[result.stdout.index("{") :])["global_step"] == 3
    config = json.loads((out / "best" / "config.json").read_text())
    assert config["num_hidden_layers"] == 2 and config["num_output_layers"] == 1
    info = json.loads((out / "best" / "finetune.json").read_text())
    assert list(info["dev"]) == ["2"] and info["mode"] == "static"


def test_glue_task_facts():
    from elue.elasticbert.task_data import glue_task_spec

    cola = glue_task_spec("cola")
    assert cola.family == "glue" and cola.num_labels == 2 and cola.text_columns == ("sentence",)
    assert cola.metric([0, 1, 1, 0], [0, 1, 1, 0])["performance"] == pytest.approx(100.0)
    stsb = glue_task_spec("sts-b")
    assert stsb.is_regression and stsb.num_labels == 1
    assert set(stsb.metric([0.0, 1.0, 2.0], [0.1, 0.9, 2.5])) >= {"performance", "pearson", "spearman"}


def test_cli_convert_a_bert_checkpoint(tiny, tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast
    from typer.testing import CliRunner

    from elue.cli import app
    from elue.elasticbert import ElasticBertForSequenceClassification

    _, ckpt = tiny
    src = tmp_path / "bert"
    torch.manual_seed(0)
    bert = BertModel(
        BertConfig(
            vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64
        )
    )
    bert.save_pretrained(src)
    BertTokenizerFast(vocab=str(ckpt / "vocab.txt")).save_pretrained(src)
    dst = tmp_path / "eb"
    result = CliRunner().invoke(app, ["convert", str(src), "--output", str(dst), "--exits", "2"])
    assert result.exit_code == 0, result.output
    model = ElasticBertForSequenceClassification.from_pretrained(str(dst), num_labels=2)
    assert model.config.num_output_layers == 2 and model.config.num_hidden_layers == 3
    # what was made, in one line: BERT's weights, its one pooler now one per exit (2)
    pooler = 32 * 32 + 32
    made = sum(p.numel() for p in bert.parameters()) + pooler
    assert f"ElasticBERT: 3 layers, exits on the top 2, {made:,} parameters" in result.output
    assert (dst / "tokenizer.json").is_file()
    torch.testing.assert_close(
        model.elasticbert.embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight
    )
    # an existing model folder (here with a fine-tuning record) is replaced only with --overwrite, and whole
    (dst / "finetune.json").write_text("{}")
    again = ["convert", str(src), "--output", str(dst)]
    result = CliRunner().invoke(app, again)
    assert result.exit_code == 1 and "is not empty: pass --overwrite" in result.output
    result = CliRunner().invoke(app, [*again, "--overwrite"])
    assert result.exit_code == 0 and not (dst / "finetune.json").exists(), result.output
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("x")
    result = CliRunner().invoke(app, ["convert", str(src), "--output", str(notes), "--overwrite"])
    assert result.exit_code == 1 and "not a model folder" in result.output and (notes / "todo.txt").exists()
    # a conversion that fails leaves OUTPUT as it was: a bad option, an ElasticBERT as SOURCE
    before = sorted(p.name for p in dst.iterdir())
    for bad in (["--pooler-init", "bogus"], ["--exits", "9"]):
        result = CliRunner().invoke(app, [*again, "--overwrite", *bad])
        assert result.exit_code == 1 and "Traceback" not in result.output, result.output
        assert sorted(p.name for p in dst.iterdir()) == before
    result = CliRunner().invoke(app, ["convert", str(dst), "--output", str(dst), "--overwrite"])
    assert (
        result.exit_code == 1
        and "overlap" in result.output
        and sorted(p.name for p in dst.iterdir()) == before
    )
    result = CliRunner().invoke(app, ["convert", str(src), "--output", str(src), "--overwrite"])
    assert result.exit_code == 1 and "overlap" in result.output and (src / "config.json").is_file()
    assert not list(tmp_path.glob(".*converting*"))  # no staging folder left behind


def test_a_full_disk_while_saving_is_one_line(tiny, tmp_path, monkeypatch):
    """A full disk ended `elue convert` and `elue finetune` with a traceback: safetensors raises its own
    SafetensorError and torch.save a RuntimeError ("unexpected pos"), neither an OSError. Each is one line now;
    other errors of those types still propagate."""
    import transformers.modeling_utils
    from safetensors import SafetensorError

    data, ckpt = tiny
    full = "Error while serializing: I/O error: No space left on device (os error 28)"

    def no_space(*args, **kwargs):
        raise SafetensorError(full)

    from transformers import BertConfig, BertModel

    src = tmp_path / "bert"
    BertModel(
        BertConfig(vocab_size=40, hidden_size=8, num_hidden_layers=1, num_attention_heads=2)
    ).save_pretrained(src)
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", no_space)
    result = invoke_cli(["convert", src, "--output", tmp_path / "conv"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert (
        f"error: writing to {tmp_path / 'conv'} failed (I/O error: No space left on device" in result.output
    )
    assert not (tmp_path / "conv").exists()
    finetune_args = ["finetune", "sst-2", "--model", ckpt, "--data", data, "--max-steps", "1", "--cpu"]
    finetune_args += ["--batch-size", "8", "--max-length", "32", "--no-progress", "--output"]
    result = invoke_cli([*finetune_args, tmp_path / "ft"])
    assert result.exit_code == 1 and f"error: writing to {tmp_path / 'ft'} failed (I/O error: No space" in (
        result.output
    ), result.output
    monkeypatch.undo()
    real = torch.save

    def stops_mid_file(obj, f, *args, **kwargs):
        if str(f).endswith("optimizer.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 29248 vs 29140")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", stops_mid_file)
    result = invoke_cli([*finetune_args, tmp_path / "ft2"])
    assert result.exit_code == 1 and "torch.save stopped mid-file" in result.output, result.output
    # and the half-written staging folder of that save (.last.saving, weights written) is gone, not left
    # taking the space the disk lacked
    assert [p.name for p in (tmp_path / "ft2").glob(".*.saving")] == []

    def other_error(obj, f, *args, **kwargs):
        raise RuntimeError("something else")

    monkeypatch.setattr(torch, "save", other_error)
    result = invoke_cli([*finetune_args, tmp_path / "ft3"])
    assert isinstance(result.exception, RuntimeError) and str(result.exception) == "something else"


def _hub_copy(root: Path, config: str, splits: dict[str, str], rows: dict[str, list]) -> Path:
    """A local dataset in the hub's parquet layout (one config), read by the real `load_dataset` code path."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, file in splits.items():
        path = root / config / f"{file}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(rows[split]), path)
    files = "".join(f"  - split: {s}\n    path: {config}/{s}-*\n" for s in splits.values())
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{files}---\n")
    return root


@pytest.mark.parametrize("source", ["glue", "hub"])
def test_finetune_from_hub_layout(tiny, tmp_path, monkeypatch, source):
    """GLUE sst2 and ELUE mrpc (hub id nyu-mll/glue) from local copies in the hub layout."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    rng = random.Random(1)
    words = {0: NEG, 1: POS}
    if source == "glue":  # GLUE sst2: sentence, label, idx

        def rows(n):
            labels = [i % 2 for i in range(n)]
            return {
                "sentence": [f"the film {rng.choice(words[y])}" for y in labels],
                "label": labels,
                "idx": list(range(n)),
            }

        task, config = "sst2", "sst2"
    else:  # ELUE mrpc from GLUE mrpc: sentence1, sentence2, label, idx

        def rows(n):
            labels = [i % 2 for i in range(n)]
            return {
                "sentence1": [f"a story {rng.choice(words[y])}" for y in labels],
                "sentence2": [f"the plot {rng.choice(words[y])}" for y in labels],
                "label": labels,
                "idx": list(range(n)),
            }

        task, config = "mrpc", "mrpc"
    root = _hub_copy(
        tmp_path / "hub", config, {"train": "train", "dev": "validation"}, {"train": rows(32), "dev": rows(8)}
    )
    res = finetune(
        _cfg(
            tiny, tmp_path / "run", task=task, source=source, hub_path=str(root), data_dir=None, max_steps=4
        ),
        log=_quiet,
    )
    assert res.global_step == 4
    info = json.loads((tmp_path / "run" / "best" / "finetune.json").read_text())
    assert set(info["dev"]) == {"1", "2", "3"}


# GLUE tasks as the hub has them: text columns, number of labels, dev metric parts
_GLUE = {
    "cola": (("sentence",), 2, {"mcc"}),
    "sst2": (("sentence",), 2, {"accuracy"}),
    "mrpc": (("sentence1", "sentence2"), 2, {"accuracy", "f1"}),
    "qqp": (("question1", "question2"), 2, {"accuracy", "f1"}),
    "stsb": (("sentence1", "sentence2"), 1, {"pearson", "spearman"}),
    "mnli": (("premise", "hypothesis"), 3, {"accuracy"}),
    "qnli": (("question", "sentence"), 2, {"accuracy"}),
    "rte": (("sentence1", "sentence2"), 2, {"accuracy"}),
    "wnli": (("sentence1", "sentence2"), 2, {"accuracy"}),
}


@pytest.mark.parametrize("task", list(_GLUE))
def test_every_glue_task_trains_on_its_columns_labels_metric_and_dev_split(tiny, tmp_path, monkeypatch, task):
    """`elue finetune --glue` on a local copy in nyu-mll/glue's layout (test splits labelled -1, as the hub's):
    the task's text columns, label count and metric, chosen on the validation split (10 rows here; the test
    split has 7). MNLI also reports its mismatched dev (6 rows) at every evaluation, in log.jsonl and
    finetune.json, as GLUE reports MNLI-m and MNLI-mm (before, only the matched one was ever evaluated)."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    columns, labels, parts = _GLUE[task]
    rng = random.Random(2)
    sizes = {"train": 24, "dev": 10, "test": 7}
    hub = {"train": "train", "dev": "validation", "test": "test"}
    if task == "mnli":
        sizes.update(dev_mismatched=6, test_mismatched=5)
        hub = {"train": "train", "dev": "validation_matched", "dev_mismatched": "validation_mismatched"}
        hub.update(test="test_matched", test_mismatched="test_mismatched")

    def rows(split: str) -> dict:
        n = sizes[split]
        out = {c: [" ".join(rng.sample(POS + NEG, 3)) for _ in range(n)] for c in columns}
        if split.startswith("test"):
            out["label"] = [-1.0 if labels == 1 else -1] * n
        else:
            out["label"] = [rng.uniform(0, 5) if labels == 1 else i % labels for i in range(n)]
        out["idx"] = list(range(n))
        return out

    root = _hub_copy(tmp_path / "hub", task, hub, {split: rows(split) for split in hub})
    ckpt = write_tiny_checkpoint(tmp_path / "ckpt", num_labels=labels)
    out = tmp_path / "run"
    result = invoke_cli(
        ["finetune", task, "--glue", "--hub-path", root, "--model", ckpt, "--output", out, "--max-steps", "1",
         "--batch-size", "8", "--max-length", "32", "--cpu", "--no-progress"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "24 train / 10 dev rows" in result.output
    from elue.elasticbert import ElasticBertConfig

    assert ElasticBertConfig.from_pretrained(out / "best").num_labels == labels
    info = json.loads((out / "best" / "finetune.json").read_text())
    assert info["family"] == "glue" and info["text_columns"] == list(columns)
    assert all(set(m) == {"performance", *parts} for m in info["dev"].values())
    log = json.loads((out / "log.jsonl").read_text())
    other = {"dev_mismatched"} if task == "mnli" else set()
    assert {k for k in log if k.startswith("dev_")} == other and {
        k for k in info if k.startswith("dev_")
    } == other
    if task == "mnli":
        assert set(info["dev_mismatched"]) == {"1", "2", "3"} and "dev_mismatched mean" in result.output
        assert log["dev_mismatched"] == info["dev_mismatched"] != info["dev"]


def test_cli_bad_inputs_are_one_line(tmp_path):
    """A missing model folder or an unknown task: `error: ...`, exit code 1, no traceback."""
    from typer.testing import CliRunner

    from elue.cli import app

    runner = CliRunner()
    missing = str(tmp_path / "no-model")
    cases = [
        (["finetune", "sst-2", "--model", missing, "--output", str(tmp_path / "o")], f"--model {missing}: no such"),
        (["convert", missing, "--output", str(tmp_path / "c")], f"SOURCE {missing}: no such folder"),
        (["finetune", "nosuchtask", "--model", str(tmp_path), "--output", str(tmp_path / "o")], "unknown ELUE task 'nosuchtask'; available: sst-2"),
        # the other family's task: the option that reads it (a researcher's `elue finetune qqp`)
        (["finetune", "qqp", "--model", str(tmp_path), "--output", str(tmp_path / "o")], "unknown ELUE task 'qqp'; available: sst-2, imdb, snli, scitail, mrpc, sts-b ('qqp' is a GLUE task: add --glue)"),
        (["finetune", "imdb", "--glue", "--model", str(tmp_path), "--output", str(tmp_path / "o")], "unknown GLUE task 'imdb'; available: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli ('imdb' is an ELUE task: leave out --glue)"),
    ]  # fmt: skip
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 1, (args, result.output)
        assert f"error: {message}" in result.output and "Traceback" not in result.output, result.output


def test_the_log_says_how_many_rows_max_length_cuts(tiny, tmp_path):
    """IMDb's reviews cut to the default 128 tokens went unsaid: the rows that reach --max-length are counted."""
    from transformers import AutoTokenizer

    from elue.elasticbert.finetune import finetune

    data, ckpt = tiny
    tokenizer = AutoTokenizer.from_pretrained(str(ckpt))

    def reaching(split: str) -> int:  # sentences of 5 words or more: [CLS] + 5 + [SEP] >= 7
        lines = (data / "sst-2" / f"{split}.tsv").read_text().splitlines()[1:]
        return sum(len(tokenizer(line.split("\t")[0])["input_ids"]) >= 7 for line in lines)

    train, dev = reaching("train"), reaching("dev")
    assert 0 < train < 64 and 0 < dev < 16
    said: list[str] = []
    finetune(_cfg(tiny, tmp_path / "run", max_length=7, max_steps=1), log=said.append)
    line = f"sst-2: 64 train / 16 dev rows, max_length 7; {train} train / {dev} dev rows reach it (longer texts are cut)"
    assert line in said, said
    said.clear()
    finetune(_cfg(tiny, tmp_path / "long", max_length=32, max_steps=1), log=said.append)
    assert "sst-2: 64 train / 16 dev rows, max_length 32" in said, said  # nothing cut: nothing said


def test_sigterm_saves_last_and_resume_matches(tiny, tmp_path):
    """SIGTERM mid-run: the step finishes, last/ is saved, exit 143; --resume ends like an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    data, ckpt = tiny
    out = tmp_path / "sig"
    args = [
        "finetune", "sst-2", "--model", str(ckpt), "--output", str(out), "--data", str(data),
        "--max-steps", "60", "--eval-every", "2", "--batch-size", "8", "--max-length", "32",
        "--lr", "1e-3", "--cpu", "--no-progress",
    ]  # fmt: skip
    code = "import sys; from elue.cli import app; sys.argv[0] = 'elue'; app()"
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    state = out / "last" / "trainer_state.json"
    deadline = time.time() + 120
    while time.time() < deadline and not state.exists():
        time.sleep(0.05)  # the first evaluation (step 2) saved last/: training is under way
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    step = json.loads(state.read_text())["global_step"]
    assert 2 <= step < 60 and f"stopped by SIGTERM at step {step}" in err
    resumed = finetune(_cfg(tiny, out, max_steps=60, eval_every=2, resume=True), log=_quiet)
    full = finetune(_cfg(tiny, tmp_path / "full", max_steps=60, eval_every=2), log=_quiet)
    assert resumed.global_step == full.global_step == 60
    _assert_same_weights(tmp_path / "full" / "last", out / "last")


def _kill_at_save(monkeypatch, file: str, call: int) -> None:
    """The process dies (SystemExit) as `torch.save` writes `file` for the `call`-th time."""
    real, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        if str(f).endswith(file):
            calls["n"] += 1
            if calls["n"] == call:
                raise SystemExit("killed")
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


def test_a_kill_while_last_is_saved_resumes_from_the_previous_save(tiny, tmp_path, monkeypatch):
    """last/ was written in place: a kill in the middle of the step-4 save left step 4's weights and optimizer
    beside step 2's scheduler and trainer state, and the resumed run went on from that mix (final weights
    1.6e-3 off), logging step 4's evaluation twice. Now a save replaces last/ whole or not at all."""
    full = finetune(_cfg(tiny, tmp_path / "full", max_steps=8, eval_every=2), log=_quiet)
    out = tmp_path / "part"
    with monkeypatch.context() as m:
        _kill_at_save(m, "scheduler.pt", call=2)
        with pytest.raises(SystemExit):
            finetune(_cfg(tiny, out, max_steps=8, eval_every=2), log=_quiet)
    assert json.loads((out / "last" / "trainer_state.json").read_text())["global_step"] == 2
    again = finetune(_cfg(tiny, out, max_steps=8, eval_every=2, resume=True), log=_quiet)
    assert again.global_step == full.global_step == 8
    _assert_same_weights(tmp_path / "full" / "last", out / "last")
    log = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert log == [2, 4, 6, 8]  # step 4 evaluated twice, logged once
    assert sorted(p.name for p in out.iterdir()) == ["best", "config.json", "last", "log.jsonl"]


def test_a_kill_between_the_renames_of_a_save_resumes_from_the_previous_one(tiny, tmp_path):
    """A kill after the old last/ made way (.last.old) and before the new one took its place (.last.saving):
    --resume puts the old one back and removes the unfinished one."""
    full = finetune(_cfg(tiny, tmp_path / "full", max_steps=6, eval_every=2), log=_quiet)
    out = tmp_path / "part"
    finetune(_cfg(tiny, out, max_steps=6, eval_every=2, stop_after=2), log=_quiet)
    (out / "last").rename(out / ".last.old")
    (out / ".last.saving").mkdir()
    (out / ".last.saving" / "model.safetensors").write_bytes(b"half")
    again = finetune(_cfg(tiny, out, max_steps=6, eval_every=2, resume=True), log=_quiet)
    assert again.global_step == full.global_step == 6
    _assert_same_weights(tmp_path / "full" / "last", out / "last")
    assert not (out / ".last.old").exists() and not (out / ".last.saving").exists()


# --- refusals: an existing run, resume with other options, bad numbers, bad paths --------------------


def _quick(tiny, out: Path, **kw) -> FinetuneConfig:
    base = dict(max_steps=2, eval_every=2, train_limit=16, dev_limit=8)
    base.update(kw)
    return _cfg(tiny, out, **base)


def test_existing_run_refused_unless_resume_or_overwrite(tiny, tmp_path):
    out = tmp_path / "run"
    finetune(_quick(tiny, out), log=_quiet)
    with pytest.raises(FileExistsError, match="use --resume to continue it or --overwrite to start over"):
        finetune(_quick(tiny, out), log=_quiet)
    assert len((out / "log.jsonl").read_text().splitlines()) == 1  # untouched
    with pytest.raises(ValueError, match="the model has 3 layers"):  # a bad option removes nothing
        finetune(_quick(tiny, out, num_layers=5, overwrite=True), log=_quiet)
    assert (out / "best").is_dir() and (out / "log.jsonl").is_file()
    # nor does a data folder that is not there, or a max length the tokenizer cannot cut to (before: the run
    # was removed first, then the data read)
    for bad in (dict(data_dir=str(tmp_path / "nowhere")), dict(max_length=2)):
        with pytest.raises((FileNotFoundError, ValueError), match="nowhere|special tokens"):
            finetune(_quick(tiny, out, overwrite=True, **bad), log=_quiet)
        assert (out / "best").is_dir() and (out / "log.jsonl").is_file(), bad
    res = finetune(_quick(tiny, out, max_steps=1, eval_every=1, overwrite=True), log=_quiet)
    assert res.global_step == 1
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1]  # a fresh log, not appended to
    with pytest.raises(ValueError, match="exclude"):
        finetune(_quick(tiny, out, resume=True, overwrite=True), log=_quiet)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(batch_size=4), "--batch-size 8 -> 4"),
        (dict(task="mrpc"), "TASK 'sst-2' -> 'mrpc'"),
        (
            dict(mode="static", num_layers=1),
            "static (--layers) or joint 'joint' -> 'static'; --layers/--num-layers None -> 1",
        ),
        (dict(max_steps=5), "--max-steps 3 -> 5"),
        (dict(num_output_layers=2), "--exits None -> 2"),
    ],
)
def test_resume_refuses_other_options(tiny, tmp_path_factory, change, message):
    out = tmp_path_factory.getbasetemp() / "resume-options"
    if not (out / "last").is_dir():
        finetune(_quick(tiny, out, max_steps=3, eval_every=1, stop_after=1), log=_quiet)
    with pytest.raises(ValueError, match=re.escape(message)):
        finetune(_quick(tiny, out, **{"max_steps": 3, "eval_every": 1, "resume": True, **change}), log=_quiet)


def test_resume_takes_the_task_however_typed(tiny, tmp_path):
    """TASK is case-insensitive and takes aliases ('SST2' is sst-2), but a resume compared it as typed and
    refused the run's own task: "TASK 'sst-2' -> 'SST2'"."""
    out = tmp_path / "run"
    finetune(_quick(tiny, out, max_steps=3, eval_every=1, stop_after=1), log=_quiet)
    res = finetune(
        _quick(tiny, out, max_steps=3, eval_every=1, stop_after=2, task="SST2", resume=True), log=_quiet
    )
    assert res.global_step == 2
    with pytest.raises(ValueError, match=re.escape("TASK 'SST2' -> 'MRPC'")):
        finetune(_quick(tiny, out, max_steps=3, eval_every=1, task="MRPC", resume=True), log=_quiet)


def test_last_keeps_the_fp16_loss_scaler(tiny, tmp_path):
    """fp16 training (Accelerate's GradScaler; GPU only, so its state is saved and restored here by hand): last/
    kept no loss scaler, and a resumed run started again at a scale of 65536 where the run had brought it down,
    its first steps overflowing and skipped as the uninterrupted run's were not."""
    from transformers import get_linear_schedule_with_warmup

    from elue.elasticbert import ElasticBertForSequenceClassification
    from elue.elasticbert.finetune_checkpoints import TrainerState, _restore_last, _save_last
    from elue.elasticbert.finetune_model import load_tokenizer

    def parts():
        model = torch.nn.Linear(2, 2)
        optimizer = torch.optim.AdamW(model.parameters())
        return model, optimizer, get_linear_schedule_with_warmup(optimizer, 1, 10)

    model, optimizer, scheduler = parts()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    scaler.scale(torch.ones(()))  # the scale is made at the first loss
    scaler.update(new_scale=512.0)
    scaler._growth_tracker = torch.tensor(7, dtype=torch.int32)  # steps since the last overflow
    ckpt = tiny[1]
    checkpoint = ElasticBertForSequenceClassification.from_pretrained(ckpt)
    _save_last(
        checkpoint, load_tokenizer(ckpt), optimizer, scheduler, TrainerState(), tmp_path / "last", scaler
    )
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    _, optimizer2, scheduler2 = parts()
    _restore_last(tmp_path / "last", optimizer2, scheduler2, 1, tmp_path, fresh)
    assert fresh.get_scale() == 512.0 and fresh.state_dict() == scaler.state_dict()


@pytest.mark.parametrize("flag", ["--overwrite", "--resume"])
def test_an_output_that_is_the_model_folder_is_refused_and_left_whole(tiny, tmp_path, flag):
    """`--model CKPT --output CKPT`: CKPT's config.json was taken for a run's, and --overwrite (or --resume, which
    finds nothing to resume and starts again) removed it, leaving a checkpoint without a config, then failed."""
    data, ckpt = tiny
    copy = shutil.copytree(ckpt, tmp_path / "ckpt")
    before = sorted(p.name for p in copy.iterdir())
    result = invoke_cli(
        ["finetune", "sst-2", "--model", copy, "--output", copy, "--data", data, "--max-steps", "1",
         "--max-length", "32", "--cpu", "--no-progress", flag]
    )  # fmt: skip
    assert result.exit_code == 1, result.output
    assert (
        "is a model folder (its config.json describes a model of type elasticbert)"
        in result.output.replace("\n", "")
    )
    assert sorted(p.name for p in copy.iterdir()) == before


def test_overwrite_of_the_run_holding_the_model_is_refused(tiny, tmp_path):
    """`--model RUN/best --output RUN --overwrite` removed RUN's best/ (the model it was to train from), then
    failed to load it: the run was lost and nothing was trained."""
    out = tmp_path / "run"
    finetune(_quick(tiny, out), log=_quiet)
    with pytest.raises(ValueError, match=re.escape(f"--model {out / 'best'} lies in {out}'s best")):
        finetune(_quick(tiny, out, model=str(out / "best"), overwrite=True), log=_quiet)
    assert (out / "best" / "model.safetensors").is_file() and (out / "log.jsonl").is_file()


def test_resume_refuses_other_data(tiny, tmp_path):
    """--data may move (a path) but not change: a resume on another folder's rows went on silently, its position
    in the epoch, schedule and best dev score counting the run's rows (a 2-epoch run on 64 rows ended at step 8
    instead of 16)."""
    out = tmp_path / "run"
    finetune(_cfg(tiny, out, epochs=2, eval_every=2, stop_after=2), log=_quiet)
    fewer = write_sst2(tmp_path / "fewer", n_train=32)
    other = write_sst2(tmp_path / "other", seed=5)  # as many rows, other sentences
    moved = shutil.copytree(tiny[0], tmp_path / "moved")
    for data, message in ((fewer, "train 64 rows -> 32"), (other, "train: other rows (or tokenization)")):
        with pytest.raises(ValueError, match=re.escape(message)):
            finetune(_cfg(tiny, out, epochs=2, eval_every=2, resume=True, data_dir=str(data)), log=_quiet)
    res = finetune(_cfg(tiny, out, epochs=2, eval_every=2, resume=True, data_dir=str(moved)), log=_quiet)
    assert res.global_step == 16


def test_resume_after_a_kill_before_the_first_save_starts_again(tiny, tmp_path):
    """config.json is written before any checkpoint: a run killed then has nothing to resume, and --resume
    (which scripts always pass) starts it again instead of refusing."""
    out = tmp_path / "run"
    finetune(_quick(tiny, out, max_steps=1, eval_every=1), log=_quiet)
    for name in ("best", "last"):
        shutil.rmtree(out / name)  # as if killed before the first evaluation
    messages: list[str] = []
    res = finetune(_quick(tiny, out, max_steps=1, eval_every=1, resume=True), log=messages.append)
    assert res.global_step == 1 and any("starting from scratch" in m for m in messages)


@pytest.mark.parametrize(
    ("first", "again", "said"),
    [
        ({}, {}, "the run finished at step 2"),
        (
            {"max_steps": 4, "eval_every": 1, "early_stopping_patience": 1, "learning_rate": 0.0},
            {},
            "stopped early",
        ),
        ({"max_steps": 3, "eval_every": 1, "stop_after": 2}, {"stop_after": 1}, "--stop-after 1"),
    ],
)
def test_resume_with_nothing_to_do_says_so(tiny, tmp_path, first, again, said):
    """--resume of a finished (or early-stopped) run returned at once saying only "resumed at step N": read as
    training that went on. It now says there was nothing left to do, and why."""
    out = tmp_path / "run"
    finetune(_quick(tiny, out, **first), log=_quiet)
    before = (out / "log.jsonl").read_text()
    messages: list[str] = []
    res = finetune(_quick(tiny, out, **{**first, **again, "resume": True}), log=messages.append)
    assert (out / "log.jsonl").read_text() == before  # no step taken, no evaluation
    assert any(said in m and "nothing left to do" in m for m in messages), messages
    assert res.global_step == 2


def test_resume_ignores_epochs_when_max_steps_decides(tiny, tmp_path):
    out = tmp_path / "run"
    finetune(_quick(tiny, out, max_steps=2, eval_every=1, stop_after=1), log=_quiet)
    res = finetune(_quick(tiny, out, max_steps=2, eval_every=1, resume=True, epochs=7), log=_quiet)
    assert res.global_step == 2


def test_resume_may_change_session_options(tiny, tmp_path):
    out = tmp_path / "run"
    finetune(_quick(tiny, out, max_steps=3, eval_every=1, stop_after=1), log=_quiet)
    res = finetune(
        _quick(
            tiny, out, max_steps=3, eval_every=1, resume=True, stop_after=2, eval_batch_size=4, progress=True
        ),
        log=_quiet,
    )
    assert res.global_step == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--eval-batch-size", "0"], "--eval-batch-size"),
        (["--max-length", "0"], "--max-length"),
        (["--layers", "0"], "--layers"),
        (["--layers", "-1"], "--layers"),
        (["--num-layers", "0"], "--num-layers"),
        (["--exits", "0"], "--exits"),
        (["--max-steps", "0"], "--max-steps"),
        (["--train-limit", "0"], "--train-limit"),
        (["--dev-limit", "0"], "--dev-limit"),
        (["--eval-every", "0"], "--eval-every"),
        (["--epochs", "0"], "--epochs 0.0: must be a positive finite number"),
        (["--warmup-ratio", "2"], "--warmup-ratio"),
        (["--early-stopping", "0"], "--early-stopping"),
        (["--stop-after", "0"], "--stop-after"),
        (["--layers", "2", "--exits", "1"], "excludes --num-layers and --exits"),
        (["--hub", "--data", "x"], "with --hub use --hub-path"),
        (["--hub-path", "/nowhere"], "--hub-path is the hub dataset"),
        (["--seed", "-1"], "--seed"),
        (["--resume", "--overwrite"], "exclude each other"),
        (["--layers", "5"], "--layers 5: the model has 3 layers"),
        (["--num-layers", "4"], "--num-layers 4: the model has 3 layers"),
        (["--exits", "4"], "--exits 4: the model has 3 layers"),
        (["--max-length", "1000"], "--max-length 1000: the model has 64 positions"),
        # infinite rates passed typer's `min=0` and trained to NaN weights
        (["--lr", "inf"], "--lr must be a finite number >= 0, got inf"),
        (["--weight-decay", "inf"], "--weight-decay must be a finite number >= 0, got inf"),
        # shorter than [CLS] [SEP]: the tokenizer could not truncate and passed whole texts on
        (["--max-length", "2"], "--max-length 2: sst-2 inputs take 2 special tokens"),
    ],
)
def test_cli_bad_numbers_refused(tiny, tmp_path, args, message):
    data, ckpt = tiny
    result = invoke_cli(
        ["finetune", "sst-2", "--model", str(ckpt), "--output", str(tmp_path / "o"), "--data", str(data),
         "--cpu", "--no-progress", "--max-length", "32", *args]
    )  # fmt: skip
    assert result.exit_code in (1, 2), result.output
    assert message in result.output and "Traceback" not in result.output, result.output
    assert not (tmp_path / "o" / "best").exists()
    if "--seed" in args or "--hub-path" in args:  # refused before anything is written
        assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kw",
    [
        dict(batch_size=0),
        dict(max_steps=0),
        dict(train_limit=0),
        dict(eval_every=0),
        dict(epochs=0.0),
        dict(warmup_ratio=2.0),
        dict(early_stopping_patience=0),
        dict(num_layers=0),
        dict(learning_rate=float("inf")),
        dict(weight_decay=float("nan")),
    ],
)
def test_api_bad_numbers_refused(tiny, tmp_path, kw):
    with pytest.raises(ValueError, match="must be"):
        finetune(_quick(tiny, tmp_path / "o", **kw), log=_quiet)


@pytest.mark.parametrize(
    "kw", [dict(dev_split="test"), dict(dev_split="test_mismatched"), dict(train_split="Test")]
)
def test_api_test_splits_refused_for_training_and_choosing(tiny, tmp_path, kw):
    """A test split has no labels (the hub's GLUE test labels are -1, ELUE's are in another file): choosing the
    best checkpoint on it failed deep in the data code with "Column 'label' doesn't exist"."""
    ((name, split),) = kw.items()
    with pytest.raises(ValueError, match=re.escape(f"{name} {split!r}: a test split has no labels")):
        finetune(_quick(tiny, tmp_path / "o", **kw), log=_quiet)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "typed", ["./nope", "nope/", "../nope", "~/nope-elue", "a/b/c", "no pe", "runs/nope"]
)
def test_cli_local_model_path_not_sent_to_hub(tmp_path, monkeypatch, typed):
    """`runs/nope` could be a hub id, but `runs/` is a folder here: a mistyped run (it took 78 s of hub
    retries offline to end in a network error)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    result = invoke_cli(["finetune", "sst-2", "--model", typed, "--output", "o"])
    assert result.exit_code == 1 and f"error: --model {typed}: no such folder" in result.output, result.output
    result = invoke_cli(["convert", typed, "--output", "c"])
    assert result.exit_code == 1 and f"error: SOURCE {typed}: no such folder" in result.output, result.output


def test_finetune_keeps_the_checkpoint_exit_layout(tiny, tmp_path):
    from elue.elasticbert.finetune_model import default_exits, load_model
    from elue.elasticbert.task_data import elue_task_spec

    ckpt = write_tiny_checkpoint(tmp_path / "two-exits", layers=3, exits=2)
    spec = elue_task_spec("sst-2")
    cfg = _cfg(tiny, tmp_path / "o", model=str(ckpt))
    assert load_model(cfg, spec).config.num_output_layers == 2  # as `convert --exits 2` left it
    cfg.num_output_layers = 3
    assert load_model(cfg, spec).config.num_output_layers == 3  # --exits still overrides

    class C:
        num_hidden_layers, num_output_layers = 6, 3

    assert [default_exits(C, n) for n in (None, 6, 5, 4, 3, 1)] == [3, 3, 2, 1, 1, 1]


def test_missing_tokenizer_and_run_folder_hint(tiny, tmp_path):
    import shutil

    _, ckpt = tiny
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ckpt / name, bare / name)
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"--model {bare}: no tokenizer files in this folder")
    ):
        finetune(_quick(tiny, tmp_path / "o", model=str(bare)), log=_quiet)
    run = tmp_path / "run"
    finetune(_quick(tiny, run, max_steps=1, eval_every=1), log=_quiet)
    result = invoke_cli(["finetune", "sst-2", "--model", str(run), "--output", str(tmp_path / "o2")])
    assert result.exit_code == 1 and f"did you mean {run / 'best'}?" in result.output, result.output
    result = invoke_cli(
        ["predict", "sst-2", "--model", str(run), "--output", str(tmp_path / "s"), "--static", "3"]
    )
    assert result.exit_code == 1 and f"did you mean {run / 'best'}?" in result.output, result.output


def test_a_pretraining_checkpoint_or_run_as_model_names_its_model_folder(tiny, tmp_path):
    """`--model` at a pre-training checkpoint (step-N/) or run folder said only 'no config.json, no model
    weights, no tokenizer files in this folder': the model is in the checkpoint's model/ folder, and it says so."""
    import shutil

    from elue.elasticbert.finetune_model import check_checkpoint_dir

    _, ckpt = tiny
    step = tmp_path / "run" / "checkpoints" / "step-0000020"
    (step / "model").mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(ckpt / name, step / "model" / name)
    (step / "optimizer.bin").write_bytes(b"")
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"did you mean its model folder {step / 'model'}?")
    ):
        check_checkpoint_dir(step)
    for folder in (tmp_path / "run", tmp_path / "run" / "checkpoints"):
        with pytest.raises(FileNotFoundError, match=re.escape(f"checkpoints, e.g. {step / 'model'}")):
            check_checkpoint_dir(folder)


def test_no_progress_silences_library_bars(tiny, tmp_path, monkeypatch):
    import datasets
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars
    from transformers.utils import logging as hf_logging

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # restored afterwards
    verbosity = hf_logging.get_verbosity()
    data, ckpt = tiny
    try:
        result = invoke_cli(
            ["finetune", "sst-2", "--model", str(ckpt), "--output", str(tmp_path / "o"), "--data", str(data),
             "--max-steps", "1", "--max-length", "32", "--cpu", "--no-progress"]
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "Loading weights" not in result.output and "Writing model shards" not in result.output
        assert "it/s" not in result.output, result.output
        assert are_progress_bars_disabled()
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
        enable_progress_bars()
        datasets.enable_progress_bars()
        datasets.logging.set_verbosity_warning()


def test_static_k_without_a_trained_pooler_is_announced(tiny, tmp_path):
    ckpt = write_tiny_checkpoint(tmp_path / "top-exits", layers=3, exits=2)  # exits at layers 2 and 3
    messages: list[str] = []
    cfg = _quick(
        tiny, tmp_path / "o1", model=str(ckpt), mode="static", num_layers=1, max_steps=1, eval_every=1
    )
    finetune(cfg, log=messages.append)
    assert any("layer 1's pooler starts from random weights" in m for m in messages)
    messages.clear()
    cfg = _quick(
        tiny, tmp_path / "o2", model=str(ckpt), mode="static", num_layers=2, max_steps=1, eval_every=1
    )
    finetune(cfg, log=messages.append)
    assert not any("pooler starts from random" in m for m in messages)


def test_cli_refusals_of_the_second_audit(tiny, tmp_path, monkeypatch):
    """Each one `error:` line before any training: a header-only split, a non-finite --epochs, an unknown
    --mixed-precision, an --output that is a file."""
    from typer.testing import CliRunner

    from elue.cli import app

    data, ckpt = tiny
    header_only = tmp_path / "data"
    shutil.copytree(data, header_only)
    (header_only / "sst-2" / "train.tsv").write_text("sentence\tlabel\n")
    (tmp_path / "afile").write_text("")
    base = ["finetune", "sst-2", "--model", str(ckpt), "--max-length", "32", "--cpu", "--no-progress"]
    cases = [
        (["--data", str(header_only), "--output", str(tmp_path / "o")], "train.tsv has no rows"),
        (["--data", str(data), "--epochs", "inf", "--output", str(tmp_path / "o")], "positive finite number"),
        (
            ["--data", str(data), "--mixed-precision", "fp8", "--output", str(tmp_path / "o")],
            "no, fp16 or bf16",
        ),
        (["--data", str(data), "--output", str(tmp_path / "afile")], "exists and is not a folder"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(app, [*base, *args])
        assert result.exit_code == 1 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


def test_cli_stop_after_before_the_first_evaluation(tiny, tmp_path, monkeypatch):
    """--stop-after before any evaluation: no best/ yet (best_dir null), stopped_by says why; the data folder
    read without --data ($ELUE_DATA_DIR) is the one config.json records."""
    from typer.testing import CliRunner

    from elue.cli import app

    data, ckpt = tiny
    monkeypatch.setenv("ELUE_DATA_DIR", str(data))
    out = tmp_path / "run"
    args = ["finetune", "sst-2", "--model", str(ckpt), "--output", str(out), "--max-length", "32", "--cpu",
            "--no-progress", "--batch-size", "8", "--eval-every", "100", "--stop-after", "1"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    assert summary["best_dir"] is None and summary["stopped_by"] == "stop-after"
    assert json.loads((out / "config.json").read_text())["data_dir"] == str(data)


def test_limits_draw_rows_at_random_not_the_first_ones():
    """ELUE's SST-2 files are nearly sorted by label: the first N rows were (almost) one class."""
    import datasets

    from elue.elasticbert.finetune import _sample

    ds = datasets.Dataset.from_dict({"label": [1] * 50 + [0] * 50})
    picked = _sample(ds, 20, seed=0)
    assert len(picked) == 20 and 0 < sum(picked["label"]) < 20  # both classes
    assert picked["label"] == _sample(ds, 20, seed=0)["label"]  # seeded: a resume reads the same rows
    assert _sample(ds, 100, seed=0) is ds and _sample(ds, None, seed=0) is ds


# --- several processes (torchrun) ------------------------------------------------------------------


def _torchrun_finetune(data: Path, ckpt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [str(Path(sys.executable).with_name("elue")),
           "finetune", "sst-2", "--model", str(ckpt), "--output", str(out), "--data", str(data),
           "--batch-size", "8", "--max-length", "32", "--lr", "1e-3", "--cpu", "--no-progress", *extra]  # fmt: skip
    proc = run_torchrun(cmd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(torchrun() is None, reason="no torchrun")
def test_two_processes_train_the_epochs_asked_and_resume_in_place(tmp_path):
    """Under torchrun each step takes a batch per process: 64 rows, batch 8, 2 processes = 4 steps an epoch.
    Before: 8 steps an epoch (--epochs 1 trained 2 epochs) and a resumed run re-read half the epoch's rows.
    Also (one set of runs for three findings, each run costs seconds of start-up): the learning rate schedule and
    a run killed before its first save, below."""

    data, ckpt = write_sst2(tmp_path / "data"), write_tiny_checkpoint(tmp_path / "ckpt")
    assert json.loads((ckpt / "config.json").read_text())["hidden_dropout_prob"] > 0  # the resume restores it
    args = ("--epochs", "2", "--eval-every", "2", "--warmup-ratio", "0.5")  # 8 steps, 4 of warm-up
    full = _torchrun_finetune(data, ckpt, tmp_path / "full", *args)
    summaries = [line for line in full.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, full.stdout  # the summary once, from the first process
    state = json.loads((tmp_path / "full" / "last" / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (8, 2, 0)
    assert json.loads(full.stdout[full.stdout.index("{") :])["best_dir"] is not None
    log = [json.loads(x)["step"] for x in (tmp_path / "full" / "log.jsonl").read_text().splitlines()]
    assert log == [2, 4, 6, 8]  # one line an evaluation (each process wrote its own: 2, 2, 4, 4, ...)

    out = tmp_path / "split"
    _torchrun_finetune(data, ckpt, out, *args, "--stop-after", "3")
    # the schedule counts steps of one batch per process, but Accelerate's prepared scheduler stepped once per
    # process at every step: under 2 processes warm-up and decay ran twice as fast (step 3 of 4 warm-up steps had
    # the rate of step 6, past its peak: 5e-4, not 7.5e-4; the second half of a run trained at 0)
    optimizer = torch.load(out / "last" / "optimizer.pt", weights_only=False)
    assert [g["lr"] for g in optimizer["param_groups"]] == pytest.approx([7.5e-4, 7.5e-4])
    assert torch.load(out / "last" / "scheduler.pt", weights_only=False)["last_epoch"] == 3
    _torchrun_finetune(data, ckpt, out, *args, "--resume")
    _assert_same_weights(tmp_path / "full/last", out / "last")

    # --resume with nothing to resume (a run killed before its first save): every process removed the run's files
    # (the second finding none, or failing where the first had been first) and each said it started from scratch;
    # the first process now does, once
    killed = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", killed)
    for name in ("best", "last"):
        shutil.rmtree(killed / name)
    again = _torchrun_finetune(data, ckpt, killed, *args, "--resume")
    assert again.stderr.count("starting from scratch") == 1, again.stderr
    assert json.loads((killed / "last" / "trainer_state.json").read_text())["global_step"] == 8


@pytest.fixture(scope="module")
def uneven_two_process_runs(tmp_path_factory):
    """One set of torchrun runs for the two resume tests below (each launch costs seconds of start-up): 88 rows,
    batch 8, so 11 batches over 2 processes (an uneven epoch of 6 steps), dropout on; an uninterrupted run, and one
    stopped at step 3 (its rng.pt kept aside) and resumed. Returns (full run, split run, the stop's rng.pt). (72
    rows would also be uneven, but there both processes' batches up to step 3 pad alike: equal RNG states.)"""
    if torchrun() is None:
        pytest.skip("no torchrun")
    root = tmp_path_factory.mktemp("uneven")
    data, ckpt = write_sst2(root / "data", n_train=88), write_tiny_checkpoint(root / "ckpt")
    assert json.loads((ckpt / "config.json").read_text())["hidden_dropout_prob"] > 0
    args = ("--epochs", "1", "--eval-every", "3")
    _torchrun_finetune(data, ckpt, root / "full", *args)
    _torchrun_finetune(data, ckpt, root / "split", *args, "--stop-after", "3")
    rng = torch.load(root / "split/last/rng.pt", weights_only=False)
    _torchrun_finetune(data, ckpt, root / "split", *args, "--resume")
    return root / "full", root / "split", rng


def test_two_processes_resume_an_epoch_of_uneven_batches_in_place(uneven_two_process_runs):
    """88 rows, batch 8: 11 batches over 2 processes, so Accelerate completes the last step with rows from the
    start of its loader. A resumed run's loader started at the resume point, so that step took other rows and
    the run ended 2e-4 off the uninterrupted one; the resumed loader is now the epoch's, its first steps skipped."""

    full, split, _ = uneven_two_process_runs
    assert json.loads((full / "last" / "trainer_state.json").read_text())["global_step"] == 6
    _assert_same_weights(full / "last", split / "last")


def test_two_processes_resume_with_each_process_its_own_dropout_rng(uneven_two_process_runs):
    """rng.pt held the first process's RNG state, and a resume gave it to every process; but the processes'
    batches are padded to other lengths, so their dropout had drawn other amounts, and a resumed run went on with
    other dropout masks in the second process (480 rows, stop at step 7 of 30 an epoch: 0.11 off at the end).
    Each process now gets its own state back."""

    full, split, rng = uneven_two_process_runs
    assert len(rng["processes"]) == 2 and not torch.equal(
        rng["processes"][0]["torch"], rng["processes"][1]["torch"]
    )
    _assert_same_weights(full / "last", split / "last")


def test_a_resume_in_another_number_of_processes_is_refused(tmp_path):
    """Its position in the epoch counts steps of one batch per process: refused, not silently misread."""
    from elue.elasticbert.finetune import finetune
    from elue.elasticbert.finetune_config import FinetuneConfig

    data, ckpt = write_sst2(tmp_path / "data"), write_tiny_checkpoint(tmp_path / "ckpt")
    kw = dict(task="sst-2", model=str(ckpt), output_dir=str(tmp_path / "run"), data_dir=str(data))
    kw.update(batch_size=8, max_steps=4, max_length=32, cpu=True, progress=False, stop_after=2)
    finetune(FinetuneConfig(**kw), log=lambda m: None)
    state_file = tmp_path / "run" / "last" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    assert state["processes"] == 1
    state_file.write_text(json.dumps(dict(state, processes=2)))
    with pytest.raises(ValueError, match=r"trained in 2 process\(es\), this session has 1"):
        finetune(FinetuneConfig(**dict(kw, resume=True, stop_after=None)), log=lambda m: None)


def test_checkpoint_with_heads_of_another_label_count_starts_them_fresh(tiny, tmp_path):
    """Fine-tuning a model fine-tuned on a 2-label task for STS-B (1 output) or SNLI (3): the heads cannot be
    reused; the rest is. Before: transformers' size-mismatch RuntimeError, a traceback."""
    from safetensors.torch import load_file

    data, ckpt = tiny  # heads of 2 outputs
    sts = data / "sts-b"
    sts.mkdir(exist_ok=True)
    rows = "".join(f"the film was good\tthe plot was bad\t{i % 5}.0\n" for i in range(8))
    for split in ("train", "dev"):
        (sts / f"{split}.tsv").write_text("sentence1\tsentence2\tlabel\n" + rows)
    messages = []
    res = finetune(_cfg(tiny, tmp_path / "o", task="sts-b", max_steps=1, eval_every=1), log=messages.append)
    assert res.global_step == 1
    assert any("2 outputs" in m and "sts-b needs 1" in m for m in messages), messages
    before, after = load_file(ckpt / "model.safetensors"), _weights(tmp_path / "o" / "last")
    assert after["classifiers.0.weight"].shape[0] == 1
    assert after["elasticbert.embeddings.word_embeddings.weight"].shape == (
        before["elasticbert.embeddings.word_embeddings.weight"].shape
    )


def test_a_regression_checkpoint_trained_on_for_classification_is_saved_as_a_classifier(tiny, tmp_path):
    """An STS-B checkpoint (problem_type "regression") fine-tuned on SST-2: the saved model must be a 2-class
    classifier. Before, problem_type stayed "regression", so the saved model called itself a regressor: its own
    loss took MSE over (B, 2) logits (a shape error), and `elue predict --engine early-exit` refused the entropy
    rule as "a 1-output regression head" and wrote logit 0 as the prediction of the patience rule."""
    from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification
    from elue.elasticbert.early_exit import early_exit

    data, ckpt = tiny
    sts = data / "sts-b"
    sts.mkdir(exist_ok=True)
    rows = "".join(f"the film was good\tthe plot was bad\t{i % 5}.0\n" for i in range(8))
    for split in ("train", "dev"):
        (sts / f"{split}.tsv").write_text("sentence1\tsentence2\tlabel\n" + rows)
    finetune(_cfg(tiny, tmp_path / "sts", task="sts-b", max_steps=1, eval_every=1), log=_quiet)
    sts_best = tmp_path / "sts" / "best"
    assert ElasticBertConfig.from_pretrained(sts_best).problem_type == "regression"

    finetune(_cfg(tiny, tmp_path / "sst", model=str(sts_best), max_steps=1, eval_every=1), log=_quiet)
    model = ElasticBertForSequenceClassification.from_pretrained(tmp_path / "sst" / "best").eval()
    assert model.config.num_labels == 2 and not model.is_regression
    ids = torch.tensor([[2, 5, 6, 3], [2, 11, 12, 3]])
    out = model(ids, labels=torch.tensor([0, 1]))  # cross-entropy, not MSE over the two logits
    assert torch.isfinite(out.loss)
    res = early_exit(model, ids, rule="entropy", threshold=0.5)
    assert res.predictions.dtype == torch.long and res.logits.shape == (2, 2)


def test_a_half_precision_checkpoint_trains_in_float32(tiny, tmp_path):
    """A checkpoint saved in bfloat16: transformers loads it as bfloat16, and fine-tuning trained it so, where
    AdamW's small updates round away (about four in five weights of a layer did not move in 8 steps at lr 2e-5)
    and the result was saved in bfloat16. The weights are trained in float32 (mixed precision is
    --mixed-precision's business) and saved so."""
    from elue.elasticbert import ElasticBertForSequenceClassification

    data, ckpt = tiny
    half = tmp_path / "bf16"
    ElasticBertForSequenceClassification.from_pretrained(ckpt).to(torch.bfloat16).save_pretrained(half)
    for f in ckpt.iterdir():  # the tokenizer files
        if not (half / f.name).exists():
            shutil.copy(f, half / f.name)
    assert _weights(half)["classifiers.0.weight"].dtype == torch.bfloat16
    finetune(_cfg(tiny, tmp_path / "o", model=str(half), learning_rate=2e-5, max_steps=8), log=_quiet)
    before, after = _weights(half), _weights(tmp_path / "o" / "last")
    key = "elasticbert.encoder.layer.0.attention.self.query.weight"
    assert after[key].dtype == torch.float32
    assert bool((after[key] != before[key].float()).all()), "some weights were not updated"


def test_a_checkpoint_with_only_vocab_txt_gets_the_bert_tokenizer(tiny, tmp_path):
    """The released `fnlp/elasticbert-*` checkpoints hold config.json, the weights and vocab.txt, no
    tokenizer_config.json (their model card loads `BertTokenizer` by hand). AutoTokenizer knows no tokenizer for
    `model_type: elasticbert`, so `elue finetune --model` such a folder failed with transformers' "Couldn't
    instantiate the backend tokenizer ... install sentencepiece or tiktoken"; it now gets BERT's WordPiece
    tokenizer of that vocab.txt, uncased as BERT's default (and `elue predict` the same)."""
    from elue.elasticbert.finetune_model import load_tokenizer

    data, ckpt = tiny
    bare = tmp_path / "released"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "vocab.txt"):
        shutil.copy(ckpt / name, bare / name)
    words = ["the", "film", "was", "good"]
    assert load_tokenizer(bare).tokenize("The Film was GOOD") == words
    res = finetune(_cfg(tiny, tmp_path / "o", model=str(bare), max_steps=1), log=_quiet)
    assert res.global_step == 1
    assert load_tokenizer(tmp_path / "o" / "best").tokenize("The Film was GOOD") == words
    # a folder without any tokenizer file is still refused, not given a tokenizer of special tokens only
    (bare / "vocab.txt").unlink()
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        finetune(_cfg(tiny, tmp_path / "o2", model=str(bare), max_steps=1), log=_quiet)


@pytest.mark.parametrize(
    ("file", "logged"), [("optimizer.pt", True), ("scheduler.pt", True), ("rng.pt", False)]
)
def test_a_kill_during_the_first_save_resumes_from_scratch(tiny, tmp_path, monkeypatch, file, logged):
    """The first evaluation saves best/ and then last/: a kill while last/ was first written (or before its
    evaluation was logged) left best/ and no last/, and --resume (which scripts always pass) was refused ('use
    --overwrite') where a kill a moment earlier started the run again. It now starts again, and ends with the
    uninterrupted run's weights; a run whose best/ is not its first evaluation's is still refused."""
    full = finetune(_cfg(tiny, tmp_path / "full", max_steps=4, eval_every=2), log=_quiet)
    out = tmp_path / "part"
    with monkeypatch.context() as m:
        _kill_at_save(m, file, call=1)
        with pytest.raises(SystemExit):
            finetune(_cfg(tiny, out, max_steps=4, eval_every=2), log=_quiet)
    if not logged:
        (out / "log.jsonl").unlink()
    assert (out / "best").is_dir() and not (out / "last").exists()
    again = finetune(_cfg(tiny, out, max_steps=4, eval_every=2, resume=True), log=_quiet)
    assert again.global_step == full.global_step == 4
    _assert_same_weights(tmp_path / "full" / "last", out / "last")
    log = [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()]
    assert log == [2, 4]
    assert sorted(p.name for p in out.iterdir()) == ["best", "config.json", "last", "log.jsonl"]
    shutil.rmtree(out / "last")  # two evaluations logged: not a kill during the first save
    with pytest.raises(FileExistsError, match="no last/trainer_state.json to resume from"):
        finetune(_cfg(tiny, out, max_steps=4, eval_every=2, resume=True), log=_quiet)


@pytest.mark.parametrize(
    ("command", "module", "name"),
    [("finetune", "finetune", "finetune"), ("predict", "export", "predict_submission")],
)
def test_threads_option_sets_torchs_threads_before_the_work(
    tiny, tmp_path, monkeypatch, command, module, name
):
    """--threads N: the work runs with N intra-op threads (torch's default, one per core, spins at barriers on
    a busy machine)."""
    import importlib

    from typer.testing import CliRunner

    from elue.cli import app

    _, ckpt = tiny
    seen = []

    def record(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        seen.append(torch.get_num_threads())
        raise ValueError("stopped by the test")

    monkeypatch.setattr(importlib.import_module(f"elue.elasticbert.{module}"), name, record)
    before = torch.get_num_threads()
    try:
        args = [command, "sst-2", "--model", str(ckpt), "--output", str(tmp_path / "o"), "--threads", "1"]
        more = ["--static", "1"] if command == "predict" else []
        result = CliRunner().invoke(app, [*args, "--data", str(tmp_path), *more])
        assert result.exit_code == 1 and "stopped by the test" in result.output, result.output
        assert seen == [1]
    finally:
        torch.set_num_threads(before)
    assert CliRunner().invoke(app, [*args[:-1], "0"]).exit_code == 2  # at least 1


def test_load_model_says_in_words_which_weights_start_fresh(tiny, tmp_path, capfd):
    """A checkpoint without exit heads (as `elue convert` writes) is meant to be fine-tuned: one note, not
    transformers' coloured MISSING table; a checkpoint lacking encoder weights gets a warning naming them."""
    from safetensors.torch import load_file, save_file

    from elue.elasticbert.finetune_model import load_model
    from elue.elasticbert.task_data import elue_task_spec

    _, ckpt = tiny
    bare = tmp_path / "bare"
    shutil.copytree(ckpt, bare)
    weights = load_file(str(bare / "model.safetensors"))
    save_file(
        {k: v for k, v in weights.items() if not k.startswith("classifier")}, str(bare / "model.safetensors")
    )
    said: list[str] = []
    cfg = _cfg(tiny, tmp_path / "out", model=str(bare))
    load_model(cfg, elue_task_spec("sst-2"), log=said.append)
    assert said == [
        f"note: {bare} has no weights for 3 exit head(s), which start from random weights "
        "(checkpoints from `elue convert` or pre-training have none)"
    ]
    out = capfd.readouterr()
    assert "LOAD REPORT" not in out.err + out.out and "MISSING" not in out.err + out.out
    del weights["elasticbert.encoder.layer.0.output.dense.weight"]
    save_file(weights, str(bare / "model.safetensors"))
    said.clear()
    load_model(cfg, elue_task_spec("sst-2"), log=said.append)
    assert said == [
        f"warning: {bare} lacks 1 weight(s) of the encoder, which start from random values: "
        "elasticbert.encoder.layer.0.output.dense.weight"
    ]
    said.clear()
    load_model(_cfg(tiny, tmp_path / "out"), elue_task_spec("sst-2"), log=said.append)
    assert said == []  # a complete checkpoint: nothing to say


def test_resume_refusals_name_options_the_command_has():
    """A refused --resume names each differing setting by its option; every name it can give must be one of
    `elue finetune`'s (gradient equilibrium was called --gradient-equilibrium, the option is --ge/--no-ge)."""
    import dataclasses
    import re

    import typer

    from elue.cli import app
    from elue.elasticbert.finetune_checkpoints import _OPTION_NAMES, RESUME_MAY_CHANGE

    command = typer.main.get_command(app).commands["finetune"]
    options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)} | {"TASK"}
    for field in dataclasses.fields(FinetuneConfig):
        if field.name in RESUME_MAY_CHANGE:
            continue
        shown = _OPTION_NAMES.get(field.name, "--" + field.name.replace("_", "-"))
        if shown == f"FinetuneConfig.{field.name}":  # no option: set through the Python API only
            assert not any(field.name.replace("_", "-") in o for o in options), field.name
            continue
        names = re.findall(r"--[a-z-]+|TASK", shown)
        assert names and set(names) <= options, (field.name, shown)


def test_jsonable_nan_as_none_also_for_numpy_scalars():
    """points.json is written with nan_as_none: a numpy NaN (a Pearson of constant predictions) was kept as NaN,
    which json.dumps writes as `NaN`, not JSON."""
    import math

    import numpy as np

    from elue.elasticbert.finetune_checkpoints import _jsonable

    data = {1: [np.float64("nan"), float("inf"), np.int64(3)], "x": (0.5,)}
    assert _jsonable(data, nan_as_none=True) == {"1": [None, None, 3], "x": [0.5]}
    kept = _jsonable(data)  # log.jsonl's default: numbers as they are
    assert math.isnan(kept["1"][0]) and kept["1"][1] == math.inf and type(kept["1"][2]) is int
