"""The flow core: paths, network, training, log-ratio ODEs and scoring on devices. Tensors only, no AnnData."""

from . import ode
from .analytic import GaussianConditionalField
from .base import GaussianBase, MixtureBase
from .calibration import LogitScale, fit_logit_scale
from .network import ConditionalFlowNet
from .ode import ESTIMATORS, Solver, category_log_ratios, evaluate, log_likelihood, log_ratio, sample
from .paths import GaussianPath
from .prediction import RowBlocks, ScoringDevices, score_rows
from .training import TrainingOptions, TrainingRecord


def __getattr__(name: str):
    if name == "SolverOptions":  # the 0.1 name, with its warning
        return ode.SolverOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
