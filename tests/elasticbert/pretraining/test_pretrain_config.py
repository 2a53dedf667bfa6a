"""Settings: files, overrides, exit groups, and the `elue pretrain` command line."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from elue.elasticbert.pretraining.config import PretrainConfig, default_exit_groups


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
