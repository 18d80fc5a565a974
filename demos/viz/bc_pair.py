"""A small implicit and explicit BC pair for figures run without ``--ckpt``.

Made through the real pipeline (``ibc-gym collect``, then ``ibc-gym train`` for each policy with
the same backbone, demos and steps), in ``<out>/models/<slug>/{demos.h5, implicit/, explicit/}``
and reused by later runs with the same settings.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from demos.collect import CollectConfig, collect
from demos.train import PolicyConfigs, TrainJobConfig, run_train, tiny_policies
from ebm_policy import TrainConfig, load_checkpoint

POLICIES = ("implicit", "explicit")
TINY_BATCH_SIZE = 4  # the batch of the tiny model (``demos.train.tiny_policies``)


@dataclass(frozen=True)
class PairRecipe:
    """What the pair is trained on: ``demos`` expert episodes (reset seeds ``seed..``) of ``env``
    at ``image_size`` pixels, ``steps`` gradient steps per policy; ``tiny``: a tiny backbone."""

    env: str
    demos: int
    image_size: int
    steps: int
    seed: int
    tiny: bool

    @classmethod
    def default(cls, env: str, seed: int, steps: int | None, quick: bool) -> PairRecipe:
        """100 demos at 64 px and 300 steps; 3 demos at 32 px, 3 steps and a tiny model with ``quick``."""
        if quick:
            return cls(env, 3, 32, 3 if steps is None else steps, seed, True)
        return cls(env, 100, 64, 300 if steps is None else steps, seed, False)

    def folder(self, out: Path) -> Path:
        name = self.env.split("/")[-1].lower()
        tiny = "-tiny" if self.tiny else ""
        return (
            Path(out)
            / "models"
            / f"bc-pair-{name}-{self.demos}demos-{self.image_size}px-{self.steps}steps-seed{self.seed}{tiny}"
        )


def train_pair(
    recipe: PairRecipe, out: Path, *, threads: int = 1, cache: bool = True
) -> tuple[Path, ...]:
    """The pair's last checkpoints ``(implicit, explicit)``, trained here unless ``cache`` and a
    finished pair with this recipe is in ``<out>/models``."""
    folder = recipe.folder(out)
    ckpts = tuple(folder / policy / "ckpt_last.pt" for policy in POLICIES)
    if cache and all(_finished(p, recipe.steps) for p in ckpts):
        return ckpts
    if folder.exists():  # unfinished, or not to be reused: start again
        shutil.rmtree(folder)
    print(f"training an implicit and an explicit policy ({recipe}) -> {folder}")
    data = collect(
        CollectConfig(
            env=recipe.env,
            episodes=recipe.demos,
            out=folder / "demos.h5",
            seed=recipe.seed,
            image_size=recipe.image_size,
            overwrite=True,
            progress=False,
        )
    )
    policies = (
        tiny_policies() if recipe.tiny else PolicyConfigs()
    )  # the library's defaults, as `ibc-gym train`
    train_cfg = TrainConfig(
        steps=recipe.steps,
        batch_size=TINY_BATCH_SIZE if recipe.tiny else TrainConfig().batch_size,
        seed=recipe.seed,
        num_threads=threads,
        ckpt_interval=max(recipe.steps, 1),
        progress=False,
    )
    for policy in POLICIES:
        run_train(
            TrainJobConfig(
                data=data, policy=policy, out=folder / policy, policies=policies, train=train_cfg
            )
        )  # type: ignore[arg-type]
    return ckpts


def _finished(path: Path, steps: int) -> bool:
    return path.is_file() and int(load_checkpoint(path)["step"]) >= steps
