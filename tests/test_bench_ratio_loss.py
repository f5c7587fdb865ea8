"""benchmarks/bench_ratio_loss.py: held-out pairs, cross-entropy, logit scale.

Known answers with stand-in classifiers on 8² maps whose mean pixel carries
the map's Ωm: a classifier of zero logit scores ln 2 on every map; one that
recognises a map's own θ from its mean scores near 0, which holds only if
the joint pair is (map i, θ_i), the shuffled pair holds another map's θ, and
the noise has the requested level. The best logit scale α of a classifier
whose logit is the exact log ratio of a Gaussian model times 1/2 is 2,
and that of the power-spectrum classifier on Gaussian fields is 1.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

import conftest
from tfp_massmap import cosmology
from tfp_massmap import lognormal_cosmology

bench = conftest.load_script('benchmarks/bench_ratio_loss.py', 'bench_ratio_loss')

M, N = 6, 8


@pytest.fixture(scope='module')
def pairs():
  theta = np.stack([np.linspace(0.2, 0.4, M), np.linspace(0.6, 1.0, M)], -1)
  kappa = np.broadcast_to(theta[:, :1, None], (M, N, N)).astype(np.float32)
  noise = np.random.default_rng(0).standard_normal((M, N, N)).astype(
      np.float32)
  return kappa, theta, noise


def test_zero_logit_scores_ln2(pairs):
  kappa, theta, noise = pairs
  loss = bench.pair_loss(*bench.per_map_logits(
      lambda x, s, t: tf.zeros(tf.shape(x)[:1]), kappa, theta, noise, 0.01,
      batch_size=4))
  np.testing.assert_allclose(loss, math.log(2.), rtol=1e-6)
  assert loss.shape == (M,)


def test_pairs_are_own_and_other_theta(pairs):
  kappa, theta, noise = pairs
  sigma = 1e-3
  seen = []

  def recognises_own_theta(x, s, t):
    seen.append(float(s[0]))
    # ±20 logit: the map's mean (its Ωm, up to noise σ/N) against θ's Ωm;
    # neighbouring maps differ by 0.04, the threshold is 0.01.
    distance = tf.abs(tf.reduce_mean(x, axis=[1, 2]) - t[:, 0])
    return tf.where(distance < 0.01, 20., -20.)

  loss = bench.pair_loss(*bench.per_map_logits(
      recognises_own_theta, kappa, theta, noise, sigma, batch_size=4))
  assert np.all(loss < 1e-8), loss
  np.testing.assert_allclose(seen, sigma, rtol=1e-6)
  # Without the noise scaling the maps' means move by ~σ/N = 1e-4 only; at
  # σ = 1 (means off by ~0.1) the classifier fails on some maps.
  noisy = bench.pair_loss(*bench.per_map_logits(
      recognises_own_theta, kappa, theta, noise, 1., batch_size=4))
  assert np.max(noisy) > 5.
  # With the map means removed (as the data give them) a classifier that
  # reads only the mean calls every pair shuffled: 10 nats per pair.
  blind = bench.pair_loss(*bench.per_map_logits(
      recognises_own_theta, kappa, theta, noise, sigma, batch_size=4,
      remove_map_mean=True))
  np.testing.assert_allclose(blind, 10., rtol=1e-6)


def _gaussian_log_ratio(x, theta, noise_std):
  """log N(x; θ, s²) − log N(x; 0, 1 + s²): θ ~ N(0, 1), x | θ ~ N(θ, s²)."""
  def log_normal(value, var):
    return -0.5 * (value**2 / var + np.log(2. * np.pi * var))
  return log_normal(x - theta, noise_std**2) - log_normal(x, 1. + noise_std**2)


@pytest.mark.parametrize('scale', [1., 0.5])
def test_best_temperature_undoes_a_logit_scale(scale):
  rng = np.random.default_rng(3)
  theta = rng.standard_normal(20_000)
  x = theta + 0.5 * rng.standard_normal(theta.shape)
  joint = scale * _gaussian_log_ratio(x, theta, 0.5)
  shuffled = scale * _gaussian_log_ratio(x, np.roll(theta, 1), 0.5)
  alpha = bench.best_temperature(joint, shuffled)
  np.testing.assert_allclose(alpha, 1. / scale, rtol=0.05)
  assert (np.mean(bench.pair_loss(joint, shuffled, alpha)) <=
          np.mean(bench.pair_loss(joint, shuffled)) + 1e-12)


def test_balance_of_the_exact_ratio_and_of_a_biased_one():
  # The exact log ratio of the Gaussian model is balanced (b = 0 within its
  # standard error on 20,000 pairs); adding 1 to every logit is not.
  rng = np.random.default_rng(4)
  theta = rng.standard_normal(20_000)
  x = theta + 0.5 * rng.standard_normal(theta.shape)
  joint = _gaussian_log_ratio(x, theta, 0.5)
  shuffled = _gaussian_log_ratio(x, np.roll(theta, 1), 0.5)
  b, error = bench.balance(joint, shuffled)
  assert abs(b) < 3 * error, (b, error)
  assert 0 < error < 0.01
  biased, _ = bench.balance(joint + 1., shuffled + 1.)
  assert biased > 20 * error, biased


def test_power_spectrum_classifier_is_optimal_on_gaussian_fields():
  # On Gaussian fields the power-spectrum classifier is the Bayes-optimal
  # one, so no scale of its logits does better: its best α is 1 within
  # the scatter of 256 held-out pairs (a logit off by 2× gives α 0.5 or 2).
  n, pixel, count = 32, 0.8, 256
  field = lognormal_cosmology.CosmoLognormalField(n, pixel, gaussian=True)
  rng = np.random.default_rng(3)
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS)
  theta = bounds[:, 0] + rng.uniform(size=(count, 2)) * (
      bounds[:, 1] - bounds[:, 0])
  kappa = field.convergence_from_white(rng.standard_normal((count, n, n)),
                                       theta).numpy().astype(np.float32)
  noise = rng.standard_normal(kappa.shape).astype(np.float32)
  network = bench.classifier(bench.POWER_SPECTRUM, n, pixel)
  logits = bench.per_map_logits(network, kappa, theta, noise, 0.02,
                                batch_size=64)
  alpha = bench.best_temperature(*logits)
  assert 0.85 < alpha < 1.15, alpha
  assert np.mean(bench.pair_loss(*logits)) < 0.5  # It does classify.


def test_grid_logits_visit_every_cell_of_the_box_in_order(pairs):
  kappa, _, noise = pairs
  points = 3

  def reads_theta_and_map(x, s, t):
    return 1000. * t[:, 0] + t[:, 1] + tf.reduce_mean(x, axis=[1, 2])

  logits, area = bench.grid_logits(reads_theta_and_map, kappa, noise, 0.,
                                    points, batch_size=4)
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS)
  widths = (bounds[:, 1] - bounds[:, 0]) / points
  np.testing.assert_allclose(area, np.prod(widths), rtol=1e-12)
  omega_m = bounds[0, 0] + (np.arange(points) + 0.5) * widths[0]
  sigma8 = bounds[1, 0] + (np.arange(points) + 0.5) * widths[1]
  want = (1000. * omega_m[:, None] + sigma8[None, :]).reshape(-1)
  want = want[None, :] + kappa.mean(axis=(1, 2))[:, None]
  assert logits.shape == (M, points**2)
  np.testing.assert_allclose(logits, want, rtol=1e-5)


def test_posterior_log_density_of_flat_logits_is_one_over_the_box():
  on_grid = np.full((4, 25), 3.)
  values = bench.posterior_log_density(np.full(4, 3.), on_grid, 0.02)
  np.testing.assert_allclose(values, -math.log(25 * 0.02), rtol=1e-12)


@pytest.mark.parametrize('scale', [1., 0.5, 2.])
def test_best_posterior_temperature_undoes_a_logit_scale(scale):
  # θ uniform on a box far wider than the likelihood, x = θ + 0.5 z: the
  # grid posterior ∝ exp(ℓ), ℓ the exact log likelihood, is the exact
  # posterior, so its log density at the truth is best at α = 1; logits
  # scaled by s are best at α = 1 / s, and no α beats α = 1 at s = 1.
  rng = np.random.default_rng(5)
  theta = rng.uniform(-8., 8., 4000)
  x = theta + 0.5 * rng.standard_normal(theta.shape)
  cells = -10. + (np.arange(800) + 0.5) * 0.025

  def log_like(t):
    return -0.5 * ((x[:, None] - t) / 0.5)**2
  at_truth = scale * log_like(theta[:, None])[:, 0]
  on_grid = scale * log_like(cells[None, :])
  alpha = bench.best_posterior_temperature(at_truth, on_grid, 0.025)
  np.testing.assert_allclose(alpha, 1. / scale, rtol=0.05)
  exact = bench.posterior_log_density(at_truth, on_grid, 0.025, 1. / scale)
  # The mean log density of N(θ; x, 0.5²) at θ: −log(0.5 √(2π)) − ½.
  np.testing.assert_allclose(exact.mean(),
                             -math.log(0.5 * math.sqrt(2 * math.pi)) - 0.5,
                             atol=0.03)
