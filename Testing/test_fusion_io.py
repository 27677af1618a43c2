"""Images in, images out: geometry, resampling, intensity windows, colour, atomic writes."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image

from EdgeFusionLib.fusion.colour import apply_colour_table, rgb_to_ycbcr, ycbcr_to_rgb
from EdgeFusionLib.errors import InputError
from EdgeFusionLib.fusion.pipeline import default_axis, fuse_images
from EdgeFusionLib.fusion.intensity import CT_WINDOW_HU, window_for
from EdgeFusionLib.io.images import read_image, resample_onto, write_image

from conftest import phantom_slice


def volume(array, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=None):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def brain_mri(shape=(12, 40, 36)):
    return volume(np.stack([phantom_slice(*shape[1:], s) * 800 for s in range(shape[0])]).astype(np.float32),
                  spacing=(1.0, 1.0, 2.5), origin=(-18.0, -20.0, -15.0))


def ct_with_bright_cube(centre_mm, spacing, origin, direction, size=(30, 50, 40)):
    """CT in HU (-1000 air) with a 6 mm bone cube (+1000 HU) centred at ``centre_mm``."""
    image = volume(np.full(size, -1000.0, np.float32), spacing, origin, direction)
    z, y, x = np.meshgrid(*[np.arange(n) for n in size], indexing="ij")
    index = np.stack([x, y, z], -1).reshape(-1, 3) * np.array(spacing)
    points = np.array(origin) + index @ np.array(direction).reshape(3, 3).T  # index -> physical (mm)
    inside = np.all(np.abs(points - np.array(centre_mm)) <= 3.0, axis=1).reshape(size)
    array = np.where(inside, 1000.0, -1000.0).astype(np.float32)
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out


def test_ct_on_another_grid_is_resampled_onto_the_mri_in_physical_space():
    mri = brain_mri()
    rotation = sitk.VersorTransform((0, 0, 1), np.pi / 2).GetMatrix()  # 90 degrees about z
    ct = ct_with_bright_cube(centre_mm=(2.0, -4.0, 0.0), spacing=(0.8, 0.9, 1.5), origin=(25.0, -25.0, -20.0),
                             direction=rotation)
    fused = fuse_images(mri, ct, "ct", method="pixel-max")
    assert fused.GetSize() == mri.GetSize()
    assert np.allclose(fused.GetSpacing(), mri.GetSpacing())
    assert np.allclose(fused.GetOrigin(), mri.GetOrigin())
    assert np.allclose(fused.GetDirection(), mri.GetDirection())
    resampled = sitk.GetArrayFromImage(resample_onto(mri, ct))
    centre_index = mri.TransformPhysicalPointToIndex((2.0, -4.0, 0.0))
    assert resampled[centre_index[2], centre_index[1], centre_index[0]] == pytest.approx(1000.0)
    assert resampled[0, 0, 0] < -900  # far from the cube: air
    # bone saturates the CT window -> the pixel maximum is 1 at the cube, wherever it lies in the MRI grid
    assert sitk.GetArrayFromImage(fused)[centre_index[2], centre_index[1], centre_index[0]] == pytest.approx(1.0)


def test_single_slices_are_placed_by_their_geometry_not_pixel_to_pixel():
    mri = volume(np.zeros((1, 32, 32), np.float32) + np.eye(32, dtype=np.float32)[None] * 500)
    ct_array = np.full((1, 32, 32), -1000.0, np.float32)
    ct_array[0, :4, :4] = 1000.0  # bone over 0..8 mm on a 2 mm grid: the MRI's pixels 0..7
    ct = volume(ct_array, spacing=(2.0, 2.0, 1.0))
    mri.SetOrigin((0.0, 0.0, 7.0))
    ct.SetOrigin((0.0, 0.0, 7.4))  # the same plane, within the slice thickness
    fused = fuse_images(mri, ct, "ct", method="pixel-max")
    assert fused.GetSize() == (32, 32, 1) and fused.GetOrigin() == (0.0, 0.0, 7.0)  # the MRI's geometry, 3D
    values = sitk.GetArrayFromImage(fused)[0]
    assert values[6, 1] == pytest.approx(1.0) and values[1, 6] == pytest.approx(1.0)  # bone, placed in mm
    assert values[12, 1] == 0.0 and values[1, 12] == 0.0  # air beyond 8 mm (pixel to pixel it was bone up to 3)
    # a single MRI slice (z = 7 mm) in a CT volume (z = 5..9 mm): the CT's slice k = 2 is the one fused
    ct_volume = np.full((5, 32, 32), -1000.0, np.float32)
    for k in range(5):
        ct_volume[k, 5 * k:5 * k + 3] = 1000.0  # bone rows that tell the slices apart
    fused = sitk.GetArrayFromImage(fuse_images(mri, volume(ct_volume, origin=(0.0, 0.0, 5.0)), "ct", method="pixel-max"))[0]
    assert fused[11, 20] == pytest.approx(1.0)
    assert fused[1, 20] == 0.0 and fused[21, 5] == 0.0
    # a thin CT slice beside a thick MRI slice's centre holds none of its voxels: an error, not a black CT
    thick = volume(sitk.GetArrayFromImage(mri), spacing=(1.0, 1.0, 5.0), origin=(0.0, 0.0, 7.0))
    with pytest.raises(InputError, match="none of the MRI's voxel centres"):
        fuse_images(thick, volume(ct_array, origin=(0.0, 0.0, 7.6)), "ct", method="pixel-max")


@pytest.mark.parametrize("thin_axis", [0, 2])  # numpy axes: an axial (z) or a sagittal (x) single slice
def test_a_single_slice_volume_pairs_with_a_2d_picture_and_keeps_its_geometry(thin_axis):
    shape = [16, 16, 16]
    shape[thin_axis] = 1
    mri = volume(np.zeros(shape, np.float32) + phantom_slice(16, 16).reshape(shape) * 500, spacing=(0.5, 0.6, 3.0),
                 origin=(1.0, 2.0, 7.0))
    picture = sitk.GetImageFromArray((phantom_slice(16, 16, 1) * 255).astype(np.uint8))
    fused = fuse_images(mri, picture, "ct", method="pixel-max")
    assert fused.GetSize() == mri.GetSize() and fused.GetOrigin() == mri.GetOrigin()
    assert fused.GetSpacing() == mri.GetSpacing()
    flat_mri = sitk.GetImageFromArray(sitk.GetArrayFromImage(mri).reshape(16, 16))  # the same pixels, no geometry
    expected = sitk.GetArrayFromImage(fuse_images(flat_mri, picture, "ct", method="pixel-max"))
    assert np.array_equal(sitk.GetArrayFromImage(fused).reshape(16, 16), expected)


def test_non_overlapping_volumes_are_refused():
    mri = brain_mri()
    far = volume(np.zeros((5, 5, 5), np.float32) + np.arange(5, dtype=np.float32), origin=(500.0, 500.0, 500.0))
    with pytest.raises(InputError, match="do not overlap"):
        fuse_images(mri, far, "ct", method="pixel-max")


@pytest.mark.parametrize("problem, make, message", [
    ("nan", lambda a: np.where(a > 0.7, np.nan, a), "NaN"),
    ("constant", lambda a: np.zeros_like(a), "constant"),
    ("empty", lambda a: a[:, :0], "empty"),
])
def test_bad_images_are_refused_with_a_specific_message(problem, make, message):
    good = phantom_slice(16, 16).astype(np.float32)
    bad = sitk.GetImageFromArray(make(good).astype(np.float32))
    with pytest.raises(InputError, match=message):
        fuse_images(bad, sitk.GetImageFromArray(good), "ct", method="pixel-max")


def test_vector_mri_and_mismatched_2d_sizes_are_refused():
    colourful = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 8, 3)), isVector=True)
    grey = sitk.GetImageFromArray(phantom_slice(8, 8))
    with pytest.raises(InputError, match="single-channel"):
        fuse_images(colourful, grey, "spect", method="pixel-max")
    with pytest.raises(InputError, match="different sizes"):
        fuse_images(grey, sitk.GetImageFromArray(phantom_slice(8, 9)), "ct", method="pixel-max")
    with pytest.raises(InputError, match="unknown modality"):
        fuse_images(grey, grey, "xray", method="pixel-max")


def test_default_axis_is_the_thick_slice_direction():
    assert default_axis(volume(np.zeros((4, 5, 6)), spacing=(1, 1, 3))) == 0
    assert default_axis(volume(np.zeros((4, 5, 6)), spacing=(4, 1, 1))) == 2  # sagittal stack
    assert default_axis(volume(np.zeros((4, 5, 6)), spacing=(1, 1, 1))) == 0


def test_intensity_windows_per_modality():
    assert window_for(np.array([0, 255], np.uint8), "ct") == window_for(np.array([3, 9], np.uint8), "mri")
    hu = np.array([-1000.0, 40.0, 1500.0])
    window = window_for(hu, "ct")
    assert (window.low, window.high) == CT_WINDOW_HU
    assert window.apply(np.array([40.0]))[0] == pytest.approx(140 / 300)
    shifted = hu + 1024  # a CT stored without its rescale intercept: no air values below -500
    assert window_for(shifted, "ct").low == 24.0  # not taken for HU: scaled like an MRI
    given = window_for(shifted, "ct", ct_window=(924.0, 1224.0))  # a window the user gives is always used
    assert (given.low, given.high) == (924.0, 1224.0)
    assert window_for(np.array([0, 255], np.uint8), "ct", ct_window=(10.0, 90.0)).high == 90.0
    mri = np.concatenate([np.linspace(0, 1000, 10_000), [1e6]])  # one extreme outlier
    assert window_for(mri, "mri").high < 1001
    counts = np.linspace(0, 5000, 100_001)
    assert window_for(counts, "spect").low == 0 and window_for(counts, "spect").high == pytest.approx(4995, rel=1e-3)
    with pytest.raises(InputError, match="constant"):
        window_for(np.full(10, 7.0), "mri")


def test_ycbcr_matches_pil_and_round_trips():
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ours = rgb_to_ycbcr(rgb / 255.0) * 255
    pil = np.asarray(Image.fromarray(rgb).convert("YCbCr"), dtype=np.float32)
    assert np.abs(ours - pil).max() <= 1.0  # PIL rounds to integers
    assert np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb / 255.0)) * 255 - rgb).max() < 1e-3


def test_colour_table_lookup_is_nearest_entry():
    table = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 1]], np.float32)
    rgb = apply_colour_table(np.array([0.0, 0.3, 0.5, 0.8, 1.0]), table)
    assert rgb.tolist() == [[0, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1], [1, 1, 1]]


def test_scalar_spect_with_colour_table_gives_rgb_with_mri_geometry():
    mri = brain_mri((4, 24, 20))
    counts = volume((np.arange(4 * 24 * 20, dtype=np.float32).reshape(4, 24, 20)), spacing=(1.0, 1.0, 2.5),
                    origin=(-18.0, -20.0, -15.0))
    table = np.linspace(0, 1, 256)[:, None] * np.array([[1.0, 0.5, 0.0]], np.float32)
    fused = fuse_images(mri, counts, "spect", method="pixel-average", colour_table=table, colour_range=(0, 1919))
    assert fused.GetNumberOfComponentsPerPixel() == 3 and fused.GetPixelID() == sitk.sitkVectorUInt8
    assert fused.GetSize() == mri.GetSize() and np.allclose(fused.GetSpacing(), mri.GetSpacing())
    array = sitk.GetArrayFromImage(fused)
    # new luma with the original chroma adds the same amount to R, G and B: the orange hue order stays
    red, green, blue = (array[..., c].astype(int) for c in range(3))
    assert np.all(red >= green - 1) and np.all(green >= blue - 1)
    assert array[-1, -1, -1, 0] > array[0, 0, 0, 0]  # hotter voxels are redder


def test_read_and_write_round_trip_keep_geometry(tmp_path):
    mri = brain_mri((3, 10, 12))
    for name in ("a.nii.gz", "a.nrrd", "a.mha"):
        write_image(mri, tmp_path / name)
        back = read_image(tmp_path / name)
        assert np.allclose(back.GetSpacing(), mri.GetSpacing()) and np.allclose(back.GetOrigin(), mri.GetOrigin())
        assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(mri))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mha", "a.nii.gz", "a.nrrd"]  # no temporaries


def test_dicom_series_folder_is_read_as_one_volume(tmp_path):
    array = (np.stack([phantom_slice(16, 16, s) for s in range(4)]) * 1000).astype(np.int16)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(4):
        slice_image = sitk.GetImageFromArray(array[index])
        slice_image.SetSpacing((0.5, 0.5))
        for key, value in {"0008|0060": "CT", "0020|000e": "1.2.826.0.1.3680043.2.1125.1", "0020|0013": str(index + 1),
                           "0020|0032": f"0\\0\\{2.0 * index}", "0020|0037": "1\\0\\0\\0\\1\\0",
                           "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
                           "0008|0018": f"1.2.826.0.1.3680043.2.1125.1.{index + 1}"}.items():
            slice_image.SetMetaData(key, value)
        writer.SetFileName(str(tmp_path / f"{index}.dcm"))
        writer.Execute(slice_image)
    image = read_image(tmp_path)
    assert image.GetSize() == (16, 16, 4)
    assert image.GetSpacing()[2] == pytest.approx(2.0)
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert image.GetMetaData("0008|0060").strip() == "CT"


def test_truncated_gzip_and_one_colour_images_are_refused(tmp_path):
    image = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 64, 64)).astype(np.float32))
    sitk.WriteImage(image, str(tmp_path / "whole.nii.gz"), useCompression=True)
    data = (tmp_path / "whole.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_image(tmp_path / "cut.nii.gz", "MRI")
    assert np.array_equal(sitk.GetArrayFromImage(read_image(tmp_path / "whole.nii.gz")), sitk.GetArrayFromImage(image))
    red = np.zeros((16, 16, 3), np.uint8)
    red[..., 0] = 200
    mri = sitk.GetImageFromArray((phantom_slice(16, 16) * 255).astype(np.uint8))
    with pytest.raises(InputError, match=r"SPECT is constant \(all values \(200, 0, 0\)\)"):
        fuse_images(mri, sitk.GetImageFromArray(red, isVector=True), "spect", method="pixel-max")


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError):
        write_image(brain_mri((2, 4, 4)), tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_percentiles_of_a_large_volume_come_from_an_even_subsample(monkeypatch):
    """Memory stays bounded: the window of a volume larger than the sample limit reads a strided subsample."""
    import EdgeFusionLib.fusion.intensity as intensity

    values = np.random.default_rng(3).gamma(2.0, 100.0, (150, 150, 150)).astype(np.float32)  # 3.4 M voxels
    seen = []
    real_percentile = np.percentile
    monkeypatch.setattr(np, "percentile", lambda sample, q, **k: seen.append(sample.size) or real_percentile(sample, q, **k))
    window = window_for(values, "mri")
    # Every percentile is taken on the subsample or on tissue drawn from it (the MRI window is learnt
    # from the head tissue since the tissue window replaced [min, 99.5th percentile]).
    assert seen and all(size <= intensity.PERCENTILE_SAMPLES for size in seen)
    assert intensity.PERCENTILE_SAMPLES // 2 <= seen[0]
    monkeypatch.setattr(np, "percentile", real_percentile)
    exact = intensity.mri_tissue_window(values.reshape(-1), float(values.min()))  # from every voxel
    assert window.high == pytest.approx(exact.high, rel=0.01)  # the subsample lands on the true percentile
    assert window.gamma == pytest.approx(exact.gamma, rel=0.01) and window.low == pytest.approx(exact.low, rel=0.01)


def test_fusion_options_survive_the_job_file_and_are_checked_before_work():
    import json

    from EdgeFusionLib.fusion.options import FusionOptions

    table = apply_colour_table(np.linspace(0, 1, 7), np.random.default_rng(1).random((256, 3)))
    options = FusionOptions(method="pixel-max", axis=2, device="cpu", batch_size=3, colour_table=table,
                            colour_range=(0, 4000))
    again = FusionOptions.from_json(json.loads(json.dumps(options.to_json())))
    assert again == options
    np.testing.assert_array_equal(again.colour_table, table)  # float32 colours, bit for bit
    assert FusionOptions(batch_size=0, method="") == FusionOptions()  # a form's "default" values
    options.check("spect")
    for bad, modality, message in [
        (FusionOptions(method="nope"), "ct", "unknown fusion method"),
        (FusionOptions(axis=3), "ct", "axis"),
        (FusionOptions(device="tpu"), "ct", "unknown device"),
        (FusionOptions(batch_size=-2), "ct", "batch size"),
        (FusionOptions(ct_window=(200, -100)), "ct", "low < high"),
        (FusionOptions(ct_window=(-100, 200)), "pet", "CT window applies to a CT"),
        (FusionOptions(colour_table=table), "ct", "colour table applies to SPECT or PET"),
        (FusionOptions(colour_table=np.ones((1, 3))), "pet", "colour table must be"),
    ]:
        with pytest.raises(InputError, match=message):
            bad.check(modality)
    with pytest.raises(InputError, match="unknown fusion options: speed"):
        FusionOptions.from_json({"speed": 2})


def test_fusion_options_are_exactly_the_arguments_of_fuse_images():
    import inspect

    from EdgeFusionLib.fusion.options import FusionOptions

    assert set(FusionOptions().arguments()) <= set(inspect.signature(fuse_images).parameters)


def test_missing_weights_are_refused_before_any_resampling(models_dir_empty, monkeypatch):
    import EdgeFusionLib.fusion.pipeline as pipeline

    monkeypatch.setattr(pipeline, "resample_onto", lambda *a, **k: pytest.fail("resampled before the weights were found"))
    mri, ct = brain_mri(), brain_mri()
    ct.SetOrigin((-17.0, -20.0, -15.0))
    with pytest.raises(InputError, match="no weights for task MRI-CT"):
        fuse_images(mri, ct, "ct", method="sfnn")


def test_the_delivered_8bit_image_has_the_fused_luma_and_the_colour_of_the_other_image():
    from EdgeFusionLib.fusion.colour import delivered_8bit, luma, rgb_to_ycbcr

    fused = np.array([[0.0, 0.2, 0.5, 1.0]], np.float32)
    assert delivered_8bit(fused).tolist() == [[0, 51, 128, 255]]  # halves round up: 127.5 -> 128
    rgb = np.array([[[0.9, 0.2, 0.1], [0.25, 0.18, 0.15], [0.55, 0.5, 0.42], [0.2, 0.2, 0.9]]], np.float32)
    delivered = delivered_8bit(fused[:, 1:3], rgb[:, 1:3])
    assert delivered.dtype == np.uint8 and delivered.shape == (1, 2, 3)
    np.testing.assert_allclose(luma(delivered / 255.0), fused[:, 1:3], atol=2 / 255)
    np.testing.assert_allclose(rgb_to_ycbcr(delivered / 255.0)[..., 1:], rgb_to_ycbcr(rgb[:, 1:3])[..., 1:], atol=3 / 255)


def test_atomic_writes_replace_whole_files_or_leave_the_old_one(tmp_path):
    from EdgeFusionLib.io.files import atomic_path, write_json_atomic

    target = tmp_path / "fused.nii.gz"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            assert temporary.parent == tmp_path and temporary.name.endswith(".nii.gz")  # writers pick formats by name
            temporary.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [target]
    write_json_atomic(tmp_path / "a.json", {"b": 1, "a": [2]})
    assert (tmp_path / "a.json").read_text(encoding="utf-8") == '{\n  "a": [\n    2\n  ],\n  "b": 1\n}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json", "fused.nii.gz"]


def test_mri_volume_window_is_learnt_from_the_head_tissue():
    """A T1 whose brain sits at 20-35 % of its range (fat and skull brightest), as a real scanner gives it:
    the tissue's median is shown at 0.6, the background stays black, the bright fat saturates."""
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 8, (8, 64, 64))  # background noise
    volume[:, 8:56, 8:56] = rng.normal(70, 8, (8, 48, 48))  # brain at ~27 % of 255
    volume[:, 8:56, 8:12] = 250  # fat/skull rim
    volume = np.clip(volume, 0, 255).astype(np.uint8)  # 8-bit, as the CMTK T1
    window = window_for(volume, "mri")
    assert window != window_for(volume[0], "mri")  # a 2D picture stays value / 255
    brain = window.apply(volume[:, 20:50, 20:50])
    assert np.median(brain) == pytest.approx(0.6, abs=0.05)
    background = window.apply(volume[:, :4, :4])  # noise 0..7: all but its top 1 % maps to 0, the rest stays dark
    assert np.mean(background == 0) > 0.85 and background.max() < 0.2
    assert window.apply(np.array([250.0]))[0] == 1.0
    counts = np.array([-50.0, 0.0, 100.0, 1000.0])
    assert window_for(counts, "pet").low == 0.0  # negative reconstruction noise is clipped
