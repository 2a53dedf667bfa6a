"""What the trainer refuses or reports: output folders with other checkpoints (or that cannot be folders), resumes
with changed settings, damaged checkpoints, tokenizers without the special tokens, corpora without a usable
document, start-up failures that must leave no half-written output; and the logging window."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from subprocesses import run_torchrun, torchrun

from elue.elasticbert.pretraining.config import PretrainConfig, SettingsError
from elue.elasticbert.pretraining.trainer import pretrain

from .tiny_models import TWO_LAYERS


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


@pytest.mark.parametrize(("limit", "kept"), [(2, [4, 5]), (1, [5]), (None, [1, 2, 3, 4, 5])])
def test_save_total_limit_keeps_the_newest_checkpoints(tiny_settings, limit, kept):
    """A save every step: `save_total_limit` newest ones stay (the one just saved counting among them), `null`
    keeps all, and the newest is the one `latest` resumes from. (Every other test saves at most two.)"""
    s = tiny_settings(
        max_steps=5, save_steps=1, save_total_limit=limit, max_seq_length=32, model_config=dict(TWO_LAYERS)
    )
    _run(s)
    ckpts = Path(s["output_dir"]) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == [f"step-{k:07d}" for k in kept]
    assert all((ckpts / f"step-{k:07d}" / "COMPLETE").exists() for k in kept)


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
    # started by torchrun on 2 processes with num_data_shards unset (2 streams), resumed by 1: say what to set
    from elue.elasticbert.pretraining.checkpoints import check_resume

    ckpt = out / "checkpoints" / "step-0000004"
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["world_size"], state["settings"]["per_device_batch_size"] = 2, 4
    cfg = PretrainConfig.from_dict(dict(done_run, max_steps=6))
    with pytest.raises(
        SettingsError,
        match=r"2 -> 1 \(num_data_shards unset .* set num_data_shards=2 to resume on 1 process\)",
    ):
        check_resume(cfg, ckpt, state, world=1)
    check_resume(
        PretrainConfig.from_dict(dict(done_run, max_steps=6, num_data_shards=2)), ckpt, state, world=1
    )
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


def test_a_checkpoint_of_another_engine_and_damaged_fsdp_shards_are_named(done_run, monkeypatch):
    """FSDP's sharded state resumes only under FSDP, whole files only without it (Accelerate reported a missing
    pytorch_model.bin, or tracebacks on every process); torch's error for damaged FSDP shards (a BaseException)
    is one line too."""
    from accelerate import Accelerator
    from torch.distributed.checkpoint.api import CheckpointException

    from elue.elasticbert.pretraining.checkpoints import check_engine

    ckpt = Path(done_run["output_dir"]) / "checkpoints" / "step-0000004"
    more = dict(done_run, max_steps=6)
    with pytest.raises(
        SettingsError, match=r"step-0000004 was saved without FSDP .*this run shards with FSDP"
    ):
        check_engine(ckpt, True, "FSDP")
    (ckpt / "state" / "pytorch_model_fsdp_0").mkdir()
    with pytest.raises(SettingsError, match=r"step-0000004 holds FSDP's state, .*\(one plain process\)"):
        _run(more)
    (ckpt / "state" / "pytorch_model_fsdp_0").rmdir()
    (ckpt / "state" / "pytorch_model_fsdp.bin").touch()  # FSDP_STATE_DICT_TYPE=FULL_STATE_DICT's file
    check_engine(ckpt, True, "FSDP")
    (ckpt / "state" / "pytorch_model_fsdp.bin").unlink()

    def damaged(self, path):  # noqa: ANN001, ANN202
        raise CheckpointException("ranks:[0]", {0: (FileNotFoundError("no .metadata"), None)})

    monkeypatch.setattr(Accelerator, "load_state", damaged)
    with pytest.raises(
        SettingsError, match=r"step-0000004: .*state cannot be loaded \(FileNotFoundError: no \.metadata"
    ):
        _run(more)


def test_incomplete_checkpoint_folders_are_never_resumed_and_go_once_a_later_one_is_complete(
    done_run, capsys
):
    """A run killed while saving leaves a step folder without COMPLETE: `latest` passes over it (also when it is
    the newest), an explicit path to it is refused, and the next complete save of a later step removes it (but
    neither a complete checkpoint nor an incomplete one of a step the run has not saved yet)."""
    import shutil

    ckpts = Path(done_run["output_dir"]) / "checkpoints"
    for step in (3, 5, 9):  # killed while saving: everything but the COMPLETE marker, at its own step
        half = ckpts / f"step-{step:07d}"
        shutil.copytree(ckpts / "step-0000004", half)
        (half / "COMPLETE").unlink()
        state = json.loads((half / "trainer_state.json").read_text())
        (half / "trainer_state.json").write_text(json.dumps(dict(state, step=step)))
    (ckpts / "step-0000005" / "state" / "optimizer.bin").write_bytes(b"cut short")  # a save cut mid-file
    with pytest.raises(SettingsError, match=r"step-0000005 is not a complete checkpoint \(no COMPLETE\)"):
        _run(dict(done_run, max_steps=6, resume_from_checkpoint=str(ckpts / "step-0000005")))
    capsys.readouterr()
    assert _run(dict(done_run, max_steps=6, save_total_limit=None))["step"] == 6
    assert re.search(r"resumed from \S*step-0000004 at step 4", capsys.readouterr().out)
    assert [r["step"] for r in _log(done_run["output_dir"])] == ["1", "2", "3", "4", "5", "6"]
    names = sorted(p.name for p in ckpts.iterdir())
    assert names == ["step-0000002", "step-0000004", "step-0000006", "step-0000009"]
    assert all((ckpts / n / "COMPLETE").exists() for n in names[:3])
    assert not (ckpts / "step-0000009" / "COMPLETE").exists()  # the run never saved step 9: left as it is


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("empty", r"train_files: .*empty.txt holds no text \(empty, or only blank lines\)"),
        ("empty eval", r"eval_files: .*empty.txt holds no text"),
        ("no model folder", "model_name_or_path: no such folder ./no-such-model"),
        ("latin-1", r"train_files: .*latin1\.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"),
        ("too long", "max_seq_length 128 is above the model's max_position_embeddings 64"),
        ("streams", "per_device_batch_size 8 is not a multiple of the 3 data streams per process"),
        ("hub", "hub_datasets: cannot load 'json'"),
        ("bad json", r"cannot read the training data \(.*\): .*JSON parse error"),
    ],
)
def test_start_up_failures_write_nothing(tiny_settings, tmp_path, case, message):
    s = tiny_settings(max_steps=2, model_config=dict(TWO_LAYERS), max_seq_length=32)
    if case == "empty":
        (tmp_path / "empty.txt").write_text("\n\n  \n")
        s["train_files"] = str(tmp_path / "empty.txt")  # a string is a one-file list
    elif case == "empty eval":
        (tmp_path / "empty.txt").write_text("")
        s["eval_files"] = [str(tmp_path / "empty.txt")]
    elif case == "no model folder":
        s["model_name_or_path"] = "./no-such-model"
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
    elif case == "bad json":  # a record cut short: pyarrow's error (a traceback) until it was named
        records = [json.dumps({"text": f"Record number {i}. It has two sentences."}) for i in range(9)]
        (tmp_path / "docs.jsonl").write_text("\n".join([*records[:4], '{"text": "cut sh', *records[4:]]))
        s["hub_datasets"] = [{"path": "json", "data_files": str(tmp_path / "docs.jsonl")}]
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


def test_a_finished_run_run_again_does_nothing(done_run, capsys):
    out = Path(done_run["output_dir"])
    logs = {
        name: (out / name).read_text() for name in ("train_log.csv", "eval_log.csv") if (out / name).exists()
    }
    summary = _run(done_run)
    assert summary["step"] == 4 and "step-0000004" in summary["model_dir"]
    assert "nothing to do" in capsys.readouterr().out
    assert {name: (out / name).read_text() for name in logs} == logs  # no rows written twice


def test_the_same_corpus_by_another_path_resumes(done_run, monkeypatch):
    train = Path(done_run["train_files"][0])
    monkeypatch.chdir(train.parent)
    assert _run(dict(done_run, train_files=[train.name], max_steps=5))["step"] == 5


def test_local_builder_data_files_read_from_home_and_resume_by_another_path(
    two_layer_settings, corpus_files, tmp_path, monkeypatch
):
    """hub_datasets through `json` with data_files under `~` (load_dataset looked for a folder named `~`), then
    the same file by a relative path from another folder: the same data, so the run resumes (train_files do)."""
    home = tmp_path / "home"
    home.mkdir()
    docs = corpus_files["train"].read_text().split("\n\n")[:200]
    (home / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    monkeypatch.setenv("HOME", str(home))
    s = two_layer_settings(train_files=[], hub_datasets=[{"path": "json", "data_files": "~/docs.jsonl"}])
    assert _run(s)["step"] == 2
    monkeypatch.chdir(home)
    again = dict(s, hub_datasets=[{"path": "json", "data_files": {"train": ["docs.jsonl"]}}], max_steps=3)
    with pytest.raises(SettingsError, match="hub_datasets"):  # a mapping of splits is another setting
        _run(again)
    assert (
        _run(dict(s, hub_datasets=[{"path": "json", "data_files": "docs.jsonl"}], max_steps=3))["step"] == 3
    )
    # a checkpoint of an elue that kept them as given (relative) resumes as well
    state = Path(s["output_dir"]) / "checkpoints" / "step-0000003" / "trainer_state.json"
    saved = json.loads(state.read_text())
    saved["settings"]["hub_datasets"] = [{"path": "json", "data_files": "docs.jsonl"}]
    state.write_text(json.dumps(saved))
    assert _run(dict(s, max_steps=4))["step"] == 4


def test_processes_that_find_different_checkpoints_are_refused(monkeypatch, tmp_path, two_layer_settings):
    """Several nodes with output_dir on each node's own disk: only the first node's checkpoint has COMPLETE, so
    the others found none and started afresh beside a resumed first node (unloaded weights, then a hang)."""
    import accelerate.utils

    from elue.elasticbert.pretraining.trainer import _agree_on_checkpoint

    class TwoNodes:
        num_processes = 4

    names = ["step-0000020", "step-0000020", None, None]
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: [(None, n) for n in names])
    with pytest.raises(
        SettingsError,
        match=r"do not find the same checkpoint to resume in .*out \(process 0: step-0000020, process 2: none\): "
        "output_dir must be on a file system every node shares",
    ):
        _agree_on_checkpoint(TwoNodes(), tmp_path / "out", None)
    names[2:] = ["step-0000020"] * 2
    _agree_on_checkpoint(TwoNodes(), tmp_path / "out", None)  # all agree: nothing to say
    # a checkpoint one process could not find (a path on one node's disk only) stops every process with its
    # message: the process that found it missing no longer left the others waiting in the next collective
    missing = "resume_from_checkpoint: /node2/ckpt does not exist"
    monkeypatch.setattr(accelerate.utils, "gather_object", lambda mine: [(None, "a"), (missing, None)] * 2)
    with pytest.raises(SettingsError, match=re.escape(missing)):
        _agree_on_checkpoint(TwoNodes(), tmp_path / "out", None)
    with pytest.raises(SettingsError, match="nope"):  # one process: its own error, as before
        _agree_on_checkpoint(
            type("One", (), {"num_processes": 1})(), tmp_path / "out", None, SettingsError("nope")
        )
    # and a run asks, before it looks at output_dir's checkpoints (here: the one it resumes)
    from elue.elasticbert.pretraining import trainer

    asked = []
    monkeypatch.setattr(trainer, "_agree_on_checkpoint", lambda acc, out, ckpt, error: asked.append(ckpt))
    s = two_layer_settings(max_steps=1, save_steps=1)
    _run(s)
    _run(dict(s, max_steps=2))
    assert [c if c is None else c.name for c in asked] == [None, "step-0000001"]


def test_a_full_disk_while_saving_is_one_line_and_the_partial_checkpoint_goes(
    two_layer_settings, monkeypatch
):
    """A save that meets a full disk (safetensors' words for ENOSPC) was a traceback, and left a half-written
    checkpoint taking the space; the run that resumes after space is freed goes on from the last complete one."""
    from accelerate import Accelerator
    from safetensors import SafetensorError

    real = Accelerator.save_state

    def save_state(self, folder, *args, **kwargs):
        if "step-0000002" in str(folder):
            Path(folder).mkdir(parents=True)
            (Path(folder) / "model.safetensors").write_bytes(b"\0" * 64)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(self, folder, *args, **kwargs)

    monkeypatch.setattr(Accelerator, "save_state", save_state)
    s = two_layer_settings(max_steps=3, save_steps=1)
    with pytest.raises(
        SettingsError,
        match=r"saving checkpoint step-0000002 failed, the disk is full \(SafetensorError: .*No space left on "
        r"device.*\); the incomplete checkpoint was removed\. .*the same command resumes from step-0000001",
    ):
        _run(s)
    ckpts = Path(s["output_dir"]) / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["step-0000001"]
    monkeypatch.setattr(Accelerator, "save_state", real)
    assert _run(s)["step"] == 3
    assert [r["step"] for r in _log(s["output_dir"])] == ["1", "2", "3"]


def test_a_rotation_cut_short_leaves_no_damaged_complete_checkpoint(two_layer_settings, monkeypatch):
    """save_total_limit removes an old checkpoint; a kill in the middle of that removal left its COMPLETE beside
    missing files (a 'complete' checkpoint that does not load). The marker goes first now."""
    import shutil

    from elue.elasticbert.pretraining import checkpoints

    real = shutil.rmtree

    def killed_midway(path, *args, **kwargs):
        if Path(path).name == "step-0000001":
            real(Path(path) / "state")
            raise SystemExit("killed")  # the process dies here
        return real(path, *args, **kwargs)

    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_midway)
    s = two_layer_settings(max_steps=3, save_steps=1, save_total_limit=1)
    with pytest.raises(SystemExit):
        _run(s)
    out = Path(s["output_dir"])
    assert [p.name for p in checkpoints.complete_checkpoints(out)] == ["step-0000002"]
    monkeypatch.setattr(checkpoints.shutil, "rmtree", real)
    assert _run(s)["step"] == 3  # and the half-removed folder goes with the next save
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000003"]


def test_a_loaded_model_keeps_its_sizes(done_run, tiny_settings):
    model = Path(done_run["output_dir"]) / "checkpoints" / "step-0000004" / "model"
    for change in ({"num_hidden_layers": 3}, {"intermediate_size": 128}):
        s = tiny_settings(
            max_steps=1,
            model_name_or_path=str(model),
            model_config=change,
            max_seq_length=32,
            output_dir=str(model) + "-x",
        )
        with pytest.raises(SettingsError, match="model_config changes the sizes of the checkpoint"):
            _run(s)
    s = tiny_settings(
        max_steps=1,
        model_name_or_path=str(model),
        model_config={"hidden_dropout_prob": 0.0},
        max_seq_length=32,
        output_dir=str(model) + "-y",
    )
    assert _run(s)["step"] == 1  # a dropout may change


def test_a_checkpoint_or_run_folder_as_the_model_says_which_folder_to_give(done_run, tiny_settings):
    """model_name_or_path at a pre-training checkpoint (not its model/), the run's folder, its checkpoints/ or
    any folder without config.json: transformers' 'Unrecognized model ... `model_type` key in its config.json'."""
    run = Path(done_run["output_dir"])
    newest = run / "checkpoints" / "step-0000004"
    for given, said in (
        (
            newest,
            f"is a pre-training checkpoint, not a model folder: give its model/ folder .*={newest}/model",
        ),
        (run, f"is a pre-training run's output folder.*e.g. model_name_or_path={newest}/model"),
        (
            run / "checkpoints",
            f"is a pre-training run's checkpoints folder.*e.g. model_name_or_path={newest}/model",
        ),
        (newest / "state", "has no config.json: not a model folder"),
    ):
        s = tiny_settings(
            max_steps=1,
            model_name_or_path=str(given),
            model_config={},
            max_seq_length=32,
            output_dir=f"{run}-new",
        )
        with pytest.raises(SettingsError, match=f"model_name_or_path: {re.escape(str(given))} {said}"):
            _run(s)
        assert not Path(s["output_dir"]).exists()


def test_masked_lm_refuses_a_head_that_does_not_exist(done_run):
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForMaskedLM

    model = Path(done_run["output_dir"]) / "checkpoints" / "step-0000004" / "model"
    assert ElasticBertForMaskedLM.from_pretrained(model, exit_layer=1) is not None
    for bad in (0, 3, "2"):
        with pytest.raises(ValueError, match="exit_layer must be in 1..2"):
            ElasticBertForMaskedLM.from_pretrained(model, exit_layer=bad)


def test_a_checkpoint_between_logging_steps_keeps_the_window(tiny_settings):
    """Stopped at step 4 with logging every 3 steps: the step-6 row still averages steps 4, 5 and 6."""
    base = tiny_settings(max_steps=6, logging_steps=3, max_seq_length=32, model_config=dict(TWO_LAYERS))
    straight = _log(_run(base)["output_dir"])
    stopped = dict(base, output_dir=base["output_dir"] + "-stopped")
    assert _run(dict(stopped, stop_after_steps=4))["step"] == 4
    _run(stopped)
    resumed = _log(stopped["output_dir"])
    assert [r["step"] for r in resumed] == ["3", "6"]
    for key in ("loss", "mlm_1", "mlm_2", "sop_1", "sop_2"):
        assert float(resumed[1][key]) == pytest.approx(float(straight[1][key]), rel=1e-6), key


def test_masked_lm_of_a_lower_exit_saves_and_reloads_with_its_head(done_run, tmp_path):
    """transformers would save the head back under the checkpoint's name (`cls.predictions.0.*`), and the
    next load would draw a new one."""
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForMaskedLM

    model = Path(done_run["output_dir"]) / "checkpoints" / "step-0000004" / "model"
    mlm = ElasticBertForMaskedLM.from_pretrained(model, exit_layer=1).eval()
    mlm.save_pretrained(tmp_path / "mlm")
    again, info = ElasticBertForMaskedLM.from_pretrained(tmp_path / "mlm", output_loading_info=True)
    assert not info["missing_keys"]
    ids = torch.randint(5, 50, (2, 7))
    assert torch.equal(mlm(ids).logits, again.eval()(ids).logits)


def test_a_checkpoint_with_one_token_type_is_refused(tiny_settings, tmp_path):
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForPreTraining

    config = ElasticBertConfig(**TWO_LAYERS, type_vocab_size=1, num_output_layers=2, max_output_layers=2)
    ElasticBertForPreTraining(config).save_pretrained(tmp_path / "one-type")
    s = tiny_settings(
        max_steps=1, model_name_or_path=str(tmp_path / "one-type"), model_config={}, max_seq_length=32
    )
    with pytest.raises(
        SettingsError, match="one-type has type_vocab_size 1: pre-training needs 2 token types"
    ):
        _run(s)
    assert not Path(s["output_dir"]).exists()


def _word_level_tokenizer(folder: Path, specials: list[str]) -> str:
    """A fast word-level tokenizer with only `specials` of [PAD] [CLS] [SEP] [MASK] (and [UNK])."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = "the a cat dog sat ran on under big small red blue house tree river . ,".split()
    vocab = {w: i for i, w in enumerate(["[UNK]", *words, *specials])}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    names = {"[PAD]": "pad_token", "[CLS]": "cls_token", "[SEP]": "sep_token", "[MASK]": "mask_token"}
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", **{names[s]: s for s in specials})
    tok.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize(
    ("specials", "missing"),
    [
        (["[PAD]", "[CLS]", "[SEP]"], "mask_token"),
        (["[PAD]", "[CLS]", "[MASK]"], "sep_token"),
        (["[CLS]", "[SEP]", "[MASK]"], "pad_token"),
        ([], "cls_token, sep_token, mask_token, pad_token"),
    ],
)
def test_a_tokenizer_without_the_special_tokens_is_refused(two_layer_settings, tmp_path, specials, missing):
    tok = _word_level_tokenizer(tmp_path / "tok", specials)
    s = two_layer_settings(tokenizer_name_or_path=tok)
    with pytest.raises(SettingsError, match=f"tokenizer {tok} has no {missing}"):
        _run(s)
    assert not Path(s["output_dir"]).exists()


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_an_output_dir_that_cannot_be_a_folder_is_refused_up_front(two_layer_settings, tmp_path, where):
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "run"
    s = two_layer_settings(output_dir=str(out))
    with pytest.raises(SettingsError, match=f"output_dir {out}: {tmp_path / 'taken'} is a file"):
        _run(s)


def test_an_eval_corpus_without_a_usable_document_is_named(two_layer_settings, tmp_path):
    bad = tmp_path / "eval.txt"
    bad.write_text("a\n\nb\n\nc\n")  # one token a document: no sentence pair
    s = two_layer_settings(eval_files=[str(bad)], eval_steps=1, eval_examples=8)
    with pytest.raises(SettingsError) as err:
        _run(s)
    assert f"the evaluation data ({bad})" in str(err.value)
    assert "num_data_shards" not in str(err.value)  # the evaluation reads one stream
    assert not Path(s["output_dir"]).exists()


def test_a_training_corpus_without_a_usable_document_is_named(two_layer_settings, tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_text("a\n\nb\n\nc\n")
    s = two_layer_settings(train_files=[str(bad)])
    with pytest.raises(SettingsError, match=r"the training data \(.*train\.txt\): data stream 0/1 has no"):
        _run(s)


@pytest.mark.parametrize(
    ("first", "again"),
    [(None, "none"), ([], False), ("default", [[1, 2], [2]]), ([[2, 1], [2]], "default")],
)
def test_the_same_exit_groups_spelt_another_way_resume(two_layer_settings, first, again):
    s = two_layer_settings(exit_groups=first, save_steps=1)
    _run(s)
    assert _run(dict(s, exit_groups=again, max_steps=3))["step"] == 3
    with pytest.raises(SettingsError, match="exit_groups: "):  # other groups still refused
        _run(dict(s, exit_groups=[[1], [2]], max_steps=4))


def test_heads_only_on_a_new_model_says_the_encoder_stays_random(two_layer_settings, capsys):
    _run(two_layer_settings(trainable="heads", max_steps=1))
    assert (
        "trainable=heads on a new model: the encoder stays at its random initialisation"
        in capsys.readouterr().out
    )


@pytest.mark.skipif(torchrun() is None, reason="no torchrun")
@pytest.mark.parametrize("case", ["a stream without documents", "a stream without its position"])
def test_an_error_only_one_process_finds_is_one_line_and_writes_nothing(two_layer_settings, tmp_path, case):
    """Under torchrun the second process alone found these (its own data stream): it left without a word, the
    first one wrote output_dir and died in a collective with a traceback."""
    s = two_layer_settings(per_device_batch_size=4, num_data_shards=2, output_dir=str(tmp_path / "run"))
    if case == "a stream without documents":
        (tmp_path / "one.txt").write_text("One document here. With two sentences.\nAnd a third line.\n")
        s["train_files"] = [str(tmp_path / "one.txt")]
        message = r"error: the training data \(.*one\.txt\): data stream 1/2 has no usable document"
    else:  # a 1-process checkpoint (both streams' positions in data-rank0.json) without stream 1's
        first = dict(s, per_device_batch_size=8, max_steps=1, output_dir=str(tmp_path / "first"))
        ckpt = Path(_run(first)["model_dir"]).parent
        (ckpt / "data-rank0.json").write_text('{"0": [0, 4, 0]}')
        s["resume_from_checkpoint"] = str(ckpt)
        message = r"error: checkpoint .*step-0000001: no data position for stream\(s\) \[1\]"
    config = tmp_path / "run.json"
    config.write_text(json.dumps(s))
    proc = run_torchrun(["-m", "elue.elasticbert.pretraining", "--config", str(config)])
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert len(re.findall(message, output)) == 1, output[-3000:]
    for sign in ("[rank0]", "[rank1]", "RuntimeError"):  # a worker's traceback (torchrun's own report aside)
        assert sign not in output, output[-3000:]
    assert not Path(s["output_dir"]).exists()


@pytest.mark.parametrize("position", ['"x"', "[0, -3, 0]", "[0, 1]", "[0, 1.5, 0]", "[0, true, 0]", "null"])
def test_a_data_position_of_the_wrong_shape_is_named(done_run, position):
    """data-rank<r>.json holds, per stream, [epoch, documents, examples] (three counts): anything else failed
    with a TypeError or ValueError traceback at the first batch."""
    ckpt = Path(done_run["output_dir"]) / "checkpoints" / "step-0000004"
    (ckpt / "data-rank0.json").write_text(f'{{"0": {position}}}')
    with pytest.raises(SettingsError, match=r"step-0000004: data-rank0\.json: stream 0's position .* is not"):
        _run(dict(done_run, max_steps=6))


def test_data_positions_of_another_data_version(tiny_settings, corpus_files, tmp_path, capsys):
    """Since data version 2 a line of only spaces or tabs ends a document: a position saved before (no
    data_version in data-rank<r>.json) counts the documents of a corpus with such lines otherwise, and resuming
    from it would silently go on elsewhere in the data. It is refused there, naming the file; accepted, with a
    note, where no training file has such a line; a newer version or a malformed one is refused."""
    from elue.elasticbert.pretraining.data import DATA_VERSION

    spaced = tmp_path / "spaced.txt"  # a line of a space and a tab inside the first document
    spaced.write_text(corpus_files["train"].read_text().replace("\n", "\n \t\n", 1))
    runs = {}
    for name, train in (("plain", corpus_files["train"]), ("spaced", spaced)):
        s = tiny_settings(max_steps=2, save_steps=2, max_seq_length=32, model_config=dict(TWO_LAYERS))
        s.update(train_files=[str(train)], output_dir=str(tmp_path / name))
        _run(s)
        runs[name] = (s, Path(s["output_dir"]) / "checkpoints" / "step-0000002" / "data-rank0.json")
    s, data_rank = runs["spaced"]
    saved = json.loads(data_rank.read_text())
    assert saved["data_version"] == DATA_VERSION == 3 and saved["0"][1] > 0
    for _, path in runs.values():  # as checkpoints from before the version was saved
        path.write_text(
            json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "data_version"})
        )
    with pytest.raises(
        SettingsError,
        match=r"step-0000002: its data positions are of data version 1, .*spaced\.txt has such lines",
    ):
        _run(dict(s, max_steps=3))
    for version, message in (
        (4, "data version 4, newer than this code's 3"),
        ("2", "'2' is not a version number"),
    ):
        data_rank.write_text(json.dumps({**saved, "data_version": version}))
        with pytest.raises(SettingsError, match=re.escape(message)):
            _run(dict(s, max_steps=3))
    data_rank.write_text(json.dumps({**saved, "data_version": 2}))  # version 2 differs only where shuffled
    assert _run(dict(s, max_steps=3))["step"] == 3
    capsys.readouterr()
    s, _ = runs["plain"]  # no line of spaces: both versions count the same documents
    assert _run(dict(s, max_steps=3))["step"] == 3
    assert "data positions of data version 1 (before lines of only spaces" in capsys.readouterr().out


def test_positions_of_streams_shuffled_each_with_its_own_seed_are_refused(two_layer_settings, tmp_path):
    """Before data version 3 each stream shuffled with its own seed (and overlapped the others): with
    shuffle_buffer and 2 or more streams a version-2 position points into another stream of documents now."""
    s = two_layer_settings(max_steps=2, save_steps=2, shuffle_buffer=4, num_data_shards=2)
    _run(s)
    data_rank = Path(s["output_dir"]) / "checkpoints" / "step-0000002" / "data-rank0.json"
    saved = json.loads(data_rank.read_text())
    data_rank.write_text(json.dumps({**saved, "data_version": 2}))
    with pytest.raises(
        SettingsError, match=r"data version 2, from before the 2 data streams shuffled with one seed"
    ):
        _run(dict(s, max_steps=3))
    data_rank.write_text(json.dumps(saved))
    assert _run(dict(s, max_steps=3))["step"] == 3


def test_a_corpus_error_in_mid_run_names_the_process(two_layer_settings, monkeypatch):
    """A file that fails to read after start-up (a stray byte past the first chunk of a large corpus) is found
    by the process that reads it alone: the error says which one, for the command line to report it."""
    from elue.elasticbert.pretraining import data

    calls = {"n": 0}
    real = data.PretrainingBatches.next_batch

    def next_batch(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise UnicodeDecodeError("utf-8", b"\xe9", 0, 1, "invalid continuation byte")
        return real(self)

    monkeypatch.setattr(data.PretrainingBatches, "next_batch", next_batch)
    with pytest.raises(SettingsError, match="cannot read the training data") as err:
        _run(two_layer_settings(max_steps=4))
    assert err.value.mid_run_process == 0


@pytest.mark.parametrize("mid_run", [True, False])
def test_start_up_errors_once_mid_run_errors_by_their_process(tmp_path, monkeypatch, mid_run):
    """Start-up errors, which every process agrees on, are printed once; an error in mid-run by any process
    that found it (under torchrun the second process left without a word)."""
    from typer.testing import CliRunner

    import elue.elasticbert.pretraining.trainer as trainer
    from elue.cli import app

    error = SettingsError("cannot read the training data (x.txt): UnicodeDecodeError: ...")
    if mid_run:
        error.mid_run_process = 1

    def fails(cfg):
        raise error

    monkeypatch.setattr(trainer, "pretrain", fails)
    monkeypatch.setenv("RANK", "1")
    path = tmp_path / "run.yaml"
    path.write_text("max_steps: 10\n")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path)])
    assert result.exit_code == 1
    said = "error: process 1: cannot read the training data (x.txt)" in result.output
    assert said == mid_run and ("error" in result.output) == mid_run, result.output


@pytest.mark.parametrize("trained", [True, False])
def test_a_run_stopped_before_its_first_logging_step_still_says_where_its_model_is(
    monkeypatch, tmp_path, trained
):
    """stop_after_steps 2 with logging_steps 10: nothing logged, a checkpoint saved; the command said nothing.
    A run with nothing to do has said so already and adds no line."""
    from typer.testing import CliRunner

    from elue.cli import app
    from elue.elasticbert.pretraining import trainer

    model_dir = tmp_path / "checkpoints" / "step-0000002" / "model"
    model_dir.mkdir(parents=True)
    summary = trainer._summary(model_dir, 2, True, {}, tmp_path, None, trained=trained)
    monkeypatch.setattr(trainer, "pretrain", lambda cfg: summary)
    path = tmp_path / "run.yaml"
    path.write_text("max_steps: 10\n")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path)])
    assert result.exit_code == 0, result.output
    line = f"step 2: no loss logged in this run yet; model saved to {model_dir}"
    assert (line in result.output) == trained, result.output


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_corpus_file_that_is_not_utf8_is_named(two_layer_settings, corpus_files, tmp_path, encoding):
    """One file among several that is not UTF-8 (a Windows "Unicode" file is UTF-16): the error listed every
    source and named none."""
    bad = tmp_path / "notes.txt"
    bad.write_bytes(
        "Caf\u00e9 cr\u00e8me. D\u00e9j\u00e0 vu.\n\nAnother document. It ends.\n".encode(encoding)
    )
    s = two_layer_settings(train_files=[str(corpus_files["train"]), str(bad)])
    with pytest.raises(SettingsError, match=r"^train_files: .*notes\.txt is not UTF-8 text \(byte 0x"):
        _run(s)
    assert not Path(s["output_dir"]).exists()


def test_a_resume_path_that_is_not_a_checkpoint_says_what_it_is(tmp_path):
    """resume_from_checkpoint given the run's folder, its checkpoints/ folder, a checkpoint's model/ folder, a bare
    step name or a path that does not exist: each is named for what it is, with the path to give instead (all
    were "is not a complete checkpoint (no COMPLETE)")."""
    from elue.elasticbert.pretraining.checkpoints import find_checkpoint

    run = tmp_path / "run"
    for step, complete in ((2, True), (4, True), (6, False)):
        ckpt = run / "checkpoints" / f"step-{step:07d}"
        (ckpt / "model").mkdir(parents=True)
        if complete:
            (ckpt / "COMPLETE").write_text("")
    newest = run / "checkpoints" / "step-0000004"
    assert find_checkpoint(run, str(newest)) == newest
    cases = [
        (tmp_path / "nowhere", r"nowhere does not exist"),
        (run, r"run is a run's output folder.*latest.*step-0000004"),
        (run / "checkpoints", r"checkpoints is a run's checkpoints folder.*step-0000004"),
        (newest / "model", r"model is the model folder of checkpoint \S*step-0000004: give \S*step-0000004"),
        (run / "checkpoints" / "step-0000006", r"step-0000006 is not a complete checkpoint \(no COMPLETE\)"),
    ]
    for path, message in cases:
        with pytest.raises(SettingsError, match=message):
            find_checkpoint(run, str(path))
    with pytest.raises(SettingsError, match=r"does not exist.*\S*run/checkpoints/step-0000004"):
        find_checkpoint(run, "step-0000004")  # relative to the working directory, not to output_dir


def test_a_changed_model_config_on_resume_names_the_changed_fields(tmp_path):
    """A resume with another model_config lists the fields that differ, `model_config.<field>: old -> new` (it
    printed both whole mappings, for the user to compare by eye)."""
    from elue.elasticbert.pretraining.checkpoints import check_resume

    model = dict(TWO_LAYERS, hidden_dropout_prob=0.1)
    cfg = PretrainConfig.from_dict({"model_config": model, "train_files": [], "max_steps": 10})
    state = {"step": 4, "world_size": 1, "settings": cfg.to_dict()}
    check_resume(cfg, tmp_path, state, 1)  # unchanged: accepted
    changed = dict(model, hidden_dropout_prob=0.0, residual_in_fp32=False)
    del changed["intermediate_size"]
    new = PretrainConfig.from_dict({"model_config": changed, "train_files": [], "max_steps": 10})
    with pytest.raises(SettingsError) as err:
        check_resume(new, tmp_path, state, 1)
    message = str(err.value)
    for diff in (
        "model_config.hidden_dropout_prob: 0.1 -> 0.0",
        f"model_config.intermediate_size: {TWO_LAYERS['intermediate_size']} -> (not set)",
        "model_config.residual_in_fp32: (not set) -> False",
    ):
        assert diff in message
    assert "{" not in message  # no whole mapping
