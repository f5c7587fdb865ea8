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
  # The draws' fit to the data (likelihood.data_fit), for samplers only:
  # these draws sample the exact posterior, so z is that of a χ² variable.
  fit = methods['posterior']['data_fit']
  assert fit['dof'] == 2 * np.sum(np.asarray(data.mask) != 0)
  assert abs(fit['z']) < 3., fit
  assert 'data_fit' not in methods['wiener']
  # Without a truth: no accuracy entries; the data fit stays.
  plain = pipeline.summarise(data, results)
  assert 'rmse' not in plain['methods']['ks']
  assert plain['methods']['posterior']['data_fit'] == fit
  # The same draws against noise stated 2× too large fit "too well".
  with pytest.warns(RuntimeWarning,
                    match=r'posterior: its draws fit the shear .* z = -'):
    pipeline.summarise(
        data._replace(noise_std=2. * np.asarray(data.noise_std)), results)


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


def test_jit_compile_option_reaches_the_sampler(problem):
  """XLA on or off as asked (None: off on this CPU), same posterior."""
  data, _, prior, exact_mean = problem
  scale = np.std(exact_mean)
  for jit_compile, expected in ((None, False), (True, True), (False, False)):
    post = pipeline.run_estimators(
        data, ['posterior'], _options(prior, jit_compile=jit_compile))[
            'posterior']
    assert post.report['jit_compile'] is expected
    assert np.sqrt(np.mean((post.kappa - exact_mean)**2)) < 0.5 * scale


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


def _bump(n, y0, x0, height, width=1.5):
  rows = np.arange(n)
  return height * np.exp(-0.5 * ((rows[:, None] - y0)**2 +
                                 (rows[None, :] - x0)**2) / width**2)


def test_peak_tables_cross_match_known_clusters():
  from tfp_massmap import demo  # pylint: disable=g-import-not-at-top
  from tfp_massmap.mcmc import results  # pylint: disable=g-import-not-at-top
  shear_map, _ = demo.demo_problem(index=0, noise_seed=0)
  shear_map = shear_map._replace(mask=np.ones_like(np.asarray(shear_map.mask)))
  n = shear_map.mask.shape[0]
  rng = np.random.default_rng(0)
  # 10 samples with white noise of std 0.01: bump A at (y, x) = (40, 50) in
  # every sample (the mean's S/N is about 20); bump B at (90, 30) in 7 of
  # them, where each of those 7 has S/N 1/√(0.7 · 0.3) = 2.18 but the mean
  # only 0.7 of it: B is in no catalogue above S/N 2, and its probability
  # at a cluster's position is at most 0.7 (S/N = sample / std is nearly
  # flat across B, where std follows the bump: noise decides whether the
  # maximum in the disc is a strict local maximum, measured 4 of the 7).
  samples = 0.01 * rng.standard_normal((10, n, n))
  samples += _bump(n, 40, 50, 0.2)
  samples[:7] += _bump(n, 90, 30, 0.5)
  post = results.from_samples(tf.constant(samples), {})
  result = pipeline.EstimatorResult(np.asarray(post.mean), 0., {}, post)
  ra, dec = shear_map.wcs.pixel_to_world_values([50, 30, 10], [40, 90, 10])
  clusters = np.zeros(3, dtype=[('id', np.int64), ('ra', float), ('dec', float),
                                ('z', float), ('m500', float)])
  clusters['id'], clusters['ra'], clusters['dec'] = [7, 8, 9], ra, dec
  clusters['z'], clusters['m500'] = [0.3, 0.5, 0.7], [6.0, 8.0, 1.0]
  peaks, matched = pipeline.peak_tables(shear_map, result, threshold_snr=2.0,
                                        match_radius_arcmin=2.0,
                                        clusters=clusters, min_m500=5.0)
  top = np.argmax(peaks['snr'])
  assert (peaks['x'][top], peaks['y'][top]) == (50, 40)
  assert peaks['probability'][top] == 1.0
  assert peaks['nearest_cluster_id'][top] == 7
  assert peaks['nearest_cluster_arcmin'][top] == pytest.approx(0.0, abs=1e-6)
  assert not np.any((np.abs(peaks['x'] - 30) <= 2) & (np.abs(peaks['y'] - 90) <= 2))
  # The 1e13 group is below the cut.
  np.testing.assert_array_equal(matched['id'], [7, 8])
  assert matched['peak_probability'][0] == 1.0
  assert 0.3 <= matched['peak_probability'][1] <= 0.7
  assert matched['nearest_peak_arcmin'][0] == pytest.approx(0.0, abs=1e-6)
  assert matched['nearest_peak_arcmin'][1] > 2.0
  with pytest.raises(ValueError, match='threshold_snr must be a positive'):
    pipeline.peak_tables(shear_map, result, threshold_snr=0.0)
  # The null level: random positions. Far above the noise (S/N 10) no
  # sample has a peak anywhere but at A (a few of 400 positions are near
  # it); at S/N 2 noise alone often does (each sample's S/N is N(0, 1)).
  high = pipeline.peak_probability_baseline(shear_map, result, threshold_snr=10.0)
  low = pipeline.peak_probability_baseline(shear_map, result, threshold_snr=2.0)
  assert high['num_positions'] == 400 and high['median'] == 0.0
  assert high['mean'] < 0.02 < low['mean'] < low['p84'] <= low['p95'] <= 1.0
  small = shear_map._replace(mask=np.pad(np.ones((3, 3)), ((0, n - 3), (0, n - 3))))
  assert pipeline.peak_probability_baseline(small, result)['num_positions'] == 9


def test_statistics_summary_is_the_statistics_of_the_maps(problem):
  from tfp_massmap import statistics  # pylint: disable=g-import-not-at-top
  from tfp_massmap.mcmc import results  # pylint: disable=g-import-not-at-top
  data, truth, _, _ = problem
  truth = np.asarray(truth, np.float64)
  # Identical samples: every band collapses onto that map's statistic.
  post = results.from_samples(tf.constant(np.stack([truth] * 4)), {})
  given = {'posterior': pipeline.EstimatorResult(truth, 0., {}, post)}
  stats = pipeline.statistics_summary(data, given, smoothing_arcmin=6.4)
  mine = stats['methods']['posterior']
  for key, band in stats['posterior_bands'].items():
    np.testing.assert_allclose(band['lower_95'], mine[key], rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(band['upper_68'], mine[key], rtol=1e-6, atol=1e-12)
  mask = np.asarray(data.mask, np.float64)
  centred = truth - truth[mask > 0].mean()
  _, power = statistics.masked_power_spectrum(
      centred, PIXEL_ARCMIN, mask=mask,
      ell_edges=pipeline.power_spectrum.default_ell_edges(NPIX, PIXEL_ARCMIN, 12))
  np.testing.assert_allclose(mine['power_spectrum'], power.numpy(), rtol=1e-10)
  # Bins in units of the smoothed map's rms: its variance is σ_ref².
  assert mine['variance'] == pytest.approx(stats['sigma_ref']**2, rel=1e-6)


def test_a_joint_prior_runs_the_joint_posterior(problem):
  """With a JointPrior the posterior estimator is sample_joint_posterior.

  Same data, settings and seed through the pipeline and directly: the same
  κ and θ samples, and the report's parameter summary is theirs.
  """
  from tfp_massmap import joint_posterior  # pylint: disable=g-import-not-at-top
  from tfp_massmap.priors import conditional  # pylint: disable=g-import-not-at-top
  data, _, prior, _ = problem
  joint = conditional.AmplitudeGaussianPrior(prior, (0.5, 2.0))
  options = _options(joint)
  result = pipeline.run_estimators(data, ['posterior'], options)['posterior']
  direct = joint_posterior.sample_joint_posterior(
      data, joint, num_samples=16, schedule=options.schedule,
      num_leapfrog_steps=5, step_size_factor=1., seed=(1, 2), progress=False)
  np.testing.assert_array_equal(result.posterior.parameters['amplitude'],
                                direct.parameters['amplitude'])
  np.testing.assert_array_equal(result.posterior.samples, direct.samples)
  assert result.report['parameters'] == joint_posterior.parameter_summary(
      direct)
  assert set(result.report['parameters']['amplitude']) == {
      'mean', 'std', 'interval_68', 'interval_95'}
  # A κ-only prior has no parameters.
  plain = pipeline.run_estimators(data, ['posterior'], _options(prior))
  assert plain['posterior'].posterior.parameters is None
  assert 'parameters' not in plain['posterior'].report
