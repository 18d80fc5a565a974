"""Self-describing policy checkpoints, written atomically and loaded with ``weights_only``.

A checkpoint is a ``torch.save``d dict of plain types and tensors::

    format          "ibc-gym-policy"
    format_version  1
    kind            "implicit" | "explicit"
    config          the policy config as plain dicts (every component's config)
    action_bounds   {"low": [...], "high": [...], "padding": float} (also in the weights)
    inputs          optional: {"inputs": "image" | "state" | "image_state", "state_dim": int,
                    "state_mean": [...], "state_std": [...]} (what the model observes; also in
                    the config and the weights; checkpoints without it observe images)
    state_dict      the policy's weights and buffers
    step            training steps done
    metadata        free-form JSON-like dict (env id, image shape, dataset info, ...)
    trainer         optional: optimizer / scheduler / RNG state for exact resumption
    torch_version   the torch that wrote it

``load_policy(path)`` rebuilds the policy from the file alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ebm_policy.config import ImplicitPolicyConfig, config_from_dict, config_to_dict
from ebm_policy.fileio import atomic_path, strict_json
from ebm_policy.policies import POLICY_CLASSES, ExplicitPolicy, ImplicitPolicy, Policy

FORMAT = "ibc-gym-policy"
FORMAT_VERSION = 1
_REQUIRED = ("kind", "config", "action_bounds", "state_dict", "step", "metadata")
# CNN options added after the first checkpoints were written, with the behaviour of those
# checkpoints (a missing key means the option did not exist yet, not "use today's default").
_LEGACY_CNN = {"padding_mode": "zeros", "center_input": False, "conv_bias": True}
_LEGACY_DFO = {"resampling": "multinomial"}
_LEGACY_MODEL = {"inputs": "image", "state_dim": 0}  # before state inputs: images only
# Sections renamed when the optimizer seam came: {"dfo": {...}} -> {"optimizer": {"kind": "dfo"}}.
_RENAMED = {"dfo": "optimizer", "infonce": "loss"}
_KINDS = {"optimizer": "dfo", "loss": "infonce"}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used, with the reason and the path."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint file does not exist."""


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` to a temporary file in the same directory, fsync, then ``os.replace``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return path


def _plain_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    try:  # strict JSON: a non-finite number is stored as None
        return json.loads(strict_json(dict(metadata or {})))
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint metadata must be JSON-serializable: {e}") from e


def checkpoint_dict(
    policy: Policy,
    *,
    step: int = 0,
    metadata: Mapping[str, Any] | None = None,
    trainer_state: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint payload of ``policy`` (see the module docstring)."""
    bounds = policy.bounds
    inputs: dict[str, Any] = {"inputs": policy.inputs, "state_dim": policy.state_dim}
    if policy.state_norm is not None:
        inputs["state_mean"] = policy.state_norm.mean.tolist()
        inputs["state_std"] = policy.state_norm.std.tolist()
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": policy.kind,
        "config": config_to_dict(policy.config),
        "action_bounds": {
            "low": bounds.low.tolist(),
            "high": bounds.high.tolist(),
            "padding": bounds.padding,
        },
        "inputs": inputs,
        "state_dict": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
        "step": int(step),
        "metadata": _plain_metadata(metadata),
        "trainer": dict(trainer_state) if trainer_state is not None else None,
        "torch_version": str(torch.__version__),
    }


def save_checkpoint(
    path: str | os.PathLike[str],
    policy: Policy,
    *,
    step: int = 0,
    metadata: Mapping[str, Any] | None = None,
    trainer_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``policy`` (weights, configs, bounds, step, metadata) atomically to ``path``."""
    payload = checkpoint_dict(policy, step=step, metadata=metadata, trainer_state=trainer_state)
    return atomic_torch_save(payload, path)


def load_checkpoint(
    path: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read and validate a checkpoint file: ``-> payload dict``.

    Raises ``CheckpointNotFoundError`` for a missing file and ``CheckpointError`` for a truncated
    or corrupted file, another kind of file, or an unsupported format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of foreign files
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ...
        raise CheckpointError(_unreadable(path, e)) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not an ibc-gym policy checkpoint (format {FORMAT!r} missing)"
        )
    version = ckpt.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version}, this code reads version {FORMAT_VERSION}"
        )
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {missing}")
    if ckpt["kind"] not in POLICY_CLASSES:
        raise CheckpointError(f"{path}: unknown policy kind {ckpt['kind']!r}")
    ckpt["config"] = upgrade_config(ckpt["config"])
    return ckpt


def _unreadable(path: Path, error: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused ``path``.

    torch's own message advises retrying with ``weights_only=False``, which would run whatever
    code the file carries; that advice is never relayed.
    """
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    if found:
        return (
            f"{path}: not an ibc-gym checkpoint: it asks to load {found[1]}, which no checkpoint "
            f"holds (refused; nothing in it was run)"
        )
    return (
        f"{path}: not an ibc-gym checkpoint, or damaged: not a readable torch checkpoint "
        f"(truncated or corrupted?)"
    )


def upgrade_config(config: Any) -> Any:
    """Rewrite a checkpoint's config in today's layout, filling options newer than it with the
    values that reproduce its behaviour.

    Checkpoints from before the optimizer seam hold ``dfo`` and ``infonce`` sections (now the
    tagged ``optimizer`` and ``loss``), the CNN and soft-argmax directly in ``model`` (now in
    ``model.backbone``) and the inference chunk size in ``dfo``.
    """
    if not isinstance(config, dict):
        return config
    config = dict(config)
    for old, new in _RENAMED.items():
        if old in config and new not in config:
            section = config.pop(old)
            if isinstance(section, dict):
                section = {"kind": _KINDS[new], **section}
            config[new] = section
    optimizer = config.get("optimizer")
    if isinstance(optimizer, dict) and "max_chunk_elements" in optimizer:
        optimizer = dict(optimizer)
        config.setdefault("max_chunk_elements", optimizer.pop("max_chunk_elements"))
        config["optimizer"] = optimizer
    model = config.get("model")
    if (
        isinstance(model, dict)
        and "backbone" not in model
        and ("cnn" in model or "softargmax" in model)
    ):
        model = dict(model)
        model["backbone"] = {k: model.pop(k) for k in ("cnn", "softargmax") if k in model}
        config["model"] = model
    backbone = model.get("backbone") if isinstance(model, dict) else None
    cnn = backbone.get("cnn") if isinstance(backbone, dict) else None
    legacy_dfo = (
        optimizer if isinstance(optimizer, dict) and optimizer.get("kind") == "dfo" else None
    )
    for section, legacy in ((cnn, _LEGACY_CNN), (legacy_dfo, _LEGACY_DFO), (model, _LEGACY_MODEL)):
        if isinstance(section, dict):
            for key, value in legacy.items():
                section.setdefault(key, value)
    return config


def policy_from_checkpoint(
    ckpt: Mapping[str, Any], *, source: str = "checkpoint", optimizer: Any = None
) -> Policy:
    """Rebuild the policy described by a validated payload (weights loaded, in eval mode).

    ``optimizer`` (an inference optimizer config) replaces the checkpoint's for an implicit
    policy; ``CheckpointError`` if the model cannot use it.
    """
    cls = POLICY_CLASSES[ckpt["kind"]]
    try:
        config: Any = config_from_dict(cls.config_class, ckpt["config"])
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(f"{source}: cannot rebuild the {ckpt['kind']} policy: {e}") from e
    if optimizer is not None:
        if not isinstance(config, ImplicitPolicyConfig):
            raise CheckpointError(
                f"{source}: holds an {ckpt['kind']} policy, which has no inference optimizer"
            )
        try:
            config = dataclasses.replace(config, optimizer=optimizer)
        except ValueError as e:
            raise CheckpointError(f"{source}: {e}") from None
    try:
        bounds = ckpt["action_bounds"]
        policy = cls(config, bounds["low"], bounds["high"])  # state statistics: in the weights
        policy.load_state_dict(ckpt["state_dict"])
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"{source}: cannot rebuild the {ckpt['kind']} policy: {e}") from e
    policy.source = source
    policy.eval()
    assert isinstance(policy, (ImplicitPolicy, ExplicitPolicy))
    return policy


def load_policy(
    path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    map_location: str | torch.device = "cpu",
    optimizer: Any = None,
) -> Policy:
    """Rebuild a policy from a checkpoint file alone. ``kind`` ("implicit"/"explicit"), when
    given, must match the checkpoint's kind, else ``CheckpointError``; ``optimizer`` (a config,
    e.g. ``LangevinConfig(num_samples=256)``) replaces an implicit policy's inference optimizer."""
    ckpt = load_checkpoint(path, map_location=map_location)
    if kind is not None and ckpt["kind"] != kind:
        raise CheckpointError(f"{path}: holds an {ckpt['kind']} policy, expected {kind}")
    return policy_from_checkpoint(ckpt, source=str(path), optimizer=optimizer).to(map_location)
