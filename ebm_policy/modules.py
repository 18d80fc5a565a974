"""Building blocks of the image encoder: CoordConv, residual CNN, spatial soft-argmax, MLP.

Coordinate convention everywhere: ``x`` is the column coordinate, ``y`` the row coordinate, both
normalized to [-1, 1] (-1 = first column/row, +1 = last).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ebm_policy.config import CNNConfig, SoftArgmaxConfig

PaddingMode = Literal["zeros", "replicate", "reflect"]


def coordinate_grid(
    height: int, width: int, *, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor]:
    """Normalized coordinates of the columns and rows: ``xs (W,)``, ``ys (H,)`` in [-1, 1].

    A size-1 axis gets the coordinate 0 (its centre).
    """

    def axis(n: int) -> Tensor:
        if n == 1:
            return torch.zeros(1, device=device, dtype=dtype)
        return torch.linspace(-1.0, 1.0, n, device=device, dtype=dtype)

    return axis(width), axis(height)


class CoordConv(nn.Module):
    """Appends two coordinate channels: ``(B, C, H, W) -> (B, C + 2, H, W)``.

    Channel ``C`` holds the column coordinate x, channel ``C + 1`` the row coordinate y.
    """

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C + 2, H, W)``."""
        b, _, h, w = x.shape
        xs, ys = coordinate_grid(h, w, device=x.device, dtype=x.dtype)
        grid = torch.stack((xs.expand(h, w), ys[:, None].expand(h, w)))  # (2, H, W)
        return torch.cat((x, grid.expand(b, 2, h, w)), dim=1)


class ResidualBlock(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with two 3x3 convolutions: ``(B, C, H, W) -> same``."""

    def __init__(
        self, channels: int, padding_mode: PaddingMode = "zeros", bias: bool = True
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(
            channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias
        )
        self.conv2 = nn.Conv2d(
            channels, channels, 3, padding=1, padding_mode=padding_mode, bias=bias
        )

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, H, W)``."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class CNN(nn.Module):
    """[median centering] -> [CoordConv] -> stages of ``conv3x3(stride) -> [max-pool] ->
    ResidualBlock`` -> ReLU -> 1x1 conv -> ReLU.

    ``(B, in_channels, H, W) -> (B, out_channels, H', W')`` where ``H' = H / prod(strides * pools)``
    (rounded as the convolutions round).
    """

    def __init__(self, cfg: CNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.coord_conv = CoordConv() if cfg.coord_conv else None
        depth_in = cfg.in_channels + (2 if cfg.coord_conv else 0)
        layers: list[nn.Module] = []
        for depth, stride, pool in zip(cfg.channels, cfg.strides, cfg.pools, strict=True):
            layers.append(
                nn.Conv2d(
                    depth_in,
                    depth,
                    3,
                    stride=stride,
                    padding=1,
                    padding_mode=cfg.padding_mode,
                    bias=cfg.conv_bias,
                )
            )
            if pool > 1:
                layers.append(nn.MaxPool2d(pool))
            layers.append(ResidualBlock(depth, cfg.padding_mode, cfg.conv_bias))
            depth_in = depth
        self.stages = nn.Sequential(*layers)
        self.project = nn.Conv2d(depth_in, cfg.out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, out_channels, H', W')``, non-negative."""
        if self.cfg.center_input:
            x = x - x.flatten(2).median(dim=2).values[:, :, None, None]
        if self.coord_conv is not None:
            x = self.coord_conv(x)
        x = F.relu(self.stages(x))
        return F.relu(self.project(x))


class SpatialSoftArgmax(nn.Module):
    """Expected (x, y) position of each channel under a softmax over its H*W cells.

    ``(B, C, H, W) -> (B, 2C)`` laid out as ``[x_0, y_0, x_1, y_1, ...]`` with x the column and y
    the row coordinate in [-1, 1]. The softmax is taken over ``features / temperature``; the
    temperature is a learnable parameter (kept positive through its log) when configured so.
    """

    def __init__(self, cfg: SoftArgmaxConfig | None = None) -> None:
        super().__init__()
        cfg = cfg or SoftArgmaxConfig()
        if cfg.temperature <= 0:
            raise ValueError(f"soft-argmax temperature must be > 0, got {cfg.temperature}")
        log_t = torch.tensor(math.log(cfg.temperature))
        if cfg.learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

    @property
    def temperature(self) -> Tensor:
        """The current softmax temperature (a scalar tensor)."""
        return self.log_temperature.exp()

    def keypoints(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, C, 2)``: the expected ``(x, y)`` of every channel."""
        b, c, h, w = x.shape
        logits = x.reshape(b, c, h * w) / self.temperature
        p = torch.softmax(logits, dim=-1).reshape(b, c, h, w)
        xs, ys = coordinate_grid(h, w, device=x.device, dtype=p.dtype)
        x_mean = p.sum(dim=2) @ xs  # column marginal (B, C, W) . (W,) -> (B, C)
        y_mean = p.sum(dim=3) @ ys  # row marginal (B, C, H) . (H,) -> (B, C)
        return torch.stack((x_mean, y_mean), dim=-1)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C, H, W) -> (B, 2C)``."""
        return self.keypoints(x).flatten(1)


class MLP(nn.Sequential):
    """``Linear -> ReLU [-> Dropout]`` per hidden layer, then a linear output: ``(..., I) -> (..., O)``."""

    def __init__(
        self, in_dim: int, hidden_dims: tuple[int, ...], out_dim: int, dropout: float = 0.0
    ) -> None:
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden_dims:
            layers += [nn.Linear(d, h), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        layers.append(nn.Linear(d, out_dim))
        super().__init__(*layers)
