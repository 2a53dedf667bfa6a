"""Settings: files, overrides, exit groups, the checks of values, and the `elue pretrain` command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elue.elasticbert.pretraining.config import PretrainConfig, SettingsError, default_exit_groups


def test_default_groups_match_the_paper():
    assert default_exit_groups(12) == [[1, 3, 5, 7, 9, 11, 12], [2, 4, 6, 8, 10, 12]]
    cfg = PretrainConfig()
    assert cfg.resolved_exit_groups(4) == [[0, 2, 3], [1, 3]]  # 0-based
    assert PretrainConfig(exit_groups=None).resolved_exit_groups(4) is None
    assert PretrainConfig(exit_groups=[[2], [1, 4]]).resolved_exit_groups(4) == [[1], [0, 3]]
    with pytest.raises(ValueError):
        PretrainConfig(exit_groups=[[5]]).resolved_exit_groups(4)


def test_file_and_overrides(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("max_steps: 10\nmodel_config: {hidden_size: 32}\n")
    cfg = PretrainConfig.from_file(
        path, ["max_steps=20", "model_config.num_hidden_layers=2", "exit_groups=null"]
    )
    assert cfg.max_steps == 20 and cfg.model_config == {"hidden_size": 32, "num_hidden_layers": 2}
    assert cfg.exit_groups is None
    with pytest.raises(ValueError, match="unknown"):
        PretrainConfig.from_file(path, ["max_stepz=3"])
    js = tmp_path / "run.json"
    js.write_text(json.dumps({"optimizer": "lamb"}))
    assert PretrainConfig.from_file(js).optimizer == "lamb"


def test_cli_prints_resolved_settings(tmp_path):
    from elue.cli import app

    path = tmp_path / "run.yaml"
    path.write_text("max_steps: 10\n")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path), "--print-config", "optimizer=lamb"])
    assert result.exit_code == 0, result.output
    settings = json.loads(result.output)
    assert settings["max_steps"] == 10 and settings["optimizer"] == "lamb"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learning_rate=abc", "learning_rate: expected float, got 'abc'"),
        ("max_steps=1.5", "max_steps: expected int, got 1.5"),
        ("learning_rate=.inf", "learning_rate: expected a finite number, got inf"),
        ("max_grad_norm=.nan", "max_grad_norm: expected a finite number, got nan"),
        ("model_config.layer_norm_eps=.inf", "model_config.layer_norm_eps: expected a finite number"),
        ("compile=yes please", "compile: expected bool, got 'yes please'"),
        ("optimizer=sgd", "optimizer must be one of adamw, lamb, not 'sgd'"),
        ("distributed=zero3", "distributed must be one of ddp, fsdp"),
        ("dropout_masks=curand", "dropout_masks must be one of auto, inductor, aten, not 'curand'"),
        ("dropout_masks=aten", "dropout_masks: aten needs compile: true"),
        ("save_total_limit=many", "save_total_limit: expected int or None, got 'many'"),
        (
            "model_config.residual_in_fp23=false",
            "model_config: unknown ElasticBertConfig fields residual_in_fp23",
        ),
        ("model_config=[1]", "model_config: expected a mapping"),
        # values too, not only the names: these failed inside the model's construction or its first step
        ("model_config.hidden_size=abc", "model_config.hidden_size: expected int, got 'abc'"),
        ("model_config.num_hidden_layers=true", "model_config.num_hidden_layers: expected int, got True"),
        ("model_config.hidden_dropout_prob=abc", "model_config.hidden_dropout_prob: expected float or int"),
        ("model_config.layer_norm_eps=abc", "model_config.layer_norm_eps: expected float, got 'abc'"),
        ("model_config.layer_norm_eps=0", "model_config.layer_norm_eps must be positive"),
        ("model_config.hidden_act=foo", "model_config.hidden_act 'foo' is not an activation"),
        ("model_config.intermediate_size=0", "model_config.intermediate_size must be at least 1"),
        ("model_config.attention_probs_dropout_prob=1", "attention_probs_dropout_prob must be in [0, 1)"),
        # checked and then ignored before: pre-training puts an exit on every layer
        (
            "model_config.num_output_layers=2",
            "model_config.num_output_layers: pre-training has an exit on every",
        ),
        (
            "model_config.max_output_layers=2",
            "model_config.max_output_layers: pre-training has an exit on every",
        ),
        ("seed=-1", "seed must be at least 0"),
        (f"seed={2**32}", "seed must be below 2**32"),
    ],
)
def test_wrong_types_and_choices_are_named(override, message):
    with pytest.raises(SettingsError) as err:
        PretrainConfig.from_dict({}, [override])
    assert message in str(err.value)


def test_right_types_pass():
    cfg = PretrainConfig.from_dict(
        {}, ["learning_rate=1", "save_total_limit=null", "optimizer=LAMB", "max_grad_norm=0", "compile=true"]
    )
    assert cfg.learning_rate == 1 and cfg.save_total_limit is None and cfg.compile is True
    assert PretrainConfig.from_dict({"compile": True}, ["dropout_masks=aten"]).dropout_masks == "aten"


def test_cli_errors_are_one_line(tmp_path):
    """Settings the user must fix come out as `error: ...`, exit code 1, no traceback."""
    from elue.cli import app

    path = tmp_path / "run.yaml"
    path.write_text("max_steps: 1\ntrain_files: [" + str(tmp_path / "missing.txt") + "]\n")
    runner = CliRunner()
    cases = [
        (["max_stepz=3"], "unknown pre-training settings: max_stepz"),
        (["learning_rate=abc"], "learning_rate: expected float"),
        ([], "train_files: " + str(tmp_path / "missing.txt") + " is not a file"),
        (["train_files=[]"], "no training data"),
        (["max_steps=[1"], "override 'max_steps=[1': the value does not parse as YAML"),
    ]
    for overrides, message in cases:
        result = runner.invoke(app, ["pretrain", "--config", str(path), *overrides])
        assert result.exit_code == 1, (overrides, result.output)
        assert "error: " + message in result.output and "Traceback" not in result.output, result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_steps: [1\n")
    result = runner.invoke(app, ["pretrain", "--config", str(bad)])
    assert result.exit_code == 1 and "error:" in result.output


def test_cli_unloadable_tokenizer_is_one_line(tmp_path, corpus_files):
    from elue.cli import app

    settings = {
        "train_files": [str(corpus_files["train"])],
        "max_steps": 1,
        "output_dir": str(tmp_path / "o"),
    }
    path = tmp_path / "run.json"
    path.write_text(json.dumps({**settings, "tokenizer_name_or_path": str(tmp_path / "no-such-tokenizer")}))
    runner = CliRunner()
    result = runner.invoke(app, ["pretrain", "--config", str(path), "model_config.hidden_size=30"])
    assert result.exit_code == 1, result.output
    assert (
        "error: cannot build a new model from model_config: hidden_size (30) is not a multiple"
        in result.output
    )
    tiny = [
        "model_config.hidden_size=32",
        "model_config.num_attention_heads=2",
        "model_config.num_hidden_layers=2",
    ]
    result = runner.invoke(app, ["pretrain", "--config", str(path), *tiny])
    assert result.exit_code == 1, result.output
    assert (
        "error: tokenizer_name_or_path: no such folder " + str(tmp_path / "no-such-tokenizer")
        in result.output
    )
    assert "Traceback" not in result.output, result.output
    not_a_tokenizer = tmp_path / "empty"
    not_a_tokenizer.mkdir()
    result = runner.invoke(
        app, ["pretrain", "--config", str(path), *tiny, f"tokenizer_name_or_path={not_a_tokenizer}"]
    )
    assert result.exit_code == 1 and "error: cannot load the tokenizer" in result.output, result.output


@pytest.mark.parametrize("name", ["pretrain_tiny.yaml", "pretrain_base.yaml"])
def test_example_settings_are_valid(name):
    from pathlib import Path

    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig

    cfg = PretrainConfig.from_file(Path(__file__).parents[3] / "examples" / name)
    cfg.check_types()  # with check_model_config: every model_config key is an ElasticBertConfig field
    model = ElasticBertConfig(**cfg.model_config)
    assert cfg.resolved_exit_groups(model.num_hidden_layers)
    if name == "pretrain_base.yaml":  # the throughput benchmark's settings, at the paper's sizes
        assert (model.num_hidden_layers, model.hidden_size) == (12, 768) and model.residual_in_fp32 is False
        assert cfg.compile and cfg.max_seq_length == 512 and cfg.num_data_shards % 64 == 0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("exit_groups=[1,2]", "exit_groups: expected default, a list of lists of layers"),
        ("exit_groups=foo", "every exit on every step all, none, null, false or []"),
        ("exit_groups=true", "exit_groups: expected default, a list of lists"),
        ("exit_groups=[[]]", "exit_groups: an empty group in [[]]"),
        ("exit_groups=[[1,1,2]]", "exit_groups: group [1, 1, 2] names a layer twice"),
        ("exit_groups=[[1,13]]", "exit group [1, 13] outside layers 1..12"),
        ("exit_groups=[[0,2]]", "exit group [0, 2] outside layers 1..12"),  # 0-based -1: the top head
        ("max_steps.x=1", "override 'max_steps.x=1': max_steps is not a mapping"),
        ("per_device_batch_size=0", "per_device_batch_size must be at least 1, not 0"),
        ("gradient_accumulation_steps=0", "gradient_accumulation_steps must be at least 1"),
        ("logging_steps=0", "logging_steps must be at least 1"),
        ("max_steps=0", "max_steps must be at least 1"),
        ("max_steps=-3", "max_steps must be at least 1"),
        ("stop_after_steps=0", "stop_after_steps must be at least 1"),
        ("mlm_probability=1.5", "mlm_probability must be in (0, 1]"),
        ("mlm_probability=0", "mlm_probability must be in (0, 1]"),
        ("lr_scheduler=bogus", "lr_scheduler must be one of linear, cosine"),
        ("max_seq_length=4", "max_seq_length must be at least 8"),
        ("report_to=[wandb]", "report_to: wandb not supported (supported: csv, tensorboard"),
        ("output_dir=", "output_dir is empty"),
        ("train_files=[1]", "train_files: expected a list of strings"),
    ],
)
def test_wrong_values_are_named(override, message):
    with pytest.raises(SettingsError) as err:
        PretrainConfig.from_dict({"max_steps": 10}, [override])
    assert message in str(err.value)


def test_model_config_numbers_in_yaml_spelling_and_untrained_exits():
    cfg = PretrainConfig.from_dict({}, ["model_config.layer_norm_eps=1e-12", "exit_groups=[[1],[2]]"])
    assert cfg.model_config["layer_norm_eps"] == 1e-12  # a string to PyYAML
    assert cfg.untrained_exits(4) == [3, 4] and cfg.untrained_exits(2) == []
    assert PretrainConfig.from_dict({}, ["exit_groups=none"]).untrained_exits(4) == []


def test_forgiving_spellings(tmp_path):
    """`1e-3` (a string to PyYAML) is a float; null or one string for a list setting."""
    path = tmp_path / "run.yaml"
    path.write_text(
        "learning_rate: 1e-3\nwarmup_ratio: 5e-2\ntrain_files: corpus/train.txt\neval_files: null\n"
    )
    cfg = PretrainConfig.from_file(path, ["adam_epsilon=1e-8", "report_to=null"])
    assert (cfg.learning_rate, cfg.warmup_ratio, cfg.adam_epsilon) == (1e-3, 0.05, 1e-8)
    assert cfg.train_files == ["corpus/train.txt"] and cfg.eval_files == [] and cfg.report_to == []


def test_print_config_checks_exit_groups(tmp_path):
    from elue.cli import app

    path = tmp_path / "run.yaml"
    path.write_text("model_config: {num_hidden_layers: 2}\n")
    runner = CliRunner()
    result = runner.invoke(app, ["pretrain", "--config", str(path), "--print-config", "exit_groups=[[1,3]]"])
    assert result.exit_code == 1 and "error: exit group [1, 3] outside layers 1..2" in result.output


def test_cli_final_line_names_the_last_logged_step(tmp_path, monkeypatch):
    """Stopped by a signal between logging steps: the loss shown is the last logged step's, and says so."""
    import elue.elasticbert.pretraining.trainer as trainer
    from elue.cli import app

    summary = {"step": 7, "main": True, "saved": True, "model_dir": "out/m", "stopped_by": "SIGTERM"}
    monkeypatch.setattr(trainer, "pretrain", lambda cfg: dict(summary, last_log={"step": 6, "loss": "1.5"}))
    path = tmp_path / "run.yaml"
    path.write_text("max_steps: 10\n")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path)])
    assert result.exit_code == 143, result.output
    assert "step 7: last logged step 6: loss 1.5; model saved to out/m" in result.output


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model_config.type_vocab_size=1", "model_config.type_vocab_size must be at least 2"),
        ("adam_epsilon=0", "adam_epsilon must be positive, not 0"),
        ("adam_epsilon=-1e-8", "adam_epsilon must be positive"),
        ("hub_datasets=[5]", "hub_datasets: entry 5 is not"),
        ("hub_datasets=[[json]]", "hub_datasets: entry ['json'] is not"),
        ("hub_datasets=[{name: en}]", "hub_datasets: entry {'name': 'en'} has no path"),
        ("hub_datasets=[{path: json, text_column: 3}]", "hub_datasets: entry 'json': text_column must be a"),
    ],
)
def test_wrong_values_are_refused_at_validation(override, message):
    with pytest.raises(SettingsError) as err:
        PretrainConfig.from_dict({}, [override])
    assert message in str(err.value)


@pytest.mark.parametrize(
    "over",
    [{"eval_steps": 5, "eval_examples": 0}, {"eval_steps": 5, "eval_files": []}],
)
def test_eval_steps_without_anything_to_evaluate_is_refused(over):
    # the trainer evaluated nothing, silently
    with pytest.raises(SettingsError, match="eval_steps 5 needs eval_files and eval_examples above 0"):
        PretrainConfig.from_dict({"eval_files": ["e.txt"], **over})
    PretrainConfig.from_dict({"eval_steps": 0, "eval_examples": 0})  # no evaluation asked: fine


def test_polynomial_decay_needs_a_learning_rate_above_its_end():
    for lr in (0, 1e-7, 1e-8):
        with pytest.raises(SettingsError, match="lr_scheduler polynomial decays to 1e-07: learning_rate"):
            PretrainConfig.from_dict({"lr_scheduler": "polynomial", "learning_rate": lr})
    PretrainConfig.from_dict({"lr_scheduler": "linear", "learning_rate": 0})  # other schedules: 0 is fine


def test_polynomial_schedule_is_built():
    import torch

    from elue.elasticbert.pretraining.optim import build_scheduler

    cfg = PretrainConfig.from_dict({"lr_scheduler": "polynomial", "learning_rate": 1e-3, "max_steps": 4})
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    scheduler = build_scheduler(optimizer, cfg)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-7)


@pytest.mark.parametrize(
    "scheduler", ["polynomial", "linear", "cosine", "constant_with_warmup", "inverse_sqrt"]
)
@pytest.mark.parametrize("warmup", [0, 3, 4, 6])
def test_schedules_run_to_their_last_step_with_any_warm_up(scheduler, warmup):
    """polynomial with a warm-up of max_steps divided by zero at the scheduler's step after the last update (so the
    run failed before its final checkpoint); every learning rate used is the warm-up's or the schedule's."""
    import torch

    from elue.elasticbert.pretraining.optim import build_scheduler, schedule_notes

    over = {"lr_scheduler": scheduler, "learning_rate": 1e-3, "max_steps": 4, "warmup_steps": warmup}
    cfg = PretrainConfig.from_dict(over)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    scheduler_ = build_scheduler(optimizer, cfg)
    used = []
    for _ in range(4):
        used.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler_.step()
    if warmup:
        assert used[: min(warmup, 4)] == pytest.approx([1e-3 * t / warmup for t in range(min(warmup, 4))])
    else:
        assert used[0] == pytest.approx(1e-3)
    notes = schedule_notes(cfg)
    assert bool(notes) == (warmup >= 4)
    if notes:
        assert "never decays" in notes[0]


def test_a_warm_up_the_constant_schedule_ignores_is_said():
    from elue.elasticbert.pretraining.optim import schedule_notes

    cfg = PretrainConfig.from_dict({"lr_scheduler": "constant", "warmup_ratio": 0.1, "max_steps": 100})
    assert "ignored" in schedule_notes(cfg)[0]
    assert schedule_notes(PretrainConfig.from_dict({"lr_scheduler": "constant", "max_steps": 100})) == []


def test_cli_bad_hub_column_is_one_line(two_layer_settings, tmp_path):
    from elue.cli import app

    path = tmp_path / "c4-like.jsonl"
    path.write_text("\n".join(json.dumps({"content": f"Document {i}. It ends."}) for i in range(4)))
    s = two_layer_settings(max_steps=1)
    s.update(train_files=[], hub_datasets=[{"path": "json", "data_files": str(path), "text_column": "body"}])
    config = tmp_path / "run.json"
    config.write_text(json.dumps(s))
    result = CliRunner().invoke(app, ["pretrain", "--config", str(config)])
    assert result.exit_code == 1, result.output
    assert "error: hub_datasets: 'json' has no column 'body'" in result.output
    assert "Traceback" not in result.output
    assert not Path(s["output_dir"]).exists()


def test_config_file_that_is_not_utf8_is_named(tmp_path):
    from elue.cli import app

    path = tmp_path / "run.yaml"
    path.write_bytes("output_dir: caf\u00e9\n".encode("latin-1"))
    with pytest.raises(SettingsError, match=r"run\.yaml is not UTF-8 text"):
        PretrainConfig.from_file(path)
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path), "--print-config"])
    assert result.exit_code == 1 and "run.yaml is not UTF-8 text" in result.output, result.output
    assert "Traceback" not in result.output
    path.write_bytes("output_dir: caf\u00e9\n".encode())  # UTF-8, whatever the locale's encoding
    assert PretrainConfig.from_file(path).output_dir == "caf\u00e9"


def test_a_yaml_date_or_time_in_the_settings_file_is_named(tmp_path):
    """PyYAML reads an unquoted 2026-11-27 as a date: named in one line (it was a JSON TypeError traceback)."""
    from elue.cli import app

    path = tmp_path / "run.yaml"
    path.write_text("output_dir: 2026-11-27\nhub_datasets: [{path: json, revision: 2026-11-27 08:00:00}]\n")
    with pytest.raises(SettingsError, match=r"output_dir: 2026-11-27 reads as a date in YAML: quote it"):
        PretrainConfig.from_file(path)
    result = CliRunner().invoke(app, ["pretrain", "--config", str(path), "--print-config"])
    assert result.exit_code == 1 and "error: output_dir: 2026-11-27 reads as a date" in result.output
    assert "Traceback" not in result.output
    path.write_text("hub_datasets: [{path: json, revision: 2026-11-27 08:00:00}]\n")
    with pytest.raises(
        SettingsError, match=r"hub_datasets\[0\]\.revision: 2026-11-27 08:00:00 reads as a date"
    ):
        PretrainConfig.from_file(path)
    with pytest.raises(SettingsError, match=r"output_dir: 2026-11-27 reads as a date in YAML: quote it"):
        PretrainConfig.from_dict({}, ["output_dir=2026-11-27"])  # an override's value is YAML too
    assert PretrainConfig.from_dict({}, ["output_dir='2026-11-27'"]).output_dir == "2026-11-27"


def test_module_entry_point_help_gives_flags_no_type(tmp_path):
    """`python -m elue.elasticbert.pretraining --help` (how torchrun starts it) showed `--print-config <bool>` as
    if the flag took a value; `elue pretrain --help` did not. Both now show flags alike, and the flag still works."""
    from click.testing import CliRunner as ClickRunner

    from elue.cli.pretrain_commands import app_for_module

    result = ClickRunner().invoke(app_for_module(), ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--print-config" in result.output and "<bool>" not in result.output
    assert "<file>" in result.output  # options that take a value keep their type
    path = tmp_path / "s.yaml"
    path.write_text("max_steps: 3\n")
    result = ClickRunner().invoke(app_for_module(), ["--config", str(path), "--print-config"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["max_steps"] == 3
