"""Checkpoints: self-describing round trip, atomic writes, clear errors on unusable files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ebm_policy import (
    BackboneConfig,
    CheckpointError,
    CheckpointNotFoundError,
    CNNConfig,
    DFOConfig,
    EBMConfig,
    ExplicitConfig,
    ExplicitPolicy,
    ExplicitPolicyConfig,
    ImplicitPolicy,
    ImplicitPolicyConfig,
    load_checkpoint,
    load_policy,
    save_checkpoint,
)
from ebm_policy.checkpoint import FORMAT_VERSION, checkpoint_dict

CNN = CNNConfig(channels=(4, 4), strides=(2, 1), pools=(1, 1), out_channels=4)
LOW, HIGH = [-0.5, 0.0, 1.0], [0.5, 2.0, 3.0]
METADATA = {"env_id": "ibc/ReachTarget-v0", "image_shape": [16, 16, 3], "dataset": {"episodes": 3}}


pytestmark = pytest.mark.usefixtures("one_thread")


def make(kind: str) -> ImplicitPolicy | ExplicitPolicy:
    if kind == "implicit":
        cfg = ImplicitPolicyConfig(
            model=EBMConfig(action_dim=3, backbone=BackboneConfig(cnn=CNN), hidden_dims=(16,)),
            optimizer=DFOConfig(num_samples=64),
            bounds_padding=0.1,
        )
        return ImplicitPolicy(cfg, LOW, HIGH, seed=1)
    cfg = ExplicitPolicyConfig(
        model=ExplicitConfig(action_dim=3, backbone=BackboneConfig(cnn=CNN), hidden_dims=(16,))
    )
    return ExplicitPolicy(cfg, LOW, HIGH, seed=1)


@pytest.fixture(params=["implicit", "explicit"])
def saved(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[ImplicitPolicy | ExplicitPolicy, Path]:
    policy = make(request.param)
    path = save_checkpoint(tmp_path / "ckpt.pt", policy, step=17, metadata=METADATA)
    return policy, path


def test_round_trip_rebuilds_the_policy_from_the_file_alone(saved) -> None:
    policy, path = saved
    loaded = load_policy(path)
    assert type(loaded) is type(policy) and loaded.config == policy.config
    a, b = policy.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    images = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    policy.eval()
    assert torch.equal(
        policy.select_action(images, generator=torch.Generator().manual_seed(0)),
        loaded.select_action(images, generator=torch.Generator().manual_seed(0)),
    )
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind


def test_checkpoint_is_self_describing(saved) -> None:
    policy, path = saved
    ckpt = load_checkpoint(path)
    assert ckpt["kind"] == policy.kind and ckpt["step"] == 17 and ckpt["metadata"] == METADATA
    assert ckpt["format_version"] == FORMAT_VERSION
    assert ckpt["action_bounds"]["low"] == LOW and ckpt["action_bounds"]["high"] == HIGH
    assert isinstance(ckpt["config"], dict) and ckpt["config"]["model"]["action_dim"] == 3
    assert torch.equal(ckpt["state_dict"]["bounds.high"], torch.tensor(HIGH))


def test_loading_into_another_kind_fails_clearly(saved) -> None:
    policy, path = saved
    other = "explicit" if policy.kind == "implicit" else "implicit"
    with pytest.raises(CheckpointError, match=f"holds an {policy.kind} policy, expected {other}"):
        load_policy(path, kind=other)
    other_cls = ExplicitPolicy if policy.kind == "implicit" else ImplicitPolicy
    with pytest.raises(CheckpointError, match="expected"):
        other_cls.from_checkpoint(path)
    assert type(type(policy).from_checkpoint(path)) is type(policy)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointNotFoundError, match="no such checkpoint"):
        load_policy(tmp_path / "nope.pt")
    with pytest.raises(FileNotFoundError):  # also catchable as the builtin
        load_policy(tmp_path / "nope.pt")


@pytest.mark.parametrize("cut", [0, 100, 0.5, -20])
def test_truncated_file(saved, cut: float) -> None:
    _, path = saved
    data = path.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else cut % len(data)
    path.write_bytes(data[:n])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_policy(path)


def test_garbage_and_foreign_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.pt"
    text.write_text("hello, not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_policy(text)
    bare = tmp_path / "weights.pt"
    torch.save(make("implicit").state_dict(), bare)  # a plain state dict, no format header
    with pytest.raises(CheckpointError, match="not an ibc-gym policy checkpoint"):
        load_policy(bare)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format_version": FORMAT_VERSION + 1}, "format version"),
        ({"kind": "diffusion"}, "unknown policy kind"),
        ({"config": {"model": {"action_dim": 3, "bogus": 1}}}, "cannot rebuild"),
        ({"state_dict": {}}, "cannot rebuild"),
    ],
)
def test_inconsistent_payloads(tmp_path: Path, change: dict, message: str) -> None:
    payload = {**checkpoint_dict(make("implicit")), **change}
    path = tmp_path / "bad.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_policy(path)


def test_payload_without_required_key(tmp_path: Path) -> None:
    payload = checkpoint_dict(make("explicit"))
    del payload["state_dict"]
    torch.save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="lacks"):
        load_checkpoint(tmp_path / "bad.pt")


def test_failed_save_keeps_the_previous_file(saved, monkeypatch: pytest.MonkeyPatch) -> None:
    policy, path = saved
    before = path.read_bytes()

    def broken_save(obj: object, f: str | Path) -> None:
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, policy, step=99)
    assert path.read_bytes() == before
    assert list(path.parent.iterdir()) == [path]


def test_metadata_must_be_json_like(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="JSON"):
        save_checkpoint(tmp_path / "x.pt", make("explicit"), metadata={"arr": np.zeros(2)})
    assert not (tmp_path / "x.pt").exists()


def test_checkpoint_from_before_the_newer_options_still_loads(tmp_path: Path) -> None:
    """Options added later (median centering, conv biases, padding mode, DFO resampling) are
    absent from older checkpoints; those load with the behaviour they were trained with, not
    today's defaults."""
    import dataclasses

    old_cnn = dataclasses.replace(CNN, center_input=False, conv_bias=True, padding_mode="zeros")
    cfg = ImplicitPolicyConfig(
        model=EBMConfig(action_dim=3, backbone=BackboneConfig(cnn=old_cnn), hidden_dims=(16,)),
        optimizer=DFOConfig(resampling="multinomial"),
    )
    policy = ImplicitPolicy(cfg, LOW, HIGH, seed=2)
    payload = checkpoint_dict(policy)
    config = payload["config"]  # the layout before the optimizer seam
    config["model"].update(config["model"].pop("backbone"))
    config["dfo"] = config.pop("optimizer")
    config["infonce"] = config.pop("loss")
    del config["dfo"]["kind"], config["infonce"]["kind"]
    config["dfo"]["max_chunk_elements"] = config.pop("max_chunk_elements")
    for key in ("center_input", "conv_bias", "padding_mode"):
        del config["model"]["cnn"][key]
    del config["dfo"]["resampling"]
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_policy(tmp_path / "old.pt")
    assert loaded.config == cfg
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in policy.state_dict().items())
