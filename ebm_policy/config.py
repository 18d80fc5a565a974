"""Frozen dataclass configs, one per component, and their plain-dict round trip.

Every config is passed explicitly to the component it configures; checkpoints store them as plain
dicts (``config_to_dict``) and rebuild them with ``config_from_dict``, which rejects unknown keys so
a checkpoint from an incompatible version fails loudly instead of silently dropping a setting.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

C = TypeVar("C")


@dataclass(frozen=True)
class CNNConfig:
    """Residual convolutional encoder (``modules.CNN``).

    Each stage is ``conv3x3(stride) -> [max-pool] -> ResidualBlock``. ``strides``/``pools`` give
    one value per stage: ``strides=(1, 1, 1), pools=(1, 1, 1)`` keeps the full resolution like the
    reference; ``preset("fast")`` (a stride-2 stem) cuts the convolution cost ~5x for 64-96 px
    images on a CPU.

    ``coord_conv`` appends coordinate channels to the input (the reference's option). It is off by
    default: without it the CNN is translation-equivariant, so the soft-argmax keypoints move with
    the objects everywhere in the image, which generalized far better from few images in the
    coordinate-regression experiment (CoordConv lets the network key on absolute position and
    fail in image regions without training data). ``center_input`` subtracts each image's
    per-channel median, so a uniform background becomes 0; with bias-free 3x3 convolutions
    (``conv_bias=False``) it stays 0 through the whole stack, so the zero padding continues the
    background at every layer and objects near the border look like objects anywhere else. (On a
    white background, zero padding otherwise draws a dark frame around the image. In the
    coordinate-regression experiment, N=10, seed 0, centering and then bias-free convolutions took
    the implicit test error from 0.56 to 0.23 to 0.13 px mean and the max from 10.2 to 3.2 to 1.4
    px, errors that sat on blocks near the border; ``ibc-gym coord-regression --train-sizes 10
    --models implicit`` with ``--no-center-input --conv-bias``, ``--conv-bias``, and neither.)
    """

    in_channels: int = 3
    channels: tuple[int, ...] = (16, 32, 32)
    strides: tuple[int, ...] = (1, 1, 1)
    pools: tuple[int, ...] = (1, 1, 1)
    coord_conv: bool = False
    padding_mode: Literal["zeros", "replicate", "reflect"] = "zeros"
    center_input: bool = True  # subtract each image's per-channel median (its background)
    conv_bias: bool = False  # biases of the 3x3 convolutions (off: see above)
    out_channels: int = 16  # of the 1x1 conv after the stack; soft-argmax gives 2x as many features

    @classmethod
    def preset(cls, name: Literal["full", "fast", "faster"], **overrides: Any) -> CNNConfig:
        """Named speed settings (channels 16, 32, 32): ``full`` keeps the input resolution (the
        reference), ``fast`` has a stride-2 stem (48x48 maps for 96 px images), ``faster``
        strides 2 twice (24x24). See ``ibc-gym bench dfo`` for their training samples/s."""
        strides = {"full": (1, 1, 1), "fast": (2, 1, 1), "faster": (2, 2, 1)}
        if name not in strides:
            raise ValueError(f"unknown CNN preset {name!r}; choose from {sorted(strides)}")
        return cls(**{"strides": strides[name], **overrides})

    def __post_init__(self) -> None:
        n = len(self.channels)
        if n == 0 or len(self.strides) != n or len(self.pools) != n:
            raise ValueError(
                f"CNNConfig: channels, strides and pools need one entry per stage, got "
                f"{self.channels}, {self.strides}, {self.pools}"
            )
        if min(self.strides) < 1 or min(self.pools) < 1:
            raise ValueError("CNNConfig: strides and pools must be >= 1")


@dataclass(frozen=True)
class SoftArgmaxConfig:
    """Spatial soft-argmax (``modules.SpatialSoftArgmax``).

    The softmax runs over ``features / temperature``. The reference uses 1.0; 0.1 makes the
    keypoints sharp from the start. With the other coordinate-regression defaults the two gave the
    same test error at N=10 (0.13 px at 0.1, 0.11 px at 1.0, one seed, ``ibc-gym
    coord-regression --train-sizes 10 --models implicit [--temperature 1.0]``).
    """

    temperature: float = 0.1
    learnable_temperature: bool = False


@dataclass(frozen=True)
class EBMConfig:
    """Energy model ``E(image, action) -> scalar`` (``models.EBMConvMLP``); lower is better."""

    action_dim: int = 2
    cnn: CNNConfig = field(default_factory=CNNConfig)
    softargmax: SoftArgmaxConfig = field(default_factory=SoftArgmaxConfig)
    hidden_dims: tuple[int, ...] = (256,)  # reference: one hidden layer of 256, ReLU


@dataclass(frozen=True)
class ExplicitConfig:
    """MSE regression baseline (``models.ExplicitConvMLP``), same backbone as the EBM."""

    action_dim: int = 2
    cnn: CNNConfig = field(default_factory=CNNConfig)
    softargmax: SoftArgmaxConfig = field(default_factory=SoftArgmaxConfig)
    hidden_dims: tuple[int, ...] = (256,)
    dropout: float = 0.1


@dataclass(frozen=True)
class InfoNCEConfig:
    """InfoNCE over uniform counter-examples (``losses.info_nce_loss``)."""

    num_counter_examples: int = 128  # reference: 64 by default, 128 in its implicit run script


@dataclass(frozen=True)
class DFOConfig:
    """Derivative-free optimizer (``dfo.DerivativeFreeOptimizer``).

    ``noise_scale`` is the initial noise std relative to the half-width of the bounds, so 0.33 on
    [-1, 1] bounds is the reference's 0.33. The reference uses 16,384 samples and 3 iterations;
    on a trained coordinate-regression model (500 test images, multinomial resampling) 2,048
    samples and 5 iterations gave nearly the same test error (0.127 px mean vs 0.118; 2,048 x 3:
    0.204; 1,024 x 5: 0.150) for ~1/5 of the energy evaluations.

    ``resampling`` picks how M indices are drawn with probabilities ``p = softmax(-E)``:
    ``"multinomial"`` draws them independently (the reference; ``torch.multinomial``);
    ``"stratified"`` draws one uniform in each of the M equal strata of [0, 1) and inverts the
    cumulative ``p``. Both give every sample ``M * p_i`` copies in expectation; stratified has
    lower variance (a standard particle-filter scheme) and is ~3x cheaper at 16,384 samples,
    where the draw costs about as much as an energy evaluation.
    """

    num_samples: int = 2048
    iterations: int = 5
    noise_scale: float = 0.33
    noise_shrink: float = 0.5
    resampling: Literal["stratified", "multinomial"] = "stratified"
    # Hidden activations (rows x hidden floats) evaluated at once; None: 2^20 on a CPU (4 MB,
    # near cache-sized), 2^26 on a GPU (256 MB: few large kernels beat many small ones there).
    max_chunk_elements: int | None = None

    def chunk_elements(self, device_type: str) -> int:
        """``max_chunk_elements``, or its default for a device type (``"cpu"``, ``"cuda"``, ...)."""
        if self.max_chunk_elements is not None:
            return self.max_chunk_elements
        return 1 << 20 if device_type == "cpu" else 1 << 26

    def __post_init__(self) -> None:
        chunk = self.max_chunk_elements
        if self.num_samples < 1 or self.iterations < 0 or (chunk is not None and chunk < 1):
            raise ValueError(f"DFOConfig: invalid values {self}")
        if self.resampling not in ("stratified", "multinomial"):
            raise ValueError(
                f"DFOConfig: unknown resampling {self.resampling!r}; choose stratified or multinomial"
            )


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule (``optim.build_optimizer``/``build_scheduler``).

    ``scheduler="step"`` multiplies the lr by ``gamma`` every ``step_size`` steps (reference:
    100, 0.99); ``"cosine"`` decays it to ``min_lr_ratio * lr`` over the run.
    """

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, ...] = (0.9, 0.999)
    scheduler: Literal["step", "cosine", "constant"] = "step"
    step_size: int = 100
    gamma: float = 0.99
    min_lr_ratio: float = 0.0
    warmup_steps: int = 0
    grad_clip_norm: float | None = None


@dataclass(frozen=True)
class ImplicitPolicyConfig:
    """Everything an ``ImplicitPolicy`` needs besides its action bounds."""

    model: EBMConfig = field(default_factory=EBMConfig)
    infonce: InfoNCEConfig = field(default_factory=InfoNCEConfig)
    dfo: DFOConfig = field(default_factory=DFOConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    bounds_padding: float = 0.05  # fraction of the action range added on each side


@dataclass(frozen=True)
class ExplicitPolicyConfig:
    """Everything an ``ExplicitPolicy`` needs besides its action bounds."""

    model: ExplicitConfig = field(default_factory=ExplicitConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(weight_decay=1e-4))
    bounds_padding: float = 0.05


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A (nested) config dataclass as plain dicts, lists and scalars."""
    return _plain(dataclasses.asdict(cfg))


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild config ``cls`` from ``config_to_dict`` output; unknown keys raise ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {k: _coerce(hints[k], v) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, v: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        if v is None:
            return None
        args = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(args[0], v) if len(args) == 1 else v
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, v)  # type: ignore[arg-type]
    if origin is tuple and isinstance(v, (list, tuple)):
        return tuple(v)
    return v
