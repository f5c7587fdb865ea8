"""API contracts of the classical and likelihood modules (issue 11, part 6).

Each test pins what a user sees for one bad or awkward input: a NaN shear
pixel in Kaiser-Squires, an unconverged Wiener filter, bad noise or mask
values and mismatched dtypes in `ShearLikelihood` and the Wiener filter, a
`ShearMap` given to the classical solvers, the gradient of
`GaussianPrior.log_prob` (no complex-cast warnings), the prior's pixel scale
and ``tm.demo``.
"""

import logging
import warnings

import numpy as np
import pytest
import tensorflow as tf

import tfp_massmap as tm
from tfp_massmap import catalog
from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import sparse
from tfp_massmap import wiener
from tfp_massmap.priors import GaussianPrior
from tfp_massmap.priors import gaussian as gaussian_prior
from tfp_massmap.likelihood import ShearLikelihood

N = 16
PIX = 0.8


def _prior(n=N, dtype=tf.float32, pixel_scale_arcmin=PIX):
  ell, cl = cosmology.cosmos_convergence_cl()
  return GaussianPrior.from_power_spectrum(ell, cl, n, pixel_scale_arcmin,
                                           dtype=dtype)


def _data(n=N, dtype=np.float32, seed=0):
  """(shear, noise_std, mask): shear of a prior draw plus noise, a hole."""
  kappa = _prior(n, tf.float64).sample(seed=(seed, 1))
  noise_std = np.full([n, n], 0.02)
  mask = np.ones([n, n])
  mask[:n // 4, :n // 4] = 0.
  shear = ShearLikelihood(kappa, noise_std, mask).sample(seed=(seed, 2)).numpy()
  return shear.astype(dtype), noise_std.astype(dtype), mask.astype(dtype)


def _shear_map(n=N, pixel_scale_arcmin=PIX):
  shear, noise_std, mask = _data(n)
  return catalog.ShearMap(shear=shear, noise_std=noise_std, mask=mask,
                          counts=mask.astype(np.int32), wcs=None,
                          pixel_scale_arcmin=pixel_scale_arcmin)


# Kaiser-Squires.


@pytest.mark.parametrize('bad', [np.nan, np.inf, -np.inf])
def test_kaiser_squires_refuses_non_finite_shear(bad):
  shear = _data()[0]
  shear[3, 5, 1] = bad
  shear[7, 2, 0] = bad
  with pytest.raises(ValueError, match=(
      r'2 non-finite value\(s\).*out of 512.*at index \(3, 5, 1\).*set the '
      r'shear to 0')):
    lensing.kaiser_squires(shear)
  # The batch index comes first.
  batch = np.stack([_data()[0], shear])
  with pytest.raises(ValueError, match=r'at index \(1, 3, 5, 1\)'):
    tm.kaiser_squires(batch)


def test_kaiser_squires_with_zeroed_pixel_is_finite():
  shear = _data()[0]
  shear[3, 5] = 0.
  kappa_e, kappa_b = lensing.kaiser_squires(shear)
  assert np.all(np.isfinite(kappa_e)) and np.all(np.isfinite(kappa_b))


# Wiener filter: convergence warnings.


def test_wiener_filter_warns_when_not_converged():
  shear, noise_std, mask = _data()
  with pytest.warns(RuntimeWarning, match=(
      r'wiener_filter did not converge for 1 of 1 map\(s\): relative residual '
      r'up to [0-9.e-]+ > tol = 1e-06 after 2 iteration\(s\) '
      r'\(max_iterations = 2\)')):
    _, info = wiener.wiener_filter(shear, noise_std, mask, _prior(),
                                   max_iterations=2)
  assert not bool(info.converged) and int(info.iterations) == 2
  # A converged solve is silent.
  with warnings.catch_warnings():
    warnings.simplefilter('error', RuntimeWarning)
    _, info = wiener.wiener_filter(shear, noise_std, mask, _prior(), tol=1e-5)
  assert bool(info.converged)


def test_gaussian_posterior_samples_warn_when_not_converged():
  shear, noise_std, mask = _data()
  with pytest.warns(RuntimeWarning, match=(
      r'gaussian_posterior_samples did not converge for 3 of 3 map\(s\).*'
      r'after 1 iteration')):
    result = wiener.gaussian_posterior_samples(
        shear, noise_std, mask, _prior(), num_samples=3, seed=(1, 2),
        max_iterations=1)
  assert not np.any(result.diagnostics['solver_info'].converged)


def test_wiener_filter_in_tf_function_reports_through_info_only():
  shear, noise_std, mask = _data()
  prior = _prior()
  solve = tf.function(lambda e: wiener.wiener_filter(
      e, noise_std, mask, prior, max_iterations=2))
  with warnings.catch_warnings():
    warnings.simplefilter('error', RuntimeWarning)
    _, info = solve(tf.constant(shear))
  assert not bool(info.converged)


# The classical solvers take a ShearMap.


def test_wiener_filter_and_samples_take_a_shear_map():
  shear_map = _shear_map()
  prior = _prior()
  expected, _ = wiener.wiener_filter(shear_map.shear, shear_map.noise_std,
                                     shear_map.mask, prior)
  kappa, _ = tm.wiener_filter(shear_map, prior=prior)
  np.testing.assert_array_equal(kappa, expected)
  # Its float32 arrays are cast to a float64 prior.
  kappa64, _ = tm.wiener_filter(shear_map, prior=_prior(dtype=tf.float64))
  assert kappa64.dtype == tf.float64
  np.testing.assert_allclose(kappa64, expected, atol=1e-5 * np.abs(expected).max())
  samples = tm.gaussian_posterior_samples(shear_map, prior=prior,
                                          num_samples=2, seed=(3, 4)).samples
  expected = wiener.gaussian_posterior_samples(
      shear_map.shear, shear_map.noise_std, shear_map.mask, prior,
      num_samples=2, seed=(3, 4)).samples
  np.testing.assert_array_equal(samples, expected)


def test_wiener_filter_mask_defaults_to_all_pixels():
  shear, noise_std, _ = _data()
  prior = _prior()
  kappa, _ = wiener.wiener_filter(shear, noise_std, prior=prior)
  expected, _ = wiener.wiener_filter(shear, noise_std, np.ones([N, N], np.float32),
                                     prior)
  np.testing.assert_array_equal(kappa, expected)
  shear_map = _shear_map()._replace(shear=shear, noise_std=noise_std, mask=None)
  kappa, _ = wiener.wiener_filter(shear_map, prior=prior)
  np.testing.assert_array_equal(kappa, expected)


def test_wiener_filter_shear_map_errors():
  shear_map = _shear_map()
  with pytest.raises(ValueError, match=r'prior is required.*prior=prior'):
    tm.wiener_filter(shear_map, _prior())   # prior given positionally
  with pytest.raises(ValueError, match=r'prior is required'):
    tm.wiener_filter(shear_map)
  with pytest.raises(ValueError, match=(
      r'prior is required.*gaussian_posterior_samples\(shear_map, prior=prior\)')):
    tm.gaussian_posterior_samples(shear_map, num_samples=1, seed=(1, 1))
  with pytest.raises(ValueError, match=r'seed is required'):
    tm.gaussian_posterior_samples(shear_map, prior=_prior(), num_samples=1)
  with pytest.raises(ValueError, match=(
      r'the data have 0\.29 arcmin pixels but the prior is valid at 0\.8 '
      r'arcmin pixels')):
    tm.wiener_filter(shear_map._replace(pixel_scale_arcmin=0.29),
                     prior=_prior())
  # A prior of unknown pixel scale is not checked.
  kappa, _ = tm.wiener_filter(shear_map._replace(pixel_scale_arcmin=0.29),
                              prior=GaussianPrior(_prior().spectrum))
  assert kappa.shape == (N, N)


@pytest.mark.parametrize('solver', ['sparse_map', 'tv_map'])
def test_proximal_solvers_take_a_shear_map(solver):
  shear_map = _shear_map()
  settings = dict(max_iterations=3, inner_iterations=3)
  if solver == 'sparse_map':
    settings['num_scales'] = 2
  solve = getattr(sparse, solver)
  expected, _ = solve(shear_map.shear, shear_map.noise_std, shear_map.mask,
                      **settings)
  kappa, _ = solve(shear_map, **settings)
  np.testing.assert_array_equal(kappa, expected)


def test_mcalens_map_takes_a_shear_map():
  shear_map = _shear_map()
  prior = _prior()
  settings = dict(num_scales=2, max_iterations=2, sparse_iterations=2,
                  inner_iterations=3)
  expected, _ = sparse.mcalens_map(shear_map.shear, shear_map.noise_std,
                                   shear_map.mask, prior, **settings)
  kappa, _ = tm.mcalens_map(shear_map, prior=prior, **settings)
  np.testing.assert_array_equal(kappa, expected)
  with pytest.raises(ValueError, match=r'prior is required'):
    tm.mcalens_map(shear_map, prior, **settings)
  with pytest.raises(ValueError, match=r'the data have 0\.5 arcmin pixels'):
    tm.mcalens_map(shear_map._replace(pixel_scale_arcmin=0.5), prior=prior,
                   **settings)


# dtypes.


def test_wiener_filter_dtype_mismatch_names_the_argument():
  shear, noise_std, mask = _data()
  prior32 = _prior()
  with pytest.raises(ValueError, match=(
      r'shear has dtype float64 but the prior has dtype float32; cast shear '
      r'to float32, or build the prior in float64')):
    wiener.wiener_filter(shear.astype(np.float64), noise_std, mask, prior32)
  with pytest.raises(ValueError, match=r'noise_std has dtype float64.*cast noise_std to float32'):
    wiener.wiener_filter(shear, tf.constant(noise_std, tf.float64), mask, prior32)
  with pytest.raises(ValueError, match=r'cast shear to float64'):
    wiener.gaussian_posterior_samples(shear, noise_std, mask,
                                      _prior(dtype=tf.float64), num_samples=1,
                                      seed=(1, 1))
  with pytest.raises(ValueError, match=r'initial has dtype float64'):
    wiener.wiener_filter(shear, noise_std, mask, prior32,
                         initial=np.zeros([N, N]))
  # Any mask dtype is fine: it is a weight.
  kappa, _ = wiener.wiener_filter(shear, noise_std, mask.astype(bool), prior32)
  expected, _ = wiener.wiener_filter(shear, noise_std, mask, prior32)
  np.testing.assert_array_equal(kappa, expected)


def test_sparse_map_noise_dtype_must_match_shear():
  shear, noise_std, mask = _data()
  with pytest.raises(ValueError, match=r'noise_std has dtype float64 but shear has dtype float32'):
    sparse.sparse_map(shear, noise_std.astype(np.float64), mask, num_scales=2)


def test_likelihood_dtype_mismatch_names_the_argument():
  kappa = np.zeros([N, N])
  _, noise_std, mask = _data()
  with pytest.raises(ValueError, match=(
      r'noise_std has dtype float32 but convergence has dtype float64; cast '
      r'noise_std to float64')):
    ShearLikelihood(kappa, noise_std, mask)
  with pytest.raises(ValueError, match=r'cast extra_variance to float64'):
    ShearLikelihood(kappa, noise_std.astype(np.float64), mask,
                    extra_variance=tf.constant(0.1, tf.float32))
  likelihood = ShearLikelihood(kappa, noise_std.astype(np.float64), mask,
                               extra_variance=0.1)   # Python numbers adapt
  with pytest.raises(ValueError, match=(
      r'shear has dtype float32 but this ShearLikelihood has dtype float64; '
      r'cast shear to float64')):
    likelihood.log_prob(tf.zeros([N, N, 2], tf.float32))


def test_gaussian_prior_log_prob_dtype_mismatch():
  with pytest.raises(ValueError, match=r'x has dtype float64.*cast x to float32'):
    _prior().log_prob(tf.zeros([N, N], tf.float64))


# ShearLikelihood values, validate_args=False.


@pytest.mark.parametrize('bad, message', [
    (np.nan, r'1 NaN, infinite or negative value\(s\).*the first, nan, at index \(5, 6, 0\)'),
    (np.inf, r'the first, inf, at index \(5, 6, 0\)'),
    (-0.1, r'the first, -0\.1, at index \(5, 6, 0\)'),
    (0., r'noise_std is 0 at 1 pixel value\(s\).*\(5, 6, 0\).*extra_variance is 0'),
])
def test_likelihood_refuses_bad_noise_without_validate_args(bad, message):
  _, noise_std, mask = _data(dtype=np.float64)
  kappa = np.zeros([N, N])
  noise = noise_std.copy()
  noise[5, 6] = bad
  with pytest.raises(ValueError, match=message):
    ShearLikelihood(kappa, noise, mask)
  with pytest.raises(ValueError, match=message):   # eager tensors too
    ShearLikelihood(tf.constant(kappa), tf.constant(noise), mask)
  # Off the mask the same value is harmless, and masked pixels add nothing.
  noise = noise_std.copy()
  noise[0, 0] = bad
  off = ShearLikelihood(kappa, noise, mask).log_prob(np.zeros([N, N, 2]))
  reference = ShearLikelihood(kappa, noise_std, mask).log_prob(
      np.zeros([N, N, 2]))
  np.testing.assert_allclose(off, reference, rtol=1e-12)


def test_likelihood_per_component_noise_is_checked():
  _, noise_std, mask = _data(dtype=np.float64)
  noise = np.stack([noise_std, noise_std], axis=-1)
  noise[9, 4, 1] = -1.
  with pytest.raises(ValueError, match=r'at index \(9, 4, 1\)'):
    ShearLikelihood(np.zeros([N, N]), noise, mask)


def test_likelihood_zero_noise_is_fine_with_extra_variance():
  _, noise_std, mask = _data(dtype=np.float64)
  kappa = np.zeros([N, N])
  likelihood = ShearLikelihood(kappa, np.zeros_like(noise_std), mask,
                               extra_variance=0.04)
  shear = np.zeros([N, N, 2])
  expected = -0.5 * 2 * mask.sum() * np.log(2 * np.pi * 0.04)
  np.testing.assert_allclose(likelihood.log_prob(shear), expected, rtol=1e-12)


def test_likelihood_refuses_empty_mask_and_bad_extra_variance():
  _, noise_std, mask = _data(dtype=np.float64)
  kappa = np.zeros([N, N])
  with pytest.raises(ValueError, match=r'no pixel with data.*in 1 of 1 map'):
    ShearLikelihood(kappa, noise_std, np.zeros([N, N]))
  with pytest.raises(ValueError, match=r'no pixel with data.*in 1 of 2 map'):
    ShearLikelihood(kappa, noise_std, np.stack([mask, np.zeros([N, N])]))
  with pytest.raises(ValueError, match=r'no pixel with data'):
    ShearLikelihood(kappa, noise_std, np.zeros([N, N], bool))
  for bad in (-0.1, np.nan):
    with pytest.raises(ValueError, match=r'extra_variance holds NaN or negative'):
      ShearLikelihood(kappa, noise_std, mask, extra_variance=bad)


def test_likelihood_in_graph_mode():
  _, noise_std, mask = _data(dtype=np.float64)
  bad = noise_std.copy()
  bad[5, 6] = np.nan
  shear = np.zeros([N, N, 2])

  # Constants inside tf.function are known when tracing: still checked.
  @tf.function(autograph=False)
  def with_constant_noise(kappa):
    return ShearLikelihood(kappa, bad, mask).log_prob(shear)
  with pytest.raises(ValueError, match=r'noise_std holds 1 NaN'):
    with_constant_noise(tf.zeros([N, N], tf.float64))

  # Symbolic inputs: shapes only (documented), the result matches eager.
  @tf.function(autograph=False)
  def with_noise(kappa, noise):
    return ShearLikelihood(kappa, noise, mask).log_prob(shear)
  kappa = tf.constant(_prior(dtype=tf.float64).sample(seed=(2, 2)))
  np.testing.assert_allclose(
      with_noise(kappa, tf.constant(noise_std)),
      ShearLikelihood(kappa, noise_std, mask).log_prob(shear), rtol=1e-12)
  assert np.isnan(with_noise(kappa, tf.constant(bad)))
  # validate_args=True catches it at run time.
  @tf.function(autograph=False)
  def validated(kappa, noise):
    return ShearLikelihood(kappa, noise, mask, validate_args=True).log_prob(shear)
  with pytest.raises(tf.errors.InvalidArgumentError, match='NaN'):
    validated(kappa, tf.constant(bad))


# GaussianPrior gradients and pixel scale.


class _Records(logging.Handler):

  def __init__(self):
    super().__init__(logging.WARNING)
    self.messages = []

  def emit(self, record):
    self.messages.append(record.getMessage())


@pytest.fixture
def tf_warnings():
  handler = _Records()
  logger = logging.getLogger('tensorflow')
  logger.addHandler(handler)
  yield handler.messages
  logger.removeHandler(handler)


@pytest.mark.parametrize('dtype', [tf.float32, tf.float64])
def test_log_prob_gradient_is_quiet_and_exact(dtype, tf_warnings):
  prior = _prior(dtype=dtype)
  kappa = prior.sample(seed=(5, 6))
  with tf.GradientTape() as tape:
    tape.watch(kappa)
    log_prob = prior.log_prob(kappa)
  gradient = tape.gradient(log_prob, kappa)
  assert not [m for m in tf_warnings if 'casting' in m], tf_warnings
  # The gradient is −C⁺κ (the σ = 0 score).
  expected = prior.score(kappa, sigma=0.)
  scale = np.abs(expected).max()
  np.testing.assert_allclose(gradient, expected,
                             atol=(1e-4 if dtype == tf.float32 else 1e-10) * scale)
  if dtype == tf.float64:
    # And a central finite difference along a random direction.
    direction = tf.random.stateless_normal([N, N], seed=(7, 8), dtype=dtype)
    eps = 1e-3 * float(tf.math.reduce_std(kappa))
    numeric = (prior.log_prob(kappa + eps * direction) -
               prior.log_prob(kappa - eps * direction)) / (2 * eps)
    np.testing.assert_allclose(numeric, tf.reduce_sum(gradient * direction),
                               rtol=1e-6)


def test_fourier_filter_gradient_in_transfer_is_quiet(tf_warnings):
  x = tf.random.stateless_normal([N, N], seed=(1, 2))
  transfer = tf.ones([N, N])
  with tf.GradientTape() as tape:
    tape.watch(transfer)
    y = tf.reduce_sum(gaussian_prior.fourier_filter(x, transfer)**2)
  gradient = tape.gradient(y, transfer)
  assert gradient is not None
  assert not [m for m in tf_warnings if 'casting' in m], tf_warnings


def test_prior_pixel_scale():
  prior = _prior(pixel_scale_arcmin=0.29)
  assert prior.pixel_scale_arcmin == 0.29
  assert prior.copy().pixel_scale_arcmin == 0.29
  assert GaussianPrior(prior.spectrum).pixel_scale_arcmin is None
  batched = GaussianPrior(tf.stack([prior.spectrum] * 2), pixel_scale_arcmin=0.29)
  assert batched[1].pixel_scale_arcmin == 0.29
  assert getattr(prior, 'pixel_scale_arcmin', None) == 0.29
  for bad in (0., -1., np.nan, 'x'):
    with pytest.raises(ValueError, match='pixel_scale_arcmin must be a positive number'):
      GaussianPrior(prior.spectrum, pixel_scale_arcmin=bad)


# The package exposes the demo.


def test_demo_is_reachable_from_the_package():
  shear_map, truth = tm.demo.demo_problem()
  assert shear_map.shear.shape == (128, 128, 2) and truth.shape == (128, 128)
