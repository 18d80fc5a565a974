"""Derivative-free optimizer (DFO): iterated importance resampling towards low energy.

Per iteration: evaluate the energies of M samples, resample M of them (with replacement) with
probabilities ``softmax(-E)`` (multinomial or stratified draws, see ``DFOConfig``), add Gaussian
noise, clamp to the bounds and shrink the noise.
After the last iteration the energies of the final samples are evaluated and the lowest-energy
sample is returned. All randomness comes from the ``torch.Generator`` passed in, drawn for the
whole batch at once, so the result does not depend on how the energy evaluation is chunked.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ebm_policy.config import DFOConfig
from ebm_policy.losses import sample_uniform
from ebm_policy.models import EBMConvMLP

EnergyFn = Callable[[Tensor], Tensor]
"""``samples (B, M, A) -> energies (B, M)``."""


@dataclass
class DFOHistory:
    """Every evaluated population: ``samples[i] (B, M, A)`` and ``energies[i] (B, M)``.

    Entry 0 is the initial uniform population, entry ``iterations`` the final one.
    """

    samples: list[Tensor]
    energies: list[Tensor]


def check_energies(energies: Tensor) -> None:
    """Raise a ``ValueError`` unless ``energies (B, M)`` can be resampled: no NaN, no ``-inf``,
    and at least one finite energy per problem (``+inf`` marks a sample as impossible).

    One reduction: a row's minimum is finite exactly then (``amin`` propagates NaN).
    """
    if not bool(torch.isfinite(energies.amin(dim=-1)).all()):
        raise ValueError(
            "DFO: the energy function returned NaN or -inf, or +inf for every sample of a problem "
            f"(energies of shape {tuple(energies.shape)}); check the model and its inputs"
        )


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
    u = torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)))  # strictly below the total
    # right=True: the first i with cdf[i] > u, so zero-weight samples are never drawn.
    return torch.searchsorted(cdf, u, right=True)


class DerivativeFreeOptimizer:
    """``argmin_a E(a)`` within box bounds by sampling (see the module docstring)."""

    def __init__(self, cfg: DFOConfig | None = None) -> None:
        self.cfg = cfg or DFOConfig()

    def optimize(
        self,
        energy_fn: EnergyFn,
        batch_size: int,
        low: Tensor,
        high: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, DFOHistory]:
        """Minimize ``energy_fn`` for ``batch_size`` independent problems: ``-> best (B, A)``.

        ``low``/``high`` are ``(A,)``; the noise std starts at ``noise_scale * (high - low) / 2``.
        With ``return_history`` also returns a ``DFOHistory`` (tensors detached, on the same device).
        """
        cfg = self.cfg
        m, a = cfg.num_samples, low.shape[-1]
        samples = sample_uniform((batch_size, m, a), low, high, generator)
        sigma = cfg.noise_scale * (high - low) / 2
        hist = DFOHistory([], [])
        rows = torch.arange(batch_size, device=low.device).unsqueeze(1)
        for _ in range(cfg.iterations):
            energies = energy_fn(samples)
            check_energies(energies)
            if return_history:
                hist.samples.append(samples)
                hist.energies.append(energies)
            idx = resample_indices(energies, cfg.resampling, generator)  # (B, M)
            samples = samples[rows, idx]
            noise = torch.randn(samples.shape, generator=generator, device=low.device, dtype=low.dtype)
            samples = torch.clamp(samples + noise * sigma, low, high)
            sigma = sigma * cfg.noise_shrink
        energies = energy_fn(samples)
        check_energies(energies)
        best = samples[rows.squeeze(1), energies.argmin(dim=-1)]
        if return_history:
            hist.samples.append(samples)
            hist.energies.append(energies)
            return best, hist
        return best

    @torch.inference_mode()
    def infer(
        self,
        model: EBMConvMLP,
        images: Tensor,
        low: Tensor,
        high: Tensor,
        *,
        generator: torch.Generator | None = None,
        return_history: bool = False,
    ) -> Tensor | tuple[Tensor, DFOHistory]:
        """``images (B, C, H, W) -> actions (B, A)`` minimizing ``model``'s energy.

        Encodes each image once, then scores the samples with the split-layer energy head in
        chunks of at most ``max_chunk_elements`` hidden activations. Runs under
        ``torch.inference_mode()``.
        """
        features = model.encode(images)
        max_rows = max(1, self.cfg.chunk_elements(images.device.type) // model.cfg.hidden_dims[0])

        def energy_fn(samples: Tensor) -> Tensor:
            return model.energy_chunked(features, samples, max_rows)

        return self.optimize(
            energy_fn, images.shape[0], low, high, generator=generator, return_history=return_history
        )

    @torch.inference_mode()
    def infer_naive(
        self,
        model: EBMConvMLP,
        images: Tensor,
        low: Tensor,
        high: Tensor,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """The reference's way, for comparison: re-encodes the images at every evaluation and
        runs the concatenated MLP on all ``B * M`` rows at once. ``(B, C, H, W) -> (B, A)``."""
        out = self.optimize(
            lambda s: model.forward_naive(images, s), images.shape[0], low, high, generator=generator
        )
        assert isinstance(out, Tensor)
        return out
