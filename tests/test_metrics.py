"""Metrics of the benchmark protocol against direct numpy formulas."""

import numpy as np
import pytest

from tfp_massmap import metrics


def test_rmse_and_r_ignore_offsets_and_masked_pixels():
  rng = np.random.default_rng(0)
  truth = rng.standard_normal([16, 16])
  est = 0.5 * truth + 0.1 * rng.standard_normal([16, 16]) + 3.0
  mask = np.zeros([16, 16])
  mask[2:12, 3:14] = 1
  est_masked_junk = np.where(mask > 0, est, 1e6)
  t = truth[mask > 0] - truth[mask > 0].mean()
  e = est[mask > 0] - est[mask > 0].mean()
  np.testing.assert_allclose(metrics.rmse(truth, est_masked_junk, mask),
                             np.sqrt(np.mean((t - e)**2)), rtol=1e-12)
  np.testing.assert_allclose(metrics.pearson_r(truth, est_masked_junk, mask),
                             np.corrcoef(t, e)[0, 1], rtol=1e-12)


def test_batched_metrics_keep_leading_axes():
  rng = np.random.default_rng(1)
  truth = rng.standard_normal([3, 8, 8])
  assert metrics.rmse(truth, truth * 0, None).shape == (3,)
  np.testing.assert_allclose(metrics.pearson_r(truth, 2 * truth + 1), 1.0)


def test_coverage_of_gaussian_intervals():
  rng = np.random.default_rng(2)
  truth = rng.standard_normal([200, 200])
  cov = metrics.coverage(truth, -np.ones_like(truth), np.ones_like(truth))
  assert abs(cov - 0.6827) < 0.01


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='map shape'):
    metrics.rmse(np.zeros([8, 8]), np.zeros([4, 4]))
  with pytest.raises(ValueError, match='no pixel'):
    metrics.rmse(np.zeros([8, 8]), np.zeros([8, 8]), np.zeros([8, 8]))
