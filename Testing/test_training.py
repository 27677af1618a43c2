"""Stage-1 training on generated images: loss terms, determinism, checkpoints, resume, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from EdgeFusionLib.evaluation import metrics
from EdgeFusionLib.io import atlas
from EdgeFusionLib.training import losses
from EdgeFusionLib.training import trainer
from EdgeFusionLib.errors import InputError
from EdgeFusionLib.model.network import EHDRAN

SIZE = 32


def blob_image(rng: np.random.Generator, colour: bool = False) -> np.ndarray:
    """A smooth 32x32 'slice': a few Gaussian blobs, uint8 grey or RGB."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    image = np.zeros((SIZE, SIZE))
    for _ in range(3):
        cy, cx = rng.uniform(4, SIZE - 4, 2)
        image += rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(2, 6) ** 2))
    image = (255 * image / image.max()).astype(np.uint8)
    return np.stack([image, image[::-1], image.T], axis=-1) if colour else image


def write_task(root, task="MRI-CT", cases=("16", "20"), slices=2, colour=False):
    """Generated pairs in the atlas layout: <root>/<task>/{MRI,<OTHER>}/<case><slice>.png."""
    other = trainer.TASKS[task].label
    rng = np.random.default_rng(0)
    for folder in ("MRI", other):
        (root / task / folder).mkdir(parents=True, exist_ok=True)
    for case in cases:
        for index in range(slices):
            name = f"{case}{index:03d}.png"
            Image.fromarray(blob_image(rng)).save(root / task / "MRI" / name)
            Image.fromarray(blob_image(rng, colour)).save(root / task / other / name)
    return root


def tiny_config(**changes) -> trainer.TrainConfig:
    values = dict(task="MRI-CT", crop_size=16, batch_size=2, epochs=2, steps_per_epoch=2, lr=1e-3, val_images=2, device="cpu")
    values.update(changes)
    return trainer.TrainConfig(**values)


def quiet(*_):
    pass


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_task(tmp_path_factory.mktemp("atlas"))


@pytest.fixture(scope="module")
def straight_run(data_root, tmp_path_factory):
    """Two epochs in one go (shared by several tests: training is the slow part)."""
    out = tmp_path_factory.mktemp("straight")
    trainer.train(tiny_config(), data_root, out, progress=False, log=quiet)
    return out


# --- loss terms -------------------------------------------------------------


def test_gradient_loss_is_zero_for_identical_and_offset_images():
    x = torch.rand(2, 1, 20, 20)
    assert losses.gradient_loss(x, x).item() == 0.0
    # Sobel kernels sum to zero: a constant offset has no gradient.
    assert losses.gradient_loss(x + 0.25, x).item() == pytest.approx(0.0, abs=1e-10)
    assert losses.gradient_loss(torch.rand(2, 1, 20, 20), x).item() > 0


def test_gradient_loss_matches_definition():
    prediction, target = torch.rand(1, 1, 12, 12), torch.rand(1, 1, 12, 12)
    from scipy.signal import correlate2d

    sx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=np.float64)
    expected = 0.0
    for kernel in (sx, sx.T):
        p = np.abs(correlate2d(prediction[0, 0].double().numpy(), kernel, mode="valid"))
        t = np.abs(correlate2d(target[0, 0].double().numpy(), kernel, mode="valid"))
        expected += np.mean((p - t) ** 2)
    assert losses.gradient_loss(prediction, target).item() == pytest.approx(expected, rel=1e-5)


def test_ssim_loss_zero_for_identical_and_matches_metric():
    rng = np.random.default_rng(1)
    a = rng.random((40, 40)).astype(np.float32)
    b = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1).astype(np.float32)
    ta, tb = torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]
    assert losses.ssim_loss(ta, ta).item() == pytest.approx(0.0, abs=1e-6)
    # scikit-image crops the 5-pixel border it padded: its mean is our valid-window mean.
    assert losses.ssim(tb, ta).item() == pytest.approx(metrics.ssim(b, a, a), abs=1e-5)


def test_reconstruction_loss_terms_and_lambdas():
    x = torch.rand(2, 1, 24, 24)
    y = torch.rand(2, 1, 24, 24)
    total, terms = losses.ReconstructionLoss(0.2, 0.2, "ssim")(y, x)
    assert total.item() == pytest.approx(terms["mse"] + 0.2 * terms["grad"] + 0.2 * terms["perc"], rel=1e-6)
    _, none_terms = losses.ReconstructionLoss(0.2, 0.2, "none")(y, x)
    assert none_terms["perc"] == 0.0 and none_terms["loss"] == pytest.approx(none_terms["mse"] + 0.2 * none_terms["grad"], rel=1e-6)
    with pytest.raises(InputError):
        losses.ReconstructionLoss(perceptual="vgg")


# --- VGG16-BN option --------------------------------------------------------


@pytest.fixture(scope="module")
def random_vgg_file(tmp_path_factory):
    """A randomly initialised VGG16-BN saved like torchvision's (features.* plus a classifier key)."""
    torch.manual_seed(0)
    network = losses.VGG16BNFeatures()
    state = {key: value.clone() for key, value in network.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path_factory.mktemp("vgg") / "vgg16_bn.pth"
    torch.save(state, path)
    return path, network


def test_vgg_layout_matches_torchvision_indices():
    network = losses.VGG16BNFeatures()
    # torchvision vgg16_bn().features: BatchNorms after conv1_2, conv2_2, conv3_3 are 4, 11, 21.
    assert network.taps == [4, 11, 21]
    assert len(network.features) == 22
    assert isinstance(network.features[20], torch.nn.Conv2d) and network.features[20].out_channels == 256
    shapes = [f.shape for f in network(torch.rand(1, 3, 32, 32))]
    assert shapes == [(1, 64, 32, 32), (1, 128, 16, 16), (1, 256, 8, 8)]


def test_vgg_weights_load_from_torch_and_safetensors(random_vgg_file, tmp_path):
    from safetensors.torch import save_file

    path, network = random_vgg_file
    loaded = losses.load_vgg16_bn_features(path)
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    features_only = {k[len("features.") :]: v for k, v in network.state_dict().items()}
    safetensors_path = tmp_path / "vgg.safetensors"
    save_file(features_only, str(safetensors_path))
    assert torch.equal(losses.load_vgg16_bn_features(safetensors_path).features[21].running_var, network.features[21].running_var)
    broken = tmp_path / "broken.safetensors"
    save_file({"0.weight": torch.zeros(64, 3, 3, 3)}, str(broken))
    with pytest.raises(InputError, match="not a VGG16-BN"):
        losses.load_vgg16_bn_features(broken)
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="cannot load VGG16-BN weights"):
        losses.load_vgg16_bn_features(tmp_path / "garbage.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(InputError, match="holds a Tensor, not a VGG16-BN state dict"):
        losses.load_vgg16_bn_features(tmp_path / "tensor.pth")


def test_vgg_perceptual_term_and_training_step(random_vgg_file, data_root, tmp_path):
    path, _ = random_vgg_file
    criterion = losses.ReconstructionLoss(perceptual="vgg", vgg_weights=str(path))
    x = torch.rand(2, 1, 16, 16)
    assert criterion(x, x)[1]["perc"] == 0.0
    assert criterion(torch.rand(2, 1, 16, 16), x)[1]["perc"] > 0
    criterion.train()
    assert not criterion.vgg.features.training  # frozen BatchNorm statistics
    config = tiny_config(epochs=1, steps_per_epoch=1, perceptual="vgg", vgg_weights=str(path))
    best = trainer.train(config, data_root, tmp_path, progress=False, log=quiet)
    assert best.is_file() and trainer.read_log(tmp_path)[0]["perc"] > 0


# --- training runs ----------------------------------------------------------


def test_two_epochs_write_run_folder(straight_run):
    rows = trainer.read_log(straight_run)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all(np.isfinite(row["loss"]) and row["val_psnr"] > 0 for row in rows)
    assert (straight_run / "log.csv").read_text(encoding="utf-8").splitlines()[0].startswith("epoch,loss,mse,grad,perc")
    split = json.loads((straight_run / "split.json").read_text(encoding="utf-8"))
    assert split["train_cases"] == ["20"] and split["val_cases"] == ["16"]  # the fixed MRI-CT validation case
    assert trainer.TrainConfig.load(straight_run / "config.json") == tiny_config()
    summary = json.loads((straight_run / "summary.json").read_text(encoding="utf-8"))
    assert summary["epochs"] == 2 and summary["best_epoch"] in (1, 2)
    model = EHDRAN()
    model.load_state_dict(load_file(str(straight_run / "best.safetensors")))
    # The best weights carry recalibrated statistics: one batch per training image (2 pairs x 2 images).
    assert model.encoder.shared_norm.num_batches_tracked.tolist() == [4, 4]


def test_recalibrated_statistics_are_per_use_averages_over_the_images():
    from conftest import make_random_model

    model = make_random_model(seed=4).train()
    rng = np.random.default_rng(1)
    images = [rng.random((12, 10), dtype=np.float32), rng.random((9, 16), dtype=np.float32)]  # odd rows are cropped
    seen = []
    encoder = model.encoder
    hooks = [module.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
             for module in (encoder.dilated, encoder.pyramid)]
    trainer.recalibrate_batchnorm(model, images, "cpu")
    for hook in hooks:
        hook.remove()
    norm = encoder.shared_norm
    assert model.training and norm.momentum == 0.1  # restored
    assert norm.num_batches_tracked.tolist() == [2, 2]
    assert [tuple(features.shape[-2:]) for features in seen] == [(12, 10), (12, 10), (8, 16), (8, 16)]
    for use in (0, 1):
        per_image = seen[use::2]
        torch.testing.assert_close(norm.running_mean[use], sum(f.mean((0, 2, 3)) for f in per_image) / 2)
        torch.testing.assert_close(norm.running_var[use], sum(f.var((0, 2, 3)) for f in per_image) / 2)
    first = {key: value.clone() for key, value in model.state_dict().items()}
    trainer.recalibrate_batchnorm(model, images, "cpu")
    assert all(torch.equal(first[key], value) for key, value in model.state_dict().items())  # deterministic


def test_checkpoint_reloads_bit_identically(straight_run, tmp_path):
    model = EHDRAN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    config, state = trainer.load_checkpoint(straight_run / "last.safetensors", model, optimizer)
    assert config == tiny_config() and state["epoch"] == 2
    assert optimizer.param_groups[0]["lr"] == 1e-3
    again = tmp_path / "again.safetensors"
    trainer.save_checkpoint(again, model, optimizer, config, state)
    original, reloaded = load_file(str(straight_run / "last.safetensors")), load_file(str(again))
    assert original.keys() == reloaded.keys()
    assert all(torch.equal(original[key], reloaded[key]) for key in original)
    assert any(key.startswith("optim.") and key.endswith("exp_avg_sq") for key in original)


def test_resume_equals_uninterrupted_run(data_root, straight_run, tmp_path):
    trainer.train(tiny_config(epochs=1), data_root, tmp_path, progress=False, log=quiet)
    trainer.train(tiny_config(epochs=2), data_root, tmp_path, progress=False, log=quiet)
    for name in ("last.safetensors", "best.safetensors"):
        straight, resumed = load_file(str(straight_run / name)), load_file(str(tmp_path / name))
        assert straight.keys() == resumed.keys()
        assert all(torch.equal(straight[key], resumed[key]) for key in straight), name
    assert [row["epoch"] for row in trainer.read_log(tmp_path)] == [1, 2]


def test_a_run_stopped_while_logging_redoes_that_epoch_on_resume(data_root, straight_run, tmp_path, monkeypatch):
    real_write_log = trainer.write_log

    def stopped_while_logging_epoch_2(run_dir, rows):
        if rows[-1]["epoch"] == 2:
            raise KeyboardInterrupt
        real_write_log(run_dir, rows)

    monkeypatch.setattr(trainer, "write_log", stopped_while_logging_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train(tiny_config(epochs=2), data_root, tmp_path, progress=False, log=quiet)
    monkeypatch.undo()
    trainer.train(tiny_config(epochs=2), data_root, tmp_path, progress=False, log=quiet)
    assert [row["epoch"] for row in trainer.read_log(tmp_path)] == [1, 2]  # no epoch without its log row
    straight, resumed = load_file(str(straight_run / "last.safetensors")), load_file(str(tmp_path / "last.safetensors"))
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


def test_resume_refuses_other_data_and_keeps_the_split(data_root, straight_run, tmp_path):
    import shutil

    for name in ("last.safetensors", "split.json"):
        shutil.copy(straight_run / name, tmp_path / name)
    split_before = (tmp_path / "split.json").read_text(encoding="utf-8")
    other_data = write_task(tmp_path / "other", cases=("16", "30"))
    with pytest.raises(InputError, match="trained on other images"):
        trainer.train(tiny_config(epochs=3), other_data, tmp_path, progress=False, log=quiet)
    assert (tmp_path / "split.json").read_text(encoding="utf-8") == split_before


def test_resume_refuses_other_settings(data_root, straight_run, tmp_path):
    import shutil

    shutil.copy(straight_run / "last.safetensors", tmp_path / "last.safetensors")
    with pytest.raises(InputError, match="other settings"):
        trainer.train(tiny_config(epochs=3, lr=5e-4), data_root, tmp_path, progress=False, log=quiet)


def test_seeded_case_split_without_fixed_cases(tmp_path):
    root = write_task(tmp_path, task="MRI-SPECT", cases=("50", "51", "52"), colour=True)
    pairs = trainer.task_pairs(root, "MRI-SPECT")
    train_pairs, val_pairs = trainer.split_pairs(pairs, "MRI-SPECT", seed=3407)
    assert len({p.case for p in val_pairs}) == 1 and not {p.case for p in train_pairs} & {p.case for p in val_pairs}
    assert trainer.split_pairs(pairs, "MRI-SPECT", seed=3407) == (train_pairs, val_pairs)
    one_case = trainer.task_pairs(write_task(tmp_path / "one", cases=("50",)), "MRI-CT")
    with pytest.raises(InputError, match="two cases"):
        trainer.split_pairs(one_case, "MRI-CT", seed=3407)


def test_colour_images_become_luma(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "red.png")
    assert atlas.read_grey01(tmp_path / "red.png")[0] == pytest.approx(np.full((4, 4), 0.299), abs=1e-6)


def test_cli_trains_and_registers(data_root, tmp_path):
    parser = argparse.ArgumentParser()
    trainer.register_cli(parser.add_subparsers())
    config_file = tmp_path / "config.json"
    tiny_config(epochs=1, steps_per_epoch=1).save(config_file)
    models = tmp_path / "models"
    args = parser.parse_args(
        ["train", "--config", str(config_file), "--data", str(data_root), "--out", str(tmp_path / "run"), "--quiet", "--register-in", str(models)]
    )
    assert args.func(args) == 0
    manifest = json.loads((models / "manifest.json").read_text(encoding="utf-8"))
    entry = manifest["models"]["MRI-CT"]
    assert entry["file"] == "mri-ct.safetensors" and entry["val_cases"] == ["16"]
    from EdgeFusionLib.model.weights import load_model

    assert isinstance(load_model("MRI-CT", folder=models), EHDRAN)
    bad = parser.parse_args(["train", "--task", "MRI-CT", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    assert bad.func(bad) == 2


def test_deterministic_cuda_settings_hold_only_while_training():
    # Set and read without a GPU: CI checks the switch that GPU training runs under.
    cudnn = torch.backends.cudnn
    before = (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled())
    with trainer.deterministic_cuda():
        assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == (False, True, True)
    assert (cudnn.benchmark, cudnn.deterministic, torch.are_deterministic_algorithms_enabled()) == before
