"""Tests of the ratio network (the θ score), its training and its joint prior."""

import functools
import json

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import joint_posterior
from tfp_massmap import testing
from tfp_massmap import theta_posterior
from tfp_massmap import training
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.priors import conditional
from tfp_massmap.priors import gaussian
from tfp_massmap.priors import ratio
from tfp_massmap.priors.learned_joint import LearnedJointPrior
from tfp_massmap.score_network import ScoreNetwork
from tfp_massmap.shear_map import ShearMap

NAMES = ('omega_m', 'sigma8')
BOUNDS = ((0.2, 0.4), (0.6, 1.0))
TINY = dict(depth=2, base_channels=8, embedding_dim=16, seed=3,
            theta_names=NAMES, theta_bounds=BOUNDS)
N = 16
PIXEL_SCALE = 3.2
SIGMA8_BOUNDS = (0.6, 1.0)



@pytest.fixture(scope='module')
def network():
  return testing.perturb_weights(ratio.RatioNetwork(**TINY))


def _maps(n, batch=3, seed=0):
  return 0.02 * np.random.default_rng(seed).standard_normal(
      (batch, n, n)).astype(np.float32)


@functools.cache
def _amplitude_prior():
  """σ8 uniform on 0.6–1.0, p(κ | σ8) = N(0, (σ8/σ8_fid)² S), 16² maps."""
  ell, cl = cosmology.cosmos_convergence_cl()
  fiducial = gaussian.GaussianPrior.from_power_spectrum(
      ell, cl, N, PIXEL_SCALE, dtype=tf.float64)
  return conditional.AmplitudeGaussianPrior(
      fiducial, SIGMA8_BOUNDS, sigma8_fiducial=cosmology.FIDUCIAL_SIGMA8)


def _pairs(num, seed):
  """(κ [num, N, N], σ8 [num]) drawn from the amplitude prior, float64."""
  prior = _amplitude_prior()
  sigma8 = np.random.default_rng(seed).uniform(*SIGMA8_BOUNDS, num)
  kappa = prior.given([sigma8[0]]).sample(num, seed=(seed, 1)).numpy()
  # Rescale the draws of the first amplitude to each map's amplitude.
  scale = sigma8 / sigma8[0]
  return kappa * scale[:, None, None], sigma8


def _conditional_log_prob(x, sigma8, sigma):
  """log p_σ(x | σ8) ``[B]`` of the amplitude prior, x ``[B, N, N]``."""
  prior = _amplitude_prior()
  theta = np.broadcast_to(np.asarray(sigma8, np.float64), [len(x)])[:, None]
  return (prior.log_prob(x, theta, sigma) - prior.log_prob_theta(theta)
          ).numpy()


_LOG_MARGINALS = {}


def _exact_log_ratio(x, sigma8, sigma):
  """log p_σ(x | σ8) − log p_σ(x), the marginal over a 201-point σ8 grid."""
  key = (x.tobytes(), sigma)
  if key not in _LOG_MARGINALS:
    grid = np.linspace(*SIGMA8_BOUNDS, 201)
    on_grid = np.stack([_conditional_log_prob(x, s, sigma) for s in grid])
    weights = np.full(len(grid), 1. / (len(grid) - 1))
    weights[[0, -1]] *= 0.5  # Trapezoid rule over the uniform density.
    _LOG_MARGINALS[key] = scipy.special.logsumexp(on_grid, axis=0,
                                                  b=weights[:, None])
  return _conditional_log_prob(x, sigma8, sigma) - _LOG_MARGINALS[key]


class _ExactModel:
  """Stands in for a RatioNetwork in the training loss: the exact logit.

  Records the logits of its calls (the joint pairs, then the shuffled ones).
  """

  def __init__(self, sigma8_shift=0.):
    self._shift = sigma8_shift
    self.logits = []

  def __call__(self, x, sigma, theta, training=False):
    del training
    sigma = float(np.unique(sigma.numpy())[0])
    theta = np.clip(theta.numpy()[:, 0] + self._shift, *SIGMA8_BOUNDS)
    self.logits.append(_exact_log_ratio(x.numpy(), theta, sigma))
    return tf.constant(self.logits[-1])


def _training_args():
  """(x, σ, u, θ) of `training._ratio_loss` for 512 pairs at σ = 0.01."""
  kappa, sigma8 = _pairs(512, seed=4)
  return (tf.constant(kappa), tf.fill([512], tf.constant(0.01, tf.float64)),
          tf.constant(np.random.default_rng(5).standard_normal(kappa.shape)),
          tf.constant(sigma8[:, None]))


def test_classification_loss_is_ln2_at_zero_and_minimal_at_the_exact_ratio():
  np.testing.assert_allclose(
      ratio.classification_loss(tf.zeros(3), tf.zeros(3)), np.log(2.) *
      np.ones(3), rtol=1e-6)
  # The training loss (noise added, θ of the neighbour as the shuffled θ) is
  # minimal at the exact log ratio, among tempered or sharpened versions of
  # it and versions at a shifted σ8: the loss, the noising and the shuffling
  # are wired as the ratio module says.
  args = _training_args()
  exact = _ExactModel()
  loss = training._ratio_loss(exact, *args).numpy()  # pylint: disable=protected-access
  # The exact classifier is far better than chance (ln 2) on 16² maps.
  assert loss.mean() < 0.5
  joint, shuffled = exact.logits
  slopes = [0.6, 0.8, 1., 1.25, 1.6]
  by_slope = [float(tf.reduce_mean(ratio.classification_loss(
      s * joint, s * shuffled))) for s in slopes]
  np.testing.assert_allclose(by_slope[2], loss.mean())
  assert np.argmin(by_slope) == 2, by_slope
  by_shift = [float(np.mean(training._ratio_loss(  # pylint: disable=protected-access
      _ExactModel(shift), *args))) for shift in (-0.03, 0., 0.03)]
  assert np.argmin(by_shift) == 1, by_shift


def test_contrastive_loss_is_log_k_at_zero_and_minimal_at_the_exact_ratio():
  np.testing.assert_allclose(ratio.contrastive_loss(tf.zeros([3, 4])),
                             np.log(4.) * np.ones(3), rtol=1e-6)
  logits = np.random.default_rng(3).normal(size=(5, 3))
  np.testing.assert_allclose(
      ratio.contrastive_loss(tf.constant(logits)),
      np.log(np.exp(logits).sum(-1)) - logits[:, 0], rtol=1e-12)
  # A term that depends on the map only leaves it unchanged.
  np.testing.assert_allclose(
      ratio.contrastive_loss(tf.constant(logits + np.arange(5.)[:, None])),
      ratio.contrastive_loss(tf.constant(logits)), rtol=1e-12)
  # The training loss with K = 4 candidates (noise added, the θ of the
  # three previous maps as the others) is minimal at the exact log ratio,
  # among tempered or sharpened versions and versions at a shifted σ8.
  args = _training_args()
  exact = _ExactModel()
  loss = training._contrastive_ratio_loss(exact, *args, num_candidates=4).numpy()  # pylint: disable=protected-access
  assert loss.mean() < 0.7 * np.log(4.)  # Far better than chance.
  candidates = np.asarray(exact.logits[-1]).reshape(4, -1).T
  np.testing.assert_allclose(
      ratio.contrastive_loss(tf.constant(candidates)).numpy(), loss,
      rtol=1e-10)
  slopes = [0.6, 0.8, 1., 1.25, 1.6]
  by_slope = [float(tf.reduce_mean(ratio.contrastive_loss(
      tf.constant(s * candidates)))) for s in slopes]
  assert np.argmin(by_slope) == 2, by_slope
  by_shift = [float(np.mean(training._contrastive_ratio_loss(  # pylint: disable=protected-access
      _ExactModel(shift), *args, num_candidates=4)))
              for shift in (-0.03, 0., 0.03)]
  assert np.argmin(by_shift) == 1, by_shift


def test_balance_penalty_is_the_unbiased_pair_mean():
  rng = np.random.default_rng(7)
  joint, shuffled = rng.normal(1., 2., 9), rng.normal(-1., 2., 9)
  a = scipy.special.expit(joint) + scipy.special.expit(shuffled) - 1.
  pairs = [a[i] * a[j] for i in range(9) for j in range(9) if i != j]
  np.testing.assert_allclose(
      ratio.balance_penalty(tf.constant(joint), tf.constant(shuffled)),
      np.mean(pairs), rtol=1e-12)
  # Zero logits (d = 1/2) and a perfect classifier (d = 1 and 0) are balanced.
  assert float(ratio.balance_penalty(tf.zeros(4), tf.zeros(4))) == 0.
  np.testing.assert_allclose(ratio.balance_penalty(
      tf.fill([4], 30.), tf.fill([4], -30.)), 0., atol=1e-12)
  # A classifier that calls every pair joint violates it by b = 1.
  np.testing.assert_allclose(ratio.balance_penalty(
      tf.fill([4], 30.), tf.fill([4], 30.)), 1., rtol=1e-6)
  with pytest.raises(ValueError, match='at least 2 pairs, got 1'):
    ratio.balance_penalty(tf.zeros(1), tf.zeros(1))


def test_exact_classifier_is_balanced_and_the_penalty_enters_the_loss():
  # The Bayes-optimal classifier is balanced: on 512 pairs of the 16²
  # amplitude problem its b is 0 within its standard error, while the same
  # logits shifted by +1 (every pair made likelier joint) are not.
  args = _training_args()
  exact = _ExactModel()
  plain = training._ratio_loss(exact, *args).numpy()  # pylint: disable=protected-access
  joint, shuffled = exact.logits
  a = scipy.special.expit(joint) + scipy.special.expit(shuffled) - 1.
  assert abs(a.mean()) < 3 * a.std() / np.sqrt(len(a)), a.mean()
  shifted = (scipy.special.expit(joint + 1.) +
             scipy.special.expit(shuffled + 1.) - 1.)
  assert shifted.mean() > 10 * a.std() / np.sqrt(len(a)), shifted.mean()
  # With λ = 10 every example carries λ times the batch's penalty.
  balanced = training._ratio_loss(_ExactModel(), *args, balance=10.).numpy()  # pylint: disable=protected-access
  penalty = float(ratio.balance_penalty(tf.constant(joint),
                                        tf.constant(shuffled)))
  np.testing.assert_allclose(balanced, plain + 10. * penalty, rtol=1e-10)


def test_theta_score_is_the_gradient_of_log_ratio():
  model = testing.perturb_weights(ratio.RatioNetwork(**TINY))
  x = _maps(16, batch=2)
  theta = np.array([[0.25, 0.7], [0.33, 0.91]])
  score = model.theta_score(x, theta, 0.02).numpy()
  assert score.shape == (2, 2) and np.all(np.abs(score) > 1.)
  # Central differences in float64 arithmetic on float32 logits: a step of
  # 1e-3 keeps both the rounding (|ℓ| ε / step) and the truncation error
  # below 0.5 % of the score.
  step = 1e-3
  for d in range(2):
    shift = np.zeros(2)
    shift[d] = step
    finite_difference = (
        model.log_ratio(x.astype(np.float64), theta + shift, 0.02) -
        model.log_ratio(x.astype(np.float64), theta - shift, 0.02)) / (2 * step)
    np.testing.assert_allclose(score[:, d], finite_difference, rtol=5e-3)


def test_remove_map_mean_makes_the_logit_blind_to_the_mean(tmp_path):
  # Shear data hold no map mean (the E-mode map has mean 0): with
  # remove_map_mean the logit of x + c equals that of x for any constant c,
  # at every θ and σ; without it, the same weights read the mean.
  blind = testing.perturb_weights(ratio.RatioNetwork(
      **TINY, remove_map_mean=True))
  reads = ratio.RatioNetwork(**{**blind.get_config(), 'remove_map_mean': False})
  reads.set_weights(blind.get_weights())
  x = _maps(16)
  offset = np.array([0.003, -0.01, 0.02], np.float32)[:, None, None]
  theta = np.array([[0.25, 0.7], [0.3, 0.8], [0.35, 0.95]], np.float32)
  np.testing.assert_allclose(blind.log_ratio(x + offset, theta, 0.01),
                             blind.log_ratio(x, theta, 0.01), atol=1e-4)
  np.testing.assert_allclose(
      blind.log_ratio(x, theta, 0.01),
      reads.log_ratio(x - x.mean(axis=(1, 2), keepdims=True), theta, 0.01),
      rtol=1e-5, atol=1e-5)
  shifted = reads.log_ratio(x + offset, theta, 0.01).numpy()
  assert np.all(np.abs(shifted - reads.log_ratio(x, theta, 0.01).numpy())
                > 1e-3), shifted
  # The setting is saved with the network.
  blind.save(tmp_path / 'blind.keras')
  assert ratio.load_ratio_network(tmp_path / 'blind.keras').remove_map_mean


def test_shapes_broadcasting_and_dtypes(network):
  x = _maps(16)
  theta = np.array([[0.25, 0.7], [0.3, 0.8], [0.35, 0.95]], np.float32)
  logit = network.log_ratio(x, theta, 0.05)
  assert logit.shape == (3,) and logit.dtype == tf.float32
  # Each pair alone gives the same logit; one θ broadcasts over the maps.
  for i in range(3):
    np.testing.assert_allclose(network.log_ratio(x[i], theta[i], 0.05),
                               logit[i], rtol=1e-5)
  shared = network.log_ratio(x, theta[1], [0.05, 0.05, 0.05])
  np.testing.assert_allclose(shared[1], logit[1], rtol=1e-5)
  # θ's dtype is the score's, with one gradient per pair of the broadcast.
  score = network.theta_score(x, theta[1].astype(np.float64), 0.05)
  assert score.shape == (3, 2) and score.dtype == tf.float64
  # The untrained network (read-outs at zero) has ℓ = 0 everywhere.
  fresh = ratio.RatioNetwork(**TINY)
  np.testing.assert_array_equal(fresh.log_ratio(x, theta, 0.05), np.zeros(3))
  # A network trained on crops serves larger maps (fully convolutional).
  assert network.log_ratio(_maps(32, batch=1), theta[0], 0.05).shape == (1,)


def test_save_load_round_trip_is_bit_identical(tmp_path, network):
  path = tmp_path / 'ratio.keras'
  network.save(path)
  loaded = ratio.load_ratio_network(path)
  assert loaded.get_config() == network.get_config()
  assert loaded.theta_names == NAMES and loaded.theta_bounds == BOUNDS
  x, theta = _maps(16), [0.33, 0.72]
  np.testing.assert_array_equal(loaded.log_ratio(x, theta, 0.02),
                                network.log_ratio(x, theta, 0.02))
  np.testing.assert_array_equal(loaded.theta_score(x, theta, 0.02),
                                network.theta_score(x, theta, 0.02))


def test_deepened_network_has_the_same_logits_until_trained(tmp_path,
                                                            network):
  deeper = network.deepened()
  assert (deeper.depth, deeper.size_divisor) == (3, 2 * network.size_divisor)
  assert deeper.channel_multipliers == network.channel_multipliers + [
      network.channel_multipliers[-1]]
  x = _maps(16)
  theta = [[0.33, 0.72], [0.25, 0.9], [0.38, 0.61]]
  for sigma in (0.005, 0.05):
    np.testing.assert_allclose(deeper.log_ratio(x, theta, sigma),
                               network.log_ratio(x, theta, sigma),
                               rtol=1e-6, atol=1e-6)
  # The new level is live: a nonzero read-out there changes ℓ.
  readout = deeper.readouts[-1]
  readout.set_weights([np.full_like(w, 0.1) for w in readout.get_weights()])
  assert np.all(np.abs(deeper.log_ratio(x, theta, 0.05) -
                       network.log_ratio(x, theta, 0.05)) > 1e-3)
  # It saves and loads like any RatioNetwork (train_score.py --init_network).
  deeper.save(tmp_path / 'deeper.keras')
  loaded = ratio.load_ratio_network(tmp_path / 'deeper.keras')
  assert loaded.get_config() == deeper.get_config()
  with pytest.raises(ValueError, match='channel_multipliers'):
    network.deepened(channel_multiplier=0)


def test_load_ratio_network_names_the_wrong_file(tmp_path):
  with pytest.raises(FileNotFoundError, match='does not exist'):
    ratio.load_ratio_network(tmp_path / 'missing.keras')
  text = tmp_path / 'notes.keras'
  text.write_text('hello')
  with pytest.raises(ValueError, match='not a Keras archive .* a text file'):
    ratio.load_ratio_network(text)
  score_path = tmp_path / 'score.keras'
  ScoreNetwork(depth=1, base_channels=4, embedding_dim=4).save(score_path)
  with pytest.raises(ValueError, match='holds a ScoreNetwork .* expected a '
                     'RatioNetwork'):
    ratio.load_ratio_network(score_path)


@pytest.mark.parametrize('kwargs, match', [
    (dict(theta_names=None, theta_bounds=None), 'needs theta_names'),
    (dict(theta_bounds=((0.2, 0.4),)), r'theta_bounds must be \[D, 2\]'),
    (dict(theta_bounds=((0.4, 0.2), (0.6, 1.0))), 'lower < upper'),
    (dict(depth=0), 'depth'),
    (dict(channel_multipliers=[1, 2]), 'depth \\+ 1 = 3 entries'),
    (dict(remove_map_mean=1), 'remove_map_mean must be True or False, got 1'),
])
def test_bad_construction(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ratio.RatioNetwork(**(TINY | kwargs))


def test_bounds_rounded_to_float32_are_inside(network):
  # float32(0.4) = 0.40000001 > 0.4: still the bound, not outside it.
  theta = np.array([[0.2, 0.6], [0.4, 1.0]], np.float32)
  assert network.log_ratio(_maps(16, batch=2), theta, 0.05).shape == (2,)


@pytest.mark.parametrize('x, theta, sigma, match', [
    (_maps(16), [0.3], 0.05, r'last axis of 2 parameters'),
    (_maps(16), [0.3, 1.1], 0.05, r'sigma8 = 1.1.* outside the range the '
     r'ratio network was trained on, \[0.6, 1\]'),
    (_maps(16), [np.nan, 0.8], 0.05, 'omega_m = nan'),
    (_maps(18), [0.3, 0.8], 0.05, r'divisible by 2\*\*depth = 4; got 18x18'),
    (_maps(16), [0.3, 0.8], 0., 'sigma must be finite and > 0'),
    (np.zeros([3, 16, 8], np.float32), [0.3, 0.8], 0.05, 'square'),
])
def test_bad_inputs(network, x, theta, sigma, match):
  with pytest.raises(ValueError, match=match):
    network.log_ratio(x, theta, sigma)
  with pytest.raises(ValueError, match=match):
    network.theta_score(x, theta, sigma)


def test_training_refuses_what_it_cannot_train(tmp_path):
  data = dict(kappa=_maps(16, batch=8), omega_m=np.full(8, 0.3, np.float32),
              sigma8=np.full(8, 0.8, np.float32))
  with pytest.raises(ValueError, match='RatioNetwork learns the θ dependence'):
    training.train_ratio_network(data, str(tmp_path / 'a'),
                                 network=dict(depth=1), steps=2)
  with pytest.raises(ValueError, match='gives 1 map.*needs at least 2'):
    training.train_ratio_network(data, str(tmp_path / 'b'), network=TINY,
                                 batch_size=1, steps=2)
  with pytest.raises(ValueError, match='network must be a RatioNetwork'):
    training.train_ratio_network(data, str(tmp_path / 'c'),
                                 network=ScoreNetwork(depth=1), steps=2)
  with pytest.raises(ValueError, match=r"missing \['sigma8'\]"):
    training.train_ratio_network(dict(kappa=data['kappa'],
                                      omega_m=data['omega_m']),
                                 str(tmp_path / 'd'), network=TINY, steps=2)


def test_balanced_training_is_recorded_and_checked(tmp_path):
  data = dict(kappa=_maps(16, batch=8), omega_m=np.full(8, 0.3, np.float32),
              sigma8=np.linspace(0.7, 0.9, 8).astype(np.float32))
  with pytest.raises(ValueError, match='balance must be >= 0.*got -1.0'):
    training.train_ratio_network(data, str(tmp_path / 'a'), network=TINY,
                                 balance=-1., steps=2)
  assert not (tmp_path / 'a').exists()
  result = training.train_ratio_network(
      data, str(tmp_path / 'b'), network=TINY, balance=10., batch_size=4,
      steps=2, log_every=1, progress=False)
  assert result.history['loss'] and np.all(np.isfinite(result.history['loss']))
  config = json.loads((tmp_path / 'b' / 'run_config.json').read_text())
  assert config['objective'] == 'ratio' and config['balance'] == 10.
  # A run of another λ is another configuration: it does not resume this one.
  with pytest.raises(ValueError, match='different configuration'):
    training.train_ratio_network(data, str(tmp_path / 'b'), network=TINY,
                                 balance=1., batch_size=4, steps=4,
                                 progress=False)


def test_contrastive_training_is_recorded_and_checked(tmp_path):
  data = dict(kappa=_maps(16, batch=8), omega_m=np.full(8, 0.3, np.float32),
              sigma8=np.linspace(0.7, 0.9, 8).astype(np.float32))
  for value, match in ((1, 'K >= 2, got 1'), (True, 'K >= 2, got True'),
                       (-2, 'K >= 2, got -2')):
    with pytest.raises(ValueError, match=match):
      training.train_ratio_network(data, str(tmp_path / 'a'), network=TINY,
                                   contrastive=value, steps=2)
  with pytest.raises(ValueError, match='balance applies to the binary loss'):
    training.train_ratio_network(data, str(tmp_path / 'a'), network=TINY,
                                 contrastive=3, balance=1., steps=2)
  with pytest.raises(ValueError, match='K = 5 candidates needs at least K '
                     'maps per replica, got 4'):
    training.train_ratio_network(data, str(tmp_path / 'c'), network=TINY,
                                 contrastive=5, batch_size=4, steps=2,
                                 progress=False)
  assert not (tmp_path / 'a').exists()
  result = training.train_ratio_network(
      data, str(tmp_path / 'b'), network=TINY, contrastive=3, batch_size=4,
      steps=2, log_every=1, progress=False)
  # Untrained the loss is log 3 (the read-outs start at zero).
  np.testing.assert_allclose(result.history['loss'][0], np.log(3.), rtol=0.05)
  config = json.loads((tmp_path / 'b' / 'run_config.json').read_text())
  assert config['objective'] == 'ratio' and config['contrastive'] == 3


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
  """A ratio network trained on 16² maps of the amplitude prior (~10 s)."""
  kappa, sigma8 = _pairs(2048, seed=11)
  output = tmp_path_factory.mktemp('ratio_run')
  result = training.train_ratio_network(
      dict(kappa=kappa.astype(np.float32), sigma8=sigma8.astype(np.float32)),
      str(output),
      network=dict(depth=1, base_channels=8, embedding_dim=32, data_std=0.016,
                   theta_names=['sigma8'], theta_bounds=[SIGMA8_BOUNDS],
                   pixel_scale_arcmin=PIXEL_SCALE),
      batch_size=32, steps=300, learning_rate=3e-3, sigma_min=3e-3,
      sigma_max=0.03, seed=2, log_every=100, progress=False)
  return result, output


@pytest.mark.slow
def test_trained_theta_score_follows_the_exact_one(trained):
  result, output = trained
  model = result.model
  # Below chance (ln 2 = 0.693) after 300 steps; the exact classifier's
  # loss is 0.45 at σ = 0.01 and closer to ln 2 towards σ_max = 0.03.
  assert result.history['loss'][-1] < 0.6
  assert (output / training.RATIO_MODEL_FILENAME).exists()
  kappa, sigma8 = _pairs(256, seed=99)  # Held out: another seed.
  sigma = 0.01
  noisy = kappa + sigma * np.random.default_rng(3).standard_normal(kappa.shape)
  # Scores at θ away from each map's own: the exact score changes sign and
  # size with the map's power against θ's.
  theta = np.random.default_rng(4).uniform(0.62, 0.98, [256, 1])
  _, exact = _amplitude_prior().score(noisy, theta, sigma)
  exact = exact.numpy()[:, 0]
  learned = model.theta_score(noisy.astype(np.float32), theta,
                              sigma).numpy()[:, 0]
  # 300 steps get the direction (r = 0.96 on this seed) before the size:
  # the least-squares slope is 0.37 here, rising with training (0.58 after
  # 1000 steps), i.e. an under-confident ratio.
  assert np.corrcoef(exact, learned)[0, 1] > 0.9
  assert 0.2 < np.polyfit(exact, learned, 1)[0] < 1.2


def _sigma8_prior(model):
  """A LearnedJointPrior over σ8 with a small random conditional network."""
  conditional_net = ScoreNetwork(
      depth=1, base_channels=4, embedding_dim=8, data_std=0.016, seed=1,
      theta_names=['sigma8'], theta_bounds=[SIGMA8_BOUNDS],
      pixel_scale_arcmin=PIXEL_SCALE)
  return LearnedJointPrior(conditional_net, ratio=model)


def test_learned_joint_prior_score_has_both_parts():
  model = testing.perturb_weights(ratio.RatioNetwork(
      depth=1, base_channels=4, embedding_dim=8, theta_names=['sigma8'],
      theta_bounds=[SIGMA8_BOUNDS], pixel_scale_arcmin=PIXEL_SCALE))
  prior = _sigma8_prior(model)
  assert prior.ratio is model and 'with ratio network' in repr(prior)
  x = _maps(16, batch=2)
  theta = np.array([[0.7], [0.9]], np.float32)
  score_x, score_theta = prior.score(x, theta, 0.02)
  np.testing.assert_array_equal(score_x,
                                prior.network.score(x, 0.02, theta))
  np.testing.assert_array_equal(score_theta, model.theta_score(x, theta, 0.02))
  assert score_x.shape == (2, N, N) and score_theta.shape == (2, 1)
  assert conditional.joint_prior_properties(prior).theta_names == ('sigma8',)
  # The field-level θ likelihood is the ratio network's logit.
  np.testing.assert_array_equal(prior.field_log_likelihood(x, theta, 0.02),
                                model.log_ratio(x, theta, 0.02))
  # So the marginal θ posterior of fully observed white-noise data runs.
  shear_map = ShearMap(
      shear=np.zeros([N, N, 2], np.float32),
      noise_std=np.full([N, N], 0.01, np.float32),
      mask=np.ones([N, N], np.float32), pixel_scale_arcmin=PIXEL_SCALE)
  sigma8, diagnostics = theta_posterior.sample_theta_posterior(
      shear_map, prior, num_samples=4, seed=(1, 1), method='hmc',
      num_burnin_steps=10, num_results=4)
  assert sigma8.shape == (4, 1) and np.all((sigma8 > 0.6) & (sigma8 < 1.0))
  assert diagnostics['log_likelihood_evaluations'] == 14 * 4
  sigma8, diagnostics = theta_posterior.sample_theta_posterior(
      shear_map, prior, num_samples=4, seed=(1, 1))  # Grid for D = 1.
  assert sigma8.shape == (4, 1) and np.all((sigma8 > 0.6) & (sigma8 < 1.0))
  assert diagnostics['log_likelihood_evaluations'] == 2 * 128


@pytest.mark.slow
def test_learned_joint_prior_with_ratio_runs_the_joint_sampler(trained):
  prior = _sigma8_prior(trained[0].model)
  # Two chains through the joint sampler: θ stays inside its bounds.
  shear_map = ShearMap(
      shear=np.zeros([N, N, 2], np.float32),
      noise_std=np.full([N, N], 0.01, np.float32),
      mask=np.ones([N, N], np.float32), pixel_scale_arcmin=PIXEL_SCALE)
  sampler = joint_posterior.JointPosteriorSampler(
      prior, schedule=GeometricSchedule(0.02, 0.01, num_levels=2),
      num_final_steps=1, num_leapfrog_steps=2)
  result = sampler.sample(shear_map, num_samples=2, seed=(1, 2))
  assert result.samples.shape == (2, N, N)
  sigma8 = result.parameters['sigma8'].numpy()
  assert sigma8.shape == (2,) and np.all((sigma8 > 0.6) & (sigma8 < 1.0))
  assert np.all(np.isfinite(result.samples.numpy()))


def test_learned_joint_prior_refuses_a_mismatched_ratio(tmp_path, network):
  conditional_net = ScoreNetwork(depth=1, base_channels=4, embedding_dim=8,
                                 theta_names=NAMES, theta_bounds=BOUNDS,
                                 pixel_scale_arcmin=0.8)
  other = ratio.RatioNetwork(**(TINY | dict(theta_bounds=((0.2, 0.4),
                                                          (0.5, 1.0)))))
  with pytest.raises(ValueError, match='same parameters, in the same order, '
                     'with the same bounds'):
    LearnedJointPrior(conditional_net, ratio=other)
  swapped = ratio.RatioNetwork(**(TINY | dict(
      theta_names=NAMES[::-1], theta_bounds=BOUNDS[::-1])))
  with pytest.raises(ValueError, match='same parameters'):
    LearnedJointPrior(conditional_net, ratio=swapped)
  coarse = ratio.RatioNetwork(**(TINY | dict(pixel_scale_arcmin=3.2)))
  with pytest.raises(ValueError, match='trained at 3.2 arcmin pixels, the '
                     'conditional network at 0.8'):
    LearnedJointPrior(conditional_net, ratio=coarse)
  with pytest.raises(ValueError, match='ratio must be a .*RatioNetwork'):
    LearnedJointPrior(conditional_net, ratio=conditional_net)
  # A path loads; the prior without a ratio says how to get a θ score.
  path = tmp_path / 'ratio.keras'
  network.save(path)
  assert isinstance(LearnedJointPrior(conditional_net, ratio=str(path)).ratio,
                    ratio.RatioNetwork)
  with pytest.raises(NotImplementedError, match='Pass ratio=<RatioNetwork'):
    LearnedJointPrior(conditional_net).score(_maps(16), [0.3, 0.8], 0.05)
  with pytest.raises(NotImplementedError,
                     match='no field-level θ likelihood .*Pass ratio='):
    LearnedJointPrior(conditional_net).field_log_likelihood(
        _maps(16), [0.3, 0.8], 0.05)
