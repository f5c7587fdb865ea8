"""sample_posterior and map_estimate against the exact Gaussian posterior.

With the analytic Gaussian prior the posterior is Gaussian; on a 32² map its
mean and per-pixel standard deviation are computed here by a dense float64
solve, C = S − S Aᵀ (A S Aᵀ + N)⁻¹ A S on the observed shear components,
independently of the package's conjugate-gradient Wiener filter. The data
have a COSMOS-like mask (footprint and star holes) and non-uniform noise.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import gaussian_prior
from tfp_massmap import lensing
from tfp_massmap import lognormal
from tfp_massmap import power_spectrum
from tfp_massmap import survey
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.posterior import PosteriorSamples
from tfp_massmap.posterior import credible_interval
from tfp_massmap.posterior import map_estimate
from tfp_massmap.posterior import sample_posterior

NPIX = 32
PIXEL_ARCMIN = 3.2

# An annealing that meets the targets on this problem with 62 score
# evaluations per sample (benchmarks/annealed_hmc_gaussian.py).
FAST = dict(sigma_max=0.05, sigma_min=1e-3, num_levels=12,
            num_leapfrog_steps=5, step_size_factor=1.0)


@pytest.fixture(scope='module')
def problem():
  ell, cl = lognormal.cosmos_convergence_cl()
  spectrum = power_spectrum.power_spectrum_grid(
      ell, cl, NPIX, PIXEL_ARCMIN, tf.float64).numpy()
  data = survey.cosmos_like_survey(NPIX, PIXEL_ARCMIN, seed=0)
  mask = data['mask']
  ramp = np.linspace(0.7, 2.0, NPIX)[None, :, None]  # noise varies 3x
  noise_std = (data['noise_std'] * ramp).astype(np.float32)
  rng = np.random.default_rng(0)
  kappa = gaussian_prior.fourier_filter(
      rng.standard_normal((NPIX, NPIX)), np.sqrt(spectrum)).numpy()
  shear = lensing.shear_from_convergence(kappa).numpy()
  shear = np.where(mask[..., None] > 0,
                   shear + noise_std * rng.standard_normal(shear.shape), 0.)

  eye = np.eye(NPIX * NPIX).reshape(-1, NPIX, NPIX)
  a = lensing.shear_from_convergence(eye).numpy().reshape(NPIX * NPIX, -1).T
  s = gaussian_prior.fourier_filter(eye, spectrum).numpy().reshape(
      NPIX * NPIX, -1)
  observed = np.broadcast_to(mask[..., None] > 0, shear.shape).ravel()
  a_obs = a[observed]
  s_at = s @ a_obs.T
  gram = a_obs @ s_at + np.diag(
      noise_std.astype(np.float64).ravel()[observed]**2)
  mean = s_at @ np.linalg.solve(gram, shear.ravel()[observed])
  cov = s - s_at @ np.linalg.solve(gram, s_at.T)
  return dict(
      shear=shear.astype(np.float32), noise_std=noise_std, mask=mask,
      prior=gaussian_prior.GaussianPrior(tf.constant(spectrum, tf.float32)),
      mean=mean.reshape(NPIX, NPIX),
      std=np.sqrt(np.diag(cov)).reshape(NPIX, NPIX))


def _data(problem):
  return problem['shear'], problem['noise_std'], problem['mask']


def _errors(mean, std, problem, where):
  """(RMS mean error / RMS exact std, std ratio) on the selected pixels."""
  exact_var = problem['std'][where]**2
  mean_error = np.sqrt(np.mean((mean[where] - problem['mean'][where])**2) /
                       np.mean(exact_var))
  std_ratio = np.sqrt(np.mean(std[where]**2) / np.mean(exact_var))
  return mean_error, std_ratio


def test_annealed_hmc_matches_exact_gaussian_posterior(problem):
  result = sample_posterior(*_data(problem), problem['prior'],
                            num_samples=256, seed=(1, 2), progress=False,
                            **FAST)
  assert isinstance(result, PosteriorSamples)
  # Monte Carlo floor of the mean error with 256 chains: 1/16 = 0.0625.
  for where in (np.ones([NPIX, NPIX], bool), problem['mask'] > 0):
    mean_error, std_ratio = _errors(result.mean.numpy(), result.std.numpy(),
                                    problem, where)
    assert mean_error <= 0.1
    assert 0.9 <= std_ratio <= 1.1
  d = result.diagnostics
  # 1 bootstrap + 12 steps x 5 leapfrog + 1 Tweedie step.
  assert d['score_evaluations_per_sample'] == 62
  assert d['num_score_evaluations'] == 62 * 256
  assert d['acceptance_rate'] == 1.
  assert d['wall_time_s'] > 0 and d['num_steps'] == 12
  # No chain diverged, and the leapfrog is accurate (0.92 measured).
  assert d['num_diverged_chains'] == 0 and d['diverged_chains'] == []
  assert 0.85 < d['mean_would_be_acceptance'] < 1.


def test_too_short_annealing_is_detected(problem):
  """The exactness check can fail: 4 levels of 1 leapfrog step are too few."""
  result = sample_posterior(
      *_data(problem), problem['prior'], num_samples=128, seed=(1, 2),
      progress=False, sigma_max=0.1, sigma_min=1e-3, num_levels=4,
      num_leapfrog_steps=1, step_size_factor=1.0)
  _, std_ratio = _errors(result.mean.numpy(), result.std.numpy(), problem,
                         np.ones([NPIX, NPIX], bool))
  assert std_ratio > 1.1


def test_mala_matches_exact_gaussian_posterior(problem):
  result = sample_posterior(
      *_data(problem), problem['prior'], num_samples=128, method='mala',
      sigma_max=0.05, sigma_min=1e-3, num_levels=60, step_size_factor=1.3,
      seed=(3, 4), progress=False)
  mean_error, std_ratio = _errors(result.mean.numpy(), result.std.numpy(),
                                  problem, np.ones([NPIX, NPIX], bool))
  assert mean_error <= 0.15  # floor 1/√128 = 0.088
  assert 0.9 <= std_ratio <= 1.1
  d = result.diagnostics
  assert d['metropolis_correction'] and d['num_leapfrog_steps'] == 1
  assert 0.3 < d['acceptance_rate'] < 1.
  # Bootstrap, 60 one-step leapfrogs, a refresh at each of the 59 new noise
  # levels (the Metropolis test needs the end score at the step's σ), Tweedie.
  assert d['score_evaluations_per_sample'] == 1 + 60 + 59 + 1


def test_summaries_seeds_and_batches(problem):
  args = _data(problem)
  kwargs = dict(num_samples=12, batch_size=6, sigma_max=0.05, sigma_min=1e-3,
                num_levels=3, num_leapfrog_steps=2, seed=(5, 6),
                progress=False)
  with pytest.warns(UserWarning, match='12 samples cannot resolve a 95%'):
    result = sample_posterior(*args, problem['prior'], **kwargs)
  samples = result.samples.numpy()
  assert samples.shape == (12, NPIX, NPIX)
  assert result.diagnostics['batch_size'] == 6
  # Each batch has its own seed.
  assert not np.allclose(samples[:6], samples[6:])
  np.testing.assert_allclose(result.mean.numpy(), samples.mean(0), atol=1e-6)
  np.testing.assert_allclose(result.std.numpy(), samples.std(0), atol=1e-6)
  # Plotting positions q(S + 1) (numpy's 'weibull'); 12 samples cannot
  # resolve 95 %, so that interval is [min, max].
  np.testing.assert_allclose(
      result.interval_68.numpy(),
      np.percentile(samples, [16, 84], axis=0, method='weibull'), atol=1e-6)
  np.testing.assert_allclose(
      result.interval_95.numpy(),
      np.stack([samples.min(0), samples.max(0)]), atol=1e-6)
  assert np.all(result.interval_95[0] <= result.interval_68[0])
  assert np.all(result.interval_68[1] <= result.interval_95[1])
  # The Tweedie step removes the mean mode, on which the Gaussian prior puts
  # no variance.
  np.testing.assert_allclose(samples.mean(axis=(1, 2)), 0., atol=1e-6)
  # Same seed, same samples; a ShearMap-like object is the same data.
  ShearMapLike = collections.namedtuple('ShearMapLike',
                                        'shear noise_std mask')
  with pytest.warns(UserWarning):
    again = sample_posterior(ShearMapLike(*args), prior=problem['prior'],
                             **kwargs)
  np.testing.assert_array_equal(again.samples.numpy(), samples)


@pytest.mark.parametrize('num_samples', [16, 40])
def test_credible_intervals_cover_a_further_draw(num_samples):
  """A further draw from the sampled distribution falls inside the interval
  with the nominal probability, for few samples too (skewed distribution)."""
  rng = np.random.default_rng(0)
  draws = rng.lognormal(sigma=0.5, size=(num_samples + 1, 200_000))
  samples, truth = draws[:-1], draws[-1]
  levels = (0.68, 0.95) if num_samples >= 39 else (0.5, 0.68)
  for level in levels:
    lower, upper = credible_interval(tf.constant(samples), level).numpy()
    hit = np.mean((truth >= lower) & (truth <= upper))
    # Interpolating between order statistics leaves < 1 point of bias.
    assert abs(hit - level) < 0.01, (level, hit)
  # The usual positions q(S - 1) fall short with 16 samples.
  if num_samples == 16:
    lower, upper = np.percentile(samples, [16, 84], axis=0)
    assert np.mean((truth >= lower) & (truth <= upper)) < 0.63


def test_credible_interval_bad_input():
  with pytest.raises(ValueError, match='level must be in'):
    credible_interval(tf.zeros([4, 3]), 95)
  with pytest.raises(ValueError, match='at least 2 samples'):
    credible_interval(tf.zeros([1, 3]), 0.68)
  with pytest.warns(UserWarning, match='needs 39'):
    lower, upper = credible_interval(tf.constant([[1.], [3.], [2.]]), 0.95)
  np.testing.assert_array_equal([lower, upper], [[1.], [3.]])


def test_schedule_object_and_nan_outside_mask(problem):
  shear, noise_std, mask = _data(problem)
  shear = np.where(mask[..., None] > 0, shear, np.nan)  # NaN off the mask
  result = sample_posterior(
      shear, noise_std, mask, problem['prior'], num_samples=4,
      schedule=GeometricSchedule(0.05, 1e-3, num_levels=2),
      num_leapfrog_steps=1, tweedie=False, seed=(7, 8), progress=False)
  assert np.all(np.isfinite(result.samples.numpy()))
  assert result.diagnostics['score_evaluations_per_sample'] == 1 + 2


def test_map_estimate_is_the_wiener_filter(problem):
  kappa, info = map_estimate(*_data(problem), problem['prior'],
                             sigma_max=0.05, sigma_min=1e-3, num_levels=100,
                             step_size_factor=0.9)
  assert kappa.shape == (NPIX, NPIX)
  mean_error, _ = _errors(kappa.numpy(), problem['std'], problem,
                          np.ones([NPIX, NPIX], bool))
  assert mean_error <= 0.05
  assert info['num_score_evaluations'] == 100


def test_map_estimate_same_with_xla(problem):
  kwargs = dict(sigma_max=0.05, sigma_min=1e-3, num_levels=10)
  plain, _ = map_estimate(*_data(problem), problem['prior'],
                          jit_compile=False, **kwargs)
  compiled, _ = map_estimate(*_data(problem), problem['prior'],
                             jit_compile=True, **kwargs)
  np.testing.assert_allclose(compiled.numpy(), plain.numpy(), rtol=1e-4,
                             atol=1e-6)


@pytest.mark.slow
def test_sample_posterior_with_xla_matches_exact_posterior(problem):
  """XLA (the default on GPU); its stateless RNG differs, so compare moments."""
  result = sample_posterior(*_data(problem), problem['prior'],
                            num_samples=256, seed=(1, 2), progress=False,
                            jit_compile=True, **FAST)
  mean_error, std_ratio = _errors(result.mean.numpy(), result.std.numpy(),
                                  problem, np.ones([NPIX, NPIX], bool))
  assert mean_error <= 0.1
  assert 0.9 <= std_ratio <= 1.1
  assert result.diagnostics['jit_compile']
  assert result.diagnostics['score_evaluations_per_sample'] == 62


class _DepthPrior:
  """A stand-in for a network prior needing maps divisible by 2**depth."""
  depth = 3

  def score(self, x, sigma):
    del sigma
    return -x


@pytest.mark.parametrize('change, match', [
    (dict(shear_nan_inside=True), 'non-finite value'),
    (dict(mask=np.zeros([NPIX, NPIX], np.float32)), 'no pixel with data'),
    (dict(noise_std=np.zeros([NPIX, NPIX, 2], np.float32)), 'noise_std holds'),
    (dict(noise_std=np.ones([NPIX, 16], np.float32)), 'noise_std must have'),
    (dict(shear=np.zeros([NPIX, NPIX], np.float32)), 'shear must be one map'),
    (dict(mask=np.ones([16, 16], np.float32)), 'mask must have shape'),
    (dict(prior=gaussian_prior.GaussianPrior(tf.ones([16, 16]))),
     'defined on 16x16 maps but the shear map is 32x32'),
    (dict(prior=object()), 'score'),
    (dict(kwargs=dict(method='nuts')), 'method must be one of'),
    (dict(kwargs=dict(method='mala', num_leapfrog_steps=3)),
     'one leapfrog step'),
    (dict(kwargs=dict(method='ula', metropolis_correction=True)),
     'metropolis_correction=False'),
    (dict(kwargs=dict(schedule=GeometricSchedule(0.1, 0.01, 3),
                      sigma_max=0.2)), 'either schedule or its parameters'),
    (dict(kwargs=dict(num_samples=0)), 'num_samples'),
    (dict(kwargs=dict(initial_state=np.zeros([3, 3]))), 'initial_state'),
])
def test_bad_inputs_raise(problem, change, match):
  shear, noise_std, mask = _data(problem)
  if change.get('shear_nan_inside'):
    shear = shear.copy()
    inside = np.argwhere(mask > 0)[0]
    shear[inside[0], inside[1], 0] = np.nan
  args = dict(shear=change.get('shear', shear),
              noise_std=change.get('noise_std', noise_std),
              mask=change.get('mask', mask),
              prior=change.get('prior', problem['prior']))
  with pytest.raises(ValueError, match=match):
    sample_posterior(**args, **change.get('kwargs', {}), progress=False)


def test_prior_size_divisor_and_repeated_data_raise(problem):
  shear, noise_std, mask = _data(problem)
  n = 20  # not divisible by 2**3
  with pytest.raises(ValueError, match='divisible by 2\\*\\*depth = 8'):
    sample_posterior(shear[:n, :n], noise_std[:n, :n], mask[:n, :n],
                     _DepthPrior(), progress=False)
  ShearMapLike = collections.namedtuple('ShearMapLike',
                                        'shear noise_std mask')
  with pytest.raises(ValueError, match='do not pass them again'):
    sample_posterior(ShearMapLike(shear, noise_std, mask), noise_std,
                     prior=problem['prior'], progress=False)
  with pytest.raises(ValueError, match='step_size_factor must be in'):
    map_estimate(shear, noise_std, mask, problem['prior'],
                 step_size_factor=1.5)
