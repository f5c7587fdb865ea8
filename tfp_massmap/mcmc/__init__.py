"""One inference layer: kernels, schedules, driver and the one result type.

Annealed MCMC kernels, noise schedules, the chunked driver and the result
type of every posterior sampler:

* `annealed_hmc`: `AnnealedHamiltonianMonteCarlo`, HMC on a target known
  through its score while a schedule lowers the noise level.
* `schedules`: the noise schedules σ(step).
* `driver`: `tfp.mcmc.sample_chain` in compiled chunks (XLA-safe, traced
  once per shape), the one `default_jit_compile`.
* `results`: `PosteriorSamples`, `ChainTrace` and `credible_interval`,
  shared by `sample_posterior`, `lognormal_posterior` and the pipeline.
"""

from tfp_massmap.mcmc.annealed_hmc import AnnealedHamiltonianMonteCarlo
from tfp_massmap.mcmc.annealed_hmc import AnnealedHamiltonianMonteCarloKernelResults
from tfp_massmap.mcmc.annealed_hmc import MAX_STABLE_STEP_SIZE_FACTOR
from tfp_massmap.mcmc.results import ChainTrace
from tfp_massmap.mcmc.results import PosteriorSamples
from tfp_massmap.mcmc.results import credible_interval
from tfp_massmap.mcmc.schedules import ConstantSchedule
from tfp_massmap.mcmc.schedules import GeometricSchedule
from tfp_massmap.mcmc.schedules import HeldSchedule
from tfp_massmap.mcmc.schedules import NoiseSchedule

__all__ = [
    'AnnealedHamiltonianMonteCarlo',
    'AnnealedHamiltonianMonteCarloKernelResults',
    'ChainTrace',
    'ConstantSchedule',
    'GeometricSchedule',
    'HeldSchedule',
    'MAX_STABLE_STEP_SIZE_FACTOR',
    'NoiseSchedule',
    'PosteriorSamples',
    'credible_interval',
]
