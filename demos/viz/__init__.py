"""Figures of the IBC building blocks (``ibc-gym viz NAME``), one module per figure.

Shared pieces: ``plotting`` (pyplot-free figures, atomic PNGs, image/action frames), ``base``
(common options), ``sources`` (a checkpoint or a small policy trained on the fly, and the
observations), ``toy1d`` (the 1-D MLP EBM tasks). ``COMMANDS`` is defined in ``demos.viz_cli``.
"""

from demos.viz_cli import COMMANDS, FIGURES

__all__ = ["COMMANDS", "FIGURES"]
