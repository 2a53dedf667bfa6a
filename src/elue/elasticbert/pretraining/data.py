"""Pre-training data: raw text -> documents -> sentence-order-prediction pairs -> dynamic MLM masks.

The path of one example
    sources (local text files, or hub corpora by id, streamed)
      -> documents (a text file's blank-line-separated paragraphs; a hub record)
      -> sentences (lines, then a light regex splitter) -> token ids (fast tokenizer, in batches)
      -> segment pairs packed to `max_seq_length` (ALBERT's recipe: fill a chunk of consecutive
         sentences up to the target length, cut it at a random sentence boundary into A and B,
         swap A and B with probability 1/2: SOP label 1 = swapped)
      -> [CLS] A [SEP] B [SEP] -> masked at batch time (15 %; of those 80 % [MASK], 10 % random, 10 % kept)

Determinism and data parallelism. The documents are split into `num_shards` independent streams
(`datasets.distributed.split_dataset_by_node`: by file where possible, else every n-th document).
Every random choice of a document (target length, cut, swap) is drawn from a generator seeded by
(seed, epoch, shard, document index), and the mask of an example by (seed, epoch, shard, document
index, example index within the document): an example and its mask depend only on where it sits in
its stream. A global batch takes the same number of consecutive examples from every stream, and a
process owns the streams `rank, rank + world, ...`. So 2 processes with batch b see exactly the
examples (and masks) of 1 process with batch 2b, as long as the number of processes divides the
number of streams. The position of each stream (epoch, document, example) is the data state saved
with a checkpoint; resuming skips raw documents without tokenising them.
"""

from __future__ import annotations

import itertools
import re
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..padding import padding_mask, right_pad
from .config import NoUsableDocument, SettingsError
from .modeling_pretraining import find_mlm_positions

# an end mark and the closing quotes or brackets after it (kept with the sentence), then the white space where
# the line is cut (group 1), before a capital or a digit (perhaps after an opening quote or bracket)
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(\s+)(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Lines, then sentences within a line (a light splitter: end mark, space, capital or digit). Only the white
    space between two sentences is left out: a closing quote or bracket stays with its sentence."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        start = 0
        for cut in _SENTENCE_END.finditer(line):
            out.append(line[start : cut.start(1)])
            start = cut.end(1)
        out.append(line[start:])
    return [s for s in out if s]


# ---------------------------------------------------------------------------------------------
# sources
# ---------------------------------------------------------------------------------------------
# a line of spaces or tabs (an empty one is where the text builder splits)
_BLANK_LINE = re.compile(r"\n[^\S\n]+\n")

# The data pipeline's version, saved with every stream position (`PretrainingBatches.state_dict`, a checkpoint's
# data-rank<r>.json). A position counts documents, so a change in what makes a document moves what an old
# position points at; a checkpoint of another version is refused, or accepted where its corpus is unaffected.
#   1 (no version saved): a line of only spaces or tabs inside a local file's paragraph did not end a document
#   2: it does (`_split_at_blank_lines`)
#   3: with `shuffle_buffer` every stream shuffles with the same seed (`ShardStream._epoch_documents`); each
#      shuffled with its own, so with 2 or more streams they overlapped and missed documents
DATA_VERSION = 3


def documents_split_differently(train_files: list[str]) -> str | None:
    """The first of `train_files` whose documents data version 1 counted otherwise (a paragraph of the `text`
    builder with a line of only spaces or tabs inside, which version 2 cuts there), or None. Reads every file
    through. Hub corpora did not change (one record, one document)."""
    from datasets import load_dataset

    for path in train_files:
        ds = load_dataset("text", data_files=[path], sample_by="paragraph", split="train", streaming=True)
        for batch in ds.iter(batch_size=1000):
            if any(_BLANK_LINE.search(text) for text in batch["text"]):
                return path
    return None


def _split_at_blank_lines(batch: dict[str, list[str]]) -> dict[str, list[str]]:
    """Paragraphs of the `text` builder (split at "\n\n" only) cut again at lines of white space, which end a
    document just as an empty line does; pieces of nothing but white space are left out."""
    out: list[str] = []
    for text in batch["text"]:
        if _BLANK_LINE.search(text) is None:
            out.append(text)
        else:
            out.extend(piece for piece in _BLANK_LINE.split(text) if piece.strip())
    return {"text": out}


def _join_records(batch: dict[str, list]) -> dict[str, list[str]]:
    """The records of a batch as one document, a record a line (`records_per_document`)."""
    texts = batch["text"]
    if any(t is not None and not isinstance(t, str) for t in texts):  # a source without declared features
        return {"text": texts}  # the stream names the column's type
    return {"text": ["\n".join(t for t in texts if t)]}


def _hub_spec(spec: Any, text_column: str) -> dict[str, Any]:
    if isinstance(spec, str):
        path, _, name = spec.partition(":")
        spec = {"path": path, "name": name or None}
    spec = dict(spec)
    spec.setdefault("split", "train")
    spec.setdefault("text_column", text_column)
    return spec


def load_documents(
    train_files: list[str] | None = None,
    hub_datasets: list[Any] | None = None,
    text_column: str = "text",
):
    """A streaming `datasets.IterableDataset` of {"text": document} over every source, in order.

    Local files go through the `text` builder with `sample_by="paragraph"` (documents separated by
    blank lines; a line of spaces or tabs is one too). Hub corpora are read with
    `load_dataset(path, name, split=..., streaming=True)`: a Hugging Face id (wikipedia "20231101.en",
    bookcorpus, openwebtext, allenai/c4 "en") or any local path `load_dataset` understands, which is how they
    are tested offline. One record is one document, or `records_per_document` consecutive records are (one
    line each: BookCorpus has a sentence a record).
    """
    from datasets import concatenate_datasets, load_dataset

    parts = []
    if train_files:
        ds = load_dataset(
            "text", data_files=list(train_files), sample_by="paragraph", split="train", streaming=True
        )
        parts.append(ds.map(_split_at_blank_lines, batched=True))
    for spec in hub_datasets or []:
        spec = _hub_spec(spec, text_column)
        column = spec.pop("text_column")
        group = spec.pop("records_per_document", 1)
        try:
            ds = load_dataset(streaming=True, **spec)
        except Exception as err:  # noqa: BLE001 (offline, no such dataset or config, missing files...)
            first = (str(err).strip().splitlines() or [""])[0]
            hint = ""
            if "scripts are no longer supported" in first:
                hint = (
                    " (datasets >= 4 runs no loading script: read the hub's Parquet export with "
                    "`revision: refs/convert/parquet` in this hub_datasets entry, or a copy of the corpus without "
                    "a script; docs/pretraining.md)"
                )
            raise SettingsError(
                f"hub_datasets: cannot load {spec.get('path')!r}: {type(err).__name__}: {first}{hint}"
            ) from err
        columns = ds.column_names  # None where the source does not declare its features
        if columns is not None and column not in columns:
            raise SettingsError(
                f"hub_datasets: {spec.get('path')!r} has no column {column!r} (text_column); its columns: "
                f"{', '.join(columns)}"
            )
        kind = (ds.features or {}).get(column)  # None where the source does not declare its features
        if kind is not None and getattr(kind, "dtype", None) not in ("string", "large_string"):
            raise SettingsError(
                f"hub_datasets: {spec.get('path')!r}: column {column!r} (text_column) holds {kind}, not text"
            )
        ds = ds.select_columns([column])  # first: the records may have a `text` column beside it
        if column != "text":
            ds = ds.rename_column(column, "text")
        if group > 1:  # BookCorpus: a sentence a record; n consecutive records make one document, a line each
            ds = ds.map(_join_records, batched=True, batch_size=group)
        parts.append(ds)
    if not parts:
        raise ValueError("no pre-training text: give train_files or hub_datasets")
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


# ---------------------------------------------------------------------------------------------
# examples
# ---------------------------------------------------------------------------------------------
@dataclass
class SpecialIds:
    cls: int
    sep: int
    mask: int
    pad: int
    vocab_size: int
    # every special token of the tokenizer ([UNK] too): never a random replacement
    special: tuple[int, ...] = ()

    def __post_init__(self):
        ids = {*self.special, self.cls, self.sep, self.mask, self.pad}
        self._excluded = np.array(sorted(i for i in ids if i is not None and 0 <= i < self.vocab_size))

    @classmethod
    def from_tokenizer(cls, tok) -> SpecialIds:
        return cls(
            tok.cls_token_id,
            tok.sep_token_id,
            tok.mask_token_id,
            tok.pad_token_id,
            len(tok),
            tuple(tok.all_special_ids),
        )

    def random_tokens(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n tokens drawn uniformly from the vocabulary without the special tokens (one draw of n integers)."""
        out = rng.integers(0, self.vocab_size - len(self._excluded), size=n)
        for e in self._excluded:  # ascending: [0, V - k) onto [0, V) without the k special ids
            out[out >= e] += 1
        return out


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: np.random.Generator) -> None:
    """Trim a and b (in place) to max_tokens together: one token at a time from the longer one (b on a tie),
    from its front or its back with probability 1/2 each. The tokens' fates are counted first and the lists
    cut once: deleting from the front of a list one token at a time is quadratic, minutes for one line of a
    few hundred thousand tokens. The same draws (one per token removed) as the token-at-a-time loop."""
    excess = len(a) + len(b) - max_tokens
    if excess <= 0:
        return
    coins = rng.random(excess) < 0.5  # True: from the front
    la, lb = len(a), len(b)
    cut = [[0, 0], [0, 0]]  # per list (a, b): tokens off the front, off the back
    for front in coins.tolist():
        if la > lb:
            la -= 1
            cut[0][0 if front else 1] += 1
        else:
            lb -= 1
            cut[1][0 if front else 1] += 1
    for seq, (head, tail) in zip((a, b), cut, strict=True):
        del seq[len(seq) - tail :]
        del seq[:head]


def document_examples(
    segments: list[list[int]],
    max_seq_length: int,
    short_seq_prob: float,
    rng: np.random.Generator,
    ids: SpecialIds,
) -> list[dict[str, Any]]:
    """SOP examples of one tokenised document (a list of sentences' token ids)."""
    # lines without tokens (zero-width spaces, control characters) left out first: one at the end of the
    # document would otherwise stop the loop before its last chunk is made into a pair
    segments = [seg for seg in segments if seg]
    max_tokens = max_seq_length - 3
    target = max_tokens
    if rng.random() < short_seq_prob:
        target = int(rng.integers(2, max_tokens + 1))
    out: list[dict[str, Any]] = []
    chunk: list[list[int]] = []
    length = 0
    for i, seg in enumerate(segments):
        chunk.append(seg)
        length += len(seg)
        if i == len(segments) - 1 or length >= target:
            if len(chunk) >= 2:
                a_end = int(rng.integers(1, len(chunk)))
                a = [t for s in chunk[:a_end] for t in s]
                b = [t for s in chunk[a_end:] for t in s]
            else:  # one sentence: cut it inside (a one-sentence document still makes a pair)
                toks = chunk[0][: max_tokens + 1]
                if len(toks) >= 2:
                    cut = int(rng.integers(1, len(toks)))
                    a, b = list(toks[:cut]), list(toks[cut:])
                else:
                    a, b = [], []
            if a and b:
                _truncate_pair(a, b, max_tokens, rng)
                swapped = bool(rng.random() < 0.5)
                if swapped:
                    a, b = b, a
                input_ids = [ids.cls, *a, ids.sep, *b, ids.sep]
                token_type_ids = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                out.append(
                    {"input_ids": input_ids, "token_type_ids": token_type_ids, "sop_label": int(swapped)}
                )
            chunk, length = [], 0
            target = max_tokens
            if rng.random() < short_seq_prob:
                target = int(rng.integers(2, max_tokens + 1))
    return out


@dataclass
class StreamPosition:
    epoch: int = 0
    document: int = 0  # documents of this epoch fully consumed
    example: int = 0  # examples of the next document already consumed

    def as_list(self) -> list[int]:
        return [self.epoch, self.document, self.example]


_ENCODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def token_encoder(tokenizer) -> Callable[[list[str]], list[list[int]]]:
    """texts -> token ids without special tokens, the same ids as `tokenizer(texts, add_special_tokens=False,
    split_special_tokens=True)`: a "[SEP]" or "[MASK]" written in the corpus (web text about BERT has them) is
    text, as BERT's own pre-training data made it, not the special token (a separator or mask inside a segment
    that neither the SOP pairs nor the masking put there). Documents are the same either way, so saved data
    positions (DATA_VERSION) still point at the same place.

    With a fast tokenizer this calls its Rust backend directly (batch-parallel), on a copy with truncation and
    padding switched off as the wrapper does: the wrapper's per-encoding conversion to Python dicts cost about
    as much as the tokenisation itself. One copy per tokenizer object, shared by the streams."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return lambda texts: tokenizer(
            texts, add_special_tokens=False, split_special_tokens=True, return_attention_mask=False
        )["input_ids"]
    fn = _ENCODERS.get(tokenizer)
    if fn is None:
        from tokenizers import Tokenizer

        raw = Tokenizer.from_str(backend.to_str())
        raw.no_truncation()
        raw.no_padding()
        raw.encode_special_tokens = True  # "[SEP]" in the text is text

        def fn(texts: list[str]) -> list[list[int]]:
            return [e.ids for e in raw.encode_batch(texts, add_special_tokens=False)]

        _ENCODERS[tokenizer] = fn
    return fn


class ShardStream:
    """The examples of one data stream, in a fixed order, resumable from a `StreamPosition`."""

    def __init__(self, documents, shard: int, num_shards: int, tokenizer, settings, position=None):
        from datasets.distributed import split_dataset_by_node

        self.shard, self.num_shards = shard, num_shards
        self.tokenizer = tokenizer
        self._encode = token_encoder(tokenizer)
        self.ids = SpecialIds.from_tokenizer(tokenizer)
        self.s = settings
        self.documents = split_dataset_by_node(documents, rank=shard, world_size=num_shards)
        self.position = StreamPosition(*(position or []))
        self._iter = self._examples()

    def _epoch_documents(self, epoch: int):
        ds = self.documents
        if self.s.shuffle_buffer:
            # one seed for every stream: `datasets` shuffles (the files' order, then through the buffer) before it
            # splits the documents between the streams, so the streams take their shares of one shuffled order.
            # With a seed per stream each split its own order: 2 streams overlapped in a third of the documents
            # and never saw another third.
            ds = ds.shuffle(seed=self.s.seed, buffer_size=self.s.shuffle_buffer)
            ds.set_epoch(epoch)
        return ds

    def _examples(self) -> Iterator[tuple[dict[str, Any], tuple[int, ...]]]:
        start = StreamPosition(**vars(self.position))
        epoch = start.epoch
        while True:
            ds = self._epoch_documents(epoch)
            first_doc = start.document if epoch == start.epoch else 0
            records = iter(ds)
            # skip consumed documents without tokenising them (IterableDataset.skip on a
            # node-split stream counts the documents before the split)
            for _ in itertools.islice(records, first_doc):
                pass
            made_any = False
            doc_index = first_doc
            pending: list[str] = []

            def flush(texts: list[str], first: int, _epoch: int = epoch):
                sentences = [split_sentences(t) for t in texts]
                flat = [s for doc in sentences for s in doc]
                enc = self._encode(flat) if flat else []
                pos = 0
                for j, doc in enumerate(sentences):
                    segs = enc[pos : pos + len(doc)]
                    pos += len(doc)
                    d = first + j
                    rng = np.random.default_rng([self.s.seed, _epoch, self.shard, d])
                    exs = document_examples(segs, self.s.max_seq_length, self.s.short_seq_prob, rng, self.ids)
                    skip = start.example if (_epoch == start.epoch and d == start.document) else 0
                    for k in range(skip, len(exs)):
                        ex = exs[k]
                        ex["key"] = (_epoch, self.shard, d, k)
                        done = k + 1 == len(exs)
                        yield ex, (_epoch, d + 1, 0) if done else (_epoch, d, k + 1)
                    if not exs or skip >= len(exs):
                        yield None, (_epoch, d + 1, 0)

            for record in records:
                text = record["text"]
                if not isinstance(text, str) and text is not None:  # a source without declared features
                    raise SettingsError(
                        f"a document's text is a {type(text).__name__}, not a string: point text_column at a "
                        "column of text"
                    )
                pending.append(text or "")
                if len(pending) >= self.s.tokenize_batch_docs:
                    for ex, pos in flush(pending, doc_index):
                        made_any |= ex is not None
                        yield ex, pos
                    doc_index += len(pending)
                    pending = []
            if pending:
                for ex, pos in flush(pending, doc_index):
                    made_any |= ex is not None
                    yield ex, pos
            if not made_any and first_doc == 0:
                few = " or fewer documents than num_data_shards" if self.num_shards > 1 else ""
                raise NoUsableDocument(
                    f"data stream {self.shard}/{self.num_shards} has no usable document (an empty corpus, "
                    f"documents of a single token{few}?)"
                )
            epoch += 1
            yield None, (epoch, 0, 0)

    def take(self, n: int) -> list[dict[str, Any]]:
        out = []
        while len(out) < n:
            ex, pos = next(self._iter)
            self.position = StreamPosition(*pos)
            if ex is not None:
                out.append(ex)
        return out


def mask_example(
    input_ids: list[int], key: tuple[int, ...], seed: int, probability: float, ids: SpecialIds
) -> tuple[list[int], list[int]]:
    """BERT masking of one example, drawn from a generator seeded by the example's key: a fixed
    number (round(p * n), at least 1) of non-special positions; 80 % [MASK], 10 % a random token (never a
    special one: a [SEP], [CLS] or [PAD] put inside the text would change the pair's structure), 10 % unchanged. Returns (masked input ids, labels with -100 where not predicted)."""
    masked, labels = _mask(np.asarray(input_ids, dtype=np.int64), key, seed, probability, ids)
    return masked.tolist(), labels.tolist()


def _mask(
    ids_row: np.ndarray, key: tuple[int, ...], seed: int, probability: float, ids: SpecialIds
) -> tuple[np.ndarray, np.ndarray]:
    """`mask_example` on a numpy row, vectorised: (masked ids, labels) as int64 arrays."""
    rng = np.random.default_rng([seed, 7919, *key])
    cand = np.flatnonzero((ids_row != ids.cls) & (ids_row != ids.sep) & (ids_row != ids.pad))
    n = max(1, int(round(len(cand) * probability)))
    pos = cand[np.sort(rng.choice(len(cand), size=min(n, len(cand)), replace=False))]
    r = rng.random(len(pos))  # < 0.8: [MASK]; < 0.9: a random token; else unchanged
    labels = np.full(len(ids_row), -100, dtype=np.int64)
    labels[pos] = ids_row[pos]
    masked = ids_row.copy()
    masked[pos[r < 0.8]] = ids.mask
    swap = pos[(r >= 0.8) & (r < 0.9)]
    masked[swap] = ids.random_tokens(rng, len(swap))
    return masked, labels


def collate(
    examples: list[dict[str, Any]],
    ids: SpecialIds,
    seed: int,
    probability: float,
    multiple_of: int = 8,
    max_width: int | None = None,
) -> dict[str, torch.Tensor]:
    """Mask and pad a list of examples (to the longest, rounded up to `multiple_of` but not beyond `max_width`,
    the model's max_position_embeddings: one that is no multiple of 8 has no position for the rounded-up width).
    `mlm_positions` are the flat indices of the positions to predict, found here so that the model need not ask
    the GPU for them."""
    lengths = np.array([len(e["input_ids"]) for e in examples], dtype=np.int64)
    width = -(-int(lengths.max()) // multiple_of) * multiple_of
    keep = padding_mask(lengths, min(width, max_width or width))  # (n, width)
    rows = [
        _mask(np.asarray(e["input_ids"], dtype=np.int64), e["key"], seed, probability, ids) for e in examples
    ]
    labels = right_pad([lab for _, lab in rows], keep, -100)
    return {
        "input_ids": right_pad([m for m, _ in rows], keep, ids.pad),
        "attention_mask": torch.from_numpy(keep.astype(np.int64)),
        "token_type_ids": right_pad(
            [np.asarray(e["token_type_ids"], dtype=np.int64) for e in examples], keep, 0
        ),
        "labels": labels,
        "mlm_positions": find_mlm_positions(labels),
        "sop_labels": torch.tensor([e["sop_label"] for e in examples], dtype=torch.long),
    }


def rows_per_stream(num_shards: int, world_size: int, batch_size: int) -> int:
    """Each process owns num_shards / world_size data streams and takes batch_size / (that) rows from each:
    both must divide, else a SettingsError."""
    if num_shards % world_size:
        raise SettingsError(f"num_data_shards={num_shards} is not a multiple of {world_size} processes")
    own = num_shards // world_size
    if batch_size % own:
        raise SettingsError(
            f"per_device_batch_size {batch_size} is not a multiple of the {own} data streams per process "
            f"(num_data_shards {num_shards}, {world_size} process(es))"
        )
    return batch_size // own


@dataclass
class PretrainingBatches:
    """The micro-batches of one process: `batch_size` examples, an equal share from each of the
    streams it owns (`rank, rank + world_size, ...` of `num_shards`)."""

    documents: Any
    tokenizer: Any
    settings: Any  # PretrainConfig (seed, max_seq_length, short_seq_prob, mlm_probability, ...)
    batch_size: int
    num_shards: int
    rank: int = 0
    world_size: int = 1
    max_width: int | None = None  # the model's max_position_embeddings (`collate`)
    streams: dict[int, ShardStream] = field(default_factory=dict)

    def __post_init__(self):
        self.per_stream = rows_per_stream(self.num_shards, self.world_size, self.batch_size)
        self.ids = SpecialIds.from_tokenizer(self.tokenizer)
        for s in range(self.rank, self.num_shards, self.world_size):
            self.streams[s] = ShardStream(self.documents, s, self.num_shards, self.tokenizer, self.settings)

    def next_batch(self) -> dict[str, torch.Tensor]:
        examples = [ex for s in sorted(self.streams) for ex in self.streams[s].take(self.per_stream)]
        s = self.settings
        return collate(examples, self.ids, s.seed, s.mlm_probability, max_width=self.max_width)

    def state_dict(self) -> dict[str, Any]:
        """Per stream ("0", "1", ...) its position [epoch, documents, examples], and "data_version"."""
        return {
            "data_version": DATA_VERSION,
            **{str(s): st.position.as_list() for s, st in self.streams.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The positions of `state_dict` (of this or other processes: the streams not owned here are ignored). A
        "data_version" other than DATA_VERSION is refused; a state without one is version 1 and taken as it is
        (the trainer checks first that the corpus is one version 1 and 2 split alike)."""
        version = state.get("data_version", DATA_VERSION)
        if version != DATA_VERSION:
            raise SettingsError(f"data positions of data version {version!r}: this code reads {DATA_VERSION}")
        for s, pos in state.items():
            if s == "data_version":
                continue
            s = int(s)
            if s in self.streams:
                self.streams[s] = ShardStream(
                    self.documents, s, self.num_shards, self.tokenizer, self.settings, position=pos
                )


def eval_batches(
    documents, tokenizer, settings, num_examples: int, batch_size: int, max_width: int | None = None
) -> list[dict[str, torch.Tensor]]:
    """A fixed held-out set: the first `num_examples` examples of one stream, with fixed masks (`max_width`:
    `collate`)."""
    stream = ShardStream(documents, 0, 1, tokenizer, settings)
    examples: list[dict[str, Any]] = []
    while len(examples) < num_examples:
        ex, pos = next(stream._iter)
        if pos[0] > 0:  # one pass at most
            break
        if ex is not None:
            examples.append(ex)
    ids = SpecialIds.from_tokenizer(tokenizer)
    return [
        collate(
            examples[i : i + batch_size], ids, settings.seed, settings.mlm_probability, max_width=max_width
        )
        for i in range(0, len(examples), batch_size)
    ]
