"""Frozen dataclass configs, one per component, and their plain-dict round trip.

Every config is passed explicitly to the component it configures and holds the one default of
each of its settings (``param``: default, help text and valid values). Checkpoints store configs
as plain dicts (``config_to_dict``) and rebuild them with ``config_from_dict``, which rejects
unknown keys, so a checkpoint from an incompatible version fails loudly instead of silently
dropping a setting. A field typed as a union of configs with a ``kind`` (the inference optimizer,
the training loss) stores its kind beside its fields.

The defaults are the settings the env jobs train with (``ibc-gym train``); other experiments name
their settings as config values (``demos/coord_regression.py``'s preset), not copies of fields.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from ebm_policy.optimizers import (
    OPTIMIZERS,
    AutoregressiveDFOConfig,
    DFOConfig,
    LangevinChainConfig,
    LangevinConfig,
    OptimizerConfig,
    ProposalDFOConfig,
)
from ebm_policy.params import check_params, one_of, param

C = TypeVar("C")


@dataclass(frozen=True)
class CNNConfig:
    """Residual convolutional encoder (``modules.CNN``).

    Each stage is ``conv3x3(stride) -> [max-pool] -> ResidualBlock``. ``strides``/``pools`` give
    one value per stage: ``(1, 1, 1)`` keeps the full resolution like the reference; the default
    strides twice, ``preset("fast")`` once (see ``ibc-gym bench dfo`` for their speeds).

    ``coord_conv`` appends coordinate channels to the input (the reference's option). It is off by
    default: without it the CNN is translation-equivariant, so the soft-argmax keypoints move with
    the objects everywhere in the image (CoordConv lets the network key on absolute position and
    fail in image regions without training data). ``center_input`` subtracts each image's
    per-channel median, so a uniform background becomes 0; with bias-free 3x3 convolutions
    (``conv_bias=False``) it stays 0 through the whole stack, so the zero padding continues the
    background at every layer and objects near the border look like objects anywhere else (on a
    white background, zero padding otherwise draws a dark frame around the image). The README's
    coordinate-regression section gives the measured effect of each.
    """

    in_channels: int = param(3, "image channels", min=1)
    channels: tuple[int, ...] = param((16, 32, 32), "channels per stage", min=1)
    strides: tuple[int, ...] = param((2, 2, 1), "stride per stage (2 halves the resolution)", min=1)
    pools: tuple[int, ...] = param((1, 1, 1), "max-pool size per stage (1: none)", min=1)
    coord_conv: bool = param(False, "append x/y coordinate channels to the image (CoordConv)")
    padding_mode: Literal["zeros", "replicate", "reflect"] = param(
        "zeros", "padding of the 3x3 convolutions", check=one_of("zeros", "replicate", "reflect")
    )
    center_input: bool = param(True, "subtract each image's per-channel median (its background)")
    conv_bias: bool = param(False, "biases of the 3x3 convolutions")
    out_channels: int = param(
        16, "keypoints: channels of the 1x1 conv (soft-argmax gives 2x as many features)", min=1
    )

    @classmethod
    def preset(cls, name: Literal["full", "fast", "faster"], **overrides: Any) -> CNNConfig:
        """Named speed settings: ``full`` keeps the input resolution (the reference), ``fast``
        has a stride-2 stem (48x48 maps for 96 px images), ``faster`` (the default) strides 2
        twice (24x24)."""
        strides = {"full": (1, 1, 1), "fast": (2, 1, 1), "faster": (2, 2, 1)}
        if name not in strides:
            raise ValueError(f"unknown CNN preset {name!r}; choose from {sorted(strides)}")
        return cls(**{"strides": strides[name], **overrides})

    def __post_init__(self) -> None:
        check_params(self)
        n = len(self.channels)
        if n == 0 or len(self.strides) != n or len(self.pools) != n:
            raise ValueError(
                f"CNNConfig: channels, strides and pools need one entry per stage, got "
                f"{self.channels}, {self.strides}, {self.pools}"
            )


@dataclass(frozen=True)
class SoftArgmaxConfig:
    """Spatial soft-argmax (``modules.SpatialSoftArgmax``): softmax over ``features /
    temperature``. The reference uses 1.0; 0.1 makes the keypoints sharp from the start."""

    temperature: float = param(0.1, "softmax temperature (lower: sharper keypoints)", above=0)
    learnable_temperature: bool = param(False, "learn the temperature")

    def __post_init__(self) -> None:
        check_params(self)


@dataclass(frozen=True)
class BackboneConfig:
    """The image encoder both policies share: CNN -> spatial soft-argmax keypoints."""

    cnn: CNNConfig = param(factory=CNNConfig, help="convolutional encoder")
    softargmax: SoftArgmaxConfig = param(factory=SoftArgmaxConfig, help="spatial soft-argmax")


INPUTS: tuple[str, ...] = ("image", "state", "image_state")
"""What a model observes: ``"image"`` (the CNN's soft-argmax keypoints), ``"state"`` (a state
vector, the paper's state-based setting: an MLP over ``[state, action]``) or ``"image_state"``
(the keypoints concatenated with a proprio vector such as the agent position)."""

Inputs = Literal["image", "state", "image_state"]


def _check_inputs(cfg: Any) -> None:
    """``ValueError`` unless ``state_dim`` is set exactly when the inputs include a state."""
    needs_state = cfg.inputs in ("state", "image_state")
    if needs_state and cfg.state_dim < 1:
        raise ValueError(f"{type(cfg).__name__}: inputs {cfg.inputs!r} need state_dim >= 1")
    if not needs_state and cfg.state_dim != 0:
        raise ValueError(
            f"{type(cfg).__name__}: inputs {cfg.inputs!r} take no state, got state_dim "
            f"{cfg.state_dim}"
        )


@dataclass(frozen=True)
class EBMConfig:
    """Energy model ``E(observation, action) -> scalar`` (``models.EBMConvMLP``); lower is better.

    ``inputs`` and ``state_dim`` come from the dataset (``ibc-gym train`` sets them from its
    observation type); the backbone is unused (and has no weights) for ``inputs="state"``."""

    action_dim: int = param(2, "action dimensions", min=1, cli=False)
    inputs: Inputs = param(
        "image", "observed inputs: image, state or image_state", check=one_of(*INPUTS), cli=False
    )
    state_dim: int = param(0, "state vector dimensions (0: no state input)", min=0, cli=False)
    backbone: BackboneConfig = param(factory=BackboneConfig, flatten=True, help="image encoder")
    hidden_dims: tuple[int, ...] = param(
        (256,), "energy MLP hidden widths (reference: one of 256)", min=1
    )

    def __post_init__(self) -> None:
        check_params(self)
        _check_inputs(self)
        if not self.hidden_dims:
            raise ValueError("EBMConfig: the energy MLP needs at least one hidden layer")


@dataclass(frozen=True)
class ExplicitConfig:
    """MSE regression baseline (``models.ExplicitConvMLP``), same backbone and inputs as the
    EBM."""

    action_dim: int = param(2, "action dimensions", min=1, cli=False)
    inputs: Inputs = param(
        "image", "observed inputs: image, state or image_state", check=one_of(*INPUTS), cli=False
    )
    state_dim: int = param(0, "state vector dimensions (0: no state input)", min=0, cli=False)
    backbone: BackboneConfig = param(factory=BackboneConfig, flatten=True, help="image encoder")
    hidden_dims: tuple[int, ...] = param((256,), "MLP hidden widths", min=1)
    dropout: float = param(
        0.0, "dropout after each hidden layer (the reference uses 0.1)", min=0, max=0.95
    )

    def __post_init__(self) -> None:
        check_params(self)
        _check_inputs(self)


@dataclass(frozen=True)
class ChunkConfig:
    """Action chunks: a policy predicts the next ``horizon`` actions of one observation (the model
    scores or regresses an action of ``horizon x A`` dimensions) and an agent executes the first
    ``execute`` of them before it asks again. ``horizon = 1`` is one action per step."""

    horizon: int = param(1, "actions predicted per observation (a chunk; 1: one action)", min=1)
    execute: int | None = param(
        None,
        "actions of each chunk executed before the next prediction (None: horizon // 2, at least 1)",
        min=1,
    )

    def __post_init__(self) -> None:
        check_params(self)
        if self.execute is not None and self.execute > self.horizon:
            raise ValueError(
                f"ChunkConfig: execute ({self.execute}) must not exceed horizon ({self.horizon})"
            )

    @property
    def steps_executed(self) -> int:
        """Actions of a chunk executed before the next prediction."""
        return self.execute if self.execute is not None else max(1, self.horizon // 2)


@dataclass(frozen=True)
class InfoNCEConfig:
    """InfoNCE over uniform counter-examples (``losses.info_nce_loss``); pairs with DFO."""

    kind: ClassVar[str] = "infonce"

    num_counter_examples: int = param(
        128, "uniform counter-examples per example (reference: 64 or 128)", min=1
    )

    def __post_init__(self) -> None:
        check_params(self)


@dataclass(frozen=True)
class LangevinInfoNCEConfig:
    """InfoNCE over counter-examples refined by a Langevin chain, plus the gradient penalty
    ``weight * mean(max(0, ||dE/da||_inf - margin)^2)`` on the expert action and the
    counter-examples (google-research/ibc's Langevin training); pairs with Langevin inference."""

    kind: ClassVar[str] = "langevin"

    num_counter_examples: int = param(
        8, "chain outputs used as counter-examples (reference: 8)", min=1
    )
    chain: LangevinChainConfig = param(
        factory=LangevinChainConfig, flatten=True, help="the chain's dynamics"
    )
    penalty_weight: float = param(1.0, "weight of the gradient penalty (0: off)", min=0)
    penalty_margin: float = param(1.0, "gradient inf-norm allowed without penalty", min=0)

    def __post_init__(self) -> None:
        check_params(self)


@dataclass(frozen=True)
class AutoregressiveInfoNCEConfig:
    """One InfoNCE term per action prefix ``a_1..a_j`` (``objectives.prefix_infonce``); the model
    gets prefix energies; pairs with autoregressive DFO.

    Term ``j``'s counter-examples are uniform prefixes (they teach the energy of the prefix as a
    whole, so prefixes can be compared) and, for ``conditional_fraction`` of them, the expert's
    first ``j - 1`` dimensions with a uniform ``j``-th (hard counter-examples that teach where
    dimension ``j`` lies once the earlier ones are right, which uniform ones rarely probe in many
    dimensions)."""

    kind: ClassVar[str] = "autoregressive"

    num_counter_examples: int = param(128, "counter-examples per example and prefix", min=1)
    conditional_fraction: float = param(
        0.5,
        "fraction of them that keep the expert's first j - 1 dimensions and draw only the j-th",
        min=0,
        max=1,
    )

    def __post_init__(self) -> None:
        check_params(self)


@dataclass(frozen=True)
class PerturbedInfoNCEConfig:
    """InfoNCE over counter-examples near the expert action: the expert's action plus Gaussian
    noise at several scales (clamped to the bounds), and ``uniform_fraction`` of them uniform
    (``objectives.perturbed_infonce``). Hard counter-examples for long (chunked) actions, where
    uniform ones almost never land near the data; pairs with DFO."""

    kind: ClassVar[str] = "perturbed"

    num_counter_examples: int = param(128, "counter-examples per example", min=1)
    scales: tuple[float, ...] = param(
        (0.05, 0.1, 0.2, 0.4),
        "noise stds of the perturbations (normalized units: the box is [-1, 1]), used in turn",
        above=0,
    )
    uniform_fraction: float = param(0.25, "fraction of uniform counter-examples", min=0, max=1)

    def __post_init__(self) -> None:
        check_params(self)
        if not self.scales:
            raise ValueError("PerturbedInfoNCEConfig: scales needs at least one noise std")


@dataclass(frozen=True)
class RankingNCEConfig:
    """Ranking NCE with a learned proposal (Singh, Tu and Sindhwani 2023): a mixture-of-Gaussians
    proposal ``q(a | o)`` (squashed into the box by tanh) is fit to the expert actions by maximum
    likelihood, the counter-examples are its samples, and the logits are ``-E(o, a) - log q(a |
    o)``, which makes ``exp(-E)`` estimate the action density itself rather than its ratio to
    ``q`` (``objectives.ranking_nce``). Pairs with proposal DFO (sample from ``q``, score,
    refine)."""

    kind: ClassVar[str] = "ranking"

    num_counter_examples: int = param(128, "proposal samples per example", min=1)
    components: int = param(8, "mixture components of the proposal", min=1)
    proposal_hidden_dims: tuple[int, ...] = param(
        (256, 256), "hidden widths of the proposal's MLP", min=1
    )
    proposal_weight: float = param(
        1.0, "weight of the proposal's negative log-likelihood in the loss", above=0
    )

    def __post_init__(self) -> None:
        check_params(self)


LossConfig = (
    InfoNCEConfig
    | LangevinInfoNCEConfig
    | AutoregressiveInfoNCEConfig
    | PerturbedInfoNCEConfig
    | RankingNCEConfig
)
"""Any implicit training objective's config; its ``kind`` names it."""


@dataclass(frozen=True)
class OptimConfig:
    """Gradient optimizer and learning-rate schedule (``optim.build_optimizer``/``build_scheduler``).

    ``scheduler="step"`` multiplies the lr by ``gamma`` every ``step_size`` steps (reference:
    100, 0.99); ``"cosine"`` decays it to ``min_lr_ratio * lr`` over the run.
    """

    name: Literal["adam", "adamw", "sgd"] = param(
        "adam", "optimizer", check=one_of("adam", "adamw", "sgd")
    )
    lr: float = param(1e-3, "learning rate", above=0)
    weight_decay: float = param(0.0, "weight decay", min=0)
    betas: tuple[float, ...] = param((0.9, 0.999), "Adam betas", min=0, max=1)
    scheduler: Literal["step", "cosine", "constant"] = param(
        "cosine", "learning-rate schedule", check=one_of("step", "cosine", "constant")
    )
    step_size: int = param(100, "steps between lr decays (step schedule)", min=1)
    gamma: float = param(0.99, "lr factor per decay (step schedule)", above=0, max=1)
    min_lr_ratio: float = param(0.0, "final lr / lr (cosine schedule)", min=0, max=1)
    warmup_steps: int = param(0, "linear warm-up steps", min=0)
    grad_clip_norm: float | None = param(
        None, "clip the gradient norm to this (None: no clipping)", above=0
    )

    def __post_init__(self) -> None:
        check_params(self)


Method = Literal["dfo", "langevin", "autoregressive_dfo", "perturbed", "ranking"]
METHODS: tuple[str, ...] = get_args(Method)
"""Training objective + inference optimizer pairs ``ImplicitPolicyConfig.for_method`` knows."""


@dataclass(frozen=True)
class ImplicitPolicyConfig:
    """Everything an ``ImplicitPolicy`` needs besides its action bounds.

    ``loss`` picks how the energy is trained, ``optimizer`` how actions are inferred; the paper's
    pairs are InfoNCE + DFO (the default), Langevin + Langevin and autoregressive +
    autoregressive DFO (``ImplicitPolicyConfig.for_method``). DFO and Langevin inference work on
    any trained model; autoregressive DFO needs the autoregressive loss's prefix energies.
    """

    model: EBMConfig = param(factory=EBMConfig, help="energy model")
    chunk: ChunkConfig = param(factory=ChunkConfig, help="action chunks")
    loss: LossConfig = param(factory=InfoNCEConfig, help="training objective")
    optimizer: OptimizerConfig = param(factory=DFOConfig, help="inference optimizer")
    optim: OptimConfig = param(factory=OptimConfig, help="gradient optimizer and lr schedule")
    bounds_padding: float = param(0.05, "fraction of the action range added on each side", min=0)
    max_chunk_elements: int | None = param(
        None,
        "hidden activations scored at once at inference (None: 2^18 on a CPU, 2^26 on a GPU)",
        min=1,
    )
    encode_group: int | None = param(
        None,
        "images encoded at once at inference (None: 4 on a CPU, where a larger batch's "
        "activation maps fall out of cache; all on a GPU)",
        min=1,
    )

    def __post_init__(self) -> None:
        check_params(self)
        check_optimizer_fits(self.optimizer, self.loss)

    @property
    def prefix_energies(self) -> bool:
        """Whether the model scores action prefixes (trained by the autoregressive loss)."""
        return isinstance(self.loss, AutoregressiveInfoNCEConfig)

    @property
    def proposal(self) -> RankingNCEConfig | None:
        """The learned proposal's settings, when the model has one (ranking NCE)."""
        return self.loss if isinstance(self.loss, RankingNCEConfig) else None

    def chunk_elements(self, device_type: str) -> int:
        """``max_chunk_elements``, or its default for a device type (``"cpu"``, ``"cuda"``, ...):
        1 MB of activations (cache-sized) on a CPU, 256 MB on a GPU."""
        if self.max_chunk_elements is not None:
            return self.max_chunk_elements
        return 1 << 18 if device_type == "cpu" else 1 << 26

    def encode_group_size(self, device_type: str) -> int | None:
        """``encode_group``, or its default for a device type: 4 on a CPU, all (None) else."""
        if self.encode_group is not None:
            return self.encode_group
        return 4 if device_type == "cpu" else None

    @classmethod
    def for_method(cls, method: Method, **overrides: Any) -> ImplicitPolicyConfig:
        """The training objective and its inference optimizer for ``method``: the paper's three
        (``dfo``: uniform counter-examples, ``langevin``, ``autoregressive_dfo``), ``perturbed``
        (counter-examples near the expert, DFO) and ``ranking`` (a learned proposal with ranking
        NCE, proposal DFO)."""
        pairs: dict[str, tuple[Any, Any]] = {
            "dfo": (InfoNCEConfig(), DFOConfig()),
            "langevin": (LangevinInfoNCEConfig(), LangevinConfig()),
            "autoregressive_dfo": (AutoregressiveInfoNCEConfig(), AutoregressiveDFOConfig()),
            "perturbed": (PerturbedInfoNCEConfig(), DFOConfig()),
            "ranking": (RankingNCEConfig(), ProposalDFOConfig()),
        }
        if method not in pairs:
            raise ValueError(f"unknown method {method!r}; choose one of {', '.join(pairs)}")
        loss, optimizer = pairs[method]
        return cls(**{"loss": loss, "optimizer": optimizer, **overrides})


def check_optimizer_fits(optimizer: Any, loss: Any) -> None:
    """``ValueError`` when ``optimizer`` needs prefix energies or a learned proposal (its class
    says so) and ``loss`` does not train them."""
    entry = OPTIMIZERS.get(getattr(optimizer, "kind", ""))
    if entry is None:
        return
    needs: list[tuple[bool, Any, str]] = [
        (entry[1].needs_prefix_energies, AutoregressiveInfoNCEConfig, "prefix energies"),
        (entry[1].needs_proposal, RankingNCEConfig, "a learned proposal"),
    ]
    for needed, loss_cls, what in needs:
        if needed and not isinstance(loss, loss_cls):
            usable = " or ".join(
                k
                for k, (_, cls) in OPTIMIZERS.items()
                if not cls.needs_prefix_energies and not cls.needs_proposal
            )
            raise ValueError(
                f"optimizer {optimizer.kind!r} needs a model trained with loss {loss_cls.kind!r} "
                f"({what}), this one is trained with loss {loss.kind!r}; choose optimizer {usable}"
            )


@dataclass(frozen=True)
class ExplicitPolicyConfig:
    """Everything an ``ExplicitPolicy`` needs besides its action bounds."""

    model: ExplicitConfig = param(factory=ExplicitConfig, help="regression model")
    chunk: ChunkConfig = param(factory=ChunkConfig, help="action chunks")
    optim: OptimConfig = param(
        factory=lambda: OptimConfig(weight_decay=1e-4), help="gradient optimizer and lr schedule"
    )
    bounds_padding: float = param(0.05, "fraction of the action range added on each side", min=0)

    def __post_init__(self) -> None:
        check_params(self)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A (nested) config dataclass as plain dicts, lists and scalars; a config with a ``kind``
    stores it as the first key."""
    out: dict[str, Any] = {}
    kind = getattr(type(cfg), "kind", None)
    if isinstance(kind, str):
        out["kind"] = kind
    for f in dataclasses.fields(cfg):
        out[f.name] = _plain(getattr(cfg, f.name))
    return out


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return config_to_dict(v)
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def config_from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Rebuild config ``cls`` from ``config_to_dict`` output; unknown keys raise ``ValueError``."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected a dict, got {type(data).__name__}")
    data = dict(data)
    kind = getattr(cls, "kind", None)
    if isinstance(kind, str) and data.pop("kind", kind) != kind:
        raise ValueError(f"{cls.__name__}: holds kind {kind!r}, not the one given")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
    kwargs = {k: _coerce(hints[k], v, k) for k, v in data.items()}
    return cls(**kwargs)


def tagged_members(tp: Any) -> dict[str, type]:
    """The members of a union of configs with a ``kind``, by kind (empty for other types)."""
    if get_origin(tp) not in (Union, types.UnionType):
        return {}
    members = [a for a in get_args(tp) if a is not type(None)]
    kinds = {getattr(a, "kind", None): a for a in members}
    if len(members) < 2 or not all(isinstance(k, str) for k in kinds) or len(kinds) != len(members):
        return {}
    return kinds  # type: ignore[return-value]


def _coerce(tp: Any, v: Any, name: str) -> Any:
    members = tagged_members(tp)
    if members and isinstance(v, dict):
        kind = v.get("kind")
        if kind not in members:
            raise ValueError(f"{name}: unknown kind {kind!r}; choose one of {', '.join(members)}")
        return config_from_dict(members[kind], v)
    if get_origin(tp) in (Union, types.UnionType):
        if v is None:
            return None
        args = [a for a in get_args(tp) if a is not type(None)]
        return _coerce(args[0], v, name) if len(args) == 1 else v
    if dataclasses.is_dataclass(tp):
        return config_from_dict(tp, v)  # type: ignore[arg-type]
    if get_origin(tp) is tuple and isinstance(v, (list, tuple)):
        return tuple(v)
    return v
