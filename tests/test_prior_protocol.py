"""The prior protocol: members, defaults, check_prior's refusals, denoise."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import priors
from tfp_massmap.score_network import ScoreNetwork

ShearMapLike = collections.namedtuple(
    'ShearMapLike', 'shear noise_std mask pixel_scale_arcmin')


class _ScoreOnly:
  """The smallest prior: a white Gaussian N(0, v) known by its score."""

  variance = 0.25

  def score(self, x, sigma):
    variance = self.variance + tf.square(tf.cast(sigma, x.dtype))
    return -x / variance[..., tf.newaxis, tf.newaxis]


def _shear_map(n=16, pixel_scale_arcmin=0.8):
  return ShearMapLike(np.zeros([n, n, 2], np.float32),
                      np.ones([n, n], np.float32), np.ones([n, n], np.float32),
                      pixel_scale_arcmin)


def _gaussian(n=16, pixel_scale_arcmin=0.8, dtype=tf.float32):
  ell, cl = cosmology.cosmos_convergence_cl()
  return priors.GaussianPrior.from_power_spectrum(ell, cl, n,
                                                  pixel_scale_arcmin,
                                                  dtype=dtype)


def _network(depth=2, **kwargs):
  return ScoreNetwork(depth=depth, base_channels=4, embedding_dim=8, seed=0,
                      **kwargs)


# --- members -----------------------------------------------------------------


def test_a_score_method_alone_is_a_prior_with_the_documented_defaults():
  assert priors.prior_properties(_ScoreOnly()) == priors.PriorProperties(
      dtype=None, pixel_scale_arcmin=None, num_pixels_per_side=None,
      size_divisor=1, smoothed_score=True)
  check = priors.check_prior(_ScoreOnly(), _shear_map(n=12),
                             dtype=np.float64)
  assert check == priors.PriorCheck(num_pixels_per_side=12,
                                    dtype=tf.float64, pixel_scale_arcmin=0.8,
                                    prior_pixel_scale_arcmin=None)


def test_shipped_prior_classes_declare_every_member():
  assert priors.prior_properties(_gaussian(dtype=tf.float64)) == (
      priors.PriorProperties(dtype=tf.float64, pixel_scale_arcmin=0.8,
                             num_pixels_per_side=16, size_divisor=1,
                             smoothed_score=True))
  network = _network(depth=3, gaussian_pixel_scale_arcmin=0.29)
  assert priors.prior_properties(network) == priors.PriorProperties(
      dtype=tf.float32, pixel_scale_arcmin=0.29, num_pixels_per_side=None,
      size_divisor=8, smoothed_score=True)
  for prior in (_gaussian(), network):
    for member in ('score', 'denoise', 'dtype', 'pixel_scale_arcmin',
                   'num_pixels_per_side', 'size_divisor', 'smoothed_score'):
      assert hasattr(prior, member), (type(prior).__name__, member)


@pytest.mark.parametrize('member, value, match', [
    ('dtype', 'int32', 'prior.dtype must be float32 or float64, got int32'),
    ('dtype', 'kappa', "prior.dtype must be float32 or float64.*'kappa'"),
    ('pixel_scale_arcmin', -0.8, 'prior.pixel_scale_arcmin must be a '
     'positive number in arcmin'),
    ('num_pixels_per_side', 16.5, 'prior.num_pixels_per_side must be an '
     'integer >= 1'),
    ('size_divisor', 0, 'prior.size_divisor must be an integer >= 1, got 0'),
    ('smoothed_score', 'yes', 'prior.smoothed_score must be a Python bool'),
])
def test_malformed_members_are_named(member, value, match):
  prior = _ScoreOnly()
  setattr(prior, member, value)
  with pytest.raises(ValueError, match=match):
    priors.check_prior(prior, 16)


def test_an_object_without_a_score_is_refused():
  for prior in (None, object(), tf.ones([16, 16])):
    with pytest.raises(ValueError, match='prior must have a score'):
      priors.check_prior(prior, 16)


# --- check_prior -------------------------------------------------------------


def test_map_size_and_size_divisor():
  with pytest.raises(ValueError, match='defined on 16x16 maps but the shear '
                     'map is 32x32'):
    priors.check_prior(_gaussian(n=16), _shear_map(n=32))
  with pytest.raises(ValueError, match='divisible by its size_divisor = 4; '
                     'the shear map is 18x18'):
    priors.check_prior(_network(depth=2), 18)
  assert priors.check_prior(_network(depth=2), 20).num_pixels_per_side == 20
  with pytest.raises(ValueError, match='shear_map_or_n'):
    priors.check_prior(_ScoreOnly(), 16.)
  with pytest.raises(ValueError, match=r'shear must be a square map'):
    priors.check_prior(_ScoreOnly(), ShearMapLike(
        np.zeros([16, 8, 2]), None, None, None))


@pytest.mark.parametrize('prior_dtype, data_dtype', [
    (tf.float32, np.float64), (tf.float64, np.float32)])
def test_dtype_mismatch_names_both_fixes(prior_dtype, data_dtype):
  data = np.dtype(data_dtype).name
  with pytest.raises(ValueError, match=(
      f'shear has dtype {data} but the prior computes in {prior_dtype.name}; '
      f'pass {prior_dtype.name} shear, noise_std and mask.*or a {data} '
      'prior')):
    priors.check_prior(_gaussian(dtype=prior_dtype), 16, dtype=data_dtype)
  # No data dtype given: not checked.
  assert priors.check_prior(_gaussian(dtype=prior_dtype), 16).dtype is None
  with pytest.raises(ValueError, match='dtype must be float32 or float64'):
    priors.check_prior(_ScoreOnly(), 16, dtype=tf.int32)


def test_pixel_scale_mismatch_tolerance_and_override():
  prior = _gaussian(pixel_scale_arcmin=0.8)
  with pytest.raises(ValueError, match=(
      r'the data have 0\.29 arcmin pixels but the prior is valid at 0\.8 '
      r'arcmin pixels \(they differ by more than 1%\).*pixels of 0\.29 '
      r'arcmin.*pixel_scale_arcmin=0\.29\)\), or pass '
      r'allow_pixel_scale_mismatch=True')):
    priors.check_prior(prior, _shear_map(pixel_scale_arcmin=0.29))
  # The same from a bare N with the keyword; a caller without an override.
  with pytest.raises(ValueError, match=r'0\.29 arcmin pixels') as error:
    priors.check_prior(prior, 16, pixel_scale_arcmin=0.29,
                       allow_pixel_scale_mismatch=None)
  assert 'allow_pixel_scale_mismatch' not in str(error.value)
  # Within 1 %: accepted; with the override: accepted and reported.
  assert priors.check_prior(prior, 16, pixel_scale_arcmin=0.807) == (
      priors.PriorCheck(16, None, 0.807, 0.8))
  check = priors.check_prior(prior, _shear_map(pixel_scale_arcmin=0.29),
                             allow_pixel_scale_mismatch=True)
  assert (check.pixel_scale_arcmin, check.prior_pixel_scale_arcmin) == (
      0.29, 0.8)
  # Unknown on either side: not checked.
  assert priors.check_prior(prior, _shear_map(pixel_scale_arcmin=None)) == (
      priors.PriorCheck(16, None, None, 0.8))
  assert priors.check_prior(_ScoreOnly(), _shear_map(pixel_scale_arcmin=0.29)
                           ).prior_pixel_scale_arcmin is None


def test_pixel_scale_arguments_are_checked():
  with pytest.raises(ValueError, match='contradicts the pixel scale the shear '
                     'map carries, 0.29 arcmin'):
    priors.check_prior(_ScoreOnly(), _shear_map(pixel_scale_arcmin=0.29),
                       pixel_scale_arcmin=0.8)
  with pytest.raises(ValueError, match='allow_pixel_scale_mismatch must be a '
                     "Python bool, got 'yes'"):
    priors.check_prior(_ScoreOnly(), 16, allow_pixel_scale_mismatch='yes')
  with pytest.raises(ValueError, match='shear.pixel_scale_arcmin must be a '
                     'positive number'):
    priors.check_prior(_ScoreOnly(), _shear_map(pixel_scale_arcmin=0.))
  with pytest.raises(ValueError, match='pixel_scale_arcmin must be a positive'):
    priors.check_prior(_ScoreOnly(), 16, pixel_scale_arcmin=float('nan'))


def test_a_score_at_sigma_zero_only_is_refused_where_annealing_needs_more():
  prior = _ScoreOnly()
  prior.smoothed_score = False
  with pytest.raises(ValueError, match='score at sigma = 0 only.*'
                     'lognormal_posterior'):
    priors.check_prior(prior, 16)
  assert priors.check_prior(prior, 16, smoothed_score=False) == (
      priors.PriorCheck(16, None, None, None))


# --- denoise -----------------------------------------------------------------


def test_denoise_is_the_prior_s_or_tweedie_s_formula():
  x = tf.constant(np.random.default_rng(0).standard_normal([3, 8, 8]))
  sigma = tf.constant([0.1, 0.5, 1.], tf.float64)
  # White N(0, v): E[κ | x] = v / (v + σ²) x, per map.
  expected = (0.25 / (0.25 + sigma**2))[:, None, None] * x
  np.testing.assert_allclose(priors.denoise(_ScoreOnly(), x, sigma), expected,
                             rtol=1e-12)
  np.testing.assert_allclose(priors.denoise(_ScoreOnly(), x, 0.5),
                             0.25 / 0.5 * x, rtol=1e-12)
  gaussian = _gaussian(n=8, dtype=tf.float64)
  np.testing.assert_array_equal(priors.denoise(gaussian, x, sigma),
                                gaussian.denoise(x, sigma))
