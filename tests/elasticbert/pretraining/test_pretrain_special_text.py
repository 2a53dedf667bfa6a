"""Special-token strings written in a corpus ("[SEP]", "[MASK]", ...) are text to the pre-training pipeline, as
to BERT's own data code: read as the tokens, they would put separators and masks inside segments that neither
the sentence-order pairs nor the masking made."""

from __future__ import annotations

from transformers import PreTrainedTokenizerFast

from elue.elasticbert.pretraining.data import token_encoder

TEXTS = ["a [SEP] b [MASK] c [CLS] [PAD] [UNK] d", "no specials here", "[SEP]"]


def _check(tokenizer, ids: list[list[int]]) -> None:
    specials = set(tokenizer.all_special_ids)
    assert all(not specials & set(row) for row in ids), ids
    assert ids[1] == tokenizer("no specials here", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[2]) == ["[", "sep", "]"]


def test_the_fast_path_reads_special_token_strings_as_text(tokenizer):
    assert tokenizer("[SEP]", add_special_tokens=False)["input_ids"] == [tokenizer.sep_token_id]  # HF default
    ids = token_encoder(tokenizer)(TEXTS)
    _check(tokenizer, ids)
    assert ids == tokenizer(TEXTS, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_the_wrapper_path_reads_special_token_strings_as_text(tokenizer):
    class NoBackend:  # a tokenizer without the Rust backend: the wrapper's own call
        def __init__(self, tok: PreTrainedTokenizerFast) -> None:
            self._tok = tok

        def __call__(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN204
            return self._tok(*args, **kwargs)

    _check(tokenizer, token_encoder(NoBackend(tokenizer))(TEXTS))
