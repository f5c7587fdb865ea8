"""Tests of GaussianPrior against dense covariance matrices and known spectra."""

import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import power_spectrum
from tfp_massmap.priors.gaussian import GaussianPrior

PIXEL_ARCMIN = 0.29
ELL = np.geomspace(10., 1e6, 200)
CL = ELL**-1.2


def _prior(n, pixel_std=0.02, dtype=tf.float64):
  """Power-law prior C_ℓ ∝ ℓ^-1.2 scaled to the given pixel std."""
  spectrum = power_spectrum.power_spectrum_grid(ELL, CL, n, PIXEL_ARCMIN,
                                                tf.float64).numpy()
  spectrum *= pixel_std**2 / spectrum.mean()
  return GaussianPrior(tf.constant(spectrum, dtype))


def _dense_covariance(spectrum):
  """C = F^H diag(S) F with F the orthonormal 2-D DFT matrix (numpy)."""
  n = spectrum.shape[-1]
  basis = np.eye(n * n).reshape(n * n, n, n)
  dft = np.fft.fft2(basis, norm='ortho').reshape(n * n, n * n).T
  return (dft.conj().T @ np.diag(spectrum.ravel()) @ dft).real


def test_log_prob_matches_scipy_singular_normal():
  prior = _prior(8)
  cov = _dense_covariance(prior.spectrum.numpy())
  x = prior.sample(5, seed=(3, 4)).numpy()
  expected = scipy.stats.multivariate_normal(
      np.zeros(64), cov, allow_singular=True).logpdf(x.reshape(5, 64))
  np.testing.assert_allclose(prior.log_prob(x).numpy(), expected, rtol=1e-10)
  # The degenerate map-mean direction is ignored, as documented.
  np.testing.assert_allclose(prior.log_prob(x + 0.3).numpy(), expected,
                             rtol=1e-10)


def test_log_prob_batched_spectrum():
  a, b = _prior(8, 0.02), _prior(8, 0.05)
  batched = GaussianPrior(tf.stack([a.spectrum, b.spectrum]))
  assert batched.batch_shape == [2] and batched.event_shape == [8, 8]
  x = a.sample(3, seed=(1, 1))[:, tf.newaxis]  # [3, 1, 8, 8]
  lp = batched.log_prob(x)
  assert lp.shape == (3, 2)
  np.testing.assert_allclose(lp[:, 1], b.log_prob(x[:, 0]), rtol=1e-12)
  assert batched.sample(4, seed=(2, 2)).shape == (4, 2, 8, 8)


def test_score_is_gradient_of_log_prob():
  prior = _prior(8)
  x = tf.constant(np.random.default_rng(0).normal(0., 0.02, (3, 8, 8)))
  with tf.GradientTape() as tape:
    tape.watch(x)
    lp = prior.log_prob(x)
  grad = tape.gradient(lp, x)
  np.testing.assert_allclose(prior.score(x).numpy(), grad.numpy(), rtol=1e-10,
                             atol=1e-10 * np.abs(grad.numpy()).max())


def test_score_and_denoise_match_dense_formulas():
  prior = _prior(8)
  cov = _dense_covariance(prior.spectrum.numpy())
  x = np.random.default_rng(1).normal(0.1, 0.03, (3, 8, 8))  # Non-zero mean.
  sigma = np.array([0.005, 0.02, 0.1])
  score = prior.score(x, sigma).numpy()
  denoised = prior.denoise(x, sigma).numpy()
  for i, s in enumerate(sigma):
    reg = cov + s**2 * np.eye(64)
    expected_score = -np.linalg.solve(reg, x[i].ravel())
    np.testing.assert_allclose(score[i].ravel(), expected_score, rtol=1e-9,
                               atol=1e-9 * np.abs(expected_score).max())
    expected_mean = cov @ np.linalg.solve(reg, x[i].ravel())
    np.testing.assert_allclose(denoised[i].ravel(), expected_mean, rtol=1e-9,
                               atol=1e-9 * np.abs(expected_mean).max())
  # Tweedie, and σ = 0 is the identity.
  np.testing.assert_allclose(denoised, x + sigma[:, None, None]**2 * score,
                             rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(prior.denoise(x, 0.).numpy(), x, atol=1e-12)


def test_score_works_in_tf_function_float32():
  prior = _prior(16, dtype=tf.float32)
  x = prior.sample(2, seed=(5, 6))
  score = tf.function(prior.score)(x, tf.constant([0.01, 0.02]))
  assert score.dtype == tf.float32 and score.shape == (2, 16, 16)
  eager = prior.score(x, [0.01, 0.02]).numpy()
  np.testing.assert_allclose(score.numpy(), eager, rtol=1e-5,
                             atol=1e-5 * np.abs(eager).max())


def test_samples_reproduce_input_spectrum():
  n, num = 64, 64
  prior = _prior(n)
  x = prior.sample(num, seed=(7, 8))
  assert x.shape == (num, n, n)
  np.testing.assert_allclose(tf.reduce_mean(x, axis=[-2, -1]), 0., atol=1e-15)
  np.testing.assert_array_equal(x.numpy(), prior.sample(num, seed=(7, 8)).numpy())

  edges = power_spectrum.default_ell_edges(n, PIXEL_ARCMIN, n_bins=12)
  _, measured = power_spectrum.measure_power_spectrum(x, PIXEL_ARCMIN, edges)
  measured = tf.reduce_mean(measured, axis=0).numpy()
  # Expectation and variance of each bin's mean of |x̂_k|² Δ² over its m
  # modes: mean S Δ², and 2 Σ S_k² Δ⁴ / m² per map (k and −k share a bin).
  spectrum = prior.spectrum.numpy().ravel()
  ell = lensing.multipoles(n, PIXEL_ARCMIN, tf.float64).numpy().ravel()
  delta2 = (PIXEL_ARCMIN * lensing.ARCMIN_TO_RAD)**2
  keep = (ell > 0) & (ell <= edges[-1] * (1 + 1e-12))
  bins = np.clip(np.digitize(ell[keep], edges) - 1, 0, len(edges) - 2)
  counts = np.bincount(bins, minlength=len(edges) - 1)
  expected = np.bincount(bins, spectrum[keep]) / counts * delta2
  std = np.sqrt(2. * np.bincount(bins, spectrum[keep]**2) / num) / counts * delta2
  assert np.all(counts > 0)
  np.testing.assert_array_less(np.abs(measured - expected), 5. * std)


def test_from_power_spectrum_and_variance():
  prior = GaussianPrior.from_power_spectrum(ELL, CL, 8, PIXEL_ARCMIN,
                                            dtype=tf.float64)
  grid = power_spectrum.power_spectrum_grid(ELL, CL, 8, PIXEL_ARCMIN, tf.float64)
  np.testing.assert_array_equal(prior.spectrum.numpy(), grid.numpy())
  cov = _dense_covariance(grid.numpy())
  np.testing.assert_allclose(prior.variance().numpy().ravel(), np.diag(cov),
                             rtol=1e-12)
  np.testing.assert_array_equal(prior.mean().numpy(), np.zeros((8, 8)))


def test_invalid_inputs_raise():
  with pytest.raises(ValueError, match='negative'):
    GaussianPrior(-tf.ones([8, 8]))
  with pytest.raises(ValueError, match='square'):
    GaussianPrior(tf.ones([8, 9]))
  prior = _prior(8)
  with pytest.raises(ValueError, match='map shape'):
    prior.score(tf.zeros([16, 16], tf.float64))
  with pytest.raises(ValueError, match='sigma'):
    prior.denoise(tf.zeros([8, 8], tf.float64), -0.1)
