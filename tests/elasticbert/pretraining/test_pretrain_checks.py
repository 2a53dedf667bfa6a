"""What the trainer refuses or reports: output folders with other checkpoints, resumes with changed settings,
damaged checkpoints, start-up failures that must leave no half-written output; and the logging window."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from elue.elasticbert.pretraining.config import PretrainConfig, SettingsError
from elue.elasticbert.pretraining.trainer import pretrain

TWO_LAYERS = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def _run(settings: dict) -> dict:
    return pretrain(PretrainConfig.from_dict(settings))


def _log(out_dir) -> list[dict]:
    with (Path(out_dir) / "train_log.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.fixture
def done_run(tiny_settings):
    """A finished 4-step run with checkpoints at steps 2 and 4."""
    s = tiny_settings(max_steps=4, save_steps=2, max_seq_length=32, model_config=dict(TWO_LAYERS))
    _run(s)
    return s


def test_fresh_or_older_start_in_a_folder_with_checkpoints_is_refused(done_run):
    ckpts = Path(done_run["output_dir"]) / "checkpoints"
    with pytest.raises(SettingsError, match="already holds checkpoints .*resume_from_checkpoint=latest"):
        _run(dict(done_run, resume_from_checkpoint=None, max_steps=3))
    with pytest.raises(SettingsError, match="is older than"):
        _run(dict(done_run, resume_from_checkpoint=str(ckpts / "step-0000002")))
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000002", "step-0000004"]  # nothing rotated away


def test_every_exit_is_logged_as_a_window_mean(tiny_settings):
    """logging_steps a multiple of the number of groups: every exit still appears, averaged over the steps it
    was active in; the loss column is the window's mean total loss (the per-step log's mean)."""
    base = tiny_settings(max_steps=4, max_seq_length=32, model_config=dict(TWO_LAYERS))  # groups {1,2}, {2}
    every = _log(_run(base)["output_dir"])
    windowed = _log(_run(dict(base, logging_steps=2, output_dir=base["output_dir"] + "-2"))["output_dir"])
    assert [r["step"] for r in windowed] == ["2", "4"]
    for w, (a, b) in zip(windowed, [every[0:2], every[2:4]], strict=True):
        assert float(w["loss"]) == pytest.approx((float(a["loss"]) + float(b["loss"])) / 2, rel=1e-5)
        assert float(w["mlm_1"]) == pytest.approx(float(a["mlm_1"]), rel=1e-5)  # exit 1: step 1 only
        assert float(w["mlm_2"]) == pytest.approx((float(a["mlm_2"]) + float(b["mlm_2"])) / 2, rel=1e-5)
        assert all(w[k] for k in ("mlm_1", "mlm_2", "sop_1", "sop_2"))
