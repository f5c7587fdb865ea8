"""Tests of the ScoreNetwork denoiser/score model."""

import json
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import testing
from tfp_massmap.score_network import load_score_network
from tfp_massmap.score_network import ScoreNetwork

TINY = dict(base_channels=8, embedding_dim=16, seed=3)



@pytest.fixture(scope='module')
def networks():
  """Untrained tiny networks of depth 2 and 3 (built once per module)."""
  return {depth: ScoreNetwork(depth=depth, **TINY) for depth in (2, 3)}


@pytest.fixture(scope='module')
def trained_like():
  """A tiny depth-2 network with non-trivial weights."""
  return testing.perturb_weights(ScoreNetwork(depth=2, **TINY))


def _maps(n, batch=2, seed=0):
  return 0.02 * np.random.default_rng(seed).standard_normal((batch, n, n)).astype(np.float32)


@pytest.mark.parametrize('depth', [2, 3])
@pytest.mark.parametrize('n', [16, 32, 64])
def test_output_shape_and_dtype_for_any_divisible_size(networks, depth, n):
  model = networks[depth]
  x = _maps(n)
  for out in (model(x, 0.05), model.denoise(x, 0.05), model.score(x, [0.01, 0.1])):
    assert out.shape == (2, n, n)
    assert out.dtype == tf.float32
    assert np.all(np.isfinite(out))


def test_leading_axes_sigma_broadcast_and_float64(trained_like):
  model = trained_like
  x = _maps(16, batch=6).reshape(2, 3, 16, 16)
  sigma = np.array([0.01, 0.05, 0.2], np.float32)
  out = model.score(x.astype(np.float64), sigma)
  assert out.shape == (2, 3, 16, 16) and out.dtype == tf.float64
  # Each map is processed with its own sigma, independently of the others.
  single = model.score(x[1, 2], sigma[2])
  np.testing.assert_allclose(out[1, 2], single, rtol=1e-5, atol=1e-3)
  np.testing.assert_allclose(model.denoise(x[0], sigma), model(x[0], sigma), rtol=1e-6)


def test_untrained_network_is_the_white_gaussian_prior_score():
  # F = 0 at initialisation (zero output layer), so r = c_skip x and the score
  # is exactly that of N(0, (sigma_d^2 + sigma^2) I).
  model = ScoreNetwork(depth=2, data_std=0.03, **TINY)
  x = _maps(16, batch=3)
  sigma = np.array([1e-3, 0.02, 0.2], np.float32)
  expected = -x / (sigma**2 + 0.03**2)[:, None, None]
  np.testing.assert_allclose(model.score(x, sigma), expected, rtol=1e-6)
  np.testing.assert_allclose(
      model.denoise(x, sigma),
      x * (0.03**2 / (sigma**2 + 0.03**2))[:, None, None], rtol=1e-6)


def test_score_is_tweedie_residual_of_denoiser(trained_like):
  model = trained_like
  x = _maps(16, batch=3).astype(np.float64)
  sigma = np.array([0.01, 0.05, 0.2])
  residual = (model.denoise(x, sigma) - x) / (sigma**2)[:, None, None]
  score = model.score(x, sigma)
  np.testing.assert_allclose(score, residual, rtol=2e-4 * np.abs(score).max())


def test_save_load_round_trip_without_custom_objects(tmp_path):
  model = testing.perturb_weights(ScoreNetwork(depth=2, channel_multipliers=[1, 2, 3],
                                  blocks_per_level=2, data_std=0.025, **TINY))
  x = _maps(32, batch=2)
  sigma = np.array([0.003, 0.1], np.float32)
  path = str(tmp_path / 'prior.keras')
  model.save(path)
  loaded = keras.models.load_model(path)
  assert isinstance(loaded, ScoreNetwork)
  assert loaded.get_config() == model.get_config()
  np.testing.assert_array_equal(loaded(x, sigma), model(x, sigma))
  np.testing.assert_array_equal(loaded.score(x, sigma), model.score(x, sigma))
  np.testing.assert_array_equal(load_score_network(path).denoise(x, sigma),
                                model.denoise(x, sigma))


def test_seed_fixes_initial_weights():
  a = ScoreNetwork(depth=2, **TINY).get_weights()
  b = ScoreNetwork(depth=2, **TINY).get_weights()
  c = ScoreNetwork(depth=2, **(TINY | {'seed': 4})).get_weights()
  assert all(np.array_equal(u, v) for u, v in zip(a, b))
  assert not all(np.array_equal(u, v) for u, v in zip(a, c))


def test_map_size_not_divisible_raises(networks):
  model = networks[3]
  with pytest.raises(ValueError, match=r'divisible by 2\*\*depth = 8; got 20x20'):
    model(_maps(20), 0.1)
  with pytest.raises(ValueError, match='square'):
    model.score(np.zeros((1, 16, 32), np.float32), 0.1)


@pytest.mark.parametrize('sigma', [0.0, -0.1, np.nan, [0.1, 0.0]])
def test_non_positive_sigma_raises(networks, sigma):
  model = networks[2]
  for method in (model, model.denoise, model.score):
    with pytest.raises(ValueError, match='sigma must be finite and > 0'):
      method(_maps(16), sigma)


@pytest.mark.parametrize('kwargs, match', [
    (dict(depth=0), 'depth must be an integer >= 1, got 0'),
    (dict(depth=2, channel_multipliers=[1, 2]), 'depth \\+ 1 = 3 entries'),
    (dict(base_channels=2.5), 'base_channels must be an integer >= 1'),
    (dict(data_std=-0.02), 'data_std must be a positive number'),
    (dict(seed=1.5), 'seed must be an integer or None'),
])
def test_bad_configuration_raises(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ScoreNetwork(**kwargs)


def test_load_score_network_rejects_other_models(tmp_path):
  other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  path = str(tmp_path / 'other.keras')
  other.save(path)
  with pytest.raises(ValueError, match='expected a ScoreNetwork'):
    load_score_network(path)


def test_untrained_hybrid_prior_is_the_shipped_gaussian_prior(tmp_path):
  from tfp_massmap import cosmology
  from tfp_massmap.priors import gaussian as gaussian_prior
  net = ScoreNetwork(depth=2, base_channels=8, seed=0, gaussian_pixel_scale_arcmin=0.8)
  x = tf.random.stateless_normal([3, 32, 32], seed=[1, 2]) * 0.03
  sigma = tf.constant([0.005, 0.05, 0.2])
  ell, cl = cosmology.cosmos_convergence_cl()
  gauss = gaussian_prior.GaussianPrior.from_power_spectrum(ell, cl, 32, 0.8)
  np.testing.assert_allclose(net.denoise(x, sigma), gauss.denoise(x, sigma), atol=1e-7)
  np.testing.assert_allclose(net.score(x, sigma), gauss.score(x, sigma), rtol=1e-5,
                             atol=1e-3)
  path = str(tmp_path / 'hybrid.keras')
  net.save(path)
  loaded = keras.models.load_model(path)
  assert loaded.gaussian_pixel_scale_arcmin == 0.8
  np.testing.assert_array_equal(loaded.denoise(x, sigma), net.denoise(x, sigma))


def test_pixel_scale_is_saved_and_defaults_to_the_hybrid_scale(tmp_path):
  assert ScoreNetwork(depth=1, **TINY).pixel_scale_arcmin is None
  hybrid = ScoreNetwork(depth=1, gaussian_pixel_scale_arcmin=0.8, **TINY)
  assert hybrid.pixel_scale_arcmin == 0.8
  with pytest.raises(ValueError, match='pixel_scale_arcmin=0.5 differs from '
                     'gaussian_pixel_scale_arcmin=0.8'):
    ScoreNetwork(depth=1, gaussian_pixel_scale_arcmin=0.8,
                 pixel_scale_arcmin=0.5, **TINY)
  with pytest.raises(ValueError, match='pixel_scale_arcmin must be a positive'):
    ScoreNetwork(depth=1, pixel_scale_arcmin=-1., **TINY)
  path = tmp_path / 'plain.keras'
  ScoreNetwork(depth=1, pixel_scale_arcmin=0.29, **TINY).save(path)
  assert load_score_network(path).pixel_scale_arcmin == 0.29


def test_prior_protocol_members():
  net = ScoreNetwork(depth=2, **TINY)
  assert (net.size_divisor, net.num_pixels_per_side, net.smoothed_score) == (
      4, None, True)
  assert net.dtype == net.compute_dtype == 'float32'
  assert ScoreNetwork(depth=1, dtype='float64', **TINY).dtype == 'float64'
  for policy, compute in (('mixed_float16', 'float16'),
                          ('mixed_bfloat16', 'bfloat16')):
    with pytest.raises(ValueError, match='compute dtype must be float32 or '
                       f'float64, got {compute}'):
      ScoreNetwork(depth=1, dtype=policy, **TINY)


def test_files_saved_without_a_pixel_scale_still_load(tmp_path):
  """Archives written before pixel_scale_arcmin existed lack it in their
  config: they load with the default (the hybrid scale, else None)."""
  for hybrid, expected in ((0.8, 0.8), (None, None)):
    path = tmp_path / f'old_{hybrid}.keras'
    ScoreNetwork(depth=1, gaussian_pixel_scale_arcmin=hybrid, **TINY).save(path)
    old = tmp_path / f'old_{hybrid}_rewritten.keras'
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(old, 'w') as dst:
      for item in src.infolist():
        data = src.read(item.filename)
        if item.filename == 'config.json':
          config = json.loads(data)
          del config['config']['pixel_scale_arcmin']
          data = json.dumps(config).encode()
        dst.writestr(item, data)
    assert load_score_network(old).pixel_scale_arcmin == expected
