"""Write a small local pre-training corpus from the ELUE data in ../shared/data (or $ELUE_DATA_DIR).

    python examples/make_pretrain_corpus.py runs/corpus            # -> runs/corpus/{train,eval}.txt
    python examples/make_pretrain_corpus.py runs/corpus --imdb-train 5000 --imdb-eval 300

train.txt: IMDb training reviews (one document each; `<br />` breaks become line breaks) followed by the
STS-B / SST-2 / MRPC training sentences in documents of 6; eval.txt: IMDb dev reviews (held out).
Documents are separated by blank lines, the layout `elue pretrain` reads from `train_files`.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import os
import re
from pathlib import Path

csv.field_size_limit(10**9)


def _rows(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="", encoding="utf-8") as f:
        yield from csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)


def _review(text: str) -> str:
    return "\n".join(p.strip() for p in re.split(r"(?:<br\s*/?>\s*)+", text) if p.strip())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument(
        "--data",
        type=Path,
        default=Path(
            os.environ.get("ELUE_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
        ),
    )
    p.add_argument("--imdb-train", type=int, default=5000, help="IMDb training reviews (0 = none)")
    p.add_argument("--imdb-eval", type=int, default=300, help="IMDb dev reviews for eval.txt")
    p.add_argument("--sentences", type=int, default=20000, help="STS-B/SST-2/MRPC sentences (0 = none)")
    args = p.parse_args(argv)
    imdb = args.data / "imdb"
    needed = [imdb / "train.tsv.gz"] * bool(args.imdb_train) + [imdb / "dev.tsv.gz"] * bool(args.imdb_eval)
    missing = [str(path.relative_to(args.data)) for path in needed if not path.is_file()]
    if missing:
        p.error(f"no ELUE data in {args.data}: {', '.join(missing)} missing (--data, or ELUE_DATA_DIR)")
    args.out.mkdir(parents=True, exist_ok=True)
    docs: list[str] = []
    if args.imdb_train:
        for i, row in enumerate(_rows(imdb / "train.tsv.gz")):
            if i >= args.imdb_train:
                break
            docs.append(_review(row["sentence"]))
    sents: list[str] = []
    for task, cols in (
        ("sts-b", ("sentence1", "sentence2")),
        ("sst-2", ("sentence",)),
        ("mrpc", ("#1 String", "#2 String")),
    ):
        path = args.data / task / "train.tsv"
        if path.exists():
            for row in _rows(path):
                sents.extend(row[c].strip() for c in cols if row.get(c))
    sents = sents[: args.sentences]
    docs += ["\n".join(sents[i : i + 6]) for i in range(0, len(sents), 6)]
    (args.out / "train.txt").write_text("\n\n".join(docs) + "\n", encoding="utf-8")  # what pretrain reads
    evals = []
    for i, row in enumerate(_rows(imdb / "dev.tsv.gz") if args.imdb_eval else []):
        if i >= args.imdb_eval:
            break
        evals.append(_review(row["sentence"]))
    (args.out / "eval.txt").write_text("\n\n".join(evals) + "\n", encoding="utf-8")
    print(f"{args.out / 'train.txt'}: {len(docs)} documents; {args.out / 'eval.txt'}: {len(evals)} documents")


if __name__ == "__main__":
    main()
