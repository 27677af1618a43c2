"""EH-DRAN architecture (docs/method.md §1) and its folded inference encoder."""

import pytest
import torch

from EdgeFusionLib.model.folded import FoldedEncoder
from EdgeFusionLib.model.network import EHDRAN, SOBEL_X, attention_mask, count_parameters

from conftest import make_random_model


def test_parameter_counts_match_the_released_forward_pass():
    model = EHDRAN()
    assert count_parameters(model) == 414_081
    assert count_parameters(model.encoder) == 358_400
    assert count_parameters(model.decoder) == 55_681


def test_no_dead_modules_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = EHDRAN().train()
    model(torch.rand(2, 1, 16, 16)).square().mean().backward()
    dead = [name for name, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert dead == []


def test_shapes_one_channel_in_64_latent_one_out():
    model = EHDRAN().eval()
    x = torch.rand(3, 1, 24, 40)
    with torch.no_grad():
        latent = model.encoder(x)
        assert latent.shape == (3, 64, 24, 40)
        assert model.decoder(latent).shape == (3, 1, 24, 40)


def test_shared_batchnorm_is_applied_twice_per_forward_with_statistics_per_use():
    model = EHDRAN().train()
    encoder = model.encoder
    seen = []
    encoder.dilated.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    encoder.pyramid.register_forward_hook(lambda module, inputs, output: seen.append(output.detach()))
    model(torch.rand(2, 1, 8, 8))
    norm = encoder.shared_norm
    assert norm.num_batches_tracked.tolist() == [1, 1]
    assert sum(p.numel() for p in norm.parameters()) == 2 * 64  # one affine, shared by both uses
    for use, features in enumerate(seen):  # momentum 0.1 from mean 0 / variance 1
        torch.testing.assert_close(norm.running_mean[use], 0.1 * features.mean((0, 2, 3)))
        torch.testing.assert_close(norm.running_var[use], 0.9 + 0.1 * features.var((0, 2, 3)))


def test_eval_mode_normalises_each_use_with_its_own_statistics():
    model = make_random_model(seed=3)
    norm = model.encoder.shared_norm
    x = torch.randn(1, 64, 4, 4)
    for use in (0, 1):
        expected = (x - norm.running_mean[use].view(1, -1, 1, 1)) / torch.sqrt(norm.running_var[use].view(1, -1, 1, 1) + norm.eps)
        expected = expected * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
        torch.testing.assert_close(norm(x, use=use), expected)
    assert not torch.allclose(norm(x, use=0), norm(x, use=1))


def test_gradient_operator_starts_as_sobel_and_is_trainable():
    gradient = EHDRAN().encoder.drgo.gradient
    assert torch.equal(gradient.sobel_x.weight[5, 0], SOBEL_X)
    assert torch.equal(gradient.sobel_y.weight[5, 0], SOBEL_X.T)
    assert gradient.sobel_x.weight.requires_grad and gradient.sobel_x.bias is None


def test_attention_mask_is_relu_of_upsampled_2x2_mean():
    z = torch.tensor([[[[1.0, 3.0, -4.0, -2.0], [5.0, 7.0, 0.0, 2.0]]]])
    expected = torch.tensor([[[[4.0, 4.0, 0.0, 0.0], [4.0, 4.0, 0.0, 0.0]]]])
    assert torch.equal(attention_mask(z), expected)
    with pytest.raises(ValueError, match="even"):
        attention_mask(torch.rand(1, 1, 5, 4))


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (1, 1, 18, 46), (1, 1, 2, 2)])
def test_folded_encoder_equals_the_encoder_borders_included(shape):
    model = make_random_model(seed=1)
    torch.manual_seed(2)
    x = torch.rand(shape)
    with torch.no_grad():
        reference = model.encoder(x)
        folded = FoldedEncoder(model).eval()(x)
    scale = reference.abs().max()
    assert torch.allclose(folded, reference, atol=1e-5 * scale, rtol=0)


def test_folding_does_not_touch_the_model():
    model = make_random_model(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    FoldedEncoder(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_folding_stays_on_the_model_device():
    # The "meta" device stands in for a GPU, which CI lacks: a tensor made on the CPU while
    # folding a model that lives elsewhere fails here exactly as it would on CUDA.
    folded = FoldedEncoder(EHDRAN().eval().to("meta"))
    assert {tensor.device.type for tensor in [*folded.parameters(), *folded.buffers()]} == {"meta"}
