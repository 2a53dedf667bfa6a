"""The training loop on a tiny model and the local corpus: losses fall, grouped steps touch only their heads,
accumulation and 2 processes (torchrun, gloo) give the single-process update, kill + resume = uninterrupted;
sequences padded up to the positions, quiet progress bars, paths from the home folder."""

from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from subprocesses import catches, child_env, children, free_port, run_torchrun, torchrun, wait_until

from elue.elasticbert.pretraining.config import PretrainConfig
from elue.elasticbert.pretraining.trainer import pretrain

from .tiny_models import tiny_run_settings

NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def _run(settings: dict) -> dict:
    return pretrain(PretrainConfig.from_dict(settings))


def _log(out_dir) -> list[dict]:
    with (Path(out_dir) / "train_log.csv").open() as f:
        return list(csv.DictReader(f))


def _numbers(rows, skip=("tokens_per_s", "elapsed_s")):
    return [[float(v) if v else float("nan") for k, v in r.items() if k not in skip] for r in rows]


def _close(a, b, tol):
    ta, tb = torch.tensor(_numbers(a)), torch.tensor(_numbers(b))
    assert ta.shape == tb.shape
    assert torch.allclose(ta, tb, atol=tol, rtol=0, equal_nan=True), (ta - tb).abs().nan_to_num().max()


def test_per_exit_losses_fall(tiny_settings, corpus_files):
    s = tiny_settings(
        max_steps=40,
        exit_groups=None,
        eval_files=[str(corpus_files["eval"])],
        eval_examples=64,
        learning_rate=5e-3,
    )
    _run(s)
    with (Path(s["output_dir"]) / "eval_log.csv").open() as f:
        rows = list(csv.DictReader(f))
    first = {r["exit"]: float(r["mlm_loss"]) for r in rows if r["step"] == "0"}
    last = {r["exit"]: float(r["mlm_loss"]) for r in rows if r["step"] == "40"}
    assert sorted(first) == ["1", "2", "3", "4"]
    for e in first:
        assert last[e] < first[e] - 1.0, (e, first[e], last[e])
    log = _log(s["output_dir"])
    assert len(log) == 40 and all(r["mlm_1"] and r["sop_4"] for r in log)


def test_grouped_step_changes_only_its_group(tiny_settings):
    s = tiny_settings(
        max_steps=2, save_steps=1, save_total_limit=None, warmup_steps=0
    )  # groups {1,3,4}, {2,4}
    _run(s)
    ckpt = Path(s["output_dir"]) / "checkpoints"
    w1 = load_file(ckpt / "step-0000001" / "model" / "model.safetensors")
    w2 = load_file(ckpt / "step-0000002" / "model" / "model.safetensors")
    from accelerate.utils import set_seed

    from elue.elasticbert.pretraining.modeling_pretraining import load_pretraining_model

    set_seed(s.get("seed", 42))
    w0 = load_pretraining_model(None, s["model_config"])[0].state_dict()

    def head_of(key):
        for prefix in ("elasticbert.encoder.pooler.", "cls.predictions.", "cls.seq_relationship."):
            if key.startswith(prefix):
                return int(key[len(prefix) :].split(".")[0])
        return None

    log = _log(s["output_dir"])
    assert [r["group"] for r in log] == ["1", "2"]
    for before, after, group in ((w0, w1, {0, 2, 3}), (w1, w2, {1, 3})):
        for key, value in after.items():
            changed = not torch.equal(before[key], value)
            head = head_of(key)
            if head is None:
                if key.startswith("elasticbert.encoder.layer.") or key.endswith("word_embeddings.weight"):
                    assert changed, key  # the shared encoder learns on every step
            else:
                assert changed == (head in group), (key, group)


def test_a_step_drops_gradients_an_engine_gave_the_idle_heads():
    """The trainer's own rule for the heads outside the step's group: whatever gradient an engine left on them (FSDP
    may hand unused sharded parameters a zero one) is dropped before the optimiser step, so AdamW's weight decay
    does not move them. In one plain process they get none anyway, so `test_grouped_step_changes_only_its_group`
    cannot see the rule; here the idle heads start the step with zero gradients, as under such an engine."""
    from elue.elasticbert.pretraining.modeling_pretraining import find_mlm_positions
    from elue.elasticbert.pretraining.optim import build_optimizer, build_scheduler
    from elue.elasticbert.pretraining.trainer import _train_step, make_accelerator

    from .tiny_models import tiny_batch, tiny_pretraining_model

    cfg = PretrainConfig.from_dict({"max_steps": 2, "warmup_steps": 0, "weight_decay": 0.1, "cpu": True})
    model = tiny_pretraining_model()
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg)
    accelerator = make_accelerator(cfg, grouped=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    b = tiny_batch()
    b.update(attention_mask=torch.ones_like(b["input_ids"]), mlm_positions=find_mlm_positions(b["labels"]))
    group = [0, 3]
    idle = [p for layer in (1, 2) for p in model.head_parameters(layer).values()]
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    for p in idle:
        p.grad = torch.zeros_like(p)
    model.train()
    _train_step(accelerator, model, optimizer, scheduler, cfg, [b], group, idle)
    idle_ids = {id(p) for p in idle}
    moved = {k for k, p in model.named_parameters() if not torch.equal(before[k], p.detach())}
    assert not {k for k, p in model.named_parameters() if id(p) in idle_ids} & moved
    for layer in group:
        assert set(model.head_parameters(layer)) <= moved, layer


def test_accumulation_matches_the_larger_batch(tiny_settings, tmp_path):
    one = tiny_settings(max_steps=4, model_config={**tiny_settings()["model_config"], **NO_DROPOUT})
    acc = dict(one, per_device_batch_size=4, gradient_accumulation_steps=2, output_dir=str(tmp_path / "acc"))
    _run(one)
    _run(acc)
    _close(_log(one["output_dir"]), _log(acc["output_dir"]), 1e-4)


def test_compiled_run_matches_eager(tiny_settings, tmp_path):
    """`compile: true` (dynamo's eager backend here: no C compiler needed) trains the same numbers."""
    eager = tiny_settings(max_steps=3, model_config={**tiny_settings()["model_config"], **NO_DROPOUT})
    compiled = dict(eager, compile=True, compile_backend="eager", output_dir=str(tmp_path / "compiled"))
    _run(eager)
    _run(compiled)
    _close(_log(eager["output_dir"]), _log(compiled["output_dir"]), 1e-5)


def test_bf16_autocast_run_tracks_fp32(tiny_settings, tmp_path, capsys):
    """`mixed_precision: bf16` (the GPU default) runs here under CPU autocast: weights stay fp32, the logged
    losses follow the fp32 run to bf16 precision, and a bf16 run killed after step 3 resumes exactly.
    (The runs share this process, as `test_runs_with_other_precision_in_one_process` allows; only the killed
    run has its own. Accelerate's state is forgotten at the end, whatever happened: no later test gets bf16.)"""
    from elue.elasticbert.accelerate_state import forget_single_process_state

    fp32 = tiny_settings(max_steps=4, model_config={**tiny_settings()["model_config"], **NO_DROPOUT})
    bf16 = dict(fp32, mixed_precision="bf16", output_dir=str(tmp_path / "bf16"), save_steps=2)
    killed = dict(bf16, output_dir=str(tmp_path / "killed"))
    child = _cli_start(tmp_path / "killed.json", killed, kill_after=3)  # starts up while this process trains
    try:
        _run(fp32)
        capsys.readouterr()
        _run(bf16)
        assert "mixed precision bf16" in capsys.readouterr().out
        _cli_wait(child, returncode=-9)
        _run(killed)  # resumes from step 2
    finally:
        child.kill()  # (a no-op once it has ended)
        child.communicate()
        forget_single_process_state(None, cpu=not torch.cuda.is_available())
    a, b = _log(fp32["output_dir"]), _log(bf16["output_dir"])
    assert [r["step"] for r in b] == ["1", "2", "3", "4"]
    for ra, rb in zip(a, b, strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=2e-2)
        assert float(ra["loss"]) != float(rb["loss"])  # it really ran in bf16
    w = load_file(Path(bf16["output_dir"]) / "checkpoints" / "step-0000004" / "model" / "model.safetensors")
    assert {t.dtype for t in w.values()} == {torch.float32}
    _close(b, _log(killed["output_dir"]), 1e-6)


def test_runs_with_other_precision_in_one_process(tiny_settings, tmp_path):
    """A second run in the same Python process may change mixed precision (Accelerate's per-process state
    would refuse it: forgotten between single-process runs)."""
    base = tiny_settings(max_steps=1)
    assert _run(dict(base, output_dir=str(tmp_path / "a")))["step"] == 1
    assert _run(dict(base, mixed_precision="bf16", output_dir=str(tmp_path / "b")))["step"] == 1
    assert _run(dict(base, output_dir=str(tmp_path / "c")))["step"] == 1


def _cli_start(cfg_file: Path, settings: dict, kill_after: int | None = None) -> subprocess.Popen:
    """`python -m elue.elasticbert.pretraining --config` with `settings`, started in a fresh process."""
    cfg_file.write_text(json.dumps(settings))
    env = child_env()
    if kill_after is not None:
        env["ELUE_PRETRAIN_KILL_AFTER_STEP"] = str(kill_after)  # SIGKILL after that step
    cmd = [sys.executable, "-m", "elue.elasticbert.pretraining", "--config", str(cfg_file)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cli_wait(proc: subprocess.Popen, returncode: int = 0) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == returncode, err[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _cli(cfg_file: Path, settings: dict, kill_after: int | None = None, returncode: int = 0):
    """`python -m elue.elasticbert.pretraining --config` with `settings`, in a fresh process."""
    return _cli_wait(_cli_start(cfg_file, settings, kill_after), returncode)


def test_compile_on_cpu_without_a_compiler_says_so(tiny_settings, monkeypatch):

    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(ValueError, match="C\\+\\+ compiler"):
        _run(tiny_settings(max_steps=1, compile=True))


def test_kill_and_resume_reproduces_the_uninterrupted_run(tiny_settings, tmp_path):
    straight = tiny_settings(max_steps=7, optimizer="lamb", output_dir=str(tmp_path / "straight"))
    _run(straight)  # dropout on: the resumed run must restore the RNG too
    killed = dict(straight, output_dir=str(tmp_path / "killed"), save_steps=2)
    _cli(tmp_path / "killed.json", killed, kill_after=5, returncode=-9)
    assert len(_log(killed["output_dir"])) == 5  # steps 1-5 logged, step-4 is the newest checkpoint
    summary = _run(killed)  # resume_from_checkpoint: latest
    assert summary["step"] == 7
    _close(_log(straight["output_dir"]), _log(killed["output_dir"]), 1e-6)


def test_a_run_killed_after_its_last_checkpoint_has_its_final_evaluation(tiny_settings, corpus_files):
    """The last step's evaluation is written before its checkpoint: killed once that is saved, the run
    resumes as "nothing to do" and would never write it."""
    s = tiny_settings(max_steps=2, eval_files=[str(corpus_files["eval"])], eval_examples=8)
    _cli(Path(s["output_dir"]).with_suffix(".json"), s, kill_after=2, returncode=-9)
    eval_log = (Path(s["output_dir"]) / "eval_log.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in eval_log[1:]} == {"0", "2"}, (
        eval_log
    )  # before training, at the end
    assert _run(s)["step"] == 2  # nothing to do


@pytest.mark.skipif(torchrun() is None, reason="no torchrun")
def test_torchrun_two_processes_match_one(tiny_settings, tmp_path):
    """2 processes x batch 4 = 1 process x batch 8; a 2-process checkpoint resumes in 1 process and a
    1-process checkpoint in 2 processes."""
    base = tiny_settings(
        max_steps=4, num_data_shards=2, model_config={**tiny_settings()["model_config"], **NO_DROPOUT}
    )
    one = dict(base, per_device_batch_size=8, output_dir=str(tmp_path / "one"), save_steps=2)
    two = dict(base, per_device_batch_size=4, output_dir=str(tmp_path / "two"), save_steps=2)
    _torchrun(tmp_path / "two.json", two)
    _run(one)
    _close(_log(one["output_dir"]), _log(two["output_dir"]), 1e-4)
    a = load_file(Path(one["output_dir"]) / "checkpoints" / "step-0000004" / "model" / "model.safetensors")
    b = load_file(Path(two["output_dir"]) / "checkpoints" / "step-0000004" / "model" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k

    # the 2-process run's step-2 checkpoint, resumed by 1 process (data positions are kept per stream)
    step2 = Path(two["output_dir"]) / "checkpoints" / "step-0000002"
    resumed = dict(one, output_dir=str(tmp_path / "resumed"), resume_from_checkpoint=str(step2))
    assert _run(resumed)["step"] == 4
    rows = _log(resumed["output_dir"])
    assert [r["step"] for r in rows] == ["3", "4"]
    _close(_log(one["output_dir"])[2:], rows, 1e-4)
    c = load_file(
        Path(resumed["output_dir"]) / "checkpoints" / "step-0000004" / "model" / "model.safetensors"
    )
    for k in a:
        assert torch.allclose(a[k], c[k], atol=1e-5), k

    # and the other way: the 1-process run's step-2 checkpoint, resumed by 2 processes with half the batch
    step2 = Path(one["output_dir"]) / "checkpoints" / "step-0000002"
    _torchrun(
        tmp_path / "up.json", dict(two, output_dir=str(tmp_path / "up"), resume_from_checkpoint=str(step2))
    )
    rows = _log(tmp_path / "up")
    assert [r["step"] for r in rows] == ["3", "4"]
    _close(_log(one["output_dir"])[2:], rows, 1e-4)
    d = load_file(tmp_path / "up" / "checkpoints" / "step-0000004" / "model" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], d[k], atol=1e-5), k


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _torchrun(cfg_file: Path, settings: dict) -> None:
    """`elue pretrain` with `settings` in 2 CPU processes (torchrun, gloo)."""
    cfg_file.write_text(json.dumps(settings))
    proc = run_torchrun(["-m", "elue.elasticbert.pretraining", "--config", str(cfg_file)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "pre-training: 2 processes (MULTI_CPU), " in proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def straight_40_steps(corpus_files, tokenizer_path, tmp_path_factory) -> tuple[dict, list[dict]]:
    """The uninterrupted run both signal tests end like (settings, train log): run once for both."""
    out = tmp_path_factory.mktemp("signal") / "straight"
    settings = tiny_run_settings(corpus_files, tokenizer_path, out, max_steps=40, optimizer="lamb")
    _run(settings)
    return settings, _log(out)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_resumes(straight_40_steps, tmp_path, sig):
    """SIGTERM (pre-emption) or Ctrl-C mid-run: the step finishes, a checkpoint is saved, exit 128 + signal; the
    same command resumes and ends exactly like an uninterrupted run."""
    straight, straight_log = straight_40_steps
    stopped = dict(straight, output_dir=str(tmp_path / "stopped"), save_steps=1000)  # no periodic checkpoints
    cfg_file = tmp_path / "stopped.json"
    cfg_file.write_text(json.dumps(stopped))
    cmd = [sys.executable, "-m", "elue.elasticbert.pretraining", "--config", str(cfg_file)]
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = Path(stopped["output_dir"]) / "train_log.csv"

    def two_steps_logged() -> bool:  # (the 40 steps take seconds: it is signalled long before its end)
        assert proc.poll() is None, "the run ended before it was signalled: " + proc.communicate()[1][-3000:]
        return log.exists() and len(log.read_text().splitlines()) >= 3

    wait_until(two_steps_logged, what="2 logged steps", every=0.01)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-3000:]
    done = len(_log(stopped["output_dir"]))
    assert 2 <= done < 40, "the run should have stopped early"
    assert f"stopped by {signal.Signals(sig).name} after step {done}" in err
    assert (Path(stopped["output_dir"]) / "checkpoints" / f"step-{done:07d}" / "COMPLETE").exists()
    _run(stopped)  # resume_from_checkpoint: latest
    _close(straight_log, _log(stopped["output_dir"]), 1e-6)


def test_same_settings_keep_the_callers_accelerator():
    """Only a change of settings makes a run forget Accelerate's state: an Accelerator the caller made with the
    same settings keeps working."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from elue.elasticbert.accelerate_state import forget_single_process_state

    mine = Accelerator(cpu=True)
    forget_single_process_state(None, cpu=True)  # same settings: kept
    assert AcceleratorState._shared_state and mine.state.mixed_precision == "no"
    forget_single_process_state("bf16", cpu=True)  # other settings: forgotten
    assert not AcceleratorState._shared_state
    assert Accelerator(cpu=True, mixed_precision="bf16").mixed_precision == "bf16"


def test_the_start_up_line_says_processes_and_precision_in_words(tiny_settings, capsys):
    """It said "mixed precision no, NO, device cpu": the bare NO was Accelerate's distributed type."""
    from elue.elasticbert.pretraining.trainer import describe_engine

    _run(tiny_settings(max_steps=1))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("pre-training:"))
    assert line.startswith("pre-training: 1 process, 1 data stream, global batch 8, ")
    assert line.endswith(", fp32 (no mixed precision), device cpu") and "NO" not in line
    assert describe_engine(2, "MULTI_CPU", "no") == ("2 processes (MULTI_CPU)", "fp32 (no mixed precision)")
    assert describe_engine(8, "FSDP", "bf16") == ("8 processes (FSDP)", "mixed precision bf16")


def test_batch_to_device_drops_only_a_mask_that_masks_nothing():
    from elue.elasticbert.pretraining.trainer import batch_to_device

    ids = torch.ones(2, 4, dtype=torch.long)
    full = batch_to_device({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, "cpu")
    assert set(full) == {"input_ids"}  # the model runs unmasked (SDPA's fast path, no check on the GPU)
    padded = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
    kept = batch_to_device({"input_ids": ids, "attention_mask": padded}, "cpu")
    assert torch.equal(kept["attention_mask"], padded)


def test_a_signal_to_torchrun_stops_both_processes_at_once(tiny_settings, tmp_path):
    """torchrun passes SIGTERM on and kills its workers 30 s later: the processes agree after every step (not
    only at logging steps, here never reached), so both stop after the same step with its checkpoint saved."""
    s = tiny_settings(max_steps=100000, logging_steps=100000, save_steps=0, per_device_batch_size=4)
    cfg_file = tmp_path / "long.json"
    cfg_file.write_text(json.dumps(s))
    cmd = [torchrun(), "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "elue.elasticbert.pretraining", "--config", str(cfg_file)]  # fmt: skip
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out_dir = Path(s["output_dir"])

    def training() -> list[int]:  # the worker processes that are in their training loop (its handler is set)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        workers = [pid for pid in children(proc.pid) if "elue.elasticbert.pretraining" in _cmdline(pid)]
        return [pid for pid in workers if catches(pid, signal.SIGTERM)]

    # both processes past start-up (a fixed 3 s after the log file appeared was the wait: a busy machine may take
    # longer, and a SIGTERM before the loop's handler ends a process at once), then some steps, no log row
    wait_until(lambda: len(training()) == 2, what="both processes to start training")
    time.sleep(1)  # (any length: nothing waits for these steps)
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert time.time() - t0 < 25, "stopped within torchrun's grace period"
    saved = [p for p in (out_dir / "checkpoints").glob("step-*") if (p / "COMPLETE").exists()]
    assert len(saved) == 1, err[-3000:]
    assert len(list(saved[0].glob("data-rank*.json"))) == 2  # both processes saved their data position
    assert "stopped by SIGTERM after step" in err


def test_sequences_near_positions_that_are_no_multiple_of_8_train(two_layer_settings, corpus_files):
    """max_seq_length 28 pads to 32 > max_position_embeddings 30: capped, training and evaluation run."""
    s = two_layer_settings(
        max_seq_length=28, eval_files=[str(corpus_files["eval"])], eval_examples=16, eval_steps=2
    )
    s["model_config"]["max_position_embeddings"] = 30
    assert _run(s)["step"] == 2


def test_progress_bar_false_also_silences_the_loading_bar(two_layer_settings, tmp_path, capfd):
    """model_name_or_path: transformers' "Loading weights" bar is silenced with the others."""
    from transformers.utils import logging as hf_logging

    first = two_layer_settings(max_steps=1, output_dir=str(tmp_path / "first"))
    model = _run(first)["model_dir"]
    hf_logging.enable_progress_bar()
    capfd.readouterr()
    s = two_layer_settings(max_steps=1, model_name_or_path=model, model_config={})
    try:
        _run(s)
    finally:
        hf_logging.enable_progress_bar()
    assert "Loading weights" not in capfd.readouterr().err


def test_paths_from_the_home_folder(two_layer_settings, tmp_path, monkeypatch):
    """`~` in output_dir, resume_from_checkpoint and the model and tokenizer paths is the home folder, as in
    train_files (a literal `~` folder was made in the working directory; the model a bad hub id)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    first = two_layer_settings(max_steps=1, output_dir="~/first")
    _run(first)
    assert (tmp_path / "home" / "first" / "checkpoints" / "step-0000001" / "COMPLETE").exists()
    assert not (tmp_path / "~").exists()
    resumed = dict(first, max_steps=2, resume_from_checkpoint="~/first/checkpoints/step-0000001")
    assert _run(resumed)["step"] == 2
    model = "~/first/checkpoints/step-0000002/model"
    s = two_layer_settings(max_steps=1, model_name_or_path=model, tokenizer_name_or_path=model)
    assert _run(dict(s, model_config={}))["step"] == 1
