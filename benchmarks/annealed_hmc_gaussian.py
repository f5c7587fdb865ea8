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


from tfp_massmap import gaussian_prior
from tfp_massmap import lensing
from tfp_massmap import lognormal
from tfp_massmap import posterior
from tfp_massmap import power_spectrum
from tfp_massmap import survey
from tfp_massmap import wiener

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
  """COSMOS-like data and the exact Gaussian posterior.

  Returns:
    dict with shear [N, N, 2], noise_std [N, N, 2], mask [N, N], the
    GaussianPrior (float32), exact mean [N, N] and std [N, N].
  """
  ell, cl = lognormal.cosmos_convergence_cl()
  spectrum = power_spectrum.power_spectrum_grid(
      ell, cl, npix, pixel_scale_arcmin, tf.float64).numpy()
  data = survey.cosmos_like_survey(npix, pixel_scale_arcmin, seed=seed)
  mask = data['mask']
  # Non-uniform noise: a smooth gradient on top of the Poisson counts.
  ramp = np.linspace(0.7, 2.0, npix)[None, :, None]
  noise_std = (data['noise_std'] * ramp).astype(np.float32)
  rng = np.random.default_rng(seed)
  kappa = gaussian_prior.fourier_filter(
      rng.standard_normal((npix, npix)), np.sqrt(spectrum)).numpy()
  shear = lensing.shear_from_convergence(kappa).numpy()
  shear = np.where(mask[..., None] > 0,
                   shear + noise_std * rng.standard_normal(shear.shape), 0.)
  shear = shear.astype(np.float32)
  prior = gaussian_prior.GaussianPrior(tf.constant(spectrum, tf.float32))
  problem = dict(shear=shear, noise_std=noise_std, mask=mask, prior=prior)
  if reference == 'sampled':
    prior64 = gaussian_prior.GaussianPrior(tf.constant(spectrum))
    args = (shear.astype(np.float64), noise_std.astype(np.float64), mask,
            prior64)
    mean, _ = wiener.wiener_filter(*args, tol=1e-8, max_iterations=5000)
    samples, _ = wiener.gaussian_posterior_samples(
        *args, num_samples=reference_samples, seed=(seed, 2), tol=1e-8,
        max_iterations=5000)
    problem.update(mean=mean.numpy(), std=np.std(samples.numpy(), axis=0))
    return problem
  eye = np.eye(npix * npix).reshape(-1, npix, npix)
  a = lensing.shear_from_convergence(eye).numpy().reshape(npix * npix, -1).T
  s = gaussian_prior.fourier_filter(eye, spectrum).numpy().reshape(
      npix * npix, -1)
  observed = np.broadcast_to(mask[..., None] > 0, shear.shape).ravel()
  a_obs = a[observed]
  s_at = s @ a_obs.T
  noise_var = noise_std.astype(np.float64).ravel()[observed]**2
  gram = a_obs @ s_at + np.diag(noise_var)
  mean = s_at @ np.linalg.solve(gram, shear.ravel()[observed])
  cov = s - s_at @ np.linalg.solve(gram, s_at.T)
  problem.update(
      mean=mean.reshape(npix, npix),
      std=np.sqrt(np.clip(np.diag(cov), 0, None)).reshape(npix, npix))
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
        problem['shear'], problem['noise_std'], problem['mask'],
        problem['prior'], num_samples=FLAGS.chains, sigma_max=float(smax),
        sigma_min=float(smin), num_levels=int(levels),
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
