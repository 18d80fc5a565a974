"""Derivative-free optimizer (DFO): iterated importance resampling towards low energy.

Per iteration: evaluate the energies of M samples, resample M of them (with replacement) with
probabilities ``softmax(-E)`` (multinomial or stratified draws), add Gaussian noise, clamp to the
bounds and shrink the noise. After the last iteration the energies of the final samples are
evaluated and the lowest-energy sample is returned. All randomness comes from the
``torch.Generator`` passed in, drawn for the whole batch at once, so the result does not depend
on how the energy evaluation is chunked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor

from ebm_policy.losses import sample_uniform
from ebm_policy.optimizers.base import ActionEnergy, SearchHistory, check_energies, lowest
from ebm_policy.params import check_params, one_of, param

Resampling = Literal["stratified", "multinomial"]


@dataclass(frozen=True)
class DFOConfig:
    """Derivative-free optimizer (``DerivativeFreeOptimizer``); the reference's is 16,384 x 3.

    ``resampling`` picks how M indices are drawn with probabilities ``p = softmax(-E)``:
    ``"multinomial"`` draws them independently (the reference); ``"stratified"`` draws one uniform
    in each of the M equal strata of [0, 1) and inverts the cumulative ``p``: every sample still
    gets ``M * p_i`` copies in expectation, with lower variance and a cheaper draw.
    """

    kind: ClassVar[str] = "dfo"

    num_samples: int = param(2048, "samples per problem", min=1)
    iterations: int = param(3, "resample-and-perturb rounds", min=0)
    noise_scale: float = param(0.33, "initial noise std, relative to the bounds' half-width", min=0)
    noise_shrink: float = param(0.5, "noise std factor per iteration", above=0, max=1)
    resampling: Resampling = param(
        "stratified",
        "how indices are drawn from softmax(-E)",
        check=one_of("stratified", "multinomial"),
    )

    def __post_init__(self) -> None:
        check_params(self)


def resample_indices(
    energies: Tensor, scheme: str = "stratified", generator: torch.Generator | None = None
) -> Tensor:
    """``energies (B, M) -> indices (B, M)`` drawn with probabilities ``softmax(-E)`` per row.

    ``multinomial``: M independent draws. ``stratified``: the i-th index inverts the cumulative
    probabilities at ``(i + u_i) / M`` with ``u_i ~ U[0, 1)``, so the indices come out sorted and
    each sample is drawn ``M * p_i`` times in expectation, with less spread than multinomial.
    The cumulative sum is taken in float64: in float32, ``i + u_i`` rounds up near ``i = M`` for
    M in the thousands, which would draw zero-weight samples. ``energies`` must pass
    ``check_energies``.
    """
    if scheme == "multinomial":
        probs = torch.softmax(-energies, dim=-1)
        return torch.multinomial(probs, energies.shape[-1], replacement=True, generator=generator)
    if scheme != "stratified":
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose stratified or multinomial")
    b, m = energies.shape
    e = energies.double()
    weights = torch.exp(e.amin(dim=-1, keepdim=True) - e)  # (B, M), max 1; +inf -> 0
    cdf = torch.cumsum(weights, dim=-1)
    total = cdf[:, -1:]
    u = torch.rand((b, m), generator=generator, device=energies.device, dtype=torch.float64)
    u = (u + torch.arange(m, device=energies.device, dtype=torch.float64)) * (total / m)
    u = torch.minimum(
        u, torch.nextafter(total, torch.zeros_like(total))
    )  # strictly below the total
    # right=True: the first i with cdf[i] > u, so zero-weight samples are never drawn.
    return torch.searchsorted(cdf, u, right=True)


class DerivativeFreeOptimizer:
    """``argmin_a E(a)`` within box bounds by sampling (see the module docstring)."""

    kind: ClassVar[str] = "dfo"
    needs_prefix_energies: ClassVar[bool] = False

    def __init__(self, cfg: DFOConfig | None = None) -> None:
        self.cfg = cfg or DFOConfig()

    def infer(
        self,
        energy: ActionEnergy,
        low: Tensor,
        high: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, SearchHistory]:
        """``-> best (B, A)`` for ``energy.batch_size`` problems; ``low``/``high`` are ``(A,)``.

        The noise std starts at ``noise_scale * (high - low) / 2``. With ``return_history`` also
        returns every evaluated population.
        """
        cfg = self.cfg
        b, m = energy.batch_size, cfg.num_samples
        samples = sample_uniform((b, m, low.shape[-1]), low, high, generator)
        sigma = cfg.noise_scale * (high - low) / 2
        hist = SearchHistory([], [])
        rows = torch.arange(b, device=low.device).unsqueeze(1)
        for _ in range(cfg.iterations):
            energies = energy(samples)
            check_energies(energies, "DFO")
            if return_history:
                hist.record(samples, energies)
            idx = resample_indices(energies, cfg.resampling, generator)  # (B, M)
            samples = samples[rows, idx]
            noise = torch.randn(
                samples.shape, generator=generator, device=low.device, dtype=low.dtype
            )
            samples = torch.clamp(samples + noise * sigma, low, high)
            sigma = sigma * cfg.noise_shrink
        energies = energy(samples)
        check_energies(energies, "DFO")
        best = lowest(samples, energies)
        if return_history:
            hist.record(samples, energies)
            return best, hist
        return best
