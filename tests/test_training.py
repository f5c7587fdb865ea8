"""Tests of denoising-score-matching training."""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf

import conftest
from tfp_massmap import cosmology
from tfp_massmap import training
from tfp_massmap.priors import ratio as ratio_lib
from tfp_massmap.score_network import ScoreNetwork

# Tiny network: the tests measure the training machinery, not the model.
TINY = dict(depth=1, base_channels=8, embedding_dim=16)


def _white_maps(count=12, n=16, seed=0):
  return 0.02 * np.random.default_rng(seed).standard_normal((count, n, n)).astype(np.float32)


def _grf_maps(count, n, slope, seed):
  """Gaussian random fields with power spectrum P(k) ∝ k^-slope, std 0.02."""
  k = np.fft.fftfreq(n)
  kk = np.hypot(*np.meshgrid(k, k, indexing='ij'))
  amplitude = np.where(kk > 0, kk, np.inf)**(-slope / 2)
  white = np.random.default_rng(seed).standard_normal((count, n, n))
  maps = np.fft.ifft2(np.fft.fft2(white) * amplitude).real
  scale = 0.02 / maps.std()
  return (maps * scale).astype(np.float32), (amplitude * scale)**2


def _weights_close(a, b, atol):
  return max(np.abs(u - v).max() for u, v in zip(a.get_weights(), b.get_weights())) <= atol


def test_resumed_run_matches_uninterrupted_run(tmp_path):
  kwargs = dict(network=TINY, batch_size=4, steps=6, checkpoint_every=3,
                log_every=3, shuffle_buffer=8, progress=False, seed=5)
  maps = _white_maps()
  full = training.train_score_network(maps, str(tmp_path / 'full'), **kwargs)

  save = tf.train.CheckpointManager.save

  def save_then_die(manager, checkpoint_number=None, **kw):
    path = save(manager, checkpoint_number=checkpoint_number, **kw)
    if checkpoint_number == 3:
      raise KeyboardInterrupt('simulated kill after the step-3 checkpoint')
    return path

  killed_dir = str(tmp_path / 'killed')
  with mock.patch.object(tf.train.CheckpointManager, 'save', save_then_die):
    with pytest.raises(KeyboardInterrupt):
      training.train_score_network(maps, killed_dir, **kwargs)
  assert not os.path.exists(os.path.join(killed_dir, training.MODEL_FILENAME))
  resumed = training.train_score_network(maps, killed_dir, **kwargs)

  assert resumed.history['step'] == [6]
  np.testing.assert_allclose(resumed.history['loss'], full.history['loss'][-1:], rtol=1e-6)
  # Equal up to float32 rounding: CPU kernels (SIMD vs scalar paths) are not
  # bitwise reproducible between runs; a wrong restore differs by ~1e-3.
  assert _weights_close(resumed.model, full.model, atol=1e-6)
  # The EMA weights differ from the initial ones: training happened.
  assert not _weights_close(full.model, ScoreNetwork(**TINY, seed=5), atol=1e-6)

  # Outputs: the saved network (EMA weights), the summary, TensorBoard scalars.
  out = tmp_path / 'full'
  loaded = keras.models.load_model(out / training.MODEL_FILENAME)
  assert _weights_close(loaded, full.model, atol=0.0)
  summary = json.loads((out / training.SUMMARY_FILENAME).read_text())
  assert summary['steps'] == 6 and summary['config']['seed'] == 5
  assert summary['final_loss'] == full.history['loss'][-1]
  tags = {v.tag for f in (out / 'logs').iterdir()
          for e in tf.compat.v1.train.summary_iterator(str(f)) for v in e.summary.value}
  assert {'loss', 'learning_rate', 'maps_per_second'} <= tags
  assert any(t.startswith('loss_sigma_band/') for t in tags)



@pytest.mark.slow  # The unconditioned resume test covers the step code.
def test_conditioned_run_resumes_with_its_theta_pairs(tmp_path):
  """A network conditioned on θ trains on (map, θ) pairs and resumes from a
  checkpoint like an unconditioned one; its θ settings are in the run
  config, and the examples carry each map's θ unchanged."""
  rng = np.random.default_rng(1)
  data = {'kappa': _white_maps(count=8), 'sigma8': rng.uniform(0.6, 1.0, 8)}
  network = dict(TINY, theta_names=['sigma8'], theta_bounds=[[0.6, 1.0]])
  kwargs = dict(network=network, batch_size=4, steps=4, checkpoint_every=2,
                log_every=2, shuffle_buffer=8, progress=False, seed=5)
  full = training.train_score_network(data, str(tmp_path / 'full'), **kwargs)
  save = tf.train.CheckpointManager.save

  def save_then_die(manager, checkpoint_number=None, **kw):
    path = save(manager, checkpoint_number=checkpoint_number, **kw)
    if checkpoint_number == 2:
      raise KeyboardInterrupt('simulated kill after the step-2 checkpoint')
    return path

  killed_dir = str(tmp_path / 'killed')
  with mock.patch.object(tf.train.CheckpointManager, 'save', save_then_die):
    with pytest.raises(KeyboardInterrupt):
      training.train_score_network(data, killed_dir, **kwargs)
  resumed = training.train_score_network(data, killed_dir, **kwargs)
  assert resumed.history['step'] == [4]
  np.testing.assert_allclose(resumed.history['loss'], full.history['loss'][-1:],
                             rtol=1e-6)
  assert _weights_close(resumed.model, full.model, atol=1e-6)
  assert resumed.model.theta_names == ('sigma8',)
  run_config = json.loads((tmp_path / 'full' / 'run_config.json').read_text())
  assert run_config['network']['theta_bounds'] == [[0.6, 1.0]]
  # Each example's θ is its map's label.
  pairs = training.map_dataset(data, parameters=['sigma8'])
  x, _, _, theta = training._training_examples(  # pylint: disable=protected-access
      pairs, seed=0, sigma_min=1e-3, sigma_max=0.2, crop_size=None,
      augment=False, shuffle_buffer=8).batch(8).take(1).get_single_element()
  for map_, label in zip(x.numpy(), theta.numpy()):
    i = int(np.flatnonzero(np.all(data['kappa'] == map_, axis=(1, 2)))[0])
    np.testing.assert_allclose(label, [data['sigma8'][i]], rtol=1e-6)


def test_unconditioned_run_config_has_no_theta_keys(tmp_path):
  """Run configs of unconditioned networks are those written before θ
  existed, so their runs still resume."""
  training.train_score_network(_white_maps(count=4), str(tmp_path),
                               network=TINY, batch_size=4, steps=1,
                               progress=False)
  run_config = json.loads((tmp_path / 'run_config.json').read_text())
  assert not {'theta_names', 'theta_bounds'} & set(run_config['network'])

_DISTRIBUTED_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from tfp_massmap import training
    from tfp_massmap.score_network import ScoreNetwork

    out_dir = sys.argv[1]
    maps = 0.02 * np.random.default_rng(0).standard_normal((8, 16, 16)).astype(np.float32)
    net = ScoreNetwork(depth=1, base_channels=8, embedding_dim=16, seed=2)
    # Non-zero output layer, so that every layer gets a gradient at step 1.
    net.head.kernel.assign(tf.random.stateless_normal(net.head.kernel.shape, [1, 2], stddev=0.1))
    strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
    result = training.train_score_network(
        maps, out_dir, network=net, batch_size=8, steps=1, optimizer='sgd',
        learning_rate=0.1, warmup_steps=0, ema_decay=0.0, seed=4, progress=False,
        strategy=strategy)

    # The same step on one device, by hand: the first global batch of the
    # same example stream, the mean weighted loss, one SGD step.
    x, sigma, noise = training._training_examples(
        training.map_dataset(maps), seed=4, sigma_min=1e-3, sigma_max=0.2,
        crop_size=None, augment=True, shuffle_buffer=256).batch(8).take(1).get_single_element()
    with tf.GradientTape() as tape:
      denoised = net(x + sigma[:, None, None] * noise, sigma)
      _, c_out, _ = net.preconditioning(sigma)
      loss = tf.reduce_mean(tf.reduce_mean((denoised - x)**2, axis=[1, 2]) / c_out**2)
    grads = tape.gradient(loss, net.trainable_variables)
    expected = [(w - 0.1 * g).numpy() for w, g in zip(net.trainable_variables, grads)]
    print('RESULT' + json.dumps(dict(
        replicas=strategy.num_replicas_in_sync,
        loss=result.history['loss'], expected_loss=float(loss),
        weights=[w.tolist() for w in result.model.get_weights()],
        expected=[w.tolist() for w in expected],
        initial=[w.tolist() for w in net.get_weights()])))
''')


def test_two_replica_step_equals_single_device_step(tmp_path):
  # Logical CPU devices must be configured before TensorFlow initialises:
  # run in a fresh interpreter.
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run([sys.executable, '-c', _DISTRIBUTED_SCRIPT, str(tmp_path)],
                        capture_output=True, text=True, env=env, timeout=300,
                        cwd=pathlib.Path(__file__).resolve().parents[1])
  assert proc.returncode == 0, proc.stderr[-3000:]
  line = [row for row in proc.stdout.splitlines() if row.startswith('RESULT')][-1]
  results = json.loads(line[len('RESULT'):])
  assert results['replicas'] == 2
  np.testing.assert_allclose(results['loss'], [results['expected_loss']], rtol=1e-6)
  # ema_decay = 0: the returned weights are the weights after the SGD step.
  changes = []
  for got, want, start in zip(results['weights'], results['expected'], results['initial']):
    np.testing.assert_allclose(np.array(got), np.array(want), rtol=0, atol=1e-5)
    changes.append(np.abs(np.array(want) - np.array(start)).max())
  # The step moved the weights by much more than the tolerance (a few biases
  # in front of per-channel group norms legitimately get no gradient).
  assert np.median(changes) > 3e-4


@pytest.mark.parametrize('kwargs, match', [
    (dict(sigma_min=0.0), 'sigma_min must be a positive number'),
    (dict(sigma_min=0.2, sigma_max=0.1), 'sigma_min must be smaller than sigma_max'),
    (dict(sigma_min=0.1, sigma_max=0.1), 'sigma_min must be smaller than sigma_max'),
    (dict(network=dict(depth=3)),
     r'dataset maps are 12x12 pixels; .*divisible by 2\*\*depth = 8'),
    (dict(crop_size=6), r'crop_size must be divisible by 2\*\*depth = 4'),
    (dict(crop_size=16), 'at most the map size 12'),
    (dict(network=dict(width=3)), r"unknown ScoreNetwork argument\(s\) \['width'\]"),
    (dict(batch_size=0), 'batch_size must be an integer >= 1'),
    (dict(warmup_steps=10), r'warmup_steps must be an integer in \[0, steps = 10\)'),
    (dict(ema_decay=1.0), r'ema_decay must be in \[0, 1\)'),
])
def test_bad_configuration_raises(tmp_path, kwargs, match):
  args = dict(network=dict(depth=2, base_channels=8), steps=10, progress=False) | kwargs
  with pytest.raises(ValueError, match=match):
    training.train_score_network(_white_maps(n=12), str(tmp_path), **args)


def test_bad_datasets_raise(tmp_path):
  empty = tf.data.Dataset.from_tensor_slices(np.zeros((0, 16, 16), np.float32))
  with pytest.raises(ValueError, match='dataset is empty'):
    training.train_score_network(empty, str(tmp_path), network=TINY)
  with pytest.raises(ValueError, match='square map'):
    training.train_score_network(np.zeros((4, 16, 8), np.float32), str(tmp_path),
                                 network=TINY)
  with pytest.raises(ValueError,
                     match="keys \\['image'\\]; expected the maps under feature='kappa'"):
    training.map_dataset(tf.data.Dataset.from_tensor_slices({'image': np.zeros((2, 4, 4))}))
  with pytest.raises(ValueError, match='tf.data.Dataset, a numpy array'):
    training.map_dataset([np.zeros((4, 4))])


def test_map_dataset_accepts_dicts_and_batches():
  maps = _white_maps(count=6, n=8)
  for dataset in (tf.data.Dataset.from_tensor_slices({'kappa': maps}),
                  tf.data.Dataset.from_tensor_slices(maps.astype(np.float64)).batch(4)):
    out = np.stack(list(training.map_dataset(dataset).as_numpy_iterator()))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, maps)


def test_resuming_with_another_configuration_raises(tmp_path):
  (tmp_path / 'run_config.json').write_text(json.dumps({'seed': 1}))
  with pytest.raises(ValueError, match='different configuration'):
    training.train_score_network(_white_maps(), str(tmp_path), network=TINY)


def test_training_examples_are_reproducible_and_log_uniform():
  maps = tf.data.Dataset.from_tensor_slices(_white_maps(count=4, n=16))
  make = lambda: training._training_examples(  # pylint: disable=protected-access
      maps, seed=3, sigma_min=1e-3, sigma_max=0.2, crop_size=8, augment=True,
      shuffle_buffer=4).batch(500).take(1).get_single_element()
  (x1, s1, u1), (x2, s2, u2) = make(), make()
  np.testing.assert_array_equal(x1, x2)
  np.testing.assert_array_equal(s1, s2)
  np.testing.assert_array_equal(u1, u2)
  assert x1.shape == (500, 8, 8)
  # ln sigma is uniform on [ln 1e-3, ln 0.2]: mean and std of a uniform law.
  log_s = np.log(s1.numpy())
  lo, hi = np.log(1e-3), np.log(0.2)
  assert log_s.min() >= lo and log_s.max() <= hi
  assert abs(log_s.mean() - (lo + hi) / 2) < 4 * (hi - lo) / np.sqrt(12 * 500)
  assert abs(u1.numpy().std() - 1.0) < 0.02


@pytest.mark.slow
def test_trained_denoiser_approaches_wiener_filter(tmp_path):
  # On Gaussian random fields the optimal denoiser is the Wiener filter
  # P / (P + sigma^2) in Fourier space: its error is the floor. The untrained
  # network (white-prior Wiener filter) is 2-2.5x worse at these sigmas.
  n = 16
  maps, power = _grf_maps(512, n, slope=3.0, seed=0)
  result = training.train_score_network(
      maps, str(tmp_path), network=dict(depth=2, base_channels=16, embedding_dim=32),
      batch_size=32, steps=300, learning_rate=3e-3, sigma_min=0.005, sigma_max=0.05,
      ema_decay=0.99, log_every=100, progress=False, seed=1)
  assert result.history['loss'][-1] < 0.6  # Untrained: ~1.
  test_maps, _ = _grf_maps(64, n, slope=3.0, seed=1)
  rng = np.random.default_rng(2)
  for sigma in (0.01, 0.03):
    noisy = (test_maps + sigma * rng.standard_normal(test_maps.shape)).astype(np.float32)
    net_mse = np.mean((result.model.denoise(noisy, sigma).numpy() - test_maps)**2)
    wiener = np.fft.ifft2(np.fft.fft2(noisy) * power / (power + sigma**2)).real
    wiener_mse = np.mean((wiener - test_maps)**2)
    assert net_mse < 1.1 * wiener_mse, (sigma, net_mse, wiener_mse)


def test_train_score_continues_from_init_network(tmp_path):
  """--init_network fine-tunes: the run keeps the saved network's
  architecture (not the flags' defaults) and starts from its weights; with
  a negligible learning rate and no averaging, the saved network is the
  initial one. Architecture flags beside it are refused by name."""
  rng = np.random.default_rng(3)
  bounds = np.array(cosmology.COSMO_PARAMETER_BOUNDS)
  np.savez(tmp_path / 'pairs.npz', kappa=_white_maps(count=8),
           omega_m=rng.uniform(*bounds[0], 8), sigma8=rng.uniform(*bounds[1], 8))
  initial = ratio_lib.RatioNetwork(
      theta_names=list(cosmology.COSMO_PARAMETER_NAMES),
      theta_bounds=bounds.tolist(), depth=1, base_channels=4, embedding_dim=8,
      seed=7)
  # Non-zero read-outs, so that the weights say which network this is.
  for layer in initial.readouts:
    layer.kernel.assign(tf.random.stateless_normal(layer.kernel.shape, [3, 4]))
  initial.save(tmp_path / 'initial.keras')
  common = [f'--dataset={tmp_path / "pairs.npz"}', '--objective=ratio',
            f'--init_network={tmp_path / "initial.keras"}', '--batch_size=4',
            '--steps=1', '--warmup_steps=0', '--ema_decay=0']

  run = conftest.run_script('examples/train_score.py', *common,
                            '--learning_rate=1e-12',
                            f'--output_dir={tmp_path / "tuned"}')
  assert run.returncode == 0, run.stderr[-2000:]
  tuned = ratio_lib.load_ratio_network(
      tmp_path / 'tuned' / training.RATIO_MODEL_FILENAME)
  assert (tuned.depth, tuned.base_channels, tuned.embedding_dim) == (1, 4, 8)
  assert _weights_close(tuned, initial, atol=1e-6)
  assert not _weights_close(
      tuned, ratio_lib.RatioNetwork(**{**initial.get_config(), 'seed': 8}),
      atol=1e-6)

  refused = conftest.run_script('examples/train_score.py', *common,
                                '--depth=3',
                                f'--output_dir={tmp_path / "refused"}')
  assert refused.returncode != 0
  assert '--depth' in refused.stderr and 'init_network' in refused.stderr
  assert not (tmp_path / 'refused').exists()


def test_train_score_ratio_flags(tmp_path):
  """--ratio_balance reaches the ratio objective (recorded in the run
  configuration) and --remove_map_mean the network (saved with it); both
  are refused by name for score matching, --ratio_balance below 0."""
  rng = np.random.default_rng(4)
  bounds = np.array(cosmology.COSMO_PARAMETER_BOUNDS)
  np.savez(tmp_path / 'pairs.npz', kappa=_white_maps(count=8),
           omega_m=rng.uniform(*bounds[0], 8), sigma8=rng.uniform(*bounds[1], 8))
  common = [f'--dataset={tmp_path / "pairs.npz"}', '--batch_size=4',
            '--steps=1', '--depth=1', '--base_channels=4',
            '--embedding_dim=8']
  run = conftest.run_script('examples/train_score.py', *common,
                            '--objective=ratio', '--ratio_balance=10',
                            '--remove_map_mean',
                            f'--output_dir={tmp_path / "balanced"}')
  assert run.returncode == 0, run.stderr[-2000:]
  config = json.loads((tmp_path / 'balanced' / 'run_config.json').read_text())
  assert config['objective'] == 'ratio' and config['balance'] == 10.
  assert ratio_lib.load_ratio_network(
      tmp_path / 'balanced' / training.RATIO_MODEL_FILENAME).remove_map_mean
  for flags, message in ((['--ratio_balance=10'], 'objective=ratio only'),
                         (['--remove_map_mean'], 'objective=ratio only'),
                         (['--objective=ratio', '--ratio_balance=-1'],
                          'must be >= 0, got -1'),
                         (['--ratio_contrastive=3'], 'objective=ratio only'),
                         (['--objective=ratio', '--ratio_contrastive=1'],
                          'must be 0 or >= 2, got 1'),
                         (['--objective=ratio', '--ratio_contrastive=3',
                           '--ratio_balance=1'], 'do not combine')):
    refused = conftest.run_script('examples/train_score.py', *common, *flags,
                                  f'--output_dir={tmp_path / "refused"}')
    assert refused.returncode != 0
    assert flags[-1].split('=')[0] in refused.stderr, refused.stderr[-500:]
    assert message in refused.stderr
    assert not (tmp_path / 'refused').exists()
