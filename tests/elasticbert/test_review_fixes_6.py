"""Sixth review round of ElasticBERT fine-tuning, loading and export: each test failed before its fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from elasticbert_fixtures import write_sst2, write_tiny_checkpoint
from subprocesses import child_env, free_port, torchrun


def _torchrun_finetune(data: Path, ckpt: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [torchrun(), "--nproc_per_node", "2", "--master_port", str(free_port()), str(Path(sys.executable).with_name("elue")),
           "finetune", "sst-2", "--model", str(ckpt), "--output", str(out), "--data", str(data),
           "--batch-size", "8", "--max-length", "32", "--lr", "1e-3", "--cpu", "--no-progress", *extra]  # fmt: skip
    proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(torchrun() is None, reason="no torchrun")
def test_two_processes_train_the_epochs_asked_and_resume_in_place(tmp_path):
    """Under torchrun each step takes a batch per process: 64 rows, batch 8, 2 processes = 4 steps an epoch.
    Before: 8 steps an epoch (--epochs 1 trained 2 epochs) and a resumed run re-read half the epoch's rows."""
    from safetensors.torch import load_file

    data, ckpt = write_sst2(tmp_path / "data"), write_tiny_checkpoint(tmp_path / "ckpt")
    assert json.loads((ckpt / "config.json").read_text())["hidden_dropout_prob"] > 0  # the resume restores it
    full = _torchrun_finetune(data, ckpt, tmp_path / "full", "--epochs", "2", "--eval-every", "2")
    summaries = [line for line in full.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1, full.stdout  # the summary once, from the first process
    state = json.loads((tmp_path / "full" / "last" / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["step_in_epoch"]) == (8, 2, 0)
    assert json.loads(full.stdout[full.stdout.index("{") :])["best_dir"] is not None

    out = tmp_path / "split"
    _torchrun_finetune(data, ckpt, out, "--epochs", "2", "--eval-every", "2", "--stop-after", "3")
    _torchrun_finetune(data, ckpt, out, "--epochs", "2", "--eval-every", "2", "--resume")
    a, b = load_file(tmp_path / "full/last/model.safetensors"), load_file(out / "last/model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)


def test_a_resume_in_another_number_of_processes_is_refused(tmp_path):
    """Its position in the epoch counts steps of one batch per process: refused, not silently misread."""
    from elue.elasticbert.finetune import FinetuneConfig, finetune

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


def _tiny(**kw):
    from elue.elasticbert import ElasticBertConfig

    base = dict(
        vocab_size=50, hidden_size=32, num_hidden_layers=4, num_attention_heads=4, intermediate_size=64
    )
    return ElasticBertConfig(**{**base, **kw})


def test_load_report_does_not_contradict_the_renumbered_exits(tmp_path, caplog):
    """A model with other exits than its checkpoint takes each exit's classifier by layer; transformers' load
    report counted them by position. Before: a top-2-exit checkpoint loaded with 4 exits was reported as
    'classifiers.{2, 3} MISSING' (they were loaded) while exits 1, 2 were the fresh ones."""
    from transformers.utils import logging as hf_logging

    from elue.elasticbert import ElasticBertForSequenceClassification

    torch.manual_seed(0)
    ElasticBertForSequenceClassification(_tiny(num_output_layers=2)).save_pretrained(tmp_path / "top2")
    ElasticBertForSequenceClassification(_tiny()).save_pretrained(tmp_path / "all4")
    old = hf_logging.get_verbosity()
    hf_logging.set_verbosity_warning()
    hf_logging.enable_propagation()  # to caplog
    try:
        more, info = ElasticBertForSequenceClassification.from_pretrained(
            tmp_path / "top2", num_output_layers=4, output_loading_info=True
        )
        err, _ = caplog.text, caplog.clear()
        assert "classifiers." not in err, err
        assert "no classifier for the exit(s) on layer(s) 1, 2" in err
        assert {k for k in info["missing_keys"] if k.startswith("classifiers.")} == {
            f"classifiers.{j}.{w}" for j in (0, 1) for w in ("weight", "bias")
        }
        # fewer exits than the checkpoint: the ones used are not reported as unexpected either
        fewer, info = ElasticBertForSequenceClassification.from_pretrained(
            tmp_path / "all4", num_output_layers=2, output_loading_info=True
        )
        assert "classifiers." not in caplog.text, caplog.text
        assert not info["missing_keys"] and not info["unexpected_keys"], info
    finally:
        hf_logging.disable_propagation()
        hf_logging.set_verbosity(old)


def test_offline_hub_id_in_the_cache_is_used_not_called_a_missing_folder(tmp_path):
    """HF_HUB_OFFLINE is how a downloaded hub model is used without network: `--model org/name` must load from
    the cache, as `from_pretrained` does. Before: 'no such folder'. One that is not cached still fails at once."""
    from elue.elasticbert.export import make_points, predict_submission

    data, ckpt = write_sst2(tmp_path / "data"), write_tiny_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "sub"
    predict_submission(ckpt, "sst-2", out, make_points(static=[3]), data_dir=data, progress=False, log=str)
    cache = tmp_path / "hub"
    snapshot = cache / "models--someorg--tiny-sst2" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (cache / "models--someorg--tiny-sst2" / "refs").mkdir()
    (cache / "models--someorg--tiny-sst2" / "refs" / "main").write_text("abc123")
    for f in ckpt.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    env = dict(child_env(), HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1")
    elue = str(Path(sys.executable).with_name("elue"))
    common = ["--output", str(tmp_path / "hubsub"), "--data", str(data), "--static", "3", "--no-progress"]
    proc = subprocess.run([elue, "predict", "sst-2", "--model", "someorg/tiny-sst2", *common], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "hubsub" / "sst-2" / "static_k3.tsv").read_text() == (
        out / "sst-2" / "static_k3.tsv"
    ).read_text()
    proc = subprocess.run([elue, "predict", "sst-2", "--model", "someorg/not-cached", *common], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: --model someorg/not-cached: no such folder, and not in the Hugging Face cache (HF_HUB_OFFLINE)"
    )


def _cli(args):
    from typer.testing import CliRunner

    from elue.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_convert_overwrite_refuses_a_fine_tuning_run_folder(tmp_path):
    """A run folder's config.json holds the run's options, not a model: `convert --output RUN --overwrite` deleted
    the whole run (best/, last/, log.jsonl). A model folder's config.json names its model_type."""
    from transformers import BertConfig, BertModel

    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(bert)  # fmt: skip
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "sst-2", "model": "x", "output_dir": str(run)}))
    (run / "log.jsonl").write_text("{}\n")
    result = _cli(["convert", bert, "--output", run, "--overwrite"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: --output {run} holds files but no model's config.json (not a model folder): "
        "choose another folder"
    )
    assert (run / "best").is_dir() and (run / "log.jsonl").is_file()
    # a model folder is still replaced
    assert _cli(["convert", bert, "--output", tmp_path / "m"]).exit_code == 0
    assert _cli(["convert", bert, "--output", tmp_path / "m", "--layers", "1", "--overwrite"]).exit_code == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["num_hidden_layers"] == 1
