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
from ebm_policy.workspace import Workspace

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
    energies: Tensor,
    scheme: str = "stratified",
    generator: torch.Generator | None = None,
    workspace: Workspace | None = None,
) -> Tensor:
    """``energies (B, M) -> indices (B, M)`` drawn with probabilities ``softmax(-E)`` per row.

    ``multinomial``: M independent draws. ``stratified``: the i-th index inverts the cumulative
    probabilities at ``(i + u_i) / M`` with ``u_i ~ U[0, 1)``, so the indices come out sorted and
    each sample is drawn ``M * p_i`` times in expectation, with less spread than multinomial.
    The cumulative sum is taken in float64: in float32, ``i + u_i`` rounds up near ``i = M`` for
    M in the thousands, which would draw zero-weight samples. ``energies`` must pass
    ``check_energies``. With a ``workspace`` the scratch arrays and the returned indices are its
    buffers (valid until the next call with it).
    """
    if scheme == "multinomial":
        probs = torch.softmax(-energies, dim=-1)
        return torch.multinomial(probs, energies.shape[-1], replacement=True, generator=generator)
    if scheme != "stratified":
        raise ValueError(f"unknown resampling scheme {scheme!r}; choose stratified or multinomial")
    ws = workspace if workspace is not None else Workspace()
    b, m = energies.shape
    dev, f64 = energies.device, torch.float64
    weights = ws.get("resample.weights", (b, m), f64, dev)
    weights.copy_(energies)
    torch.sub(weights.amin(dim=-1, keepdim=True), weights, out=weights).exp_()  # max 1; +inf -> 0
    cdf = torch.cumsum(weights, dim=-1, out=ws.get("resample.cdf", (b, m), f64, dev))
    total = cdf[:, -1:]
    u = torch.rand((b, m), generator=generator, device=dev, dtype=f64, out=weights)
    u.add_(torch.arange(m, device=dev, dtype=f64, out=ws.get("resample.arange", (m,), f64, dev)))
    u.mul_(total / m)
    torch.minimum(u, torch.nextafter(total, torch.zeros_like(total)), out=u)  # below the total
    # right=True: the first i with cdf[i] > u, so zero-weight samples are never drawn.
    idx = ws.get("resample.indices", (b, m), torch.int64, dev)
    return torch.searchsorted(cdf, u, right=True, out=idx)


class DerivativeFreeOptimizer:
    """``argmin_a E(a)`` within box bounds by sampling (see the module docstring)."""

    kind: ClassVar[str] = "dfo"
    needs_prefix_energies: ClassVar[bool] = False
    needs_proposal: ClassVar[bool] = False

    def __init__(self, cfg: DFOConfig | None = None) -> None:
        self.cfg = cfg or DFOConfig()
        self.workspace = Workspace()  # scratch populations, reused from call to call

    def initial(
        self,
        energy: ActionEnergy,
        low: Tensor,
        high: Tensor,
        generator: torch.Generator | None,
        out: Tensor,
    ) -> Tensor:
        """The first population, written into ``out (B, M, A)``: uniform within the bounds."""
        return sample_uniform(tuple(out.shape), low, high, generator, out=out)

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
        ws = self.workspace
        b, m, a = energy.batch_size, cfg.num_samples, low.shape[-1]
        dev, dtype = low.device, low.dtype
        # Scratch populations live in the workspace: no large allocation after the first call.
        samples = self.initial(
            energy, low, high, generator, ws.get("dfo.samples", (b, m, a), dtype, dev)
        )
        picked = ws.get("dfo.picked", (b * m, a), dtype, dev)
        noise = ws.get("dfo.noise", (b, m, a), dtype, dev)
        row_offsets = torch.arange(b, device=dev).unsqueeze(1) * m  # (B, 1)
        sigma = cfg.noise_scale * (high - low) / 2
        hist = SearchHistory([], [])
        for _ in range(cfg.iterations):
            energies = energy(samples)
            check_energies(energies, "DFO")
            if return_history:
                hist.record(samples.clone(), energies)
            idx = resample_indices(energies, cfg.resampling, generator, ws)  # (B, M)
            flat = idx.add_(row_offsets)  # indices into the rows of (B * M, A)
            torch.index_select(samples.view(b * m, a), 0, flat.view(-1), out=picked)
            torch.randn((b, m, a), generator=generator, device=dev, dtype=dtype, out=noise)
            noise.mul_(sigma).add_(picked.view(b, m, a))
            torch.clamp(noise, low, high, out=samples)
            sigma = sigma * cfg.noise_shrink
        energies = energy(samples)
        check_energies(energies, "DFO")
        best = lowest(samples, energies)
        if return_history:
            hist.record(samples.clone(), energies)
            return best, hist
        return best
