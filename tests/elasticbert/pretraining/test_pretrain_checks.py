"""What the trainer refuses or reports: output folders with other checkpoints, resumes with changed settings,
damaged checkpoints, start-up failures that must leave no half-written output; and the logging window."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

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


def test_resume_with_other_settings_is_refused_and_max_steps_may_grow(done_run):
    out = Path(done_run["output_dir"])
    saved = (out / "pretrain_config.json").read_text()
    with pytest.raises(SettingsError) as err:
        _run(dict(done_run, learning_rate=1e-2, optimizer="lamb", seed=7, max_seq_length=24, max_steps=6))
    for diff in (
        "learning_rate: 0.003 -> 0.01",
        "optimizer: 'adamw' -> 'lamb'",
        "seed: 42 -> 7",
        "max_seq_length",
    ):
        assert diff in str(err.value)
    with pytest.raises(SettingsError, match=r"global batch .*: 8 -> 16"):
        _run(dict(done_run, per_device_batch_size=16, max_steps=6))
    with pytest.raises(SettingsError, match=r"data streams \(num_data_shards\): 1 -> 2"):
        _run(dict(done_run, num_data_shards=2, max_steps=6))
    with pytest.raises(SettingsError, match="max_steps 3 is below the step of the checkpoint"):
        _run(dict(done_run, max_steps=3))
    assert (out / "pretrain_config.json").read_text() == saved  # not overwritten by a refused run
    # more steps: the resumed step's lr follows the new schedule (linear, 1 warm-up step, 6 steps), not 0
    assert _run(dict(done_run, max_steps=6, logging_steps=1))["step"] == 6
    lrs = [float(r["lr"]) for r in _log(out)]
    assert lrs[4] == pytest.approx(3e-3 * 2 / 5) and lrs[5] == pytest.approx(3e-3 * 1 / 5)


def test_damaged_checkpoints_are_named(done_run):
    ckpt = Path(done_run["output_dir"]) / "checkpoints" / "step-0000004"
    more = dict(done_run, max_steps=6)
    (ckpt / "data-rank0.json").unlink()
    with pytest.raises(SettingsError, match=r"step-0000004: no data position for stream\(s\) \[0\]"):
        _run(more)
    (ckpt / "data-rank0.json").write_text('{"0": [0, 1, 0]}')
    optimizer = ckpt / "state" / "optimizer.bin"
    good = optimizer.read_bytes()
    optimizer.write_bytes(b"garbage")
    with pytest.raises(SettingsError, match=r"step-0000004: .*optimizer\.bin cannot be loaded"):
        _run(more)
    optimizer.write_bytes(good)
    (ckpt / "trainer_state.json").write_text("{not json")
    with pytest.raises(SettingsError, match=r"step-0000004: trainer_state\.json cannot be read"):
        _run(more)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", "data stream 0/1 has no usable document"),
        ("latin-1", "cannot read the training data .*UnicodeDecodeError"),
        ("too long", "max_seq_length 128 is above the model's max_position_embeddings 64"),
        ("streams", "per_device_batch_size 8 is not a multiple of the 3 data streams per process"),
        ("hub", "hub_datasets: cannot load 'json'"),
    ],
)
def test_start_up_failures_write_nothing(tiny_settings, tmp_path, case, message):
    s = tiny_settings(max_steps=2, model_config=dict(TWO_LAYERS), max_seq_length=32)
    if case == "empty":
        (tmp_path / "empty.txt").write_text("\n\n  \n")
        s["train_files"] = str(tmp_path / "empty.txt")  # a string is a one-file list
    elif case == "latin-1":
        (tmp_path / "latin1.txt").write_bytes("Caf\u00e9 cr\u00e8me, d\u00e9j\u00e0 vu.\n".encode("latin-1"))
        s["train_files"] = [str(tmp_path / "latin1.txt")]
    elif case == "too long":
        s["max_seq_length"] = 128
    elif case == "streams":
        s["num_data_shards"] = 3
    elif case == "hub":
        s["hub_datasets"] = [{"path": "json", "data_files": str(tmp_path / "missing.jsonl")}]
        s["train_files"] = []
    with pytest.raises(SettingsError, match=message):
        _run(s)
    assert not Path(s["output_dir"]).exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="fp16 is refused on the CPU only")
def test_fp16_on_the_cpu_is_refused(tiny_settings):
    s = tiny_settings(max_steps=1, mixed_precision="fp16")
    with pytest.raises(SettingsError, match="fp16 needs a GPU"):
        _run(s)
    assert not Path(s["output_dir"]).exists()
