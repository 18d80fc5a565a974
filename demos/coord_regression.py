"""``ibc-gym coord-regression``: the paper's first experiment, implicit vs explicit.

96x96 white images with one 7x7 green block; the target is the block centre ``(x, y)`` (x = column,
y = row) scaled to [-1, 1]. Both policies share the backbone; the implicit one is trained with
InfoNCE and answers by DFO, the explicit one regresses the target under MSE (dropout 0.1, weight
decay 1e-4). Splits: ``standard`` (test blocks anywhere) and ``extrapolation`` (training blocks
only in the left half of the image, test blocks only in the right half).

The settings are named presets (``COORD_REGRESSION_IMPLICIT``, ``COORD_REGRESSION_EXPLICIT``,
``COORD_REGRESSION_TRAIN``) that the command line changes option by option. The data functions
(``sample_centers``, ``render_blocks``, ``make_split``...) and the presets are importable for
visualizations and benchmarks.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from demos.args import check_options, help_field, one_of
from ebm_policy import (
    AutoregressiveDFOConfig,
    BackboneConfig,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    InfoNCEConfig,
    OptimConfig,
    SoftArgmaxConfig,
    TrainConfig,
    config_to_dict,
    train,
)
from ebm_policy.fileio import write_json_atomic

GREEN = (0, 255, 0)
Region = Literal["all", "left", "right"]


# --------------------------------------------------------------------------- data
def center_range(resolution: int = 96, block_size: int = 7) -> tuple[int, int]:
    """Smallest and largest block centre (pixel index) keeping the block inside the image."""
    half = block_size // 2
    return half, resolution - 1 - half


def sample_centers(
    n: int,
    rng: np.random.Generator,
    *,
    resolution: int = 96,
    block_size: int = 7,
    region: Region = "all",
) -> np.ndarray:
    """``-> (n, 2) int64`` block centres ``(x = column, y = row)``, uniform over valid pixels.

    ``region="left"``/``"right"`` restricts x to the left / right half (for extrapolation).
    """
    lo, hi = center_range(resolution, block_size)
    mid = (resolution - 1) // 2
    x_lo, x_hi = {"all": (lo, hi), "left": (lo, mid), "right": (mid + 1, hi)}[region]
    xs = rng.integers(x_lo, x_hi + 1, size=n)
    ys = rng.integers(lo, hi + 1, size=n)
    return np.stack([xs, ys], axis=1)


def render_blocks(
    centers: np.ndarray,
    *,
    resolution: int = 96,
    block_size: int = 7,
    color: tuple[int, int, int] = GREEN,
) -> np.ndarray:
    """White ``(n, H, W, 3) uint8`` images with a ``block_size`` square of ``color`` at each
    centre ``(x, y)``."""
    images = np.full((len(centers), resolution, resolution, 3), 255, dtype=np.uint8)
    half = block_size // 2
    for img, (x, y) in zip(images, centers, strict=True):
        img[y - half : y + half + 1, x - half : x + half + 1] = color
    return images


def centers_to_targets(centers: np.ndarray, resolution: int = 96) -> np.ndarray:
    """Pixel centres ``(n, 2)`` -> float32 targets in [-1, 1] (pixel 0 -> -1, pixel res-1 -> 1)."""
    return (np.asarray(centers, dtype=np.float32) / (resolution - 1) * 2 - 1).astype(np.float32)


def targets_to_pixels(targets: np.ndarray, resolution: int = 96) -> np.ndarray:
    """Inverse of ``centers_to_targets`` (float pixel coordinates)."""
    return (np.asarray(targets, dtype=np.float64) + 1) / 2 * (resolution - 1)


def target_bounds(resolution: int = 96, block_size: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """The targets' full range ``(low (2,), high (2,))``: every valid centre of the task."""
    lo, hi = center_range(resolution, block_size)
    t = centers_to_targets(np.array([[lo, lo], [hi, hi]]), resolution)
    return t[0], t[1]


class BlockDataset(Dataset):
    """``{"image": uint8 (H, W, 3), "action": float32 (2,)}`` items; ``actions`` holds all targets."""

    def __init__(self, centers: np.ndarray, *, resolution: int = 96, block_size: int = 7) -> None:
        self.centers = np.asarray(centers)
        self.images = render_blocks(self.centers, resolution=resolution, block_size=block_size)
        self.actions = centers_to_targets(self.centers, resolution)

    def __len__(self) -> int:
        return len(self.centers)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        return {"image": self.images[i], "action": self.actions[i]}


def make_split(
    split: Literal["standard", "extrapolation"],
    n_train: int,
    n_test: int,
    seed: int,
    *,
    resolution: int = 96,
    block_size: int = 7,
) -> tuple[BlockDataset, BlockDataset]:
    """Seeded ``(train, test)`` datasets; the test set's generator is independent of ``n_train``."""
    train_region: Region = "left" if split == "extrapolation" else "all"
    test_region: Region = "right" if split == "extrapolation" else "all"
    kw = {"resolution": resolution, "block_size": block_size}
    train_c = sample_centers(n_train, np.random.default_rng([seed, 0]), region=train_region, **kw)
    test_c = sample_centers(n_test, np.random.default_rng([seed, 1]), region=test_region, **kw)
    return BlockDataset(train_c, **kw), BlockDataset(test_c, **kw)


# ------------------------------------------------------------------------ command
COORD_REGRESSION_BACKBONE = BackboneConfig(
    cnn=CNNConfig(
        channels=(16, 32, 32),
        strides=(2, 1, 1),
        out_channels=16,
        coord_conv=False,
        center_input=True,
        conv_bias=False,
    ),
    softargmax=SoftArgmaxConfig(temperature=0.1),
)
"""The backbone both policies of the experiment share: CNN preset ``fast`` (a stride-2 stem,
channels 16/32/32, 16 keypoint maps), no CoordConv, median-centred input, bias-free 3x3
convolutions, soft-argmax temperature 0.1."""

COORD_REGRESSION_IMPLICIT = ImplicitPolicyConfig(
    model=EBMConfig(action_dim=2, backbone=COORD_REGRESSION_BACKBONE, hidden_dims=(256,)),
    loss=InfoNCEConfig(num_counter_examples=128),
    optimizer=DFOConfig(num_samples=2048, iterations=5, resampling="stratified"),
    optim=OptimConfig(lr=1e-3, scheduler="cosine"),
)
"""The experiment's implicit policy: InfoNCE over 128 uniform counter-examples, DFO with 2,048
samples x 5 iterations at test time, Adam at lr 1e-3 decayed to 0 by a cosine schedule."""

COORD_REGRESSION_EXPLICIT = ExplicitPolicyConfig(
    model=ExplicitConfig(
        action_dim=2, backbone=COORD_REGRESSION_BACKBONE, hidden_dims=(256,), dropout=0.1
    ),
    optim=OptimConfig(lr=1e-3, weight_decay=1e-4, scheduler="cosine"),
)
"""The experiment's explicit baseline, the reference's: MSE regression with dropout 0.1 and
weight decay 1e-4, the same backbone and schedule as the implicit policy."""

COORD_REGRESSION_TRAIN = TrainConfig(
    steps=2000,
    batch_size=8,
    log_interval=100,
    ckpt_interval=2000,
    num_threads=None,
    tensorboard=False,
)
"""The experiment's training loop: 2,000 steps of batch 8 (torch's default thread count)."""


@dataclass(frozen=True)
class CoordRegressionConfig:
    """Options of ``ibc-gym coord-regression``.

    The policies are the named presets above, changed by ``--implicit.*`` and ``--explicit.*``
    (e.g. ``--implicit.optimizer.num-samples 1024``, ``--implicit.model.cnn.strides 1 1 1``;
    change both to keep the backbones alike); the training loop is ``TrainConfig``, its options
    flattened as in ``ibc-gym train`` (``--steps``, ``--batch-size``, ``--seed``,
    ``--num-threads``, ``--no-progress``...). ``--seed`` also draws the images.
    """

    train_sizes: tuple[int, ...] = help_field(
        (10, 30), "numbers of training images (one run each)", min=1
    )
    test_size: int = help_field(500, "held-out test images", min=1)
    split: Literal["standard", "extrapolation", "both"] = help_field(
        "standard",
        "standard: test anywhere; extrapolation: train in the left half, test in the right",
        check=one_of("standard", "extrapolation", "both"),
    )
    models: Literal["both", "implicit", "explicit"] = help_field(
        "both", "which policies to train", check=one_of("both", "implicit", "explicit")
    )
    explicit_steps: int | None = help_field(
        None, "gradient steps of the explicit model (None: --steps)", min=1
    )
    resolution: int = help_field(96, "image size in pixels", min=16)
    out: Path | None = help_field(None, "directory for run dirs, results.json and results.md")
    quick: bool = help_field(False, "tiny smoke-test version (32 px images, a few steps; seconds)")
    implicit: ImplicitPolicyConfig = help_field(
        factory=lambda: COORD_REGRESSION_IMPLICIT,
        help="the implicit policy (EBM + InfoNCE + DFO; model.action_dim is 2)",
    )
    explicit: ExplicitPolicyConfig = help_field(
        factory=lambda: COORD_REGRESSION_EXPLICIT,
        help="the explicit baseline (MSE; model.action_dim is 2)",
    )
    train: TrainConfig = help_field(
        factory=lambda: COORD_REGRESSION_TRAIN,
        flatten=True,
        help="the training loop of both policies",
    )

    def __post_init__(self) -> None:
        check_options(self)


def quick_config(cfg: CoordRegressionConfig) -> CoordRegressionConfig:
    """The tiny smoke-test version of ``cfg`` (``--quick``): 4 training and 16 test images of
    32 px, 8 steps of batch 4, 16 counter-examples, 64 inference samples (2 DFO iterations)."""
    imp = cfg.implicit
    small: dict[str, Any] = {"num_samples": 64}
    if isinstance(imp.optimizer, (DFOConfig, AutoregressiveDFOConfig)):
        small["iterations"] = 2
    implicit = replace(
        imp,
        loss=replace(imp.loss, num_counter_examples=16),
        optimizer=replace(imp.optimizer, **small),
    )
    return replace(
        cfg,
        train_sizes=(4,),
        test_size=16,
        explicit_steps=8,
        resolution=32,
        train=replace(cfg.train, steps=8, batch_size=4),
        implicit=implicit,
    )


def make_policy(
    config: ImplicitPolicyConfig | ExplicitPolicyConfig, resolution: int, seed: int
) -> ImplicitPolicy | ExplicitPolicy:
    """The policy ``config`` describes, bounded by the targets of ``resolution`` px images."""
    low, high = target_bounds(resolution)
    if isinstance(config, ImplicitPolicyConfig):
        return ImplicitPolicy(config, low, high, seed=seed)
    return ExplicitPolicy(config, low, high, seed=seed)


def pixel_errors(
    policy: ImplicitPolicy | ExplicitPolicy,
    data: BlockDataset,
    resolution: int,
    seed: int,
    batch: int = 100,
) -> np.ndarray:
    """Euclidean distance in pixels between predicted and true block centres: ``-> (n,)``."""
    g = torch.Generator().manual_seed(seed)
    preds = [
        policy.select_action(data.images[i : i + batch], generator=g)
        for i in range(0, len(data), batch)
    ]
    pred = np.concatenate(preds)  # type: ignore[arg-type]
    diff = targets_to_pixels(pred, resolution) - targets_to_pixels(data.actions, resolution)
    return np.linalg.norm(diff, axis=1)


def run_one(
    cfg: CoordRegressionConfig,
    split: Literal["standard", "extrapolation"],
    n: int,
    kind: str,
    out: Path,
) -> dict[str, Any]:
    """Train one policy on ``n`` images of ``split`` and evaluate it on the test set."""
    seed = cfg.train.seed
    train_set, test_set = make_split(split, n, cfg.test_size, seed, resolution=cfg.resolution)
    policy = make_policy(cfg.implicit if kind == "implicit" else cfg.explicit, cfg.resolution, seed)
    steps = cfg.train.total_steps(n)
    if kind == "explicit" and cfg.explicit_steps is not None:
        steps = cfg.explicit_steps
    tcfg = replace(cfg.train, steps=steps, epochs=None)
    meta = {
        "experiment": "coord-regression",
        "split": split,
        "train_size": n,
        "resolution": cfg.resolution,
    }
    t0 = time.perf_counter()
    train(policy, train_set, tcfg, out, metadata=meta)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    err = pixel_errors(policy, test_set, cfg.resolution, seed)
    eval_s = time.perf_counter() - t0
    return {
        "split": split,
        "train_size": n,
        "model": kind,
        "steps": steps,
        "mean_px": float(err.mean()),
        "median_px": float(np.median(err)),
        "max_px": float(err.max()),
        "under_1px": float((err < 1).mean()),
        "train_s": train_s,
        "eval_s": eval_s,
    }


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    """One markdown table per model."""
    out = []
    for model in dict.fromkeys(r["model"] for r in rows):
        out += [
            f"### {model}",
            "",
            "| split | N train | steps | mean px | median px | max px | < 1 px | train s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in (r for r in rows if r["model"] == model):
            out.append(
                f"| {r['split']} | {r['train_size']} | {r['steps']} | {r['mean_px']:.2f} | "
                f"{r['median_px']:.2f} | {r['max_px']:.2f} | {100 * r['under_1px']:.1f}% | "
                f"{r['train_s']:.0f} |"
            )
        out.append("")
    return "\n".join(out)


def run_coord_regression(cfg: CoordRegressionConfig) -> dict[str, Any]:
    """Train and evaluate every (split, train size, model); print and return the results."""
    if cfg.quick:
        cfg = quick_config(cfg)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    splits = ["standard", "extrapolation"] if cfg.split == "both" else [cfg.split]
    kinds = ["implicit", "explicit"] if cfg.models == "both" else [cfg.models]
    if len(kinds) == 2 and cfg.implicit.model.backbone != cfg.explicit.model.backbone:
        print(
            "note: the implicit and explicit backbones differ (--implicit.model.* vs --explicit.model.*)"
        )
    rows = []
    with _run_root(cfg.out) as root:
        for split in splits:
            for n in cfg.train_sizes:
                for kind in kinds:
                    run_dir = root / f"{split}_n{n}_{kind}"
                    if run_dir.exists():
                        raise FileExistsError(f"{run_dir} exists; choose another --out")
                    rows.append(run_one(cfg, split, n, kind, run_dir))  # type: ignore[arg-type]
                    print(markdown_tables(rows[-1:]), flush=True)
    tables = markdown_tables(rows)
    print(
        f"\n## Coordinate regression ({cfg.resolution} px, {cfg.test_size} test images, "
        f"{torch.get_num_threads()} threads)\n\n{tables}"
    )
    result = {"config": _jsonable(config_to_dict(cfg)), "results": rows}
    if cfg.out is not None:
        write_json_atomic(cfg.out / "results.json", result)  # strict: an undefined error is null
        (cfg.out / "results.md").write_text(tables)
    return result


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, Path) else v for k, v in d.items()}


@contextlib.contextmanager
def _run_root(out: Path | None) -> Iterator[Path]:
    """``out`` itself, or a temporary directory removed afterwards."""
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        yield out
        return
    with tempfile.TemporaryDirectory(prefix="coord-regression-") as tmp:
        yield Path(tmp)


COMMANDS = [
    (
        "coord-regression",
        "Paper experiment 1: implicit vs explicit coordinate regression from few images.",
        CoordRegressionConfig,
        run_coord_regression,
    )
]
