r"""Posterior samples on this machine's device against the exact Gaussian posterior.

The check that a device's samples are right, not only fast: the 64² COSMOS-like
problem of `testing.gaussian_problem` (seed 0, 3.2 arcmin pixels), its exact
posterior mean and per-pixel std by dense solve
(`testing.exact_gaussian_posterior`), and `sample_posterior` under the same
`GaussianPrior` (512 chains, 12 geometric levels from 0.05 to 1e-3, 5
leapfrog steps, step σ: 62 score evaluations per sample), with XLA on and off
when a GPU is visible (off only on a CPU). For each it prints the RMS over
pixels of (sample mean − exact mean) / exact std (the Monte Carlo floor is
1/√chains), the mean sample std over the mean exact std, and the fraction of
pixels whose truth lies within one std of the mean (exact and sampled).
`benchmarks/annealed_hmc_gaussian.py` explores the schedule on the same
problem; this is its one fixed configuration, run per device.

Usage (on the CPU of a GPU machine: ``CUDA_VISIBLE_DEVICES=`` before it):

  python benchmarks/gpu_samples_check.py
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import posterior
from tfp_massmap import testing
from tfp_massmap.mcmc import GeometricSchedule

_CHAINS = flags.DEFINE_integer('chains', 512, 'Chains (= samples) per run.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  data, truth, prior = testing.gaussian_problem(64, 3.2, seed=0)
  began = time.perf_counter()
  mean, covariance = testing.exact_gaussian_posterior(data, prior)
  std = np.sqrt(np.diag(covariance)).reshape(mean.shape)
  print(f'exact posterior {time.perf_counter() - began:.1f} s', flush=True)
  gpu = bool(tf.config.list_physical_devices('GPU'))
  chains = _CHAINS.value
  for jit_compile in ((True, False) if gpu else (False,)):
    result = posterior.sample_posterior(
        data, prior, num_samples=chains,
        schedule=GeometricSchedule(0.05, 1e-3, 12), num_leapfrog_steps=5,
        step_size_factor=1., seed=(0, 1), jit_compile=jit_compile,
        progress=False)
    samples = result.samples.numpy().astype(np.float64)
    sample_mean, sample_std = samples.mean(0), samples.std(0, ddof=1)
    z = (sample_mean - mean) / std
    print(f'{"GPU" if gpu else "CPU"} xla={jit_compile}: {chains} chains, '
          f'{result.diagnostics["wall_time_s"]:.2f} s; RMS (mean - exact)/'
          f'exact std {np.sqrt(np.mean(z**2)):.4f} (1/sqrt(chains) '
          f'{chains**-0.5:.4f}); mean std / exact std '
          f'{np.mean(sample_std) / np.mean(std):.4f}; pixel 68% coverage of '
          f'truth by exact {np.mean(np.abs(truth - mean) < std):.3f}, by '
          f'samples {np.mean(np.abs(truth - sample_mean) < sample_std):.3f}',
          flush=True)


if __name__ == '__main__':
  app.run(main)
