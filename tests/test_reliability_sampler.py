"""The posterior sampler fails loudly: divergence, bad settings, wrong prior.

Small 16² maps with toy priors whose score is known: a white Gaussian prior
N(0, v) made too steep by a per-chain gain makes chosen chains diverge (the
leapfrog step σ/2 is unstable once gain/(v + σ²) > 16/σ²), so the expected
chain indices are known exactly.
"""

import collections
import math
import warnings
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from astropy.io import fits

from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap.mcmc import AnnealedHamiltonianMonteCarlo
from tfp_massmap.mcmc import ConstantSchedule
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.mcmc import MAX_STABLE_STEP_SIZE_FACTOR
from tfp_massmap.score_network import ScoreNetwork
from tfp_massmap.score_network import load_score_network

N = 16
VARIANCE = 0.02**2  # pixel variance of the toy prior (dimensionless)
FAST = dict(schedule=GeometricSchedule(0.1, 1e-3, num_levels=8), progress=False)

# Few samples cannot resolve the 68 % and 95 % intervals (a documented warning).
pytestmark = pytest.mark.filterwarnings('ignore:.*samples cannot resolve')

ShearMapLike = collections.namedtuple(
    'ShearMapLike', 'shear noise_std mask pixel_scale_arcmin')


def _data(dtype=np.float32, pixel_scale_arcmin=None):
  """Pure-noise shear, uniform noise 0.3, no mask."""
  rng = np.random.default_rng(0)
  noise_std = np.full([N, N], 0.3, dtype)
  shear = (0.3 * rng.standard_normal([N, N, 2])).astype(dtype)
  return ShearMapLike(shear, noise_std, None, pixel_scale_arcmin)


class _GainPrior:
  """White Gaussian prior N(0, v) whose score is ``gains[i]`` times too steep
  on chain i of each batch; its denoiser clips to |κ| ≤ 0.2, so a chain that
  ran away can still return a harmless-looking sample."""

  def __init__(self, gains):
    self._gains = np.asarray(gains, np.float32)

  def score(self, x, sigma):
    gains = tf.constant(self._gains, x.dtype)[:, None, None]
    return -gains * x / (VARIANCE + tf.square(sigma))

  def denoise(self, x, sigma):
    return tf.clip_by_value(VARIANCE / (VARIANCE + tf.square(sigma)) * x,
                            -0.2, 0.2)


class _SpyPrior:
  """A float32 prior at 0.8 arcmin that fails the test if sampling starts."""
  dtype = 'float32'
  pixel_scale_arcmin = 0.8

  def score(self, x, sigma):
    raise AssertionError('sampling started before the arguments were checked')


# --- step size ---------------------------------------------------------------


@pytest.mark.parametrize('factor', [5., 2., math.sqrt(2.), 0., -0.5])
def test_unstable_step_size_factor_is_refused_before_sampling(factor):
  with pytest.raises(ValueError, match='step_size_factor'):
    posterior.sample_posterior(_data(), _SpyPrior(),
                               step_size_factor=factor, **FAST)
  if factor > 0:
    with pytest.raises(ValueError, match=f'step_size_factor must be in '
                       rf'\(0, √2 ≈ 1.4142\).*got {factor!r}'):
      AnnealedHamiltonianMonteCarlo(
          lambda x, sigma: -x, ConstantSchedule(0.1, 1),
          step_size_factor=factor, num_leapfrog_steps=2)


def test_step_size_factor_just_below_the_bound_is_accepted():
  assert MAX_STABLE_STEP_SIZE_FACTOR == math.sqrt(2.)
  kernel = AnnealedHamiltonianMonteCarlo(
      lambda x, sigma: -x, ConstantSchedule(0.1, 1),
      step_size_factor=1.41, num_leapfrog_steps=2)
  assert kernel.step_size_factor == 1.41


# --- divergence --------------------------------------------------------------


def _sample(gains, **kwargs):
  return posterior.sample_posterior(
      _data(), _GainPrior(gains), num_samples=8, batch_size=4, seed=(1, 2),
      **FAST, **kwargs)


@pytest.fixture(scope='module')
def runs():
  """A clean run and the same run with chains 1 and 2 of each batch of 4
  diverging: chain 1 runs away to finite |κ| ~ 1e5 (its clipped sample looks
  harmless), chain 2 to inf/NaN."""
  with warnings.catch_warnings():
    warnings.simplefilter('error', RuntimeWarning)
    clean = _sample([1., 1., 1., 1.])
  with pytest.warns(RuntimeWarning, match='4 of 8 chains diverged'):
    bad = _sample([1., 40., 1e4, 1.])
  return clean, bad


def test_diverged_chains_are_counted_with_their_indices(runs):
  clean, bad = runs
  assert clean.diagnostics['num_diverged_chains'] == 0
  assert clean.diagnostics['diverged_chains'] == []
  d = bad.diagnostics
  assert d['num_diverged_chains'] == 4
  assert d['diverged_chains'] == [1, 2, 5, 6]  # batches of 4: 1, 2 of each
  assert d['divergence_bound'] == 10.
  max_abs = d['max_abs_kappa']
  for good in (0, 3, 4, 7):
    assert max_abs[good] < 1.
  for runaway in (1, 5):  # finite but far beyond any convergence map
    assert 1e3 < max_abs[runaway] < np.inf
    # Its sample is finite and small: only the tracked max reveals it.
    assert np.abs(bad.samples[runaway].numpy()).max() <= 0.2 + 1e-6
  assert max_abs[2] is None and max_abs[6] is None  # went non-finite


def test_divergence_is_detected_under_xla():
  """XLA (the default with a GPU) compiles the same per-chain tracking."""
  with pytest.warns(RuntimeWarning, match='2 of 4 chains diverged'):
    result = posterior.sample_posterior(
        _data(), _GainPrior([1., 40., 1e4, 1.]), num_samples=4, seed=(1, 2),
        jit_compile=True, **FAST)
  assert result.diagnostics['diverged_chains'] == [1, 2]
  assert result.diagnostics['jit_compile']


def test_chains_are_independent_of_the_diverged_ones(runs):
  clean, bad = runs
  good = [0, 3, 4, 7]
  np.testing.assert_array_equal(bad.samples.numpy()[good],
                                clean.samples.numpy()[good])


def test_would_be_acceptance_separates_good_and_diverged_chains(runs):
  clean, bad = runs
  # No Metropolis correction: every proposal is accepted ...
  assert bad.diagnostics['acceptance_rate'] == 1.
  # ... but the energy error of the leapfrog says which chains are sound.
  would_be = bad.diagnostics['would_be_acceptance']
  assert len(would_be) == 8
  assert min(would_be[i] for i in (0, 3, 4, 7)) > 0.85
  assert max(would_be[i] for i in (1, 2, 5, 6)) < 0.7
  assert would_be[2] == 0. and would_be[6] == 0.  # NaN energy error
  assert clean.diagnostics['min_would_be_acceptance'] > 0.85
  assert bad.diagnostics['min_would_be_acceptance'] == 0.
  np.testing.assert_allclose(bad.diagnostics['mean_would_be_acceptance'],
                             np.mean(would_be))


def test_drop_diverged(runs):
  clean, bad = runs
  good = [0, 3, 4, 7]
  dropped = bad.drop_diverged()
  samples = clean.samples.numpy()[good]
  np.testing.assert_array_equal(dropped.samples.numpy(), samples)
  np.testing.assert_allclose(dropped.mean.numpy(), samples.mean(0), atol=1e-7)
  np.testing.assert_allclose(dropped.std.numpy(), samples.std(0), atol=1e-7)
  np.testing.assert_allclose(
      dropped.interval_68.numpy(),
      np.percentile(samples, [16, 84], axis=0, method='weibull'), atol=1e-7)
  d = dropped.diagnostics
  assert d['num_diverged_chains'] == 0 and d['diverged_chains'] == []
  assert d['num_dropped_chains'] == 4 and d['dropped_chains'] == [1, 2, 5, 6]
  assert d['max_abs_kappa'] == [bad.diagnostics['max_abs_kappa'][i]
                                for i in good]
  assert d['min_would_be_acceptance'] > 0.85
  # The input is unchanged; dropping again changes nothing.
  assert bad.diagnostics['num_diverged_chains'] == 4
  assert dropped.drop_diverged() is dropped
  assert clean.drop_diverged() is clean


def test_drop_diverged_needs_two_chains_left():
  with pytest.warns(RuntimeWarning, match='2 of 3 chains diverged'):
    result = posterior.sample_posterior(
        _data(), _GainPrior([1., 40., 1e4]), num_samples=3, seed=(3, 4),
        **FAST)
  with pytest.raises(ValueError, match='fewer than 2 would remain'):
    result.drop_diverged()


def test_divergence_bound_is_configurable_and_checked():
  # With a bound above the runaway chain's reach, only the NaN chain counts.
  with pytest.warns(RuntimeWarning, match='1 of 3 chains diverged'):
    result = posterior.sample_posterior(
        _data(), _GainPrior([1., 40., 1e4]), num_samples=3, seed=(3, 4),
        divergence_bound=1e30, **FAST)
  assert result.diagnostics['diverged_chains'] == [2]
  # A bound the starting states (σ_max = 0.1) could reach is refused.
  with pytest.raises(ValueError, match='divergence_bound=0.5 must exceed'):
    posterior.sample_posterior(_data(), _SpyPrior(), divergence_bound=0.5,
                               **FAST)


# --- arguments ---------------------------------------------------------------


def test_one_sample_gives_no_spread_summaries():
  result = posterior.sample_posterior(
      _data(), _GainPrior([1.]), num_samples=1, seed=(5, 6), **FAST)
  assert result.samples.shape == (1, N, N)
  np.testing.assert_array_equal(result.mean.numpy(), result.samples[0].numpy())
  assert result.std is None
  assert result.interval_68 is None and result.interval_95 is None
  assert result.diagnostics['num_diverged_chains'] == 0
  assert result.drop_diverged() is result


@pytest.mark.parametrize('prior_dtype, data_dtype', [
    ('float32', np.float64), ('float64', np.float32)])
def test_data_and_prior_dtypes_must_agree(prior_dtype, data_dtype):
  prior = _SpyPrior()
  prior.dtype = prior_dtype
  data_name = np.dtype(data_dtype).name
  with pytest.raises(ValueError, match=(
      f'shear has dtype {data_name} but the prior computes in {prior_dtype}; '
      f'pass {prior_dtype} shear')):
    posterior.sample_posterior(_data(data_dtype), prior, **FAST)
  with pytest.raises(ValueError, match=f'shear has dtype {data_name}'):
    posterior.map_estimate(_data(data_dtype), prior)


def test_float64_data_with_a_float32_network_or_gaussian_prior():
  data = _data(np.float64)
  network = ScoreNetwork(depth=1, base_channels=4, embedding_dim=8, seed=0)
  gaussian = priors.GaussianPrior(tf.ones([N, N]))  # float32
  for prior in (network, gaussian):
    with pytest.raises(ValueError, match='pass float32 shear.*or a float64 '
                       'prior'):
      posterior.sample_posterior(data, prior, **FAST)
  # The fix named in the message works.
  result = posterior.sample_posterior(
      data._replace(shear=data.shear.astype(np.float32),
                    noise_std=data.noise_std.astype(np.float32)), network,
      num_samples=2, seed=(9, 9), schedule=GeometricSchedule(0.1, 1e-3, 2),
      progress=False)
  assert result.samples.dtype == tf.float32
  assert np.all(np.isfinite(result.samples.numpy()))


def test_pixel_scale_must_match_the_prior():
  at_029 = _data(pixel_scale_arcmin=0.29)
  with pytest.raises(ValueError, match='the data have 0.29 arcmin pixels but '
                     'the prior is valid at 0.8 arcmin'):
    posterior.sample_posterior(at_029, _SpyPrior(), **FAST)
  with pytest.raises(ValueError, match='allow_pixel_scale_mismatch=True'):
    posterior.sample_posterior(at_029, _SpyPrior(), **FAST)
  with pytest.raises(ValueError, match='0.29 arcmin pixels'):
    posterior.map_estimate(at_029, _SpyPrior())
  with pytest.raises(ValueError, match='allow_pixel_scale_mismatch must be'):
    posterior.sample_posterior(at_029, _SpyPrior(),
                               allow_pixel_scale_mismatch='yes', **FAST)


def test_pixel_scale_override_and_tolerance():
  prior = _GainPrior([1., 1.])
  prior.pixel_scale_arcmin = 0.8
  result = posterior.sample_posterior(
      _data(pixel_scale_arcmin=0.29), prior, num_samples=2, seed=(7, 8),
      allow_pixel_scale_mismatch=True, **FAST)
  assert result.diagnostics['pixel_scale_arcmin'] == 0.29
  assert result.diagnostics['prior_pixel_scale_arcmin'] == 0.8
  # Within 1 %: accepted without the override.
  one_map_prior = _GainPrior([1.])
  one_map_prior.pixel_scale_arcmin = 0.8
  two_levels = GeometricSchedule(0.1, 1e-3, num_levels=2)
  _, info = posterior.map_estimate(_data(pixel_scale_arcmin=0.805),
                                   one_map_prior, schedule=two_levels)
  assert info['pixel_scale_arcmin'] == 0.805
  # Unknown on either side: nothing to check.
  _, info = posterior.map_estimate(_data(pixel_scale_arcmin=0.29),
                                   _GainPrior([1.]), schedule=two_levels)
  assert info['prior_pixel_scale_arcmin'] is None


# --- prior files -------------------------------------------------------------


def _fits_file(path):
  fits.PrimaryHDU(np.zeros([4, 4], np.float32)).writeto(path)
  return path


@pytest.mark.parametrize('make, error, match', [
    (lambda d: d / 'missing.keras', FileNotFoundError, 'does not exist'),
    (lambda d: d, ValueError, 'is a directory'),
    (lambda d: (d / 'notes.txt').write_text('hello') and d / 'notes.txt',
     ValueError, 'is not a Keras archive .* it is a text file'),
    (lambda d: (d / 'fake.keras').write_text('hello') and d / 'fake.keras',
     ValueError, 'fake.keras is not a Keras archive .* it is a text file'),
    (lambda d: _fits_file(d / 'map.fits'), ValueError, 'it is a FITS file'),
    (lambda d: (d / 'empty.keras').write_bytes(b'') or d / 'empty.keras',
     ValueError, 'it is empty'),
])
def test_non_keras_prior_files_are_named_and_explained(tmp_path, make, error,
                                                       match):
  path = make(tmp_path)
  with pytest.raises(error, match=match) as info:
    load_score_network(path)
  assert str(path) in str(info.value)


def test_zip_archives_that_are_not_usable_keras_files(tmp_path):
  other = tmp_path / 'other.keras'
  with zipfile.ZipFile(other, 'w') as archive:
    archive.writestr('readme.txt', 'not a model')
  with pytest.raises(ValueError, match='other.keras is a zip archive but not '
                     'a Keras archive: it has no config.json'):
    load_score_network(other)
  model = tmp_path / 'model.keras'
  ScoreNetwork(depth=1, base_channels=4, embedding_dim=8, seed=0).save(model)
  renamed = tmp_path / 'model.zip'
  model.rename(renamed)
  with pytest.raises(ValueError, match='model.zip is a Keras archive without '
                     'the .keras extension'):
    load_score_network(renamed)
