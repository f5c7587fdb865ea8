"""benchmarks/bench_skewness_theta.py: the skewness model and its inputs.

Known answers: the Gaussian model of the statistics recovers a known cubic
mean, log-linear std and correlation from simulated draws, and its density
differences between θ are those of the exact multivariate normal; the
skewness statistic is 0 for a symmetric map and changes sign with it.
"""

import numpy as np
import scipy.stats

import conftest

bench = conftest.load_script('benchmarks/bench_skewness_theta.py',
                             'bench_skewness_theta')


def _truth(theta):
  a, b = theta[..., 0], theta[..., 1]
  mean = np.stack([1 + 2 * a - b + a * b, 0.5 * b**3 - a], -1)
  std = np.stack([0.1 * np.exp(a), 0.2 * np.exp(-b)], -1)
  return mean, std


def test_skewness_model_recovers_a_known_gaussian():
  axes = [np.linspace(0.2, 0.4, 5), np.linspace(0.6, 1.0, 5)]
  theta = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 2)
  correlation = np.array([[1., 0.6], [0.6, 1.]])
  rng = np.random.default_rng(0)
  draws = rng.multivariate_normal([0, 0], correlation, size=(25, 2000))
  mean, std = _truth(theta)
  model = bench.SkewnessModel(theta, mean[:, None] + std[:, None] * draws)
  probe = np.array([[0.25, 0.7], [0.37, 0.93]])
  want_mean, want_std = _truth(probe)
  np.testing.assert_allclose(model.mean(probe), want_mean, atol=3e-3)
  np.testing.assert_allclose(model.std(probe), want_std, rtol=0.03)
  np.testing.assert_allclose(model._correlation, correlation, atol=0.02)  # pylint: disable=protected-access
  values = np.array([1.4, 0.1])
  got = model.log_likelihood(values, probe)
  want = [scipy.stats.multivariate_normal(
      model.mean(p[None])[0], np.outer(model.std(p[None])[0],
                                       model.std(p[None])[0]) *
      model._correlation).logpdf(values) for p in probe]  # pylint: disable=protected-access
  np.testing.assert_allclose(got[1] - got[0], want[1] - want[0], rtol=1e-9)


def test_skewness_is_odd_and_zero_for_a_symmetric_map():
  rng = np.random.default_rng(1)
  skewed = rng.gamma(2., size=(2, 32, 32)) - 2.
  values = bench.smoothed_moments(skewed, [0.8, 1.6], 0.8)
  assert values.shape == (2, 2)
  assert np.all(values > 0.1)
  np.testing.assert_allclose(bench.smoothed_moments(-skewed, [0.8, 1.6], 0.8),
                             -values, rtol=1e-12)
  # Unsmoothed, a map of pixel values ±v has no third moment.
  symmetric = np.concatenate([skewed[0][:16], -skewed[0][:16]], axis=0)
  np.testing.assert_allclose(bench.smoothed_moments(symmetric, [0.], 0.8), 0.,
                             atol=1e-12)
