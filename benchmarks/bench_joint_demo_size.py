r"""The joint posterior of σ8 at the demo's size, against its exact answer.

The SBC of ``bench_joint_posterior.py`` runs on 32² maps. This check asks
whether the joint sampler holds at the demo's size and noise: a held-out
demo map (128² pixels of 0.8 arcmin, `demo.demo_problem`) under the
Gaussian amplitude prior (`AmplitudeGaussianPrior`: the shipped spectrum
scaled by (σ8 / σ8_fid)², σ8 uniform on [0.6, 1.0]).

With ``--mask=full`` the map is observed everywhere with white noise of the
COSMOS-like footprint's mean per-pixel std, so the exact marginal posterior
p(σ8 | γ) is one-dimensional and diagonal in Fourier space: the E-mode
Kaiser-Squires map's orthonormal DFT coefficients are independent with
variance A(σ8) S_k + σ_n² (the likelihood's periodic shear operator is
unitary on the E and B modes), evaluated on a grid of σ8. With
``--mask=cosmos`` the footprint and per-pixel noise of the demo are kept
(no exact answer; the Gaussian model's σ8 of the true map is printed as a
reference). Also printed: the σ8 that maximises the Gaussian likelihood of
the true map itself.

Example:
  python benchmarks/bench_joint_demo_size.py --mask=full --num_samples=40
"""

import json

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import demo
from tfp_massmap import joint_posterior
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap import theta_posterior
from tfp_massmap import wiener
from tfp_massmap.mcmc import GeometricSchedule

flags.DEFINE_enum('mask', 'full', ['full', 'cosmos'],
                  'full: observed everywhere, white noise (exact answer); '
                  'cosmos: the demo footprint and per-pixel noise.')
flags.DEFINE_enum('theta_update', 'marginal', list(joint_posterior.THETA_UPDATES),
                  'marginal: θ from its field-level marginal p(θ | γ), then '
                  'κ given θ (Gibbs sweeps over imputed white-noise data on '
                  'the footprint); annealed: θ inside the annealed HMC.')
flags.DEFINE_enum('theta_method', 'grid', list(theta_posterior.THETA_METHODS),
                  'The marginal route\'s θ draws: grid (quadrature, the '
                  'default) or hmc (the runs recorded before Dec 3 2026).')
flags.DEFINE_integer('num_sweeps', joint_posterior.DEFAULT_NUM_SWEEPS,
                     'Gibbs sweeps of the marginal route on masked or '
                     'non-white data.')
flags.DEFINE_integer('num_levels', posterior.DEFAULT_NUM_LEVELS,
                     'Geometric noise levels of the annealing, σ 0.1 → 1e-3 '
                     '(the default schedule has 30).')
flags.DEFINE_integer('sweep_num_levels', joint_posterior.DEFAULT_SWEEP_NUM_LEVELS,
                     'Geometric noise levels of the κ runs inside the Gibbs '
                     'sweeps (masked data), σ 0.1 → 1e-3.')
flags.DEFINE_bool('exact_kappa_gibbs', False,
                  'Also run the marginal route\'s Gibbs sweeps with exact κ '
                  'samples (perturb-and-solve Wiener samples at each chain\'s '
                  'σ8, wiener.gaussian_posterior_samples) in place of the '
                  'annealed κ runs: the controlled arm that isolates the κ '
                  "sampler's share of the masked-data σ8.")
flags.DEFINE_integer('map_index', 0, 'Held-out demo map.')
flags.DEFINE_integer('num_samples', 40, 'Joint posterior samples (chains).')
flags.DEFINE_integer('num_final_steps', None,
                     'Transitions at σ_min after the annealing (default: the '
                     "sampler's, 100 annealed, 0 marginal).")
flags.DEFINE_float('theta_step_size_factor',
                   joint_posterior.DEFAULT_THETA_STEP_SIZE_FACTOR,
                   "u's leapfrog step / σ (dimensionless).")
flags.DEFINE_float('theta_step_size', joint_posterior.DEFAULT_THETA_STEP_SIZE,
                   "Floor of u's leapfrog step (dimensionless).")
flags.DEFINE_string('output', None, 'Optional JSON file for the numbers.')

FLAGS = flags.FLAGS
_SIGMA8_BOUNDS = (0.6, 1.0)


def _grid_moments(log_density, grid):
  weights = np.exp(log_density - log_density.max())
  weights /= weights.sum()
  mean = float(np.sum(weights * grid))
  return mean, float(np.sqrt(np.sum(weights * (grid - mean)**2)))


def _sigma8_log_density(kappa, spectrum, noise_var):
  """(σ8 grid, log p(σ8 | κ-like map)) of the Fourier-diagonal Gaussian model.

  The map's orthonormal DFT modes are independent with variance
  A(σ8) S_k + noise_var, the prior uniform in σ8.
  """
  n = spectrum.shape[0]
  power = np.abs(np.fft.fft2(np.asarray(kappa)) / n)**2
  support = spectrum > 0
  grid = np.linspace(*_SIGMA8_BOUNDS, 801)
  amplitude = (grid / cosmology.FIDUCIAL_SIGMA8)**2
  variance = [a * spectrum[support] + noise_var for a in amplitude]
  return grid, np.array([-0.5 * np.sum(power[support] / v + np.log(v))
                         for v in variance])


def _exact_posterior(shear, noise_var, spectrum):
  """Mean and std of p(σ8 | γ) on a grid (full mask, white noise)."""
  kappa_e, _ = lensing.kaiser_squires(shear)
  grid, log_density = _sigma8_log_density(kappa_e, spectrum, noise_var)
  return _grid_moments(log_density, grid)


def _whitened_variance(shear, kappa, sigma8, spectrum, noise_var):
  """Mean square of (κ − E[κ | γ, σ8]) / sd[κ | γ, σ8] over modes and samples.

  Per sample at its own σ8, in the orthonormal DFT basis (full mask, white
  noise: the conditional posterior is diagonal there); 1 for exact samples.
  The mean mode (no variance) is left out.
  """
  kappa_e, _ = lensing.kaiser_squires(shear)
  n = spectrum.shape[0]
  data_modes = np.fft.fft2(np.asarray(kappa_e)) / n
  support = spectrum > 0
  squares = []
  for k, s8 in zip(np.asarray(kappa, np.float64), sigma8):
    signal = (s8 / cosmology.FIDUCIAL_SIGMA8)**2 * spectrum[support]
    mean = signal / (signal + noise_var) * data_modes[support]
    variance = signal * noise_var / (signal + noise_var)
    residual = (np.fft.fft2(k) / n)[support] - mean
    squares.append(np.abs(residual)**2 / variance)
  return float(np.mean(squares))


def _exact_kappa_gibbs(data, joint, num_samples, num_sweeps, seed):
  """The marginal route's Gibbs sweeps with exact κ | γ, σ8 samples.

  The loop of `JointPosteriorSampler` (θ uniform, then per sweep κ, y,
  θ | y) with `wiener.gaussian_posterior_samples` of every chain's
  `AmplitudeGaussianPrior.given(σ8)` for κ. Returns σ8 ``[S]`` and the
  mean σ8 after each sweep.
  """
  noise_level, _ = theta_posterior.augmentation_noise_level(data)
  bijector = theta_posterior.theta_bijector(joint.theta_bounds, tf.float32)
  seeds = tf.random.experimental.stateless_split(seed, 3 * num_sweeps + 1)
  u = tf.random.stateless_normal([num_samples, 1], seeds[-1])
  means = []
  for sweep in range(num_sweeps):
    sigma8 = bijector.forward(u).numpy()[:, 0]
    kappa = np.stack([
        wiener.gaussian_posterior_samples(
            data, prior=joint.given([s8]), num_samples=1,
            seed=tf.random.experimental.stateless_fold_in(
                seeds[3 * sweep], i)).samples.numpy()[0]
        for i, s8 in enumerate(sigma8)])
    imputed = theta_posterior.impute_white_shear(
        data, tf.constant(kappa, tf.float32), noise_level,
        seeds[3 * sweep + 1])
    u, _ = theta_posterior.sample_u(
        imputed, noise_level, joint, num_samples=num_samples,
        seed=seeds[3 * sweep + 2], start=None if sweep == 0 else u)
    means.append(float(np.mean(bijector.forward(u).numpy())))
  return bijector.forward(u).numpy()[:, 0], means


def _truth_sigma8(truth, spectrum):
  """The σ8 maximising the Gaussian model's likelihood of the true map."""
  grid, log_density = _sigma8_log_density(truth, spectrum, 0.)
  return float(grid[np.argmax(log_density)])


def main(argv):
  del argv
  data, truth = demo.demo_problem(index=FLAGS.map_index)
  n = int(data.shear.shape[0])
  ell, cl = cosmology.cosmos_convergence_cl()
  fiducial = priors.GaussianPrior.from_power_spectrum(
      ell, cl, n, data.pixel_scale_arcmin)
  joint = priors.AmplitudeGaussianPrior(
      fiducial, _SIGMA8_BOUNDS, sigma8_fiducial=cosmology.FIDUCIAL_SIGMA8)
  spectrum = priors.GaussianPrior.from_power_spectrum(
      ell, cl, n, data.pixel_scale_arcmin, dtype=tf.float64).spectrum.numpy()
  record = {'mask': FLAGS.mask, 'map_index': FLAGS.map_index,
            'truth_sigma8_gaussian_model': _truth_sigma8(truth, spectrum),
            'fiducial_sigma8': cosmology.FIDUCIAL_SIGMA8}
  if FLAGS.mask == 'full':
    mask = np.asarray(data.mask)
    noise_std = float(np.sqrt(np.mean(
        np.asarray(data.noise_std)[mask > 0]**2)))
    std = np.full([n, n, 2], noise_std)
    shear = likelihood.ShearLikelihood(
        truth.astype(np.float64), std, np.ones([n, n])).sample(
            seed=(FLAGS.map_index, 0)).numpy()
    data = data._replace(shear=shear.astype(np.float32),
                         noise_std=std.astype(np.float32),
                         mask=np.ones([n, n], np.float32))
    record['noise_std'] = noise_std
    record['exact_mean'], record['exact_std'] = _exact_posterior(
        shear, noise_std**2, spectrum)
  result = joint_posterior.sample_joint_posterior(
      data, joint, num_samples=FLAGS.num_samples, seed=(1, 2),
      theta_update=FLAGS.theta_update, theta_method=FLAGS.theta_method,
      num_sweeps=FLAGS.num_sweeps,
      schedule=GeometricSchedule(posterior.DEFAULT_SIGMA_MAX,
                                 posterior.DEFAULT_SIGMA_MIN,
                                 num_levels=FLAGS.num_levels),
      sweep_schedule=GeometricSchedule(posterior.DEFAULT_SIGMA_MAX,
                                       posterior.DEFAULT_SIGMA_MIN,
                                       num_levels=FLAGS.sweep_num_levels),
      num_final_steps=FLAGS.num_final_steps,
      theta_step_size_factor=FLAGS.theta_step_size_factor,
      theta_step_size=FLAGS.theta_step_size, progress=True)
  kept = result.drop_diverged() if result.diagnostics[
      'num_diverged_chains'] else result
  sigma8 = np.asarray(kept.parameters['sigma8'])
  record.update(
      theta_update=FLAGS.theta_update, theta_method=FLAGS.theta_method,
      num_levels=FLAGS.num_levels,
      sweep_num_levels=FLAGS.sweep_num_levels,
      num_final_steps=result.diagnostics['num_final_steps'],
      theta_posterior=result.diagnostics.get('theta_posterior'),
      score_evaluations_per_sample=result.diagnostics[
          'score_evaluations_per_sample'],
      theta_step_size_factor=FLAGS.theta_step_size_factor,
      theta_step_size=FLAGS.theta_step_size,
      num_diverged_chains=int(result.diagnostics['num_diverged_chains']),
      sampler_mean=float(sigma8.mean()), sampler_std=float(sigma8.std()),
      seconds=float(result.diagnostics['wall_time_s']))
  if FLAGS.exact_kappa_gibbs:
    exact_sigma8, means = _exact_kappa_gibbs(
        data, joint, FLAGS.num_samples, FLAGS.num_sweeps,
        tf.constant([1, 3], tf.int32))
    record.update(exact_kappa_gibbs_mean=float(exact_sigma8.mean()),
                  exact_kappa_gibbs_std=float(exact_sigma8.std()),
                  exact_kappa_gibbs_sweep_means=means)
  if FLAGS.mask == 'full':
    record['kappa_whitened_variance'] = _whitened_variance(
        shear, kept.samples, sigma8, spectrum, noise_std**2)
  print(json.dumps(record, indent=1))
  if FLAGS.output:
    with open(FLAGS.output, 'w', encoding='utf-8') as f:
      json.dump(record, f, indent=1)


if __name__ == '__main__':
  app.run(main)
