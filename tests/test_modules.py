"""Model building blocks: coordinates, residual block, soft-argmax, CNN, energy model, configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ebm_policy import (
    CNN,
    BackboneConfig,
    CNNConfig,
    CoordConv,
    DFOConfig,
    EBMConfig,
    EBMConvMLP,
    ExplicitConfig,
    ExplicitConvMLP,
    ExplicitPolicyConfig,
    ImplicitPolicyConfig,
    ResidualBlock,
    SoftArgmaxConfig,
    SpatialSoftArgmax,
    config_from_dict,
    config_to_dict,
    info_nce_loss,
    make_candidates,
)
from ebm_policy.losses import split_energies

TINY_CNN = CNNConfig(channels=(4, 8), strides=(1, 1), pools=(1, 1), out_channels=4)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("h, w", [(5, 5), (4, 7), (9, 3)])
def test_coord_conv_channels(h: int, w: int) -> None:
    x = torch.zeros(2, 3, h, w)
    out = CoordConv()(x)
    assert out.shape == (2, 5, h, w)
    xs, ys = out[0, 3], out[0, 4]
    # x is the column coordinate: constant down a column, -1 at the left edge, +1 at the right.
    assert torch.allclose(xs[:, 0], torch.full((h,), -1.0)) and torch.allclose(
        xs[:, -1], torch.ones(h)
    )
    assert torch.allclose(xs, xs[0].expand(h, w))
    # y is the row coordinate.
    assert torch.allclose(ys[0], torch.full((w,), -1.0)) and torch.allclose(ys[-1], torch.ones(w))
    assert torch.allclose(ys, ys[:, :1].expand(h, w))


def test_residual_block_uses_both_convolutions() -> None:
    torch.manual_seed(0)
    block = ResidualBlock(3)
    x = torch.randn(2, 3, 6, 6)
    expected = x + block.conv2(F.relu(block.conv1(F.relu(x))))
    out = block(x)
    assert torch.allclose(out, expected)
    out.square().sum().backward()
    for conv in (block.conv1, block.conv2):
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("h, w", [(8, 8), (6, 11), (13, 5)])
@pytest.mark.parametrize("row_frac, col_frac", [(0.0, 0.0), (1.0, 0.0), (0.4, 0.9), (1.0, 1.0)])
def test_soft_argmax_on_one_hot_maps(h: int, w: int, row_frac: float, col_frac: float) -> None:
    r, c = round(row_frac * (h - 1)), round(col_frac * (w - 1))
    maps = torch.zeros(1, 2, h, w)
    maps[0, 0, r, c] = 100.0  # a sharp peak: the softmax is one-hot there
    maps[0, 1, h - 1 - r, w - 1 - c] = 100.0
    out = SpatialSoftArgmax()(maps)
    assert out.shape == (1, 4)
    expected = torch.tensor(
        [2 * c / (w - 1) - 1, 2 * r / (h - 1) - 1, 1 - 2 * c / (w - 1), 1 - 2 * r / (h - 1)]
    )
    assert torch.allclose(out[0], expected, atol=1e-4)


def test_soft_argmax_uniform_map_is_centre_and_temperature_learns() -> None:
    sa = SpatialSoftArgmax(SoftArgmaxConfig(temperature=0.5, learnable_temperature=True))
    assert torch.allclose(sa(torch.zeros(3, 2, 5, 7)), torch.zeros(3, 4), atol=1e-6)
    maps = torch.randn(2, 3, 6, 6)
    sa(maps).square().sum().backward()
    assert sa.log_temperature.grad is not None and sa.log_temperature.grad.abs() > 0
    assert not SpatialSoftArgmax().log_temperature.requires_grad
    with pytest.raises(ValueError, match="temperature"):
        SpatialSoftArgmax(SoftArgmaxConfig(temperature=0.0))


@pytest.mark.parametrize(
    "strides, pools, size, out_size",
    [
        ((1, 1), (1, 1), 16, 16),
        ((2, 1), (1, 1), 16, 8),
        ((2, 1), (1, 2), 16, 4),
        ((1, 2), (2, 1), 12, 3),
    ],
)
def test_cnn_downsampling(
    strides: tuple[int, ...], pools: tuple[int, ...], size: int, out_size: int
) -> None:
    cnn = CNN(dataclasses.replace(TINY_CNN, strides=strides, pools=pools))
    out = cnn(torch.rand(2, 3, size, size))
    assert out.shape == (2, 4, out_size, out_size)
    assert (out >= 0).all()


@pytest.mark.parametrize("coord_conv", [False, True])
def test_cnn_coord_conv_option(coord_conv: bool) -> None:
    cnn = CNN(dataclasses.replace(TINY_CNN, coord_conv=coord_conv))
    assert cnn.stages[0].in_channels == 3 + 2 * coord_conv
    assert cnn(torch.rand(1, 3, 8, 8)).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("conv_bias", [False, True])
def test_cnn_without_coord_conv_is_translation_equivariant(conv_bias: bool) -> None:
    """Shifting the image shifts the feature maps. Without conv biases the centred background
    stays 0 through the stack, so this holds up to the border; with biases only inside."""
    torch.manual_seed(0)
    cnn = CNN(dataclasses.replace(TINY_CNN, conv_bias=conv_bias))
    x = torch.ones(1, 3, 24, 24)  # white background
    x[..., 8:11, 8:11] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    shifted = torch.roll(x, shifts=(3, 5), dims=(2, 3))
    a, b = torch.roll(cnn(x), shifts=(3, 5), dims=(2, 3)), cnn(shifted)
    assert torch.allclose(a[..., 6:18, 8:20], b[..., 6:18, 8:20], atol=1e-5)
    assert torch.allclose(a, b, atol=1e-5) == (not conv_bias)


@pytest.mark.parametrize("center_input", [False, True])
def test_center_input_removes_the_background_level(center_input: bool) -> None:
    """With median centering a uniform background maps to 0, whatever its colour."""
    torch.manual_seed(0)
    cnn = CNN(dataclasses.replace(TINY_CNN, center_input=center_input))
    x = torch.zeros(1, 3, 12, 12)
    x[..., 2:5, 3:6] = torch.tensor([0.0, 1.0, 0.0])[:, None, None]
    brighter = x + torch.tensor([0.9, 0.0, 0.5])[:, None, None]  # another background colour
    same = torch.allclose(cnn(x), cnn(brighter), atol=1e-6)
    assert same == center_input


@pytest.mark.parametrize(
    "kwargs", [{"channels": ()}, {"strides": (1,)}, {"pools": (1, 1, 1)}, {"strides": (0, 1)}]
)
def test_cnn_config_rejects_bad_stages(kwargs: dict) -> None:
    with pytest.raises(ValueError, match="CNNConfig"):
        dataclasses.replace(TINY_CNN, **kwargs)


@pytest.fixture
def ebm() -> EBMConvMLP:
    torch.manual_seed(0)
    return EBMConvMLP(
        EBMConfig(action_dim=3, backbone=BackboneConfig(cnn=TINY_CNN), hidden_dims=(16, 8))
    )


def test_ebm_shapes_and_split_first_layer(ebm: EBMConvMLP) -> None:
    images, actions = torch.rand(2, 3, 10, 12), torch.rand(2, 5, 3) * 2 - 1
    energies = ebm(images, actions)
    assert energies.shape == (2, 5)
    features = ebm.encode(images)
    assert features.shape == (2, 8)
    assert torch.allclose(ebm.energy(features, actions), energies)
    # Split first layer == concatenated first layer (the reference's layout).
    assert torch.allclose(ebm.forward_naive(images, actions), energies, atol=1e-5)
    # Each energy depends only on its own action.
    assert torch.allclose(ebm(images, actions[:, 2:3]), energies[:, 2:3], atol=1e-6)


@pytest.mark.parametrize("hidden_dims", [(16,), (16, 8)])
@pytest.mark.parametrize("max_rows", [1, 3, 7, 1000])
def test_chunked_energy_matches(hidden_dims: tuple[int, ...], max_rows: int) -> None:
    torch.manual_seed(1)
    model = EBMConvMLP(
        EBMConfig(action_dim=2, backbone=BackboneConfig(cnn=TINY_CNN), hidden_dims=hidden_dims)
    )
    features, actions = torch.randn(3, 8), torch.rand(3, 10, 2)
    expected = model.energy(features, actions)
    with torch.inference_mode():
        got = model.energy_chunked(features, actions, max_rows)
    assert torch.allclose(got, expected, atol=1e-5)


def test_explicit_model_shape_and_dropout() -> None:
    torch.manual_seed(0)
    model = ExplicitConvMLP(
        ExplicitConfig(
            action_dim=3, backbone=BackboneConfig(cnn=TINY_CNN), hidden_dims=(32,), dropout=0.5
        )
    )
    x = torch.rand(4, 3, 8, 8)
    assert model(x).shape == (4, 3)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_info_nce_lower_energy_is_better() -> None:
    labels = torch.tensor([2])
    good = torch.tensor([[1.0, 1.0, -3.0, 1.0]])  # the positive has the lowest energy
    bad = torch.tensor([[1.0, 1.0, 5.0, 1.0]])
    assert info_nce_loss(good, labels) < info_nce_loss(bad, labels)
    expected = -torch.log_softmax(-good, dim=1)[0, 2]
    assert torch.allclose(info_nce_loss(good, labels), expected)


def test_candidates_hold_the_positive_at_a_random_index() -> None:
    g = torch.Generator().manual_seed(0)
    pos = torch.rand(64, 2) * 0.2
    low, high = torch.tensor([-1.0, -0.5]), torch.tensor([1.0, 0.5])
    cands, labels = make_candidates(pos, 7, low, high, g)
    assert cands.shape == (64, 8, 2) and labels.shape == (64,)
    assert torch.equal(cands[torch.arange(64), labels], pos)
    assert len(set(labels.tolist())) > 4  # not always the same slot
    assert (cands >= low).all() and (cands <= high).all()
    energies = torch.randn(64, 8)
    p, n = split_energies(energies, labels)
    assert torch.equal(p, energies[torch.arange(64), labels]) and n.shape == (64, 7)


@pytest.mark.parametrize(
    "cfg",
    [
        ImplicitPolicyConfig(),
        ImplicitPolicyConfig(
            model=EBMConfig(backbone=BackboneConfig(cnn=TINY_CNN), hidden_dims=(8, 4)),
            optimizer=DFOConfig(num_samples=7),
        ),
        ExplicitPolicyConfig(),
    ],
)
def test_config_round_trip(cfg: object) -> None:
    data = config_to_dict(cfg)
    assert isinstance(data["model"]["backbone"]["cnn"]["channels"], list)  # plain types only
    assert config_from_dict(type(cfg), data) == cfg
    with pytest.raises(ValueError, match="unknown fields"):
        config_from_dict(type(cfg), {**data, "bogus": 1})
