"""benchmarks/bench_prior_validation.py: the posterior variance a denoiser
implies (Tweedie's second-moment identity, σ² ∇·D / N²), on known answers.

A pointwise denoiser has a diagonal Jacobian, which Rademacher probes read
exactly; the Wiener denoiser of a Gaussian prior implies the posterior
variance σ² mean(S / (S + σ²)) of that prior, and on maps drawn from it that
variance is the expected squared error of its posterior mean.
"""

import numpy as np
import tensorflow as tf

import conftest
from tfp_massmap import cosmology
from tfp_massmap import priors

bench = conftest.load_script('benchmarks/bench_prior_validation.py',
                             'bench_prior_validation')


def test_pointwise_denoiser_is_read_exactly():
  noisy = np.random.default_rng(0).standard_normal((3, 8, 8)).astype(np.float32)
  sigma = 0.5
  variance = bench.tweedie_variance(lambda y, s: tf.tanh(2. * y), noisy, sigma,
                                    num_probes=1)
  expected = sigma**2 * np.mean(2. * (1. - np.tanh(2. * noisy)**2), axis=(1, 2))
  np.testing.assert_allclose(variance, expected, rtol=1e-5)
  assert variance.shape == (3,)


def test_wiener_denoiser_implies_the_gaussian_posterior_variance():
  ell, cl = cosmology.cosmos_convergence_cl()
  prior = priors.GaussianPrior.from_power_spectrum(ell, cl, 32, 0.8)
  sigma = 0.01
  maps = prior.sample(64, seed=(1, 2)).numpy()
  noisy = (maps + sigma * np.random.default_rng(3).standard_normal(
      maps.shape)).astype(np.float32)
  variance = bench.tweedie_variance(prior.denoise, noisy, sigma, num_probes=8)
  spectrum = prior.spectrum.numpy().astype(np.float64)
  # The k = 0 mode (S_0 = 0) is set to zero by the denoiser: variance 0.
  expected = sigma**2 * np.mean(spectrum / (spectrum + sigma**2))
  # A linear denoiser's Jacobian is the same at every y: only probe noise.
  np.testing.assert_allclose(variance, expected, rtol=0.02)
  mse = np.mean((prior.denoise(noisy, sigma).numpy() - maps)**2)
  # 64 maps of 1024 pixels: the MSE is within a few per cent of its mean.
  np.testing.assert_allclose(np.mean(variance), mse, rtol=0.05)
  # A prior twice as wide implies a larger variance than its squared error.
  wide = priors.GaussianPrior(prior.spectrum * 2.)
  assert np.mean(bench.tweedie_variance(wide.denoise, noisy, sigma, 8)) > mse
