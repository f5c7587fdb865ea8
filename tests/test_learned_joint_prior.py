"""Tests of the θ-conditioned ScoreNetwork, its training and LearnedJointPrior."""

import functools

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lognormal
from tfp_massmap import testing
from tfp_massmap import training
from tfp_massmap.priors import conditional
from tfp_massmap.priors import learned
from tfp_massmap.priors import protocol
from tfp_massmap.priors.learned_joint import ConditionedScoreNetwork
from tfp_massmap.priors.learned_joint import LearnedJointPrior
from tfp_massmap.score_network import load_score_network
from tfp_massmap.score_network import ScoreNetwork

NAMES = ('omega_m', 'sigma8')
BOUNDS = ((0.2, 0.4), (0.6, 1.0))
TINY = dict(depth=2, base_channels=8, embedding_dim=16, seed=3,
            theta_names=NAMES, theta_bounds=BOUNDS)



@pytest.fixture(scope='module')
def network():
  return testing.perturb_weights(ScoreNetwork(**TINY))


def _maps(n, batch=3, seed=0):
  return 0.02 * np.random.default_rng(seed).standard_normal(
      (batch, n, n)).astype(np.float32)


def test_theta_changes_the_output_map_by_map(network):
  x = _maps(16)
  theta = np.array([[0.25, 0.7], [0.3, 0.8], [0.35, 0.95]], np.float32)
  batched = network.score(x, 0.05, theta)
  assert batched.shape == (3, 16, 16) and batched.dtype == tf.float32
  # Each map is scored with its own θ: the same as scoring it alone.
  for i in range(3):
    np.testing.assert_allclose(network.score(x[i], 0.05, theta[i]), batched[i],
                               rtol=1e-5, atol=1e-3)
  # One θ broadcasts over the maps; another θ gives another score.
  shared = network.score(x, 0.05, theta[1])
  np.testing.assert_allclose(shared[1], batched[1], rtol=1e-5, atol=1e-3)
  change = np.abs(shared[0] - batched[0]).max() / np.abs(batched[0]).max()
  assert change > 1e-2
  # float64 in, float64 out; denoise and score obey Tweedie's formula.
  x64 = x.astype(np.float64)
  denoised = network.denoise(x64, 0.05, theta)
  assert denoised.dtype == tf.float64
  np.testing.assert_allclose((denoised - x64) / 0.05**2,
                             network.score(x64, 0.05, theta), rtol=1e-3,
                             atol=1e-3 * np.abs(batched).max())


def test_theta_is_normalised_over_its_bounds(network):
  np.testing.assert_allclose(
      network.normalised_theta([[0.2, 1.0], [0.3, 0.8]]),
      [[-1., 1.], [0., 0.]], atol=1e-6)


def test_save_load_round_trip_keeps_theta(tmp_path, network):
  path = tmp_path / 'conditional.keras'
  network.save(path)
  loaded = load_score_network(path)
  assert loaded.theta_names == NAMES and loaded.theta_bounds == BOUNDS
  assert loaded.num_parameters == 2
  assert loaded.get_config() == network.get_config()
  x, theta = _maps(16), [0.33, 0.72]
  np.testing.assert_array_equal(loaded.score(x, 0.02, theta),
                                network.score(x, 0.02, theta))


def test_shipped_prior_is_unchanged():
  """The unconditioned network keeps its weights, config and scores: the
  shipped prior gives the scores it gave before θ existed, bit for bit."""
  prior = learned.load_prior()
  assert prior.num_parameters == 0 and prior.theta_names is None
  assert 'theta_names' not in prior.get_config()
  assert prior.embedding_in.kernel.shape == (32, 128)
  x = 0.02 * np.random.default_rng(0).standard_normal((2, 32, 32)).astype(
      np.float32)
  score = prior.score(x, np.array([0.01, 0.1], np.float32)).numpy()
  # Recorded before θ was added (bit for bit on the machine of then; an
  # AMD EPYC box differs in the last bits, 171.10295, so to float32
  # rounding): one value, the sum and the sum of magnitudes.
  assert score[0, 5, 7] == pytest.approx(171.10298, rel=1e-6)
  assert score[1, 20, 3] == pytest.approx(0.38301373, rel=1e-5)
  assert np.sum(score, dtype=np.float64) == pytest.approx(8687.055, rel=1e-5)
  assert np.sum(np.abs(score), dtype=np.float64) == pytest.approx(67548.63,
                                                                 rel=1e-6)


@pytest.mark.parametrize('theta, error, match', [
    (None, ValueError, r"conditional prior p\(κ \| θ\) over \('omega_m', "
     r"'sigma8'\): pass theta \[..., 2\]"),
    ([0.3], ValueError, 'last axis of 2 parameters'),
    ([0.5, 0.8], ValueError, r'omega_m = 0.5 is outside the range the network '
     r'was trained on, \[0.2, 0.4\]'),
    ([0.3, np.nan], ValueError, 'sigma8 = nan is outside'),
])
def test_bad_theta_raises(network, theta, error, match):
  for method in (network, network.denoise, network.score):
    with pytest.raises(error, match=match):
      method(_maps(16), 0.05, theta)


def test_theta_for_an_unconditioned_network_raises():
  plain = ScoreNetwork(depth=1, base_channels=8, embedding_dim=16)
  with pytest.raises(ValueError, match='not conditioned on parameters'):
    plain.score(_maps(16), 0.05, [0.3, 0.8])


@pytest.mark.parametrize('kwargs, match', [
    (dict(theta_names=NAMES), r'theta_bounds must be \[D, 2\] = \[2, 2\]'),
    (dict(theta_bounds=BOUNDS), 'theta_bounds was given without theta_names'),
    (dict(theta_names='sigma8', theta_bounds=[[0.6, 1.0]]),
     'theta_names must be a non-empty list'),
    (dict(theta_names=['a', 'a'], theta_bounds=BOUNDS),
     'theta_names must be a non-empty list of distinct'),
    (dict(theta_names=NAMES, theta_bounds=[[0.4, 0.2], [0.6, 1.0]]),
     'lower < upper'),
])
def test_bad_theta_configuration_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ScoreNetwork(depth=1, base_channels=8, embedding_dim=16, **kwargs)


def test_joint_prior_members_and_given(network):
  prior = LearnedJointPrior(network)
  properties = conditional.joint_prior_properties(prior)
  assert properties.theta_names == NAMES
  np.testing.assert_array_equal(properties.theta_bounds, BOUNDS)
  np.testing.assert_allclose(
      prior.log_prob_theta([[0.3, 0.8], [0.1, 0.8], [0.3, 1.2]]),
      [-np.log(0.2 * 0.4), -np.inf, -np.inf], rtol=1e-6)
  given = prior.given([0.3, 0.8])
  assert isinstance(given, ConditionedScoreNetwork)
  check = protocol.check_prior(given, 32, dtype=tf.float32)
  assert check.num_pixels_per_side == 32
  x = _maps(32)
  np.testing.assert_array_equal(given.score(x, 0.05),
                                network.score(x, 0.05, [0.3, 0.8]))
  np.testing.assert_array_equal(prior.score_kappa(x, [0.3, 0.8], 0.05),
                                given.score(x, 0.05))
  np.testing.assert_array_equal(
      conditional.denoise_given(prior, x, [0.3, 0.8], 0.05),
      given.denoise(x, 0.05))
  with pytest.raises(ValueError, match='divisible by its size_divisor = 4'):
    protocol.check_prior(given, 30)


def test_joint_prior_refusals(network, tmp_path):
  prior = LearnedJointPrior(network)
  with pytest.raises(NotImplementedError,
                     match=r'no θ score .*given\(theta\) for the conditional'):
    prior.score(_maps(16), [0.3, 0.8], 0.05)
  with pytest.raises(ValueError, match=r'sigma8 = 1.1 is outside the prior '
                     r'range \[0.6, 1\]'):
    prior.given([0.3, 1.1])
  with pytest.raises(ValueError, match='unconditioned ScoreNetwork'):
    LearnedJointPrior(ScoreNetwork(depth=1, base_channels=8, embedding_dim=16))
  with pytest.raises(ValueError, match='ScoreNetwork conditioned on θ'):
    LearnedJointPrior(object())
  path = tmp_path / 'net.keras'
  network.save(path)
  assert LearnedJointPrior(str(path)).theta_names == NAMES


@functools.cache
def _cosmo_pairs(n=16, per_cosmology=48):
  """Lognormal maps at two σ8 (0.62 and 0.98, Ωm 0.3) with their labels."""
  maps, thetas = [], []
  for i, sigma8 in enumerate((0.62, 0.98)):
    ell, cl = cosmology.convergence_cl(0.3, sigma8)
    field = lognormal.LognormalField(cosmology.lognormal_shift(0.3, sigma8), n,
                                     0.8, ell=ell, cl=cl, dtype=tf.float64)
    seeds = range(1000 * i, 1000 * i + per_cosmology)
    maps.append(np.asarray(field.maps_from_seeds(list(seeds)), np.float32))
    thetas.append(np.tile([0.3, sigma8], (per_cosmology, 1)))
  maps, thetas = np.concatenate(maps), np.concatenate(thetas)
  return maps, thetas.astype(np.float32)


def test_training_on_pairs_lowers_the_loss_and_uses_theta(tmp_path):
  maps, thetas = _cosmo_pairs()
  data = {'kappa': maps, 'omega_m': thetas[:, 0], 'sigma8': thetas[:, 1]}
  std = float(maps.std())
  result = training.train_score_network(
      data, str(tmp_path),
      network=dict(depth=1, base_channels=8, embedding_dim=16, data_std=std,
                   theta_names=list(NAMES), theta_bounds=BOUNDS),
      batch_size=16, steps=60, learning_rate=3e-3, sigma_min=0.005,
      sigma_max=0.05, ema_decay=0.9, log_every=20, shuffle_buffer=96,
      progress=False, seed=1)
  loss = result.history['loss']
  assert loss[-1] < 0.9 * loss[0], loss  # 0.92 -> 0.78 when written.
  model = result.model
  assert model.theta_names == NAMES
  assert load_score_network(
      tmp_path / training.MODEL_FILENAME).theta_bounds == BOUNDS
  # The trained denoiser is better with each map's own θ than with the
  # other cosmology's (the low-σ8 maps have a quarter of the variance of the
  # high-σ8 ones); an unconditioned network would score the same on both.
  rng = np.random.default_rng(5)
  sigma = 0.02
  noisy = maps + sigma * rng.standard_normal(maps.shape).astype(np.float32)
  swapped = thetas[::-1]
  err_true = np.mean((model.denoise(noisy, sigma, thetas) - maps)**2)
  err_swap = np.mean((model.denoise(noisy, sigma, swapped) - maps)**2)
  assert err_true < 0.98 * err_swap, (err_true, err_swap)  # 0.965 written.


def test_conditioned_training_refuses_unlabelled_data(tmp_path):
  network = dict(depth=1, base_channels=8, embedding_dim=16,
                 theta_names=list(NAMES), theta_bounds=BOUNDS)
  maps = _maps(16, batch=4)
  with pytest.raises(ValueError, match='elements that are dicts with the maps'):
    training.train_score_network(maps, str(tmp_path / 'a'), network=network,
                                 steps=2, progress=False)
  with pytest.raises(ValueError, match=r"missing \['sigma8'\]"):
    training.train_score_network(
        {'kappa': maps, 'omega_m': np.full(4, 0.3)}, str(tmp_path / 'b'),
        network=network, steps=2, progress=False)
  with pytest.raises(ValueError, match=r'outside the network\'s theta_bounds'):
    training.train_score_network(
        {'kappa': maps, 'omega_m': np.full(4, 0.5), 'sigma8': np.full(4, 0.8)},
        str(tmp_path / 'c'), network=network, steps=2, progress=False)
  with pytest.raises(ValueError, match=r"parameter 'sigma8' must hold one "
                     'scalar per map'):
    training.train_score_network(
        {'kappa': maps, 'omega_m': np.full(4, 0.3),
         'sigma8': np.full((4, 2), 0.8)},
        str(tmp_path / 'd'), network=network, steps=2, progress=False)


def test_theta_on_a_bound_in_float32_is_inside(network):
  """float32(0.4) = 0.40000001 is the bound 0.4, not beyond it."""
  theta = np.array([[0.4, 0.6]], np.float32)
  assert float(np.float32(0.4)) > 0.4  # What the check must not be fooled by.
  out = network.score(_maps(16)[:1], 0.05, theta)
  assert np.all(np.isfinite(out))
