"""The ``ibc-gym viz NAME`` sub-commands: one figure each, written to ``<out>/NAME.png``.

``demos.cli`` picks these up through ``demos.viz.COMMANDS`` (a dict of sub-sub-commands).
"""

from __future__ import annotations

from demos.viz.coord_pipeline import CoordRegFigConfig, run_coord_regression_fig
from demos.viz.dfo import DfoFigConfig, run_dfo
from demos.viz.ebm_1d_train import Ebm1DTrainConfig, run_ebm_1d_train
from demos.viz.energy_1d import Energy1DConfig, run_energy_1d
from demos.viz.energy_2d import Energy2DConfig, run_energy_2d
from demos.viz.free_energy import FreeEnergyConfig, run_free_energy
from demos.viz.fusion import FusionConfig, run_fusion
from demos.viz.infonce import InfoNCEFigConfig, run_infonce
from demos.viz.softargmax import SoftArgmaxFigConfig, run_softargmax
from demos.viz.trajectories import TrajectoriesConfig, run_trajectories

FIGURES = {
    "energy-1d": (
        "Task 1: E(x, y) against y for fixed 1-D inputs (two-mode toy task).",
        Energy1DConfig,
        run_energy_1d,
    ),
    "energy-2d": (
        "Task 2: energy over the 2-D action space for one observation.",
        Energy2DConfig,
        run_energy_2d,
    ),
    "softargmax": (
        "Task 3: soft-argmax weights per channel and keypoints on the image.",
        SoftArgmaxFigConfig,
        run_softargmax,
    ),
    "infonce": (
        "Task 4: positive vs counter-example energies during training.",
        InfoNCEFigConfig,
        run_infonce,
    ),
    "dfo": (
        "Task 5: the inference optimizer's populations (DFO, Langevin, autoregressive DFO) over the energy contours.",
        DfoFigConfig,
        run_dfo,
    ),
    "fusion": (
        "Task 6: energy over the action with the image features held fixed.",
        FusionConfig,
        run_fusion,
    ),
    "ebm-1d-train": (
        "Task 7: an MLP EBM's 1-D energy landscape over training epochs.",
        Ebm1DTrainConfig,
        run_ebm_1d_train,
    ),
    "coord-regression": (
        "Task 8: coordinate regression, implicit vs explicit, end to end.",
        CoordRegFigConfig,
        run_coord_regression_fig,
    ),
    "free-energy": (
        "Ellipse lecture: E(y, z) per sample and the zero-temperature free energy.",
        FreeEnergyConfig,
        run_free_energy,
    ),
    "trajectories": (
        "Evaluation episodes of trained policies over their scenes, one block per checkpoint.",
        TrajectoriesConfig,
        run_trajectories,
    ),
}

COMMANDS = [
    (
        "viz",
        "Figures of energy landscapes, soft-argmax, InfoNCE, inference optimizers and free energy.",
        FIGURES,
        None,
    )
]
