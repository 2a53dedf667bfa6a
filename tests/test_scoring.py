"""ELUE score, baselines and tracks (spec §4–6)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from elue.scoring import (
    MIN_MFLOPS,
    SIZE_TRACKS,
    Baseline,
    BaselineError,
    ModelSummary,
    baseline_performance,
    elue_score,
    load_baseline,
    mean_mflops,
    overall_score,
    pareto_front,
    rank_by_overall,
    size_track,
    size_tracks,
    validate_points,
)
from elue.tasks import TASK_NAMES

ELASTICBERT = [(1060, 84.1), (1413, 85.7), (2120, 87.0), (4242, 88.6)]
ROBERTA = [(1036, 81.8), (1385, 84.6), (2080, 86.8), (4170, 88.3)]
LAYERDROP = [(1036, 81.9), (1385, 84.3), (2085, 86.3), (4170, 87.9)]
PABEE = [(1449, 83.1), (1912, 85.4), (2359, 86.0), (2802, 86.8), (3194, 86.9), (3566, 87.0)]


def test_shipped_baseline():
    b = load_baseline()
    assert isinstance(b, Baseline) and isinstance(b, dict)
    assert b.name == "ElasticBERT-BASE"
    assert b["sst-2"] == [(float(f), p) for f, p in ELASTICBERT]
    assert b.points("SST2") == b["sst-2"]
    with pytest.raises(KeyError, match="no points for imdb"):
        b.points("imdb")


def test_published_scores_sst2():
    base = load_baseline()["sst-2"]
    assert elue_score(ROBERTA, base) == pytest.approx(-0.89, abs=0.02)
    assert elue_score(LAYERDROP, base) == pytest.approx(-1.17, abs=0.02)
    # the published -1.33 is read off screenshots (±10 MFLOPs, ±0.05 points): we get -1.296
    assert elue_score(PABEE, base) == pytest.approx(-1.33, abs=0.05)
    assert elue_score(ELASTICBERT, base) == pytest.approx(0.0, abs=1e-12)


def test_interpolation_by_hand():
    pts = [(100, 80.0), (200, 84.0), (400, 86.0)]
    assert baseline_performance(pts, 150) == pytest.approx(82.0)
    assert baseline_performance(pts, 300) == pytest.approx(85.0)
    assert baseline_performance(pts, 200) == pytest.approx(84.0)
    # below the range: first segment (slope 0.04/MFLOP) extended
    assert baseline_performance(pts, 50) == pytest.approx(78.0)
    # above the range: last segment (slope 0.01/MFLOP) extended
    assert baseline_performance(pts, 600) == pytest.approx(88.0)
    # order of the points does not matter
    assert baseline_performance(list(reversed(pts)), 50) == pytest.approx(78.0)
    # arrays in, arrays out
    assert list(baseline_performance(pts, [50, 150, 600])) == pytest.approx([78.0, 82.0, 88.0])


def test_single_point_baseline_is_constant():
    assert baseline_performance([(1000, 85.0)], 10) == 85.0
    assert baseline_performance([(1000, 85.0)], 1e6) == 85.0
    assert elue_score([(500, 86.0), (2000, 84.0)], [(1000, 85.0)]) == pytest.approx(0.0)


def test_elue_score_by_hand():
    pts = [(100, 80.0), (200, 84.0)]
    assert elue_score([(150, 83.0), (250, 85.0)], pts) == pytest.approx(((83 - 82) + (85 - 86)) / 2)
    with pytest.raises(ValueError):
        elue_score([], pts)


def test_overall_score():
    full = {t: 1.0 for t in TASK_NAMES}
    full["sts-b"] = -4.0
    assert overall_score(full) == pytest.approx(1 / 6)
    assert overall_score({**full, "sts-b": None}) is None
    partial = dict(full)
    del partial["imdb"]
    assert overall_score(partial) is None
    # aliases accepted
    assert overall_score({("sst2" if t == "sst-2" else t): v for t, v in full.items()}) == pytest.approx(
        1 / 6
    )
    with pytest.raises(KeyError):
        overall_score({"nope": 1.0})


def test_published_overall_average():
    # RoBERTa-BASE row of the original leaderboard: average -2.22 (rounded inputs)
    row = dict(zip(TASK_NAMES, [-0.89, -0.11, -0.66, -3.32, -2.95, -5.38], strict=True))
    assert overall_score(row) == pytest.approx(-2.22, abs=0.01)


# spec §6: the original leaderboard's rows, in its order: six per-task ELUE scores (SST-2, IMDb, SNLI, SciTail,
# MRPC, STS-B) and the published average
PUBLISHED_ROWS = {
    "ElasticBERT-BASE": ([0.0] * 6, 0.0),
    "ElasticBERT-patience": ([0.4, 0.2, 0.03, 0.36, -1.0, -0.44], -0.07),
    "ALBERT-PABEE": ([-1.33, -0.23, -0.85, -0.43, -2.93, -2.13], -1.32),
    "BERxiT-ElasticBERT": ([-3.59, -0.32, 0.2, -1.27, -3.13, -1.39], -1.58),
    "ALBERT-BASE": ([-2.41, -1.08, -1.55, -1.5, -2.34, -2.81], -1.95),
    "LayerDrop": ([-1.17, -0.13, -1.36, -4.14, -2.17, -2.98], -1.99),
    "TinyBERT": ([-1.7, -3.7, -0.8, -2.5, -2.6, -1.9], -2.2),
    "RoBERTa-BASE": ([-0.89, -0.11, -0.66, -3.32, -2.95, -5.38], -2.22),
    "BERT-of-Theseus": ([-4.21, -2.61, -1.29, -0.38, -5.13, -1.67], -2.55),
}


@pytest.mark.parametrize("model", PUBLISHED_ROWS)
def test_every_published_average_is_the_plain_mean(model):
    scores, average = PUBLISHED_ROWS[model]
    # the inputs are rounded to 2 decimals (patience's -0.075 was published as -0.07)
    assert overall_score(dict(zip(TASK_NAMES, scores, strict=True))) == pytest.approx(average, abs=0.006)


def test_published_rows_rank_in_the_published_order():
    rows = rank_by_overall({m: dict(zip(TASK_NAMES, s, strict=True)) for m, (s, _) in PUBLISHED_ROWS.items()})
    assert [(name, rank) for name, _, rank in rows] == [(m, i) for i, m in enumerate(PUBLISHED_ROWS, start=1)]


def test_published_sst2_points_need_the_extended_segment():
    """RoBERTa-BASE's and LayerDrop's 1,036-MFLOPs points lie below the baseline's range (1,060): the first
    segment extended (spec §4) gives -0.884 / -1.161; holding the end value instead would give -0.911 / -1.189."""
    base = load_baseline()["sst-2"]
    assert baseline_performance(base, 1036) == pytest.approx(84.1 - 24 * 1.6 / 353)
    assert elue_score(ROBERTA, base) == pytest.approx(-0.8841, abs=1e-4)
    assert elue_score(LAYERDROP, base) == pytest.approx(-1.1614, abs=1e-4)


def _write(tmp_path, data):
    p = tmp_path / "b.json"
    p.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return p


@pytest.mark.parametrize(
    "data, match",
    [
        ("{not json", "not valid JSON"),
        ([1, 2], "JSON object"),
        ({"name": "x"}, "'tasks'"),
        ({"tasks": {"nope": [[1, 2]]}}, "unknown ELUE task"),
        ({"tasks": {"sst-2": []}}, "at least one"),
        ({"tasks": {"sst-2": [[1, 2, 3]]}}, "point 0"),
        ({"tasks": {"sst-2": [[-1, 80]]}}, "positive"),
        ({"tasks": {"sst-2": [[1, "x"]]}}, "performance"),
        ({"tasks": {"sst-2": [[1, 80], [1, 81]]}}, "distinct"),
        ('{"tasks": {"sst-2": [[1' + "0" * 400 + ", 80]]}}", "MFLOPs 1000"),  # an int beyond float
        ({"tasks": {"sst-2": [[1000, -1e308], [1001, 1e308]]}}, "percentage points"),  # slopes would overflow
        ({"tasks": {"sst-2": [[1e300, 80]]}}, "up to"),
        # MFLOPs a few ulps apart near 0: the slope overflowed, the ELUE score was -inf (JSON -Infinity)
        (
            {"tasks": {"sst-2": [[1e-320, 50], [1.5e-320, 60]]}},
            "MFLOPs 1e-320; expected a positive number from",
        ),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ({"tasks": {"sst-2": [[1, 80]], "sst2": [[2, 81]]}}, "twice"),
    ],
)
def test_bad_baseline_files(tmp_path, data, match):
    p = _write(tmp_path, data)
    with pytest.raises(BaselineError, match=match) as e:
        load_baseline(p)
    assert str(p) in str(e.value)


def test_the_steepest_baseline_allowed_still_scores_finitely():
    lo = MIN_MFLOPS
    points = validate_points([[lo, -100.0], [float(np.nextafter(lo, 1.0)), 100.0]])
    # far above any count the sandbox lets through (1e60 FLOPs a call)
    assert math.isfinite(elue_score([(1e70, 50.0), (lo, 0.0)], points))


def test_baseline_file_roundtrip(tmp_path):
    p = _write(tmp_path, {"name": "mine", "tasks": {"STSB": [[300, 80], [100, 70]]}})
    b = load_baseline(p)
    assert b.name == "mine" and b["sts-b"] == [(100.0, 70.0), (300.0, 80.0)]
    assert load_baseline(_write(tmp_path, b.to_json())) == b
    with pytest.raises(BaselineError, match="cannot read"):
        load_baseline(tmp_path / "missing.json")


def test_size_tracks():
    assert SIZE_TRACKS == (40, 55, 70, 110)
    three = ("sst-2", "imdb")
    models = {
        "small": ModelSummary("small", 18.0, {"sst-2": 85.0, "imdb": 89.0}),  # mean 87
        "mid": {"params_m": 67.0, "best": {"sst-2": 88.0, "imdb": 90.0}},  # mean 89
        "tie": {"params_m": 66.0, "best": {"sst-2": 89.0, "imdb": 89.0}},  # mean 89
        "big": {"params_m": 125.0, "best": {"sst-2": 95.0, "imdb": 95.0}},
        "partial": {"params_m": 30.0, "best": {"sst-2": 99.0}},
        "edge": {"params_m": 40.0, "best": {"sst-2": 80.0, "imdb": 80.0}},
    }
    t40 = size_track(models, 40, three)
    assert [(e.name, e.rank) for e in t40] == [("small", 1), ("edge", 2), ("partial", None)]
    assert t40[0].mean_performance == pytest.approx(87.0)
    assert not t40[2].complete and t40[2].tasks == ("sst-2",)
    tracks = size_tracks(models, tasks=three)
    assert set(tracks) == set(SIZE_TRACKS)
    assert [(e.name, e.rank) for e in tracks[70]] == [
        ("mid", 1),
        ("tie", 1),
        ("small", 3),
        ("edge", 4),
        ("partial", None),
    ]
    assert "big" not in {e.name for e in tracks[110]}


def test_rank_by_overall():
    full = {t: 0.0 for t in TASK_NAMES}
    rows = rank_by_overall({"a": full, "b": {**full, "sst-2": 6.0}, "c": {"sst-2": 9.0}})
    assert rows == [("b", pytest.approx(1.0), 1), ("a", 0.0, 2), ("c", None, None)]


def test_pareto_front():
    pts = [(100, 80.0), (150, 79.0), (200, 85.0), (200, 84.0), (300, 85.0), (400, 90.0)]
    assert pareto_front(pts) == [(100, 80.0), (200, 85.0), (400, 90.0)]


def test_mean_mflops():
    # three rows on trace 0 (2 MFLOPs), one on trace 1 (6 MFLOPs) -> 3 MFLOPs
    assert mean_mflops([0, 0, 1, 0], [2e6, 6e6]) == pytest.approx(3.0)
    with pytest.raises(ValueError):
        mean_mflops([0, 2], [1e6, 1e6])


def test_nan_scores_count_as_missing_and_do_not_break_the_ranking():
    # NaN compared as neither larger nor smaller: 'a' (80) was ranked above 'c' (85)
    models = {
        "a": {"params_m": 10, "best": dict.fromkeys(TASK_NAMES, 80.0)},
        "b": {"params_m": 10, "best": {**dict.fromkeys(TASK_NAMES, 90.0), "sst-2": math.nan}},
        "c": {"params_m": 10, "best": dict.fromkeys(TASK_NAMES, 85.0)},
    }
    track = size_track(models, 40)
    assert [(e.name, e.rank, e.complete) for e in track] == [
        ("c", 1, True),
        ("a", 2, True),
        ("b", None, False),
    ]
    rows = rank_by_overall(
        {
            "a": dict.fromkeys(TASK_NAMES, 1.0),
            "b": dict.fromkeys(TASK_NAMES, math.nan),
            "c": dict.fromkeys(TASK_NAMES, 2.0),
        }
    )
    assert rows == [("c", 2.0, 1), ("a", 1.0, 2), ("b", None, None)]


def test_every_baseline_point_reads_back_exactly():
    # the last point was computed from the segment's left end: 59.4..76.4..50.4 read 50.39999999999999 at
    # 4,407, and the baseline scored -7e-15 (shown -0.00) against itself
    pts = [(1461, 59.4), (3052, 76.4), (4407, 50.4)]
    assert [baseline_performance(pts, f) for f, _ in pts] == [p for _, p in pts]
    assert elue_score(pts, pts) == 0.0
    rng = np.random.default_rng(0)
    for _ in range(200):
        xs = np.sort(rng.choice(np.arange(1, 100_000), size=5, replace=False)).astype(float)
        ys = np.round(rng.uniform(50, 95, size=5), 1)
        curve = list(zip(xs.tolist(), ys.tolist(), strict=True))
        assert baseline_performance(curve, xs).tolist() == ys.tolist()
    # the extension past either end is still the end segment's line
    assert baseline_performance(pts, 5762) == pytest.approx(50.4 - 26.0)
    assert baseline_performance(pts, 0) == pytest.approx(59.4 - 17.0 / 1591 * 1461)


def test_incomplete_entry_with_a_mean_of_zero_is_not_sorted_as_having_none():
    # STS-B's performance is 0 for a constant predictor; `mean or -inf` put that entry after one at -5
    models = {
        "zero": {"params_m": 10, "best": {"sts-b": 0.0}},
        "negative": {"params_m": 10, "best": {"sts-b": -5.0}},
        "none": {"params_m": 10, "best": {}},
    }
    assert [e.name for e in size_track(models, 40)] == ["zero", "negative", "none"]
