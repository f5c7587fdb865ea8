r"""Annealed HMC against the exact Gaussian posterior: accuracy versus cost.

On a COSMOS-like problem (procedural mask and noise, ΛCDM Gaussian prior)
the exact posterior mean and per-pixel standard deviation are computed by a
dense direct solve (``--reference=dense``, maps up to about 48²) or by the
Wiener filter and exact perturb-and-solve samples (``--reference=sampled``,
any size), and `sample_posterior` with the analytic Gaussian prior score is
run for several annealing configurations. For each it prints the score
evaluations per sample (NFE), the RMS of the mean error in units of the
exact posterior std (the Monte Carlo floor is 1/√chains), the ratio of the
mean sampled variance to the exact one (as a std ratio), both over all
pixels and inside the mask, and the wall time.

Usage:

  python benchmarks/annealed_hmc_gaussian.py --npix=32 --chains=512
  python benchmarks/annealed_hmc_gaussian.py --npix=360 \
      --pixel_scale_arcmin=0.29 --reference=sampled --chains=1024
"""

import itertools
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap import testing
from tfp_massmap import wiener
from tfp_massmap.mcmc import GeometricSchedule

FLAGS = flags.FLAGS
flags.DEFINE_integer('npix', 32, 'Map side in pixels.')
flags.DEFINE_float('pixel_scale_arcmin', 3.2, 'Pixel side in arcmin.')
flags.DEFINE_integer('chains', 512, 'Chains (= samples) per configuration.')
flags.DEFINE_list('num_levels', ['25', '50', '100', '200'],
                  'Geometric noise levels to try.')
flags.DEFINE_list('leapfrog', ['1', '2', '3'], 'Leapfrog steps to try.')
flags.DEFINE_list('factor', ['0.5', '0.7', '1.0'], 'Step size factors to try.')
flags.DEFINE_list('sigma_max', ['0.1'], 'First noise levels to try.')
flags.DEFINE_list('sigma_min', ['1e-3'], 'Last noise levels to try.')
flags.DEFINE_enum('method', 'hmc', ['hmc', 'mala', 'ula'], 'Sampler.')
flags.DEFINE_bool('correction', False, 'Metropolis correction (hmc only).')
flags.DEFINE_enum('reference', 'dense', ['dense', 'sampled'],
                  'Exact posterior by dense solve or by exact samples.')
flags.DEFINE_integer('reference_samples', 1024,
                     'Exact perturb-and-solve samples for --reference=sampled.')
flags.DEFINE_bool('jit_compile', False, 'Compile the sampler with XLA.')
flags.DEFINE_integer('seed', 0, 'Seed of the problem and of the sampler.')


def gaussian_problem(npix, pixel_scale_arcmin, seed, reference='dense',
                     reference_samples=1024):
  """COSMOS-like data (`testing.gaussian_problem`) and the exact posterior.

  Returns:
    dict with the ShearMap ``data`` (float32), its ``mask``, the
    GaussianPrior ``prior`` (float32), the exact ``mean`` [N, N] and
    ``std`` [N, N]: by dense solve (`testing.exact_gaussian_posterior`), or
    the Wiener filter and the std of exact perturb-and-solve samples.
  """
  data, _, prior = testing.gaussian_problem(npix, pixel_scale_arcmin, seed)
  problem = dict(data=data, mask=data.mask, prior=prior)
  prior64 = priors.GaussianPrior(tf.cast(prior.spectrum, tf.float64),
                                 pixel_scale_arcmin=pixel_scale_arcmin)
  if reference == 'sampled':
    mean, _ = wiener.wiener_filter(data, prior=prior64, tol=1e-8,
                                   max_iterations=5000)
    exact = wiener.gaussian_posterior_samples(
        data, prior=prior64, num_samples=reference_samples, seed=(seed, 2),
        tol=1e-8, max_iterations=5000)
    problem.update(mean=mean.numpy(), std=exact.std.numpy())
    return problem
  mean, covariance = testing.exact_gaussian_posterior(data, prior64)
  problem.update(mean=mean, std=np.sqrt(np.clip(np.diag(covariance), 0, None)
                                        ).reshape(npix, npix))
  return problem


def accuracy(result, problem, where=None):
  """(RMS mean error / RMS exact std, std ratio) over the selected pixels."""
  where = np.ones(problem['mask'].shape, bool) if where is None else where
  exact_var = problem['std'][where]**2
  err = result.mean.numpy()[where] - problem['mean'][where]
  mean_error = np.sqrt(np.mean(err**2) / np.mean(exact_var))
  std_ratio = np.sqrt(np.mean(result.std.numpy()[where]**2) /
                      np.mean(exact_var))
  return mean_error, std_ratio


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  began = time.perf_counter()
  problem = gaussian_problem(FLAGS.npix, FLAGS.pixel_scale_arcmin, FLAGS.seed,
                             FLAGS.reference, FLAGS.reference_samples)
  inside = problem['mask'] > 0
  device = 'GPU' if tf.config.list_physical_devices('GPU') else 'CPU'
  print(f'npix={FLAGS.npix} pixel={FLAGS.pixel_scale_arcmin} arcmin, '
        f'chains={FLAGS.chains}, Monte Carlo floor of the mean error '
        f'{1 / np.sqrt(FLAGS.chains):.3f}; exact posterior std: '
        f'{problem["std"].min():.4f}..{problem["std"].max():.4f} '
        f'({FLAGS.reference} reference, {time.perf_counter() - began:.1f} s); '
        f'{device}, jit_compile={FLAGS.jit_compile}, '
        f'method={FLAGS.method}, correction={FLAGS.correction}')
  print('sigma_max sigma_min levels leapfrog factor |   NFE  mean_err '
        'std_ratio | in mask: mean_err std_ratio |  accept  wall_s')
  for smax, smin, levels, leapfrog, factor in itertools.product(
      FLAGS.sigma_max, FLAGS.sigma_min, FLAGS.num_levels, FLAGS.leapfrog,
      FLAGS.factor):
    began = time.perf_counter()
    result = posterior.sample_posterior(
        problem['data'], problem['prior'], num_samples=FLAGS.chains,
        schedule=GeometricSchedule(float(smax), float(smin), int(levels)),
        num_leapfrog_steps=int(leapfrog), step_size_factor=float(factor),
        method=FLAGS.method, seed=(FLAGS.seed, 1),
        metropolis_correction=(FLAGS.correction if FLAGS.method == 'hmc'
                               else None),
        jit_compile=FLAGS.jit_compile, progress=False)
    wall = time.perf_counter() - began
    mean_error, std_ratio = accuracy(result, problem)
    mask_error, mask_ratio = accuracy(result, problem, inside)
    d = result.diagnostics
    print(f'{smax:>9} {smin:>9} {levels:>6} {leapfrog:>8} {factor:>6} | '
          f'{d["score_evaluations_per_sample"]:5d}  {mean_error:7.3f}  '
          f'{std_ratio:8.3f} |          {mask_error:7.3f}  {mask_ratio:8.3f} | '
          f'{d["acceptance_rate"]:6.3f}  {wall:6.1f}', flush=True)


if __name__ == '__main__':
  app.run(main)
