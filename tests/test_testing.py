"""tfp_massmap.testing: the synthetic problems and the dense exact posterior."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import testing
from tfp_massmap.priors import gaussian as gaussian_prior
from tfp_massmap.shear_map import ShearMap

N = 16
PIX = 6.4  # The 1.64 deg² footprint fits a 16² map of 6.4 arcmin pixels.


@pytest.fixture(scope='module')
def problem():
  return testing.gaussian_problem(N, PIX, seed=3)


def test_gaussian_problem_is_the_prior_truth_observed_with_noise(problem):
  shear_map, truth, prior = problem
  assert shear_map.shear.dtype == np.float32 and truth.dtype == np.float64
  assert prior.pixel_scale_arcmin == PIX and prior.dtype == tf.float32
  assert shear_map.pixel_scale_arcmin == PIX
  mask = shear_map.mask > 0
  assert 0 < mask.sum() < N * N
  np.testing.assert_array_equal(mask, shear_map.counts > 0)
  assert np.all(shear_map.shear[~mask] == 0)
  # The noise ramps from 0.7 to 2 times σ_e/√N_gal across the columns.
  expected = 0.3 / np.sqrt(np.maximum(shear_map.counts, 1))
  ramp = np.linspace(0.7, 2.0, N)[np.newaxis, :]
  np.testing.assert_allclose(shear_map.noise_std[..., 0][mask],
                             (expected * ramp)[mask], rtol=1e-6)
  on_mask = np.broadcast_to(mask[..., None], [N, N, 2])
  pulls = ((shear_map.shear - lensing.shear_from_convergence(truth).numpy())
           [on_mask] / shear_map.noise_std[on_mask])
  assert abs(pulls.mean()) < 4 / np.sqrt(pulls.size)
  assert abs(pulls.std() - 1) < 4 / np.sqrt(2 * pulls.size)
  # Reproducible from its seed, another seed another problem.
  again, again_truth, _ = testing.gaussian_problem(N, PIX, seed=3)
  np.testing.assert_array_equal(again.shear, shear_map.shear)
  np.testing.assert_array_equal(again_truth, truth)
  other, _, _ = testing.gaussian_problem(N, PIX, seed=4)
  assert not np.array_equal(other.mask, shear_map.mask)
  # float64 on request.
  shear_map64, _, prior64 = testing.gaussian_problem(N, PIX, seed=3,
                                                     dtype=tf.float64)
  assert shear_map64.shear.dtype == np.float64 and prior64.dtype == tf.float64


def test_exact_posterior_matches_the_data_space_formula(problem):
  # Σ = S − S Aᵀ (A S Aᵀ + N)⁻¹ A S on the observed shear components.
  shear_map, _, prior = problem
  mean, covariance = testing.exact_gaussian_posterior(shear_map, prior)
  spectrum = prior.spectrum.numpy().astype(np.float64)
  s = testing.dense_matrix(
      lambda x: gaussian_prior.fourier_filter(x, spectrum), N)
  a = testing.dense_matrix(lensing.shear_from_convergence, N)
  observed = np.broadcast_to(shear_map.mask[..., None] > 0, [N, N, 2]).ravel()
  a = a[observed]
  s_at = s @ a.T
  gram = a @ s_at + np.diag(
      shear_map.noise_std.astype(np.float64).ravel()[observed]**2)
  expected_mean = s_at @ np.linalg.solve(
      gram, shear_map.shear.astype(np.float64).ravel()[observed])
  expected_cov = s - s_at @ np.linalg.solve(gram, s_at.T)
  np.testing.assert_allclose(mean.ravel(), expected_mean,
                             atol=1e-10 * np.abs(expected_mean).max())
  np.testing.assert_allclose(covariance, expected_cov,
                             atol=1e-10 * np.abs(expected_cov).max())
  # The posterior is narrower than the prior, and the map mean is free.
  assert np.all(np.diag(covariance) < np.diag(s) + 1e-15)


def test_exact_posterior_denoising_closed_form():
  # Identity operator, uniform noise σ, no mask: per Fourier mode the mean is
  # S/(S + σ²) times the data and the variance S σ²/(S + σ²).
  n, sigma = 8, 0.02
  ell, cl = cosmology.cosmos_convergence_cl()
  prior = gaussian_prior.GaussianPrior.from_power_spectrum(
      ell, cl, n, 4.0, dtype=tf.float64)
  spectrum = prior.spectrum.numpy()
  data = np.random.default_rng(0).normal(0., 0.03, [n, n, 1])
  mean, covariance = testing.exact_gaussian_posterior(
      ShearMap(data, np.full([n, n], sigma)), prior,
      operator=likelihood.identity_operator)
  filtered = np.fft.ifft2(spectrum / (spectrum + sigma**2) *
                          np.fft.fft2(data[..., 0])).real
  np.testing.assert_allclose(mean, filtered, atol=1e-12)
  np.testing.assert_allclose(
      np.diag(covariance), np.mean(spectrum * sigma**2 / (spectrum + sigma**2)),
      rtol=1e-10)


def test_exact_posterior_of_the_gaussian_field_equals_its_gaussian_prior(
    problem):
  shear_map, _, _ = problem
  field = lognormal.LognormalField(None, N, PIX, dtype=tf.float32)
  expected = testing.exact_gaussian_posterior(
      shear_map, gaussian_prior.GaussianPrior(
          tf.cast(field.target_power_grid, tf.float64)))
  for got, want in zip(testing.exact_gaussian_posterior(shear_map, field),
                       expected):
    np.testing.assert_allclose(got, want, atol=1e-10 * np.abs(want).max())
  with pytest.raises(ValueError, match=r'LognormalField with shift None'):
    testing.exact_gaussian_posterior(
        shear_map, lognormal.LognormalField(0.05, N, PIX))


def test_cosmo_problem_is_the_generator_map_seen_through_white_noise():
  """θ and κ are those of the cosmo generator's map of that seed; the data
  are A κ plus white noise of the stated std on every pixel."""
  theta, truth, data = testing.cosmo_problem(1_000_003, 32, 0.8, 0.01, (1, 2))
  np.testing.assert_array_equal(
      theta, cosmology.cosmo_kappa_parameters(1_000_003))
  np.testing.assert_array_equal(
      truth, lognormal.cosmo_maps([1_000_003], 32, 0.8)['kappa'][0])
  assert np.all(data.mask == 1) and np.all(data.noise_std == np.float32(0.01))
  residual = np.asarray(data.shear, np.float64) - lensing.shear_from_convergence(
      truth).numpy()
  assert residual.std() == pytest.approx(0.01, rel=0.05)
