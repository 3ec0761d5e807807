"""The flow core: paths, network, training module and log-ratio ODEs. Tensors only, no AnnData."""

from . import ode
from .analytic import GaussianConditionalField
from .network import ConditionalFlowNet
from .ode import SolverOptions, category_log_ratios, evaluate, log_likelihood, log_ratio, sample
from .paths import GaussianPath
