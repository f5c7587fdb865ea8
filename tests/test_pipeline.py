"""The main job's pipeline as a library: estimators by name, the summary.

On a 32² Gaussian problem (`testing.gaussian_problem`) the Wiener estimator
is the exact posterior mean (`testing.exact_gaussian_posterior`), the
posterior estimator's mean is close to it, and the summary holds what the
main job writes. The divergence policy is pinned with a toy prior that makes
chosen chains diverge.
"""

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import pipeline
from tfp_massmap import testing
from tfp_massmap.mcmc import GeometricSchedule

NPIX = 32
PIXEL_ARCMIN = 3.2
pytestmark = pytest.mark.filterwarnings('ignore:.*samples cannot resolve')


@pytest.fixture(scope='module')
def problem():
  data, truth, prior = testing.gaussian_problem(NPIX, PIXEL_ARCMIN, seed=1)
  mean, _ = testing.exact_gaussian_posterior(data, prior)
  return data, truth, prior, mean


def _options(prior, **kwargs):
  return pipeline.EstimatorOptions(
      prior=prior, num_samples=16, schedule=GeometricSchedule(0.05, 1e-3, 12),
      num_leapfrog_steps=5, step_size_factor=1., seed=(1, 2), **kwargs)


def test_estimators_and_summary(problem):
  data, truth, prior, exact_mean = problem
  seen = []
  results = pipeline.run_estimators(
      data, ['ks', 'wiener', 'posterior'], _options(prior),
      callback=lambda name, result: seen.append(name))
  assert list(results) == seen == ['ks', 'wiener', 'posterior']
  for result in results.values():
    assert result.kappa.shape == (NPIX, NPIX)
    assert result.kappa.dtype == np.float32 and result.seconds > 0
  # The Wiener filter with the default prior (shipped spectrum at the map's
  # size and pixel scale, float64) is the exact posterior mean.
  wiener = results['wiener']
  assert wiener.report['converged'] and wiener.posterior is None
  scale = np.std(exact_mean)
  np.testing.assert_allclose(wiener.kappa, exact_mean, atol=1e-3 * scale)
  # The posterior mean of 16 chains: within its Monte Carlo error.
  post = results['posterior']
  assert post.posterior.samples.shape == (16, NPIX, NPIX)
  np.testing.assert_array_equal(post.kappa, post.posterior.mean.numpy())
  assert np.sqrt(np.mean((post.kappa - exact_mean)**2)) < 0.5 * scale
  assert post.report['num_samples_kept'] == 16
  assert post.report['num_diverged_chains'] == 0
  assert post.report['schedule'] == {
      'type': 'GeometricSchedule', 'sigma_max': 0.05, 'sigma_min': 1e-3,
      'num_levels': 12, 'steps_per_level': 1}
  summary = pipeline.strict_json(pipeline.summarise(data, results, truth,
                                                    run_id='r1'))
  json.dumps(summary, allow_nan=False)
  assert list(summary)[:2] == ['run_id', 'map_size']
  assert summary['pixel_scale_arcmin'] == PIXEL_ARCMIN
  assert summary['unmasked_fraction'] == pytest.approx(np.mean(data.mask))
  methods = summary['methods']
  assert methods['wiener']['rmse'] < methods['ks']['rmse']
  assert 0 < methods['posterior']['coverage_68'] < (
      methods['posterior']['coverage_95']) <= 1
  assert 'coverage_68' not in methods['wiener']
  # Without a truth: no accuracy entries.
  plain = pipeline.summarise(data, results)
  assert 'rmse' not in plain['methods']['ks']


def test_unknown_estimator_and_missing_prior(problem):
  data = problem[0]
  with pytest.raises(ValueError, match=r"unknown estimators \['glimpse'\]"):
    pipeline.run_estimators(data, ['ks', 'glimpse'])
  with pytest.raises(ValueError, match='prior must have a score'):
    pipeline.run_estimators(data, ['posterior'])


class _GainPrior:
  """White Gaussian prior N(0, 0.02²), ``gains[i]`` times too steep on chain i."""

  def __init__(self, gains):
    self._gains = np.asarray(gains, np.float32)

  def score(self, x, sigma):
    return -tf.constant(self._gains)[:, None, None] * x / (
        0.02**2 + tf.square(sigma))


def test_divergence_policy(problem):
  data = problem[0]
  diverging = _GainPrior([1., 1e4, 1.])
  options = dict(num_samples=3, schedule=GeometricSchedule(0.1, 1e-3, 8),
                 seed=(1, 2))
  with pytest.warns(RuntimeWarning, match='1 of 3 chains diverged'):
    with pytest.raises(pipeline.DivergenceError,
                       match='1 of 3 posterior chains diverged.*'
                       'drop_diverged_chains is off') as error:
      pipeline.run_estimators(data, ['posterior'], pipeline.EstimatorOptions(
          prior=diverging, **options))
  assert (error.value.num_diverged, error.value.num_samples) == (1, 3)
  assert not error.value.dropping
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    results = pipeline.run_estimators(
        data, ['posterior'], pipeline.EstimatorOptions(
            prior=diverging, drop_diverged_chains=True, **options))
  assert any('DROPPING DIVERGED CHAINS: 1 of 3' in str(w.message)
             for w in caught)
  report = results['posterior'].report
  assert report['num_diverged_chains'] == 1
  assert report['diverged_chains'] == [1]
  assert report['dropped_chains'] == [1] and report['num_samples_kept'] == 2
  assert results['posterior'].posterior.samples.shape == (2, NPIX, NPIX)
  with pytest.warns(RuntimeWarning, match='2 of 3 chains diverged'):
    with pytest.raises(pipeline.DivergenceError,
                       match='only 1 chain.s. would remain') as error:
      pipeline.run_estimators(data, ['posterior'], pipeline.EstimatorOptions(
          prior=_GainPrior([1., 1e4, 1e4]), drop_diverged_chains=True,
          **options))
  assert error.value.dropping


def test_memory_estimate_formula():
  need = pipeline.memory_need_bytes(360, ['ks', 'wiener', 'posterior'], 40,
                                    'learned')
  assert need == 2**30 + 360**2 * (250 + 0 + 1100 + 1000 + 40 * 1000)
  assert pipeline.memory_need_bytes(64, ['ks'], 40, 'learned') == (
      2**30 + 64**2 * 250)
  assert pipeline.memory_need_bytes(64, ['posterior'], 2, 'gaussian') == (
      2**30 + 64**2 * (250 + 1000 + 2 * 250))


def test_strict_json():
  assert pipeline.strict_json(
      {'a': (np.float32(np.inf), -np.inf, [np.nan, 1.5]), 'b': np.arange(2),
       1: np.float64(2.)}) == {
           'a': [None, None, [None, 1.5]], 'b': [0, 1], '1': 2.}
