"""Data pipeline: sentences, SOP pairs, MLM masks, determinism, stream positions, process split, sources."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from elue.elasticbert.pretraining.config import PretrainConfig, SettingsError
from elue.elasticbert.pretraining.data import (
    DATA_VERSION,
    PretrainingBatches,
    ShardStream,
    SpecialIds,
    collate,
    document_examples,
    load_documents,
    mask_example,
    split_sentences,
    token_encoder,
)


def test_split_sentences():
    text = "First one. Second one! Is it third? yes it is.\n\n  Next line here.\nA 2nd line"
    assert split_sentences(text) == [
        "First one.",
        "Second one!",
        "Is it third? yes it is.",
        "Next line here.",
        "A 2nd line",
    ]


def test_split_sentences_keeps_closing_quotes_and_brackets():
    # the closing marks after an end mark belong to the sentence: a cut there must not drop them
    text = 'He said "Hi." Then he left. (See above.) Next one! "Quoted?" Yes.'
    sentences = ['He said "Hi."', "Then he left.", "(See above.)", "Next one!", '"Quoted?"', "Yes."]
    assert split_sentences(text) == sentences
    assert " ".join(sentences) == text


def test_sop_pairs_structure():
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=1000)
    segs = [list(range(200 + 10 * i, 205 + 10 * i)) for i in range(12)]
    labels = []
    for seed in range(40):
        for ex in document_examples(segs, 24, 0.0, np.random.default_rng(seed), ids):
            t = ex["input_ids"]
            assert t[0] == 101 and t[-1] == 102 and t.count(102) == 2 and len(t) <= 24
            first_sep = t.index(102)
            assert ex["token_type_ids"] == [0] * (first_sep + 1) + [1] * (len(t) - first_sep - 1)
            a, b = t[1:first_sep], t[first_sep + 1 : -1]
            assert a and b
            # segments are consecutive text; label 1 = B comes before A in the document
            assert (a[0] > b[0]) == bool(ex["sop_label"])
            labels.append(ex["sop_label"])
    assert 0.35 < np.mean(labels) < 0.65


def test_masking_rates():
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=30000)
    seq = [101, *range(1000, 1100), 102]
    n_pred = n_mask = n_keep = 0
    for k in range(300):
        masked, labels = mask_example(seq, (0, 0, k, 0), 1, 0.15, ids)
        pos = [i for i, lab in enumerate(labels) if lab != -100]
        assert len(pos) == 15 and 0 not in pos and len(seq) - 1 not in pos
        n_pred += len(pos)
        n_mask += sum(masked[i] == 103 for i in pos)
        n_keep += sum(masked[i] == seq[i] for i in pos)
    assert abs(n_mask / n_pred - 0.8) < 0.03 and abs(n_keep / n_pred - 0.1) < 0.03
    assert mask_example(seq, (0, 0, 5, 0), 1, 0.15, ids) == mask_example(seq, (0, 0, 5, 0), 1, 0.15, ids)
    assert mask_example(seq, (1, 0, 5, 0), 1, 0.15, ids) != mask_example(seq, (0, 0, 5, 0), 1, 0.15, ids)


def test_special_tokens_and_padding_are_never_masked_and_the_count_is_rounded():
    """Only non-special positions are masked, also where [CLS], [SEP] or [PAD] ids stand inside the text (a
    corpus line holding the text "[PAD]" tokenises to the pad id), and round(15 %) of them, at least one: a
    floor would predict 1 of 13 tokens, not 2; with no floor at all a short pair would predict nothing."""
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=30000)
    specials = {101, 102, 0}
    for n in (1, 3, 6, 13, 20, 33, 47, 100):
        for k in range(40):
            body = list(range(1000, 1000 + n))
            for pos, tok in ((n // 3, 0), (n // 2, 101), (2 * n // 3, 102), (n, 0)):  # specials inside
                body.insert(pos, tok)
            seq = [101, *body, 102, 0, 0]
            masked, labels = mask_example(seq, (0, 0, n, k), 1, 0.15, ids)
            picked = [i for i, lab in enumerate(labels) if lab != -100]
            assert all(seq[i] not in specials for i in picked), (n, k, picked)
            assert len(picked) == max(1, round(0.15 * n)), (n, len(picked))
            assert [labels[i] for i in picked] == [seq[i] for i in picked]
            assert all(masked[i] == seq[i] for i in range(len(seq)) if i not in picked)


def test_random_replacements_are_never_special_tokens(tokenizer):
    """The 10 % random tokens are drawn from the vocabulary without its special tokens: a [SEP] or [CLS] put
    inside a pair changes its structure, a [PAD] or [MASK] is no word (they were drawn from the whole
    vocabulary). Every other token stays possible, uniformly."""
    ids = SpecialIds(cls=2, sep=3, mask=4, pad=0, vocab_size=12, special=(1, 0, 2, 3, 4, 9))
    seq = [2, *([6, 7, 8, 10, 11, 5] * 50), 3]
    drawn = []
    for k in range(400):
        masked, labels = mask_example(seq, (0, 0, k, 0), 1, 0.15, ids)
        drawn += [m for m, lab in zip(masked, labels, strict=True) if lab != -100 and m not in (4, lab)]
    counts = np.bincount(drawn, minlength=12)
    assert counts[[0, 1, 2, 3, 4, 9]].sum() == 0
    allowed = counts[[5, 6, 7, 8, 10, 11]]
    assert allowed.min() > 0.8 * allowed.mean()
    assert set(SpecialIds.from_tokenizer(tokenizer).special) == set(tokenizer.all_special_ids)
    assert tokenizer.unk_token_id in SpecialIds.from_tokenizer(tokenizer).special


def _cfg(corpus_files, **kw):
    return PretrainConfig(
        train_files=[str(corpus_files["train"])], max_seq_length=48, tokenize_batch_docs=16, **kw
    )


def _equal(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_deterministic_and_resumable(corpus_files, tokenizer):
    cfg = _cfg(corpus_files)
    docs = load_documents(cfg.train_files)
    one = PretrainingBatches(docs, tokenizer, cfg, batch_size=4, num_shards=2)
    two = PretrainingBatches(docs, tokenizer, cfg, batch_size=4, num_shards=2)
    for _ in range(5):
        batch = one.next_batch()
        assert _equal(batch, two.next_batch())
        # the positions to predict, flat over (B, S), found on the host for the model
        assert torch.equal(batch["mlm_positions"], torch.nonzero(batch["labels"].reshape(-1) != -100)[:, 0])
        assert len(batch["mlm_positions"]) > 0
    state = json.loads(json.dumps(one.state_dict()))
    expected = [one.next_batch() for _ in range(3)]
    resumed = PretrainingBatches(docs, tokenizer, cfg, batch_size=4, num_shards=2)
    assert state["data_version"] == DATA_VERSION  # what the positions count documents by
    with pytest.raises(
        SettingsError, match=f"data positions of data version 1: this code reads {DATA_VERSION}"
    ):
        resumed.load_state_dict({**state, "data_version": 1})
    resumed.load_state_dict(state)
    for e in expected:
        assert _equal(e, resumed.next_batch())


def test_epoch_wraps_with_new_masks(corpus_files, tokenizer, tmp_path):
    small = tmp_path / "small.txt"
    small.write_text("One sentence here. And another one.\n\nA second document. It has two.\n")
    cfg = PretrainConfig(train_files=[str(small)], max_seq_length=32)
    stream = ShardStream(load_documents(cfg.train_files), 0, 1, tokenizer, cfg)
    first = stream.take(2)
    again = stream.take(2)
    # the same text again (cut and swapped afresh: the epoch seeds a document's choices) with new keys, hence
    # new masks
    assert [sorted(e["input_ids"]) for e in first] == [sorted(e["input_ids"]) for e in again]
    assert [e["key"][0] for e in first] == [0, 0] and [e["key"][0] for e in again] == [1, 1]


def test_each_epoch_cuts_and_swaps_its_pairs_afresh(tokenizer, tmp_path):
    """The epoch is in every document's seed: the next pass over the corpus draws new cuts, targets and SOP
    swaps (not only new masks, which the example keys give), so epochs are no repeats of the same pairs."""
    corpus = tmp_path / "docs.txt"
    sentences = [f"Sentence number {i} of the story goes here." for i in range(48)]
    corpus.write_text("\n\n".join("\n".join(sentences[i : i + 8]) for i in range(0, 48, 8)) + "\n")
    cfg = PretrainConfig(train_files=[str(corpus)], max_seq_length=40, short_seq_prob=0.3)
    stream = ShardStream(load_documents(cfg.train_files), 0, 1, tokenizer, cfg)
    epochs: dict[int, list] = {0: [], 1: []}
    while True:
        (ex,) = stream.take(1)
        if ex["key"][0] > 1:
            break
        epochs[ex["key"][0]].append((ex["input_ids"], ex["sop_label"]))
    assert len(epochs[0]) >= 10 and len(epochs[1]) >= 10
    assert epochs[0] != epochs[1]
    labels = [label for e in (0, 1) for _, label in epochs[e]]
    assert 0 < sum(labels) < len(labels)


def test_two_processes_see_the_single_process_batch(corpus_files, tokenizer):
    cfg = _cfg(corpus_files)
    docs = load_documents(cfg.train_files)
    single = PretrainingBatches(docs, tokenizer, cfg, batch_size=8, num_shards=2)
    ranks = [
        PretrainingBatches(docs, tokenizer, cfg, batch_size=4, num_shards=2, rank=r, world_size=2)
        for r in (0, 1)
    ]
    for _ in range(3):
        whole = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        for k in ("labels", "input_ids", "sop_labels"):
            got = [p[k] for p in parts]
            if got[0].dim() == 2:
                width = whole[k].shape[1]
                got = [
                    torch.nn.functional.pad(g, (0, width - g.shape[1]), value=-100 if k == "labels" else 0)
                    for g in got
                ]
            assert torch.equal(torch.cat(got), whole[k])
    with pytest.raises(ValueError):
        PretrainingBatches(docs, tokenizer, cfg, batch_size=4, num_shards=3, rank=0, world_size=2)


def test_hub_style_sources_offline(tmp_path, corpus_files, tokenizer):
    # a hub corpus is read with load_dataset(path, streaming=True); offline, point it at local json lines
    rows = [
        {"content": f"Document {i} starts here. It goes on for a while. Then it ends."} for i in range(20)
    ]
    path = tmp_path / "c4-like.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    docs = load_documents(
        train_files=[str(corpus_files["train"])],
        hub_datasets=[{"path": "json", "data_files": str(path), "text_column": "content"}],
    )
    texts = [r["text"] for r in docs]
    assert texts[-1] == rows[-1]["content"] and len(texts) > 20
    cfg = PretrainConfig(max_seq_length=32)
    only_hub = load_documents(
        hub_datasets=[{"path": "json", "data_files": str(path), "text_column": "content"}]
    )
    batch = PretrainingBatches(only_hub, tokenizer, cfg, batch_size=4, num_shards=1).next_batch()
    assert batch["input_ids"].shape[0] == 4


def test_a_hub_corpus_with_a_loading_script_says_how_to_read_it(tmp_path):
    """OpenWebText (Skylion007/openwebtext) and BookCorpus shipped loading scripts on the hub, which datasets >= 4
    refuses: the error says where the script-free Parquet export is."""
    (tmp_path / "owt").mkdir()
    (tmp_path / "owt" / "owt.py").write_text("import datasets\n")
    with pytest.raises(SettingsError, match=r"no longer supported.*revision: refs/convert/parquet"):
        load_documents(hub_datasets=[str(tmp_path / "owt")])


def test_a_hub_corpus_of_a_sentence_a_record_is_grouped_into_documents(tmp_path, tokenizer):
    """BookCorpus has one sentence a record: as documents of one sentence each, every pair was a sentence cut in
    two (no sentence order to predict, a few tokens in a sequence of max_seq_length). `records_per_document: n`
    makes n consecutive records one document, a record a line."""
    rows = [{"text": f"Sentence number {i} is here."} for i in range(25)]
    path = tmp_path / "bookcorpus-like.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"path": "json", "data_files": str(path), "records_per_document": 10}
    texts = [r["text"] for r in load_documents(hub_datasets=[spec])]
    assert texts == ["\n".join(r["text"] for r in rows[i : i + 10]) for i in (0, 10, 20)]
    cfg = PretrainConfig(max_seq_length=64, short_seq_prob=0.0)
    batch = PretrainingBatches(
        load_documents(hub_datasets=[spec]), tokenizer, cfg, 2, num_shards=1
    ).next_batch()
    assert (batch["attention_mask"].sum(1) > 30).all()  # several sentences a pair, not half a sentence
    for bad in (0, 1.5, True, "10"):
        with pytest.raises(SettingsError, match="records_per_document"):
            PretrainConfig(train_files=[], hub_datasets=[dict(spec, records_per_document=bad)]).check_types()


@pytest.mark.parametrize("files", [1, 4])
def test_shuffled_streams_share_the_documents_out(tmp_path, tokenizer, files):
    """With shuffle_buffer the streams still split the corpus: every document in one stream exactly. Each stream
    shuffled with its own seed before `datasets` split the shuffled order between them, so 2 streams overlapped in
    about a third of the documents and never saw another third."""
    paths = []
    for j in range(files):
        path = tmp_path / f"docs{j}.txt"
        ids = range(j * 40 // files, (j + 1) * 40 // files)
        path.write_text("\n\n".join(f"Document {i} is here." for i in ids) + "\n")
        paths.append(str(path))
    docs = load_documents(paths)
    cfg = PretrainConfig(train_files=paths, shuffle_buffer=8)
    for epoch in (0, 1):
        seen = [
            [r["text"].strip() for r in ShardStream(docs, shard, 2, tokenizer, cfg)._epoch_documents(epoch)]
            for shard in (0, 1)
        ]
        assert sorted(seen[0] + seen[1]) == sorted(f"Document {i} is here." for i in range(40))
    first = [r["text"].strip() for r in ShardStream(docs, 0, 2, tokenizer, cfg)._epoch_documents(0)]
    assert first != sorted(first, key=lambda t: int(t.split()[1]))  # shuffled all the same


def test_token_encoder_gives_the_wrappers_ids_untruncated(tokenizer):
    """The Rust fast path = `tokenizer(texts, add_special_tokens=False)`, also past the 128-token truncation
    that MiniLM's tokenizer.json carries (the wrapper switches it off; so must the fast path)."""
    texts = ["Hello, world!", "", "naïve café déjà-vu", " ".join(["tokenisation"] * 150)]
    want = tokenizer(texts, add_special_tokens=False)["input_ids"]
    got = token_encoder(tokenizer)(texts)
    assert got == want
    assert len(got[-1]) > 128
    assert token_encoder(tokenizer) is token_encoder(tokenizer)  # one backend copy per tokenizer


def test_padding_stops_at_max_position_embeddings():
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=1000)
    examples = [
        {"input_ids": [101, *range(200, 226), 102], "token_type_ids": [0] * 28, "sop_label": 0, "key": (0,)}
    ]
    assert collate(examples, ids, 1, 0.15)["input_ids"].shape == (1, 32)  # a multiple of 8 ...
    assert collate(examples, ids, 1, 0.15, max_width=30)["input_ids"].shape == (1, 30)  # ... up to the cap
    assert collate(examples, ids, 1, 0.15, max_width=64)["input_ids"].shape == (1, 32)


def test_a_last_line_without_tokens_keeps_the_documents_last_pair():
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=1000)
    segments = [list(range(200, 208)), list(range(300, 310))]
    for tail in ([], [[]], [[], []]):  # e.g. a last line of zero-width spaces: no tokens
        out = document_examples([*segments, *tail], 64, 0.0, np.random.default_rng(0), ids)
        assert len(out) == 1 and len(out[0]["input_ids"]) == 18 + 3
    # an empty line between sentences changes nothing (the same draws)
    mid = document_examples([segments[0], [], segments[1]], 64, 0.0, np.random.default_rng(0), ids)
    assert mid == document_examples(segments, 64, 0.0, np.random.default_rng(0), ids)


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


def _truncate_one_token_at_a_time(a, b, max_tokens, rng):
    """The trimming rule, spelt out: one token at a time from the longer side (b on a tie), front or back."""
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def test_pairs_are_trimmed_by_the_rule():
    from elue.elasticbert.pretraining.data import _truncate_pair

    cases = np.random.default_rng(0)
    for seed in range(300):
        la, lb, budget = (int(x) for x in cases.integers(1, 60, size=3))
        want_a, want_b = list(range(la)), list(range(100, 100 + lb))
        got_a, got_b = list(want_a), list(want_b)
        _truncate_one_token_at_a_time(want_a, want_b, budget, np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        _truncate_pair(got_a, got_b, budget, rng)
        assert (got_a, got_b) == (want_a, want_b), (la, lb, budget)
        # the generator goes on where the rule's draws end (the swap draw that follows is unchanged)
        again = np.random.default_rng(seed)
        _truncate_one_token_at_a_time(list(range(la)), list(range(100, 100 + lb)), budget, again)
        assert rng.random() == again.random()


def test_a_very_long_line_makes_its_pair():
    """A line of 400,000 tokens after a short one (e.g. text without sentence ends): trimming it to the budget
    took minutes, one token at a time from the front of a list (the trim now cuts in slices, checked equal to the
    token-at-a-time rule above; speed is `bench/bench_pretrain_data.py`'s, not a timed test's)."""
    ids = SpecialIds(cls=101, sep=102, mask=103, pad=0, vocab_size=1000)
    segments = [[5, 6, 7], list(range(1000, 401_000))]
    out = document_examples(segments, 128, 0.0, np.random.default_rng(0), ids)
    assert len(out) == 1 and len(out[0]["input_ids"]) == 128


def test_a_line_of_spaces_separates_documents_like_an_empty_one(tmp_path):
    """A blank line with spaces or tabs on it (editors and scrapers leave them) still ends a document: the text
    builder splits only at "\\n\\n", so the whole file was one document, its SOP pairs across documents."""
    docs = [f"Document {i} starts here.\nIt goes on.\nThen it ends." for i in range(5)]
    clean = tmp_path / "clean.txt"
    clean.write_text("\n\n".join(docs) + "\n")
    spaced = tmp_path / "spaced.txt"
    spaced.write_text("\n  \n".join(docs[:3]) + "\n\t\n" + "\n \t \n\n".join(docs[3:]) + "\n   \n")
    want = [r["text"].strip() for r in load_documents(train_files=[str(clean)])]
    assert len(want) == 5
    assert [r["text"].strip() for r in load_documents(train_files=[str(spaced)])] == want


def test_a_hub_text_column_beside_a_column_named_text_is_read(tmp_path):
    """text_column: content where the records have a `text` column too: renaming content to text failed
    ("columns {'content'} are already in the dataset", a traceback)."""
    path = tmp_path / "two-texts.jsonl"
    rows = [{"text": f"Title {i}", "content": f"Document {i} starts. It ends."} for i in range(4)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    docs = load_documents(hub_datasets=[{"path": "json", "data_files": str(path), "text_column": "content"}])
    assert [r["text"] for r in docs] == [r["content"] for r in rows]


def test_a_hub_text_column_that_is_not_text_is_named(tmp_path, tokenizer):
    """A column of lists or numbers as text_column: an AttributeError deep in the sentence splitter."""
    path = tmp_path / "not-text.jsonl"
    rows = [{"paragraphs": [f"Document {i} starts.", "It ends."], "n": i} for i in range(4)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = {"path": "json", "data_files": str(path)}
    for column, kind in (("paragraphs", "List"), ("n", "int64")):
        with pytest.raises(SettingsError, match=rf"'json': column '{column}' \(text_column\) holds .*{kind}"):
            load_documents(hub_datasets=[{**spec, "text_column": column}])
    # a source that declares no features: found at the first document that is not a string
    from datasets import IterableDataset

    def records():
        yield {"text": ["a list", "of paragraphs"]}

    stream = ShardStream(IterableDataset.from_generator(records), 0, 1, tokenizer, PretrainConfig())
    with pytest.raises(SettingsError, match="a document's text is a list, not a string"):
        stream.take(1)
