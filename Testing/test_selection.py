"""Leave-one-case-out choice of a default method (evaluation/selection.py), on made-up scores."""

import pytest

from EdgeFusionLib.evaluation import selection

METRICS = ["psnr", "ssim", "mi"]


def rows(case_scores):
    """Per-pair rows from {case: [score per pair]}: every metric gets the same score, plus salient losses."""
    return [{"pair": f"{case}{index:03d}", "case": case, **{m: score for m in METRICS},
             "salient_loss_mri": 0.0, "salient_loss_other": loss}
            for case, (scores, loss) in case_scores.items() for index, score in enumerate(scores)]


def test_each_case_is_held_out_and_ranked_on_its_own_pairs():
    records = {
        "steady": rows({"10": ([0.8, 0.8], 0.0), "20": ([0.7], 0.0), "30": ([0.6], 0.01)}),
        # best on two cases, far worst on the third: wins the training means of folds 10 and 20 only
        "erratic": rows({"10": ([0.9, 0.9], 0.0), "20": ([0.9], 0.05), "30": ([0.1], 0.0)}),
        "weak": rows({"10": ([0.5, 0.5], 0.0), "20": ([0.5], 0.0), "30": ([0.5], 0.0)}),
    }
    result = selection.leave_one_case_out(records, METRICS)
    assert result["cases"] == ["10", "20", "30"]
    assert [result["folds"][case]["chosen"] for case in result["cases"]] == ["steady", "steady", "erratic"]
    assert result["folds"]["30"]["held_out"] == {"steady": 1.0, "erratic": 3.0, "weak": 2.0}
    steady = result["summary"]["steady"]
    assert (steady["mean"], steady["min"], steady["max"]) == pytest.approx((5 / 3, 1.0, 2.0))  # erratic also averages 5/3
    assert steady["chosen_by"] == 2 and steady["first_on"] == 1
    assert result["summary"]["erratic"]["salient_loss_other_worst_case"] == pytest.approx(0.05)
    assert result["eligible"] == ["steady", "weak"]  # erratic loses 5 % of the other's salient region on case 20
    assert result["default"] == "steady"
    assert selection.leave_one_case_out(records, METRICS, max_salient_loss=1.0)["default"] == "steady"  # tie -> votes
    strict = selection.leave_one_case_out(records, METRICS, max_salient_loss=0.005)
    assert strict["eligible"] == ["weak"] and strict["default"] == "weak"  # the others lose >0.5 % somewhere
    text = selection.markdown(result, "MRI-CT")
    assert "default by cross-validation: `steady`" in text and "| `steady` | 1.67 | 1.00 | 2.00 | 1 of 3 | 2 of 3 |" in text


def test_needs_two_cases_and_a_method():
    with pytest.raises(ValueError, match="at least two cases"):
        selection.leave_one_case_out({"a": rows({"10": ([0.5], 0.0)})}, METRICS)
    with pytest.raises(ValueError, match="no methods"):
        selection.leave_one_case_out({}, METRICS)


def test_a_method_that_leaves_specks_on_a_case_is_not_eligible():
    records = {
        "speckled": [{**row, "isolated_pixels": 3.0 if row["case"] == "20" else 0.0}
                     for row in rows({"10": ([0.9], 0.0), "20": ([0.9], 0.0)})],
        "clean": [{**row, "isolated_pixels": 1.0} for row in rows({"10": ([0.5], 0.0), "20": ([0.5], 0.0)})],
    }
    result = selection.leave_one_case_out(records, METRICS)
    assert result["summary"]["speckled"]["isolated_pixels_worst_case"] == 3.0
    assert result["eligible"] == ["clean"] and result["default"] == "clean"  # 1 per pair is the limit, included
    assert selection.leave_one_case_out(records, METRICS, max_isolated_pixels=3.0)["default"] == "speckled"
    assert "| `clean` | 2.00 | 2.00 | 2.00 | 0 of 2 | 0 of 2 | 0.00 % | 0.00 % | 1.00 |" in selection.markdown(result, "MRI-CT")
    with pytest.raises(ValueError, match="isolated pixels at or below 0.5 per pair"):
        selection.leave_one_case_out(records, METRICS, max_isolated_pixels=0.5)
