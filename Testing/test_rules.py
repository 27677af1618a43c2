"""Latent fusion rules (docs/method.md §2)."""

import pytest
import torch

from EdgeFusionLib.fusion.rules import LATENT_RULES, SFNN_REDUCTIONS, max_nuclear_norm, nuclear_norms, sfnn_weights


def realistic_softmax_maps(batch=2, channels=64, height=48, width=40, seed=0):
    """Softmax of smooth features with a dark background: many near-rank-1 maps, as real latents give."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, channels, height // 8, width // 8, generator=generator)
    features = torch.nn.functional.interpolate(features, size=(height, width), mode="bilinear", align_corners=False)
    features[..., : height // 4, :] = 0.3  # constant background rows
    return torch.softmax(3 * features, dim=1)


def paper_nuclear_norms(maps):
    """What the released code does: one SVD per channel, with a host sync each."""
    return torch.tensor([[torch.linalg.svdvals(m.double()).sum().item() for m in per_slice] for per_slice in maps],
                        dtype=torch.float64)


@pytest.mark.parametrize("maps", [realistic_softmax_maps(), torch.softmax(torch.randn(1, 8, 30, 50), dim=1)])
def test_batched_nuclear_norms_match_svd_within_1e4(maps):
    reference = paper_nuclear_norms(maps)
    assert torch.allclose(nuclear_norms(maps), reference, rtol=1e-4, atol=0)
    assert torch.allclose(nuclear_norms(maps.float()), reference, rtol=1e-4, atol=0)


@pytest.mark.parametrize("maps", [
    realistic_softmax_maps(batch=3),
    torch.softmax(torch.randn(2, 64, 24, 40), dim=1),  # full-rank noise: little to prune
    torch.softmax(torch.randn(1, 16, 32, 32) * 0.01, dim=1),  # nearly constant maps: all bounds close
])
def test_pruned_maximum_equals_the_maximum_of_all_norms(maps):
    assert torch.allclose(max_nuclear_norm(maps), paper_nuclear_norms(maps).amax(dim=1), rtol=1e-6, atol=0)


def test_pruning_computes_few_exact_norms_on_real_like_maps(monkeypatch):
    import EdgeFusionLib.fusion.rules as rules

    computed = []
    exact = rules.nuclear_norms
    monkeypatch.setattr(rules, "nuclear_norms", lambda maps: computed.append(maps.shape[1]) or exact(maps))
    rules.max_nuclear_norm(realistic_softmax_maps(batch=1))
    assert sum(computed) < 64


def test_sfnn_weights_follow_the_paper_formula():
    torch.manual_seed(0)
    f1, f2 = torch.randn(3, 64, 16, 16), 2 * torch.randn(3, 64, 16, 16)
    a1 = paper_nuclear_norms(torch.softmax(f1, 1)).amax(1)
    a2 = paper_nuclear_norms(torch.softmax(f2, 1)).amax(1)
    w1, w2 = sfnn_weights(f1, f2, "max2")
    assert torch.allclose(w1.double(), a1**2 / (a1**2 + a2**2), rtol=1e-5)
    assert torch.allclose(w1 + w2, torch.ones(3))
    w1_max, _ = sfnn_weights(f1, f2, "max")
    assert torch.allclose(w1_max.double(), a1 / (a1 + a2), rtol=1e-5)
    fused = LATENT_RULES["sfnn"](f1, f2)
    assert torch.allclose(fused, w1.view(-1, 1, 1, 1) * f1 + w2.view(-1, 1, 1, 1) * f2)


def test_sfnn_mean_and_sum_give_the_same_weights():
    torch.manual_seed(1)
    f1, f2 = torch.randn(2, 64, 8, 8), torch.randn(2, 64, 8, 8)
    assert torch.allclose(sfnn_weights(f1, f2, "mean")[0], sfnn_weights(f1, f2, "sum")[0])
    assert set(SFNN_REDUCTIONS) == {"max2", "max", "mean", "mean2", "sum", "sum2"}


@pytest.mark.parametrize("name", sorted(LATENT_RULES))
def test_fusing_a_latent_with_itself(name):
    torch.manual_seed(2)
    f = torch.randn(2, 64, 10, 12)
    fused = LATENT_RULES[name](f, f)
    expected = 2 * f if name == "sum" else f
    assert fused.shape == f.shape
    assert torch.allclose(fused, expected, atol=1e-6)


def test_elementwise_rules_values():
    f1 = torch.tensor([[[[3.0, 0.0, -1.0]]]])
    f2 = torch.tensor([[[[1.0, 0.0, 2.0]]]])
    assert torch.equal(LATENT_RULES["average"](f1, f2), torch.tensor([[[[2.0, 0.0, 0.5]]]]))
    assert torch.equal(LATENT_RULES["max"](f1, f2), torch.tensor([[[[3.0, 0.0, 2.0]]]]))
    # energy ratio: k1 = 9/10 at the first element, 1/2 where both are zero (no NaN), 1/5 at the last
    expected = torch.tensor([[[[0.9 * 3 + 0.1 * 1, 0.0, 0.2 * -1 + 0.8 * 2]]]])
    assert torch.allclose(LATENT_RULES["energy-ratio"](f1, f2), expected)
    # global L1: |f1| = 4, |f2| = 3 -> w1 = 4/7
    assert torch.allclose(LATENT_RULES["l1-weighting"](f1, f2), 4 / 7 * f1 + 3 / 7 * f2)


def test_rules_are_per_slice():
    torch.manual_seed(3)
    f1, f2 = torch.randn(4, 64, 8, 8), torch.randn(4, 64, 8, 8)
    for name, rule in LATENT_RULES.items():
        together = rule(f1, f2)
        one_by_one = torch.cat([rule(f1[i : i + 1], f2[i : i + 1]) for i in range(4)])
        assert torch.allclose(together, one_by_one, atol=1e-6), name


def test_salient_activity_cleans_single_decisions_and_guards_bright_structures():
    from EdgeFusionLib.fusion.salient import SALIENT_ACTIVITY, majority_vote

    # an isolated decision goes, a 2-pixel one too (each has 2 of 9 votes); a 3x3 block keeps its
    # centre and edge middles (9 and 6 of 9) and loses its corners (4 of 9)
    selection = torch.ones(1, 1, 9, 9)
    selection[..., 1, 1] = 0
    selection[..., 1, 5:7] = 0
    selection[..., 5:8, 5:8] = 0
    voted = majority_vote(selection)
    assert voted[..., :4, :].min() == 1
    assert voted[0, 0, 5:8, 5:8].tolist() == [[1, 0, 1], [0, 0, 0], [1, 0, 1]]
    assert majority_vote(torch.tensor([[[[0.0, 1.0], [1.0, 1.0]]]])).tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]
    f1 = torch.ones(1, 4, 12, 12)  # the MRI's latent is the more active everywhere
    # images: tissue 0.4/0.3, the CT's bone (1.0, top 10 % of the foreground) where the MRI is dark
    mri = torch.full((1, 1, 12, 12), 0.4)
    ct = torch.full((1, 1, 12, 12), 0.3)
    ct[..., 0:2, 0:7] = 1.0  # 14 of 144 pixels
    mri[..., 0:2, 0:7] = 0.1
    ct[..., 5, 5] = 0.6  # brighter than the MRI, but not bone and not 0.25 above: the map decides
    w1 = SALIENT_ACTIVITY.select(mri, ct, f1, torch.zeros_like(f1))
    assert (w1[..., 0:2, 0:7] == 0).all()  # the bone comes from the CT
    assert w1.sum() == 144 - 14  # everything else from the MRI, as the map said
    fused = torch.lerp(ct, mri, w1)
    assert fused.max() == 1.0 and (fused[..., 0:2, 0:7] == 1.0).all()


def test_the_guard_lifts_only_the_salient_pixels_a_blend_darkened_and_only_to_its_floor():
    from EdgeFusionLib.fusion.salient import GUARD_DROP, guard_salient

    mri = torch.full((1, 1, 12, 12), 0.4)
    ct = torch.full((1, 1, 12, 12), 0.3)
    ct[..., 0:2, 0:7] = 1.0  # bone: the CT's brightest 10 % of the foreground
    mri[..., 0:2, 0:7] = 0.1
    mri[..., 8:10, 8:10] = 0.9  # bright MRI tissue (its brightest), kept by the blend below
    blend = 0.5 * mri + 0.5 * ct
    blend[..., 8:10, 8:10] = 0.8  # 0.1 darker than the MRI there: within the floor, left as it is
    guarded = guard_salient(blend.clone(), mri, ct)
    # the bone the blend halved (0.55) is lifted to GUARD_DROP below the CT, no further
    assert torch.allclose(guarded[..., 0:2, 0:7], torch.tensor(1.0 - GUARD_DROP))
    keep = torch.ones_like(mri, dtype=torch.bool)
    keep[..., 0:2, 0:7] = False
    assert torch.equal(guarded[keep], blend[keep])


def test_the_floor_also_lifts_the_pixels_just_below_the_salient_level():
    """A bone pixel just under the CT's salient level, darkened like the bone around it, is lifted
    with it: lifting the bone alone would leave it a dark speck inside the bone."""
    from EdgeFusionLib.fusion.salient import GUARD_DROP, guard_salient

    ct = torch.full((1, 1, 20, 20), 0.3)
    ct[..., 0:5, 0:10] = 1.0  # bone: 50 of 400 pixels, the CT's salient level is 1.0
    ct[..., 5, 0] = 0.8  # just under that level: not salient itself, within the loss step of it
    mri = torch.full((1, 1, 20, 20), 0.1)
    blend = 0.5 * mri + 0.5 * ct
    guarded = guard_salient(blend.clone(), mri, ct)
    assert torch.allclose(guarded[..., 0:5, 0:10], torch.tensor(1.0 - GUARD_DROP))
    assert guarded[0, 0, 5, 0] == pytest.approx(0.8 - GUARD_DROP)  # 0.45 in the blend
    assert torch.equal(guarded[..., 6:, :], blend[..., 6:, :])  # the CT's soft tissue (0.3) is left as it is


def test_sfnn_guarded_keeps_the_hot_spot_that_sfnn_compensated_darkens():
    """On the SPECT phantom with the bundled weights: the compensated blend loses part of the hottest
    uptake; the guarded rule loses none of either source's salient structures and changes nothing else
    but the pixels it lifts, each to the guard's floor."""
    import numpy as np
    import SimpleITK as sitk

    import EdgeFusionLib
    from EdgeFusionLib.evaluation.metrics import salient_loss_a, salient_loss_b
    from EdgeFusionLib.fusion.engine import FusionEngine
    from EdgeFusionLib.fusion.intensity import window_for
    from EdgeFusionLib.fusion.pipeline import prepare_inputs
    from EdgeFusionLib.fusion.salient import GUARD_DROP

    samples = EdgeFusionLib.RESOURCES_DIR / "SampleData"
    mri, spect = prepare_inputs(sitk.ReadImage(str(samples / "EdgeFusionPhantom-MRI.nrrd")),
                                sitk.ReadImage(str(samples / "EdgeFusionPhantom-SPECT.nrrd")), "spect")
    mri01 = window_for(sitk.GetArrayViewFromImage(mri), "mri").apply(sitk.GetArrayViewFromImage(mri))
    spect01 = window_for(sitk.GetArrayViewFromImage(spect), "spect").apply(sitk.GetArrayViewFromImage(spect))
    middle = slice(8, 16)
    compensated = FusionEngine("sfnn-compensated", "MRI-SPECT", "cpu").fuse_grey(mri01[middle], spect01[middle])
    guarded = FusionEngine("sfnn-guarded", "MRI-SPECT", "cpu").fuse_grey(mri01[middle], spect01[middle])
    losses = [(salient_loss_a(f, a, b), salient_loss_b(f, a, b))
              for f, a, b in zip(guarded, mri01[middle], spect01[middle])]
    compensated_losses = [(salient_loss_a(f, a, b), salient_loss_b(f, a, b))
                          for f, a, b in zip(compensated, mri01[middle], spect01[middle])]
    assert max(max(pair) for pair in losses) == 0.0
    assert sum(map(sum, compensated_losses)) > 0.0
    changed = np.abs(guarded - compensated) > 1e-6
    on_a_floor = [np.isclose(guarded, source - GUARD_DROP, atol=1e-6) for source in (mri01[middle], spect01[middle])]
    assert changed.any() and (on_a_floor[0] | on_a_floor[1])[changed].all()
    assert (compensated[changed] < guarded[changed]).all()
