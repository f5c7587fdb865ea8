"""Annealed MCMC for score-based priors: kernels and noise schedules."""

from tfp_massmap.mcmc.annealed_hmc import AnnealedHamiltonianMonteCarlo
from tfp_massmap.mcmc.annealed_hmc import AnnealedHamiltonianMonteCarloKernelResults
from tfp_massmap.mcmc.annealed_hmc import MAX_STABLE_STEP_SIZE_FACTOR
from tfp_massmap.mcmc.schedules import ConstantSchedule
from tfp_massmap.mcmc.schedules import GeometricSchedule
from tfp_massmap.mcmc.schedules import NoiseSchedule

__all__ = [
    'AnnealedHamiltonianMonteCarlo',
    'AnnealedHamiltonianMonteCarloKernelResults',
    'ConstantSchedule',
    'GeometricSchedule',
    'MAX_STABLE_STEP_SIZE_FACTOR',
    'NoiseSchedule',
]
