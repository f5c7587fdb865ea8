"""Tests of the exact (κ, θ) posterior of the cosmo lognormal fields."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import lognormal_cosmology
from tfp_massmap import power_spectrum_likelihood
from tfp_massmap import shear_map
from tfp_massmap import testing


@pytest.mark.parametrize('n, pixel_scale', [(32, 3.2), (128, 0.8)])
def test_field_reproduces_the_cosmo_maps_of_the_dataset(n, pixel_scale):
  # The same seeds give the dataset's maps: θ, spectrum, shift and white
  # noise all enter as in lognormal.cosmo_maps (stored as float32).
  seeds = [3, 1_000_000, 1_000_007]
  maps = lognormal.cosmo_maps(seeds, n, pixel_scale)
  theta = np.stack([maps['omega_m'], maps['sigma8']], -1)
  field = lognormal_cosmology.CosmoLognormalField(n, pixel_scale)
  kappa = field.convergence_from_white(lognormal.white_from_seeds(seeds, n),
                                       theta).numpy()
  scale = np.abs(maps['kappa']).max()
  np.testing.assert_allclose(kappa, maps['kappa'], atol=1e-6 * scale)
  # And, in float64, the LognormalField of that θ to rounding.
  for i in range(len(seeds)):
    reference = lognormal.cosmo_field(*theta[i], n, pixel_scale)
    np.testing.assert_allclose(
        kappa[i], reference.convergence_from_white(
            tf.constant(lognormal.white_from_seeds([seeds[i]], n)[0])
        ).numpy(),
        atol=1e-12)
    np.testing.assert_allclose(field.target_power_grid(theta[i]).numpy(),
                               reference.target_power_grid.numpy(),
                               rtol=1e-12)


def test_theta_gradient_matches_finite_differences():
  field = lognormal_cosmology.CosmoLognormalField(16, 3.2)
  white = tf.constant(lognormal.white_from_seeds([4], 16)[0])
  probe = tf.constant(lognormal.white_from_seeds([5], 16)[0])
  theta = tf.constant([0.27, 0.71], tf.float64)  # inside a grid cell
  value = lambda t: tf.reduce_sum(field.convergence_from_white(white, t) *
                                  probe)
  with tf.GradientTape() as tape:
    tape.watch(theta)
    output = value(theta)
  gradient = tape.gradient(output, theta).numpy()
  step = 1e-6
  for d in range(2):
    shift = np.zeros(2)
    shift[d] = step
    numeric = (value(theta + shift) - value(theta - shift)).numpy() / (2 * step)
    np.testing.assert_allclose(gradient[d], numeric, rtol=1e-5)
  assert np.all(np.abs(gradient) > 0)


def _gaussian_problem(n, pixel_scale, noise, theta, seed):
  field = lognormal_cosmology.CosmoLognormalField(n, pixel_scale,
                                                  gaussian=True)
  kappa = field.convergence_from_white(
      lognormal.white_from_seeds([seed], n)[0], theta).numpy()
  ones = np.ones((n, n))
  shear = likelihood.ShearLikelihood(kappa, noise * ones, ones).sample(
      seed=(seed, 1)).numpy()
  return field, shear_map.ShearMap(shear=shear, noise_std=noise * ones,
                                   mask=ones, pixel_scale_arcmin=pixel_scale)


def _s8(theta):
  """S8 = σ8 √(Ωm / 0.3), the combination a shear field constrains best."""
  return theta[..., 1] * np.sqrt(theta[..., 0] / 0.3)


def _closed_form_moments(field, data, noise, points=81):
  """Means and stds of (Ωm, σ8, S8) under the exact Gaussian-field posterior.

  By quadrature on a ``points``² grid over the prior box; also those of the
  prior on the same grid.
  """
  kappa_e, _ = lensing.kaiser_squires(tf.constant(data.shear, tf.float64))
  axes = [np.linspace(low, high, points) for low, high in field.theta_bounds]
  grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 2)
  # The library's Gaussian-field likelihood: the HMC below checks it too.
  log_post = power_spectrum_likelihood.PowerSpectrumLikelihood(
      field.map_size, field.pixel_scale_arcmin).log_likelihood(
          kappa_e, grid, noise).numpy()
  values = np.concatenate([grid, _s8(grid)[:, np.newaxis]], -1)

  def moments(weight):
    weight = weight / weight.sum()
    mean = weight @ values
    return mean, np.sqrt(weight @ (values - mean)**2)
  return moments(np.exp(log_post - log_post.max())), moments(
      np.ones(len(grid)))


@pytest.mark.parametrize('n, pixel_scale, noise, theta, seed, burnin, '
                         'leapfrog, max_r_hat', [
    (16, 6.4, 0.005, (0.33, 0.75), 3, 200, 12, 1.05),
    # The benchmark's 128² maps at the COSMOS noise, with its HMC settings
    # (bench_exact_theta.py), θ of the first held-out map; about 4 min.
    pytest.param(128, 0.8, 0.0469,
                 cosmology.cosmo_kappa_parameters(1_000_000), 1_000_000, 300,
                 16, 1.08, marks=pytest.mark.slow),
])
def test_gaussian_field_theta_posterior_is_the_closed_form(
    n, pixel_scale, noise, theta, seed, burnin, leapfrog, max_r_hat):
  # For a Gaussian field seen through white noise on every pixel, p(θ | γ)
  # ∝ N(κ_E; 0, S(θ) + σ²) exactly: the HMC over (z, θ) must agree.
  field, data = _gaussian_problem(n, pixel_scale, noise, theta, seed=seed)
  (mean, std), (_, prior_std) = _closed_form_moments(field, data, noise)
  draws, diagnostics = lognormal_cosmology.exact_theta_posterior(
      data, field, num_chains=8, num_burnin_steps=burnin, num_results=100,
      num_leapfrog_steps=leapfrog, seed=(4, 5))
  assert draws.shape == (800, 2)
  assert max(diagnostics['r_hat']) < max_r_hat
  ess = np.asarray(diagnostics['ess'])
  assert np.all(ess > 150)
  values = np.concatenate([draws, _s8(draws)[:, np.newaxis]], -1)
  np.testing.assert_array_less(np.abs(values.mean(0) - mean),
                               4 * std / np.sqrt(ess.min()))
  np.testing.assert_allclose(values.std(0), std, rtol=0.15)
  # The data constrain S8 (Ωm and σ8 are degenerate along it).
  assert std[2] < 0.3 * prior_std[2]


def _closed_form_kappa(field, data, noise, points=41):
  """Per-pixel mean and variance of κ under the exact Gaussian-field posterior.

  Marginalised over θ by quadrature on a ``points``² grid: at each θ the
  posterior of each Fourier mode is the Wiener one, mean S/(S + σ²) κ̂_E
  and variance S σ²/(S + σ²); p(θ | γ) as in `_closed_form_moments`.
  """
  kappa_e, _ = lensing.kaiser_squires(tf.constant(data.shear, tf.float64))
  modes = np.fft.fft2(kappa_e.numpy(), norm='ortho')
  axes = [np.linspace(low, high, points) for low, high in field.theta_bounds]
  grid = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 2)
  signal = field.target_power_grid(grid).numpy()  # [G, N, N], 0 at k = 0.
  variance = signal + noise**2
  log_post = -0.5 * np.sum((np.abs(modes)**2 / variance + np.log(variance))
                           .reshape(len(grid), -1)[:, 1:], -1)
  weight = np.exp(log_post - log_post.max())
  weight /= weight.sum()
  means = np.fft.ifft2(signal / variance * modes, norm='ortho').real
  variances = np.mean(signal * noise**2 / variance, axis=(-2, -1))
  mean = np.einsum('g,gij->ij', weight, means)
  second = np.einsum('g,gij->ij', weight, means**2 + variances[:, None, None])
  return mean, second - mean**2


def test_gaussian_field_kappa_posterior_is_the_closed_form_mixture():
  # Marginalised over θ, the κ posterior of a Gaussian field seen through
  # white noise is a p(θ | γ)-weighted mixture of Wiener posteriors.
  noise = 0.005
  field, data = _gaussian_problem(16, 6.4, noise, (0.33, 0.75), seed=3)
  mean, variance = _closed_form_kappa(field, data, noise)
  result = lognormal_cosmology.exact_joint_posterior(
      data, field, num_chains=8, num_burnin_steps=200, num_results=100,
      num_leapfrog_steps=12, seed=(4, 5))
  assert result.samples.shape == (800, 16, 16)
  assert set(result.parameters) == set(cosmology.COSMO_PARAMETER_NAMES)
  diagnostics = result.diagnostics
  assert diagnostics['kappa_r_hat_max'] < 1.1
  ess = diagnostics['kappa_ess_min']
  assert ess > 100
  # Each pixel's mean is off by ~ N(0, var / ESS): the RMS z is ≲ ESS^-½.
  z = (result.mean.numpy() - mean) / np.sqrt(variance)
  assert np.sqrt(np.mean(z**2)) < 3 / np.sqrt(diagnostics['kappa_ess_median'])
  np.testing.assert_allclose(np.mean(result.std.numpy()**2) /
                             np.mean(variance), 1., atol=0.1)
  # The κ draws are the chains' own: for the same seed, exact_theta_posterior
  # draws the θ that go with them.
  theta, _ = lognormal_cosmology.exact_theta_posterior(
      data, field, num_chains=8, num_burnin_steps=200, num_results=100,
      num_leapfrog_steps=12, seed=(4, 5))
  np.testing.assert_allclose(
      np.stack([result.parameters[name] for name in
                cosmology.COSMO_PARAMETER_NAMES], -1), theta)


def test_chains_start_from_a_given_state():
  # With u's step 10⁻⁸ of z's, θ stays where the chains start: at the given
  # θ, not at prior draws.
  field, data = _gaussian_problem(16, 6.4, 0.005, [0.33, 0.75], seed=3)
  start = ([0.25, 0.9], [0.37, 0.65])
  for theta in start:
    draws, diagnostics = lognormal_cosmology.exact_theta_posterior(
        data, field, num_chains=2, num_burnin_steps=1, num_results=4,
        num_leapfrog_steps=1, theta_step_scale=1e-8, seed=(1, 2),
        initial_state=(lognormal.white_from_seeds([3], 16)[0], theta))
    np.testing.assert_allclose(draws, np.broadcast_to(theta, draws.shape),
                               atol=1e-6)
    assert diagnostics['initial_state'] == 'given'
  with pytest.raises(ValueError, match='strictly inside'):
    lognormal_cosmology.exact_theta_posterior(
        data, field, initial_state=(np.zeros((16, 16)), [0.45, 0.8]))
  with pytest.raises(ValueError, match=r'\[16, 16\] or \[8, 16, 16\]'):
    lognormal_cosmology.exact_theta_posterior(
        data, field, initial_state=(np.zeros((8, 8)), [0.3, 0.8]))
  with pytest.raises(ValueError, match='a pair'):
    lognormal_cosmology.exact_theta_posterior(data, field, initial_state=3)


def test_bad_input_is_refused():
  field = lognormal_cosmology.CosmoLognormalField(16, 6.4)
  _, data = _gaussian_problem(32, 3.2, 0.02, [0.3, 0.8], seed=1)
  with pytest.raises(ValueError, match='16x16'):
    lognormal_cosmology.exact_theta_posterior(data, field)
  with pytest.raises(ValueError, match='CosmoLognormalField'):
    lognormal_cosmology.exact_theta_posterior(data, object())
  with pytest.raises(ValueError, match='num_chains'):
    lognormal_cosmology.exact_theta_posterior(data, field, num_chains=1)
  with pytest.raises(ValueError, match='map_size'):
    lognormal_cosmology.CosmoLognormalField(1, 3.2)


def test_cosmo_problem_data_carry_the_declared_noise():
  # The benchmarks' data: shear of the true map plus white noise of the
  # declared std per component, on every pixel.
  noise = 0.0469
  _, truth, data = testing.cosmo_problem(1_000_000, 128, 0.8, noise, (0, 0))
  residual = data.shear - lensing.shear_from_convergence(
      tf.constant(truth)).numpy()
  np.testing.assert_allclose(residual.std(axis=(0, 1)), noise, rtol=0.02)
  np.testing.assert_allclose(data.noise_std, noise, rtol=1e-6)
  assert np.all(data.mask == 1)
