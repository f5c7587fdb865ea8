"""The joint prior protocol and the Gaussian amplitude prior p(κ, θ).

The scores of `AmplitudeGaussianPrior` are checked against automatic
differentiation of its log density (an independent route: the TFP
`GaussianPrior.log_prob` of spectrum A S + σ²), its θ density against a
quadrature over the range, and its conditional view against the
`GaussianPrior` of the scaled spectrum. No sampling: each test takes well
under a second.
"""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap.priors import conditional
from tfp_massmap.priors import gaussian
from tfp_massmap.priors import protocol

N = 16
PIXEL_ARCMIN = 3.2


@pytest.fixture(scope='module')
def fiducial():
  ell, cl = cosmology.cosmos_convergence_cl()
  return gaussian.GaussianPrior.from_power_spectrum(
      ell, cl, N, PIXEL_ARCMIN, dtype=tf.float64)


def _autodiff_scores(prior, x, theta, sigma):
  with tf.GradientTape(persistent=True) as tape:
    tape.watch([x, theta])
    log_prob = prior.log_prob(x, theta, sigma)
  return tape.gradient(log_prob, x), tape.gradient(log_prob, theta)


@pytest.mark.parametrize('sigma', [0., 0.01])
@pytest.mark.parametrize('sigma8_fiducial,log_uniform,bounds', [
    (None, False, (0.2, 5.)), (0.8, True, (0.5, 1.1))])
def test_scores_are_the_gradients_of_the_smoothed_density(
    fiducial, sigma, sigma8_fiducial, log_uniform, bounds):
  prior = conditional.AmplitudeGaussianPrior(
      fiducial, bounds, sigma8_fiducial=sigma8_fiducial,
      log_uniform=log_uniform)
  x = fiducial.sample(3, seed=(1, 2)) * [[[0.5]], [[1.]], [[2.]]]
  theta = tf.constant(np.linspace(*bounds, 5)[1:4, np.newaxis])
  score_x, score_theta = prior.score(x, theta, sigma)
  want_x, want_theta = _autodiff_scores(prior, x, theta, sigma)
  assert score_theta.shape == (3, 1)
  np.testing.assert_allclose(score_x, want_x, rtol=1e-10,
                             atol=1e-10 * np.abs(want_x).max())
  np.testing.assert_allclose(score_theta, want_theta, rtol=1e-9)
  # The θ score is not trivially zero: the three maps have different power.
  assert np.ptp(score_theta.numpy()) > 1.


def test_one_theta_scores_many_maps(fiducial):
  """θ [1] against maps [3, N, N]: the score of each (map, θ) pair."""
  prior = conditional.AmplitudeGaussianPrior(fiducial, (0.2, 5.))
  x = fiducial.sample(3, seed=(3, 4))
  _, one = prior.score(x, [1.5], 0.01)
  _, each = prior.score(x, tf.fill([3, 1], tf.constant(1.5, tf.float64)),
                        0.01)
  assert one.shape == (3, 1)
  np.testing.assert_allclose(one, each, rtol=1e-12)


def test_given_is_the_gaussian_prior_of_the_scaled_spectrum(fiducial):
  prior = conditional.AmplitudeGaussianPrior(fiducial, (0.5, 1.1),
                                             sigma8_fiducial=0.8)
  assert prior.theta_names == ('sigma8',)
  given = prior.given([0.6])
  assert isinstance(given, gaussian.GaussianPrior)
  np.testing.assert_allclose(given.spectrum,
                             (0.6 / 0.8)**2 * fiducial.spectrum, rtol=1e-12)
  assert given.pixel_scale_arcmin == PIXEL_ARCMIN
  # It is an ordinary Prior, checked like any other against the data.
  protocol.check_prior(given, N, dtype=tf.float64,
                       pixel_scale_arcmin=PIXEL_ARCMIN)
  x = fiducial.sample(2, seed=(5, 6))
  score_x, _ = prior.score(x, [0.6], 0.02)
  np.testing.assert_allclose(score_x, given.score(x, 0.02), rtol=1e-12)
  np.testing.assert_allclose(prior.denoise(x, [0.6], 0.02),
                             given.denoise(x, 0.02), rtol=1e-12)


@pytest.mark.parametrize('log_uniform', [False, True])
def test_theta_density_is_normalised_on_its_range(fiducial, log_uniform):
  prior = conditional.AmplitudeGaussianPrior(fiducial, (0.2, 5.),
                                             log_uniform=log_uniform)
  grid = np.linspace(0.2, 5., 20001)
  density = np.exp(prior.log_prob_theta(grid[:, np.newaxis]).numpy())
  assert np.trapezoid(density, grid) == pytest.approx(1., rel=1e-6)
  outside = prior.log_prob_theta([[0.1], [5.1]]).numpy()
  assert np.all(outside == -np.inf)


def test_denoise_given_falls_back_to_tweedie(fiducial):
  """A joint prior without denoise gets x + σ² score_x, the exact denoiser
  of the conditional Gaussian (θ is not smoothed)."""
  prior = conditional.AmplitudeGaussianPrior(fiducial, (0.2, 5.))

  class ScoreOnly:
    theta_names = prior.theta_names
    theta_bounds = prior.theta_bounds
    score = prior.score
    log_prob_theta = prior.log_prob_theta
    given = prior.given

  x = fiducial.sample(2, seed=(7, 8)) + 0.01 * tf.random.stateless_normal(
      [2, N, N], (1, 1), dtype=tf.float64)
  theta = tf.constant([[0.7], [1.9]], tf.float64)
  tweedie = conditional.denoise_given(ScoreOnly(), x, theta, 0.01)
  exact = conditional.denoise_given(prior, x, theta, 0.01)
  np.testing.assert_allclose(tweedie, exact, atol=1e-12)
  # Zero-mean output: the mean mode carries no prior variance.
  np.testing.assert_allclose(np.mean(exact, axis=(1, 2)), 0., atol=1e-12)


def test_joint_prior_properties(fiducial):
  prior = conditional.AmplitudeGaussianPrior(fiducial, (0.2, 5.))
  properties = conditional.joint_prior_properties(prior)
  assert properties.theta_names == ('amplitude',)
  np.testing.assert_array_equal(properties.theta_bounds, [[0.2, 5.]])
  assert properties.prior.num_pixels_per_side == N
  assert properties.prior.dtype == tf.float64
  assert properties.prior.smoothed_score


class _Joint:
  """A joint prior whose members the tests below spoil one at a time."""
  theta_names = ('omega_m', 'sigma8')
  theta_bounds = ((0.1, 0.5), (0.6, 1.0))

  def score(self, x, theta, sigma):
    del theta, sigma
    return x, None

  def log_prob_theta(self, theta):
    return theta

  def given(self, theta):
    return theta


@pytest.mark.parametrize('member,value,match', [
    ('given', None, 'must have a given method'),
    ('log_prob_theta', 3, 'must have a log_prob_theta method'),
    ('theta_names', 'sigma8', 'theta_names must be a non-empty tuple'),
    ('theta_names', ('s', 's'), 'distinct'),
    ('theta_names', (), 'non-empty'),
    ('theta_bounds', ((0.1, 0.5),), r'must be \[D, 2\] = \[2, 2\]'),
    ('theta_bounds', ((0.1, 0.5), (1.0, 0.6)), 'lower < upper'),
    ('theta_bounds', ((0.1, np.inf), (0.6, 1.0)), 'finite'),
    ('theta_bounds', 'wide', r'must be \[D, 2\]'),
])
def test_malformed_joint_priors_are_refused(member, value, match):
  joint = _Joint()
  setattr(joint, member, value)
  with pytest.raises(ValueError, match=match):
    conditional.joint_prior_properties(joint)


@pytest.mark.parametrize('theta,match', [
    ([0.3], r'must hold 2 number\(s\)'),
    ([0.3, 0.8, 1.], r'must hold 2 number\(s\)'),
    ('high', r'must hold 2 number\(s\)'),
    ([0.3, 1.2], r'sigma8 = 1.2 is outside the prior range \[0.6, 1\]'),
    ([np.nan, 0.8], 'omega_m = nan is outside'),
])
def test_check_theta(theta, match):
  with pytest.raises(ValueError, match=match):
    conditional.check_theta(_Joint(), theta)
  np.testing.assert_array_equal(conditional.check_theta(_Joint(), [0.1, 1.]),
                                [0.1, 1.])


def test_given_refuses_theta_outside_the_range(fiducial):
  prior = conditional.AmplitudeGaussianPrior(fiducial, (0.2, 5.))
  with pytest.raises(ValueError, match=r'amplitude = 6.0 is outside'):
    prior.given(6.)


@pytest.mark.parametrize('kwargs,match', [
    (dict(bounds=(0., 1.)), '0 < lower < upper'),
    (dict(bounds=(2., 1.)), '0 < lower < upper'),
    (dict(bounds=(1., np.inf)), 'finite'),
    (dict(bounds=1.), r'must be \(lower, upper\)'),
    (dict(sigma8_fiducial=-0.8), 'sigma8_fiducial must be a positive'),
    (dict(log_uniform='yes'), 'log_uniform must be a Python bool'),
])
def test_amplitude_prior_refuses_bad_arguments(fiducial, kwargs, match):
  kwargs = dict(dict(bounds=(0.2, 5.)), **kwargs)
  with pytest.raises(ValueError, match=match):
    conditional.AmplitudeGaussianPrior(fiducial, **kwargs)


def test_amplitude_prior_needs_one_gaussian_spectrum(fiducial):
  with pytest.raises(ValueError, match='must be a tfp_massmap.GaussianPrior'):
    conditional.AmplitudeGaussianPrior(fiducial.spectrum, (0.2, 5.))
  batch = gaussian.GaussianPrior(tf.stack([fiducial.spectrum] * 2))
  with pytest.raises(ValueError, match=r'batch shape \[\]'):
    conditional.AmplitudeGaussianPrior(batch, (0.2, 5.))
