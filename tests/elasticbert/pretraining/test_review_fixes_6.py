"""Review fixes: padding never beyond max_position_embeddings; one clear error for type_vocab_size < 2, a bad
hub_datasets entry or text_column, adam_epsilon <= 0, polynomial decay from a learning rate at or below its
end, and a config file that is not UTF-8."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from elue.elasticbert.pretraining.config import PretrainConfig, SettingsError
from elue.elasticbert.pretraining.data import SpecialIds, collate, load_documents
from elue.elasticbert.pretraining.trainer import pretrain

TWO_LAYERS = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def test_padding_stops_at_max_position_embeddings():
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=1000)
    examples = [
        {"input_ids": [101, *range(200, 226), 102], "token_type_ids": [0] * 28, "sop_label": 0, "key": (0,)}
    ]
    assert collate(examples, ids, 1, 0.15)["input_ids"].shape == (1, 32)  # a multiple of 8 ...
    assert collate(examples, ids, 1, 0.15, max_width=30)["input_ids"].shape == (1, 30)  # ... up to the cap
    assert collate(examples, ids, 1, 0.15, max_width=64)["input_ids"].shape == (1, 32)


def test_sequences_near_positions_that_are_no_multiple_of_8_train(tiny_settings, corpus_files):
    """max_seq_length 28 pads to 32 > max_position_embeddings 30: capped, training and evaluation run."""
    s = tiny_settings(
        max_steps=2,
        max_seq_length=28,
        model_config={**TWO_LAYERS, "max_position_embeddings": 30},
        eval_files=[str(corpus_files["eval"])],
        eval_examples=16,
        eval_steps=2,
    )
    assert pretrain(PretrainConfig.from_dict(s))["step"] == 2


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


def test_hub_dataset_without_the_text_column_is_named(tmp_path):
    path = tmp_path / "c4-like.jsonl"
    path.write_text("\n".join(json.dumps({"content": f"Document {i}. It ends."}) for i in range(4)))
    spec = {"path": "json", "data_files": str(path)}
    with pytest.raises(SettingsError, match=r"hub_datasets: 'json' has no column 'body' \(text_column\)"):
        load_documents(hub_datasets=[{**spec, "text_column": "body"}])
    with pytest.raises(SettingsError, match=r"has no column 'text' \(text_column\); its columns: content"):
        load_documents(hub_datasets=[spec])
    assert (
        next(iter(load_documents(hub_datasets=[spec], text_column="content")))["text"]
        == "Document 0. It ends."
    )


def test_cli_bad_hub_column_is_one_line(tiny_settings, tmp_path):
    from elue.cli import app

    path = tmp_path / "c4-like.jsonl"
    path.write_text("\n".join(json.dumps({"content": f"Document {i}. It ends."}) for i in range(4)))
    s = tiny_settings(
        max_steps=1, model_config={**TWO_LAYERS, "max_position_embeddings": 64}, max_seq_length=32
    )
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


def test_a_checkpoint_with_one_token_type_is_refused(tiny_settings, tmp_path):
    from elue.elasticbert.configuration_elasticbert import ElasticBertConfig
    from elue.elasticbert.pretraining.modeling_pretraining import ElasticBertForPreTraining

    config = ElasticBertConfig(
        **TWO_LAYERS, max_position_embeddings=64, type_vocab_size=1, num_output_layers=2, max_output_layers=2
    )
    ElasticBertForPreTraining(config).save_pretrained(tmp_path / "one-type")
    s = tiny_settings(
        max_steps=1, model_name_or_path=str(tmp_path / "one-type"), model_config={}, max_seq_length=32
    )
    with pytest.raises(
        SettingsError, match="one-type has type_vocab_size 1: pre-training needs 2 token types"
    ):
        pretrain(PretrainConfig.from_dict(s))
    assert not Path(s["output_dir"]).exists()
