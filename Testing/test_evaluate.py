"""``edgefusion evaluate`` on a tiny generated data set (never the atlas images)."""

import argparse
import csv
import json
import math

import numpy as np
import pytest
from conftest import phantom_slice
from PIL import Image

from EdgeFusionLib.evaluation import evaluate
from EdgeFusionLib.evaluation import metrics as metrics_module
from EdgeFusionLib.evaluation.metrics import METRICS, compute_metrics, mean_rank
from EdgeFusionLib.fusion.baselines import PIXEL_METHODS
from EdgeFusionLib.fusion.colour import luma
from EdgeFusionLib.io import atlas
from EdgeFusionLib.modality import TASKS

CT_NAMES = ["05001", "16001", "16002", "32001"]  # cases 16 and 32 are MRI-CT's validation cases
METHODS = ["pixel-average", "laplacian-pyramid"]


def write_png(path, array01):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.rint(np.asarray(array01) * 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """MRI-CT: grey 32x32 pairs over three cases; MRI-SPECT: two pairs with an RGB SPECT."""
    root = tmp_path_factory.mktemp("data")
    for index, name in enumerate(CT_NAMES):
        write_png(root / "MRI-CT" / "MRI" / f"{name}.png", phantom_slice(32, 32, seed=index))
        write_png(root / "MRI-CT" / "CT" / f"{name}.png", phantom_slice(32, 32, seed=10 + index) ** 2)
    for index, name in enumerate(["21001", "21002"]):
        write_png(root / "MRI-SPECT" / "MRI" / f"{name}.png", phantom_slice(32, 32, seed=20 + index))
        hot = phantom_slice(32, 32, seed=30 + index)
        write_png(root / "MRI-SPECT" / "SPECT" / f"{name}.png", np.stack([hot, hot**2, 0.3 * hot], axis=-1))
    return root


@pytest.fixture(scope="module")
def ct_run(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    results = evaluate.run_evaluation(dataset, "MRI-CT", METHODS, out, cases=["16", "32"], progress=False)
    return results, out


def read_grey(path):
    return np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255


def test_results_hold_the_metrics_of_each_pair_computed_directly(dataset, ct_run):
    results, _ = ct_run
    assert results["pairs"] == ["16001", "16002", "32001"] and results["n_pairs"] == 3
    assert results["cases"] == ["16", "32"] and results["methods"] == METHODS
    for method in METHODS:
        rows = results["per_pair"][method]
        for row in rows:
            mri = read_grey(dataset / "MRI-CT" / "MRI" / f"{row['pair']}.png")
            ct = read_grey(dataset / "MRI-CT" / "CT" / f"{row['pair']}.png")
            written = np.floor(PIXEL_METHODS[method](mri, ct) * 255 + 0.5) / 255  # the 8-bit PNG batch writes (halves up)
            expected = compute_metrics(written, mri, ct)
            assert {name: row[name] for name in METRICS} == pytest.approx(expected, rel=1e-9)
            assert row["seconds"] > 0
        summary = results["summary"][method]
        for name in METRICS:
            values = [row[name] for row in rows]
            assert summary["mean"][name] == pytest.approx(np.mean(values))
            assert summary["std"][name] == pytest.approx(np.std(values))
    means = {method: results["summary"][method]["mean"] for method in METHODS}
    assert {method: results["summary"][method]["mean_rank"] for method in METHODS} == mean_rank(means)


def test_markdown_csv_and_json_agree_with_the_results(ct_run):
    results, out = ct_run
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "# EdgeFusion evaluation: MRI-CT" in markdown
    assert "All 3 pairs of cases 16, 32" in markdown and "images 32×32" in markdown
    assert "![" in markdown and "(figure.png)" in markdown
    for method in METHODS:
        summary = results["summary"][method]
        row = next(line for line in markdown.splitlines() if line.startswith(f"| `{method}`"))
        assert f"{summary['mean_rank']:.2f}" in row
        assert f"{summary['mean']['psnr']:.2f} ± {summary['std']['psnr']:.2f}" in row
        assert f"{summary['mean']['fsim']:.3f} ± {summary['std']['fsim']:.3f}" in row

    rows = list(csv.DictReader((out / "results.csv").open()))
    assert sorted(row["method"] for row in rows) == sorted(METHODS)
    for row in rows:
        summary = results["summary"][row["method"]]
        assert int(row["pairs"]) == 3
        assert float(row["mean_rank"]) == pytest.approx(summary["mean_rank"])
        for name in [*METRICS, "seconds"]:
            assert float(row[f"{name}_mean"]) == pytest.approx(summary["mean"][name])
            assert float(row[f"{name}_std"]) == pytest.approx(summary["std"][name])

    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["pairs"] == results["pairs"] and saved["metrics"] == list(METRICS)
    for method in METHODS:
        assert saved["summary"][method]["mean"] == pytest.approx(results["summary"][method]["mean"])
        assert [row["pair"] for row in saved["per_pair"][method]] == results["pairs"]
    assert saved["outputs"] == results["outputs"]


def test_figure_is_a_non_trivial_png(ct_run):
    _, out = ct_run
    figure = out / "figure.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(figure) as image:
        image.load()
        assert image.width > 800 and image.height > 600
        assert np.asarray(image.convert("L")).std() > 10  # drawn content, not a blank canvas
    assert figure.stat().st_size > 20_000
    assert not list(out.glob(".*.tmp"))


def test_colour_spect_is_scored_on_its_luma(dataset, tmp_path):
    results = evaluate.run_evaluation(dataset, "MRI-SPECT", ["pixel-max"], tmp_path, examples=1, progress=False)
    assert results["n_pairs"] == 2
    with Image.open(dataset / "MRI-SPECT" / "SPECT" / "21001.png") as image:
        spect_y = luma(np.asarray(image, dtype=np.float32) / 255)
    mri = read_grey(dataset / "MRI-SPECT" / "MRI" / "21001.png")
    expected = compute_metrics(evaluate.as_written(np.maximum(mri, spect_y), evaluate.load_pair(results_pair(dataset))), mri, spect_y)
    row = results["per_pair"]["pixel-max"][0]
    assert {name: row[name] for name in METRICS} == pytest.approx(expected, rel=1e-6)
    assert "luma Y" in (tmp_path / "results.md").read_text(encoding="utf-8")


def results_pair(dataset, name="21001", task="MRI-SPECT"):
    other = TASKS[task].label
    return atlas.Pair(name=name, mri_path=dataset / task / "MRI" / f"{name}.png",
                      other_path=dataset / task / other / f"{name}.png")


# pixel-average of two 8-bit images lands on many exact halves: the rounding of the writer matters.
@pytest.mark.parametrize("task", ["MRI-CT", "MRI-SPECT"])
@pytest.mark.parametrize("method", ["pixel-average", "pixel-max"])
def test_scores_are_those_of_the_png_that_batch_writes(dataset, tmp_path, method, task):
    from EdgeFusionLib import cli

    results = evaluate.run_evaluation(dataset, task, [method], tmp_path / "eval", examples=0, progress=False)
    folder = dataset / task
    assert cli.main(["batch", "--task", task, "--mri-dir", str(folder / "MRI"), "--other-dir", str(folder / TASKS[task].label),
                     "--out-dir", str(tmp_path / "batch"), "--method", method]) == 0
    for row in results["per_pair"][method]:
        with Image.open(tmp_path / "batch" / f"{row['pair']}.png") as image:
            written = np.asarray(image, dtype=np.float32) / 255
        assert written.shape == ((32, 32, 3) if task == "MRI-SPECT" else (32, 32))
        written_grey = luma(written) if task == "MRI-SPECT" else written
        loaded = evaluate.load_pair(results_pair(dataset, row["pair"], task))
        assert np.abs(written_grey - evaluate.as_written(PIXEL_METHODS[method](loaded.mri, loaded.other), loaded)).max() < 1e-6
        expected = compute_metrics(np.clip(written_grey, 0, 1), loaded.mri, loaded.other)
        assert {name: row[name] for name in METRICS} == pytest.approx(expected, rel=1e-6)


def test_cli_with_validation_cases_and_limit(dataset, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="edgefusion")
    evaluate.register_cli(parser.add_subparsers())
    args = parser.parse_args(
        ["evaluate", "--task", "MRI-CT", "--data", str(dataset), "--methods", "pixel-max", "--validation-cases",
         "--limit", "2", "--examples", "0", "--out", str(tmp_path / "report")]
    )
    assert args.func(args) == 0
    saved = json.loads((tmp_path / "report" / "results.json").read_text(encoding="utf-8"))
    assert saved["pairs"] == ["16001", "16002"] and saved["examples"] == 0
    assert "The first 2 pairs (by name) of cases 16, 32" in (tmp_path / "report" / "results.md").read_text(encoding="utf-8")
    assert "| `pixel-max` |" in capsys.readouterr().out


def test_cli_reports_bad_input_in_one_line(dataset, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="edgefusion")
    evaluate.register_cli(parser.add_subparsers())
    args = parser.parse_args(["evaluate", "--task", "MRI-CT", "--data", str(dataset), "--methods", "pixel-max",
                              "--cases", "99", "--out", str(tmp_path)])
    assert args.func(args) == evaluate.EXIT_BAD_INPUT == 2
    assert "no pairs of case 99" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_unknown_method_is_rejected_before_any_work(dataset, tmp_path):
    from EdgeFusionLib.fusion.methods import DEFAULT_METHOD, method_names

    with pytest.raises(ValueError, match="unknown method 'bogus'; choose from " + ", ".join(method_names())):
        evaluate.run_evaluation(dataset, "MRI-CT", ["pixel-max", "bogus"], tmp_path, progress=False)
    assert not any(tmp_path.iterdir())
    assert evaluate.default_methods("MRI-CT") == [DEFAULT_METHOD["MRI-CT"], *PIXEL_METHODS]


def test_a_failure_while_rendering_leaves_the_previous_outputs_untouched(dataset, tmp_path, monkeypatch):
    (tmp_path / "results.md").write_text("previous")

    def broken_figure(*_):
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(evaluate, "figure_png", broken_figure)
    with pytest.raises(RuntimeError, match="rendering failed"):
        evaluate.run_evaluation(dataset, "MRI-CT", ["pixel-max"], tmp_path, cases=["05"], progress=False)
    assert [path.name for path in tmp_path.iterdir()] == ["results.md"]
    assert (tmp_path / "results.md").read_text(encoding="utf-8") == "previous"


def test_reading_16_bit_and_mismatched_images(tmp_path):
    values = np.array([[0, 1000], [40000, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "grey16.png")
    grey, rgb = atlas.read_grey01(tmp_path / "grey16.png")
    assert rgb is None and grey == pytest.approx(values / 65535, abs=1e-7)

    write_png(tmp_path / "MRI-CT" / "MRI" / "01001.png", np.zeros((8, 8)))
    write_png(tmp_path / "MRI-CT" / "CT" / "01001.png", np.zeros((8, 9)))
    with pytest.raises(ValueError, match="01001: MRI 8x8 and CT 9x8 differ"):
        evaluate.run_evaluation(tmp_path, "MRI-CT", ["pixel-max"], tmp_path / "out", progress=False)


def test_nan_metrics_are_null_in_json_and_na_in_the_table():
    results = {
        "methods": ["a"], "metrics": ["psnr"],
        "summary": {"a": {"mean": {"psnr": math.nan, "seconds": 0.1}, "std": {"psnr": math.nan}, "mean_rank": 1.0}},
    }
    assert "n/a ± n/a" in evaluate.markdown_table(results)
    assert evaluate._json_safe({"x": [math.nan, math.inf, 1.5]}) == {"x": [None, None, 1.5]}


def test_salient_measures_are_reported_next_to_the_13(ct_run, dataset):
    results, out = ct_run
    assert results["salient_metrics"] == list(metrics_module.SALIENT_METRICS)
    for method in METHODS:
        rows = results["per_pair"][method]
        for row in rows:
            mri = read_grey(dataset / "MRI-CT" / "MRI" / f"{row['pair']}.png")
            ct = read_grey(dataset / "MRI-CT" / "CT" / f"{row['pair']}.png")
            written = np.floor(PIXEL_METHODS[method](mri, ct) * 255 + 0.5) / 255
            assert row["salient_loss_other"] == pytest.approx(metrics_module.salient_loss_b(written, mri, ct))
        assert results["summary"][method]["mean"]["salient_loss_mri"] == pytest.approx(
            np.mean([row["salient_loss_mri"] for row in rows]))
    markdown = (out / "results.md").read_text(encoding="utf-8")
    assert "salient loss" in markdown and "isolated pixels" in markdown
    assert "salient_loss_other_mean" in (out / "results.csv").read_text(encoding="utf-8").splitlines()[0]
    # the mean rank is over the 13 only
    assert results["summary"][METHODS[0]]["mean_rank"] == mean_rank(
        {m: results["summary"][m]["mean"] for m in METHODS})[METHODS[0]]


def test_every_nth_pair(dataset, tmp_path):
    assert [p.name for p in evaluate.select_pairs(dataset, "MRI-CT", every=2)] == ["05001", "16002"]
    with pytest.raises(ValueError, match="every must be at least 1"):
        evaluate.select_pairs(dataset, "MRI-CT", every=0)
    results = evaluate.run_evaluation(dataset, "MRI-CT", ["pixel-max"], tmp_path, every=3, progress=False)
    assert results["pairs"] == ["05001", "32001"] and "--every 3" in results["command"]


def test_cache_reuses_delivered_fusions_and_misses_when_the_method_changes(dataset, tmp_path, monkeypatch):
    calls = []

    def counting(mri, other):
        """Pixel maximum, counted."""
        calls.append(1)
        return np.maximum(mri, other)

    monkeypatch.setitem(evaluate.PIXEL_METHODS, "pixel-max", counting)
    first = evaluate.run_evaluation(dataset, "MRI-CT", ["pixel-max"], tmp_path / "a", cache=tmp_path / "cache",
                                    progress=False)
    assert len(calls) == 1 + 4  # warm-up + 4 pairs
    second = evaluate.run_evaluation(dataset, "MRI-CT", ["pixel-max"], tmp_path / "b", cache=tmp_path / "cache",
                                     progress=False)
    assert len(calls) == 5  # nothing fused again
    assert second["per_pair"] == first["per_pair"]  # same scores, same recorded seconds
    monkeypatch.setattr(evaluate, "cache_key", lambda task, method: "changed-code")
    evaluate.run_evaluation(dataset, "MRI-CT", ["pixel-max"], tmp_path / "c", cache=tmp_path / "cache", progress=False)
    assert len(calls) == 10


def test_network_methods_score_what_the_engine_delivers(tmp_path):
    """evaluate's network path is FusionEngine's: the scored luma is that of the RGB `fuse` returns."""
    from EdgeFusionLib.fusion.engine import FusionEngine

    mri = phantom_slice(32, 32, seed=3)
    hot = phantom_slice(32, 32, seed=4)
    spect = np.stack([hot, hot**2, 0.3 * hot], axis=-1)
    write_png(tmp_path / "MRI-SPECT" / "MRI" / "21001.png", mri)
    write_png(tmp_path / "MRI-SPECT" / "SPECT" / "21001.png", spect)
    method = "salient-activity"
    results = evaluate.run_evaluation(tmp_path, "MRI-SPECT", [method], tmp_path / "out", device="cpu", progress=False)
    loaded = evaluate.load_pair(atlas.task_pairs(tmp_path, "MRI-SPECT")[0])
    delivered = FusionEngine(method, "MRI-SPECT", "cpu").fuse(loaded.mri, loaded.other_rgb)
    expected = compute_metrics(np.clip(luma(delivered / 255.0), 0, 1), loaded.mri, loaded.other)
    assert {name: results["per_pair"][method][0][name] for name in METRICS} == pytest.approx(expected, rel=1e-6)
