"""Metrics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from elue.metrics import METRICS, accuracy, compute_metrics, f1, get_metric, pearson, spearman
from elue.tasks import TASKS


def test_every_task_metric_is_registered():
    for task in TASKS.values():
        assert task.metric in METRICS
        assert get_metric(task) is METRICS[task.metric]


def test_parts_declared():
    assert METRICS["accuracy"].part_names == ("accuracy",)
    assert METRICS["acc_and_f1"].part_names == ("accuracy", "f1")
    assert METRICS["pearson_and_spearman"].part_names == ("pearson", "spearman")


def test_accuracy_by_hand():
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    out = compute_metrics("sst-2", [0, 1, 1, 0], [0, 1, 0, 0])
    assert out == {"performance": 75.0, "accuracy": 75.0}


def test_f1_class_1_by_hand():
    # tp=2, fp=1, fn=1 -> precision 2/3, recall 2/3, F1 2/3
    y = [1, 1, 1, 0, 0]
    p = [1, 1, 0, 1, 0]
    assert f1(y, p) == pytest.approx(2 / 3)
    out = compute_metrics("mrpc", y, p)
    assert out["accuracy"] == pytest.approx(60.0)
    assert out["f1"] == pytest.approx(200 / 3)
    assert out["performance"] == pytest.approx((60.0 + 200 / 3) / 2)


def test_f1_no_positive_predictions_is_zero():
    assert f1([1, 0], [0, 0]) == 0.0


def test_pearson_spearman_by_hand():
    y = [1.0, 2.0, 3.0, 4.0]
    p = [1.0, 3.0, 2.0, 4.0]
    # Spearman: d = (0, 1, -1, 0) -> 1 - 6*2/(4*15) = 0.8; Pearson equals it here (ranks == values)
    assert spearman(y, p) == pytest.approx(0.8)
    assert pearson(y, p) == pytest.approx(0.8)
    # Pearson differs from Spearman for a monotone non-linear map
    q = [1.0, 2.0, 3.0, 10.0]
    assert spearman(y, q) == pytest.approx(1.0)
    r = np.corrcoef(y, q)[0, 1]
    assert pearson(y, q) == pytest.approx(r)
    out = compute_metrics("sts-b", y, q)
    assert out["pearson"] == pytest.approx(100 * r)
    assert out["spearman"] == pytest.approx(100.0)
    assert out["performance"] == pytest.approx((100 * r + 100) / 2)


def test_constant_prediction_correlation_is_zero():
    assert pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0
    assert spearman([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == 0.0
    assert not math.isnan(compute_metrics("sts-b", [1, 2, 3], [2, 2, 2])["performance"])


def test_snli_three_classes():
    assert compute_metrics("snli", [0, 1, 2, 2], [0, 2, 2, 1])["performance"] == 50.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics("sst-2", [0, 1], [0])
    with pytest.raises(ValueError, match="zero examples"):
        compute_metrics("sst-2", [], [])
    with pytest.raises(ValueError, match="integer class ids"):
        compute_metrics("sst-2", [0, 1], [0.5, 1.0])
    # integral floats are fine for classes
    assert compute_metrics("sst-2", [0, 1], [0.0, 1.0])["accuracy"] == 100.0


@pytest.mark.parametrize(
    "task, y_true, y_pred, match",
    [
        # MRPC: sklearn's "Target is multiclass but average='binary'" said nothing of the bad class
        ("mrpc", [0, 1], [0, 2], "y_pred holds class 2, outside mrpc's labels 0..1"),
        # SST-2: a -1 ("no prediction") was silently scored as a wrong answer
        ("sst-2", [0, 1], [-1, 1], "y_pred holds class -1, outside sst-2's labels 0..1"),
        ("snli", [0, 3], [0, 1], "y_true holds class 3, outside snli's labels 0..2"),
    ],
)
def test_compute_metrics_rejects_classes_outside_the_task(task, y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(task, y_true, y_pred)


def test_matthews_for_glue_cola():
    # tp=1 tn=1 fp=1 fn=1 -> 0; perfect -> 1
    assert METRICS["matthews"]([1, 1, 0, 0], [1, 0, 1, 0]) == {"performance": 0.0, "mcc": 0.0}
    assert METRICS["matthews"]([1, 0, 1], [1, 0, 1])["mcc"] == pytest.approx(100.0)


def test_pearson_of_huge_finite_predictions():
    """Sums of squares of values near 1e308 overflow; the correlation does not depend on the scale."""
    from scipy.stats import pearsonr

    y = np.arange(10.0)
    p = y.copy()
    p[-2:] = [1.6e308, 1.7e308]
    assert pearson(y, p) == pytest.approx(pearsonr(y, p / 1e308)[0], rel=1e-12)
    assert pearson(y, p) > 0.6


def test_pearson_of_tiny_finite_predictions():
    """Subnormal predictions (a few multiples of 5e-324) keep too few bits for scipy's sums: Pearson of
    [1, 0, 2] * 5e-324 against [1, 2, 3] came out 0.707 where it is 0.5. The scale does not matter."""
    y = np.array([1.0, 2.0, 3.0])
    tiny = np.array([1.0, 0.0, 2.0]) * 5e-324
    assert pearson(y, tiny) == pytest.approx(pearson(y, [1.0, 0.0, 2.0]), rel=1e-12)
    assert pearson(y, tiny) == pytest.approx(0.5, rel=1e-12)
    assert pearson(tiny, y) == pytest.approx(0.5, rel=1e-12)


def test_pearson_of_predictions_a_few_ulps_apart():
    """Predictions 1, 1+5ulp, 1+9ulp (written as 1.000000000000001 and 1.000000000000002) against 1, 2.5, 4:
    Pearson is that of (0, 5, 9) against (0, 1, 2), 0.998; scipy's mean rounds to a whole ulp and gave
    0.982, with a NearConstantInputWarning printed in the middle of `elue evaluate`'s output."""
    import warnings

    u = np.spacing(1.0)
    pred = np.array([1.0, 1.0 + 5 * u, 1.0 + 9 * u])
    assert pred.tolist() == [1.0, 1.000000000000001, 1.000000000000002]
    expected = np.corrcoef([0.0, 5.0, 9.0], [0.0, 1.0, 2.0])[0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pearson([1.0, 2.5, 4.0], pred) == pytest.approx(expected, rel=1e-12)
        assert pearson(pred, [1.0, 2.5, 4.0]) == pytest.approx(expected, rel=1e-12)
        assert spearman([1.0, 2.5, 4.0], pred) == pytest.approx(1.0)
    # an offset changes nothing, nor does it lose precision on ordinary values
    y = np.array([0.3, 1.7, 2.2, 4.9, 3.1])
    q = np.array([0.5, 1.1, 2.9, 4.0, 3.3])
    assert pearson(y, q) == pytest.approx(np.corrcoef(y, q)[0, 1], rel=1e-12)
    assert pearson(y + 1e6, q - 1e6) == pytest.approx(np.corrcoef(y, q)[0, 1], rel=1e-9)


def test_spearman_of_huge_adjacent_predictions_keeps_their_order():
    """Spearman ranks the values, so their size needs no care; the rescaling meant for Pearson's sums
    (dividing by the largest value) rounded two adjacent huge floats to one and made a tie: strictly
    increasing predictions against 1, 2, 3 got 0.866 where 1."""
    a = 9.205214152011913e199
    b = np.nextafter(a, np.inf)
    m = 1.6066357757671798e200
    assert a / m == b / m  # what the division did
    assert spearman([1.0, 2.0, 3.0], [a, b, m]) == pytest.approx(1.0)
    assert pearson([1.0, 2.0, 3.0], [a, b, m]) == pytest.approx(
        np.corrcoef([1, 2, 3], [a / m, b / m, 1.0])[0, 1]
    )
