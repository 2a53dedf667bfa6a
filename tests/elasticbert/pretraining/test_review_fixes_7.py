"""Review fixes: a tokenizer without [CLS]/[SEP]/[MASK]/[PAD] and an output_dir that cannot be a folder are
refused in one line before anything is written; a document whose last line tokenises to nothing keeps its last
pair; an evaluation corpus without a usable document is named; equivalent spellings of the same exit groups
resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elue.elasticbert.pretraining.config import PretrainConfig, SettingsError
from elue.elasticbert.pretraining.data import SpecialIds, document_examples
from elue.elasticbert.pretraining.trainer import pretrain

TWO_LAYERS = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}


def _settings(tiny_settings, **over) -> dict:
    return tiny_settings(**{"max_steps": 2, "max_seq_length": 32, "model_config": dict(TWO_LAYERS), **over})


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
def test_a_tokenizer_without_the_special_tokens_is_refused(tiny_settings, tmp_path, specials, missing):
    tok = _word_level_tokenizer(tmp_path / "tok", specials)
    s = _settings(tiny_settings, tokenizer_name_or_path=tok)
    with pytest.raises(SettingsError, match=f"tokenizer {tok} has no {missing}"):
        pretrain(PretrainConfig.from_dict(s))
    assert not Path(s["output_dir"]).exists()


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_an_output_dir_that_cannot_be_a_folder_is_refused_up_front(tiny_settings, tmp_path, where):
    (tmp_path / "taken").write_text("not a folder")
    out = tmp_path / "taken" if where == "file" else tmp_path / "taken" / "run"
    s = _settings(tiny_settings, output_dir=str(out))
    with pytest.raises(SettingsError, match=f"output_dir {out}: {tmp_path / 'taken'} is a file"):
        pretrain(PretrainConfig.from_dict(s))


def test_a_last_line_without_tokens_keeps_the_documents_last_pair():
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=1000)
    segments = [list(range(200, 208)), list(range(300, 310))]
    for tail in ([], [[]], [[], []]):  # e.g. a last line of zero-width spaces: no tokens
        out = document_examples([*segments, *tail], 64, 0.0, np.random.default_rng(0), ids)
        assert len(out) == 1 and len(out[0]["input_ids"]) == 18 + 3
    # an empty line between sentences changes nothing (the same draws)
    mid = document_examples([segments[0], [], segments[1]], 64, 0.0, np.random.default_rng(0), ids)
    assert mid == document_examples(segments, 64, 0.0, np.random.default_rng(0), ids)


def test_an_eval_corpus_without_a_usable_document_is_named(tiny_settings, tmp_path):
    bad = tmp_path / "eval.txt"
    bad.write_text("a\n\nb\n\nc\n")  # one token a document: no sentence pair
    s = _settings(tiny_settings, eval_files=[str(bad)], eval_steps=1, eval_examples=8)
    with pytest.raises(SettingsError) as err:
        pretrain(PretrainConfig.from_dict(s))
    assert f"the evaluation data ({bad})" in str(err.value)
    assert "num_data_shards" not in str(err.value)  # the evaluation reads one stream
    assert not Path(s["output_dir"]).exists()


def test_a_training_corpus_without_a_usable_document_is_named(tiny_settings, tmp_path):
    bad = tmp_path / "train.txt"
    bad.write_text("a\n\nb\n\nc\n")
    s = _settings(tiny_settings, train_files=[str(bad)])
    with pytest.raises(SettingsError, match=r"the training data \(.*train\.txt\): data stream 0/1 has no"):
        pretrain(PretrainConfig.from_dict(s))


@pytest.mark.parametrize(
    ("first", "again"),
    [(None, "none"), ([], False), ("default", [[1, 2], [2]]), ([[2, 1], [2]], "default")],
)
def test_the_same_exit_groups_spelt_another_way_resume(tiny_settings, first, again):
    s = _settings(tiny_settings, exit_groups=first, save_steps=1)
    pretrain(PretrainConfig.from_dict(s))
    assert pretrain(PretrainConfig.from_dict(dict(s, exit_groups=again, max_steps=3)))["step"] == 3
    with pytest.raises(SettingsError, match="exit_groups: "):  # other groups still refused
        pretrain(PretrainConfig.from_dict(dict(s, exit_groups=[[1], [2]], max_steps=4)))


def test_progress_bar_false_also_silences_the_loading_bar(tiny_settings, tmp_path, capfd):
    """model_name_or_path: transformers' "Loading weights" bar is silenced with the others."""
    from transformers.utils import logging as hf_logging

    first = _settings(tiny_settings, max_steps=1, output_dir=str(tmp_path / "first"))
    model = pretrain(PretrainConfig.from_dict(first))["model_dir"]
    hf_logging.enable_progress_bar()
    capfd.readouterr()
    s = _settings(tiny_settings, max_steps=1, model_name_or_path=model, model_config={})
    try:
        pretrain(PretrainConfig.from_dict(s))
    finally:
        hf_logging.enable_progress_bar()
    assert "Loading weights" not in capfd.readouterr().err


def test_paths_from_the_home_folder(tiny_settings, tmp_path, monkeypatch):
    """`~` in output_dir, resume_from_checkpoint and the model and tokenizer paths is the home folder, as in
    train_files (a literal `~` folder was made in the working directory; the model a bad hub id)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    first = _settings(tiny_settings, max_steps=1, output_dir="~/first")
    pretrain(PretrainConfig.from_dict(first))
    assert (tmp_path / "home" / "first" / "checkpoints" / "step-0000001" / "COMPLETE").exists()
    assert not (tmp_path / "~").exists()
    resumed = dict(first, max_steps=2, resume_from_checkpoint="~/first/checkpoints/step-0000001")
    assert pretrain(PretrainConfig.from_dict(resumed))["step"] == 2
    model = "~/first/checkpoints/step-0000002/model"
    s = _settings(tiny_settings, max_steps=1, model_name_or_path=model, tokenizer_name_or_path=model)
    assert pretrain(PretrainConfig.from_dict(dict(s, model_config={})))["step"] == 1


@pytest.mark.parametrize(
    "over",
    [{"eval_steps": 5, "eval_examples": 0}, {"eval_steps": 5, "eval_files": []}],
)
def test_eval_steps_without_anything_to_evaluate_is_refused(over):
    # the trainer evaluated nothing, silently
    with pytest.raises(SettingsError, match="eval_steps 5 needs eval_files and eval_examples above 0"):
        PretrainConfig.from_dict({"eval_files": ["e.txt"], **over})
    PretrainConfig.from_dict({"eval_steps": 0, "eval_examples": 0})  # no evaluation asked: fine


def test_heads_only_on_a_new_model_says_the_encoder_stays_random(tiny_settings, capsys):
    pretrain(PretrainConfig.from_dict(_settings(tiny_settings, trainable="heads", max_steps=1)))
    assert (
        "trainable=heads on a new model: the encoder stays at its random initialisation"
        in capsys.readouterr().out
    )
