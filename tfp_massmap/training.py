"""Denoising score matching: trains a ``ScoreNetwork`` on convergence maps.

Each training example is a clean map x (optionally randomly cropped and
transformed by one of the 8 symmetries of the square with
``tfp_massmap.preprocessing``: convergence fields are statistically
isotropic and parity invariant), a noise level σ drawn log-uniformly in
[sigma_min, sigma_max] and a white noise map u ~ N(0, I).
The loss of one example is the EDM-weighted denoising error

    L = mean_pixels (r(x + σu, σ) − x)² / c_out(σ)²,

c_out = σ σ_d / sqrt(σ² + σ_d²) (see ``score_network``), which is ≈ 1 for
the untrained network (the white-prior Wiener filter) and lower for a useful
one, at every σ. The optimum of E[L] is the posterior-mean denoiser, i.e. the
score of the σ-smoothed prior (docs/design.md §1).

Conditional prior p(κ | θ): with a network conditioned on parameters θ
(``network={'theta_names': ..., 'theta_bounds': ...}``, e.g. the Ωm and σ8
of the ``lognormal_kappa/cosmo_*`` configs), each example is a (map, θ)
pair read from the dataset elements, the features named by ``theta_names``.
θ is a clean conditioning input: only the map is noised, and the loss is the
same EDM-weighted error of r(x + σu, σ, θ), whose optimum is the score of
p_σ(κ | θ). Crops and symmetries of the map leave its θ unchanged.

Reproducibility: every random draw (crop, symmetry, σ, u) is a stateless
function of (seed, index of the example in the stream), computed in the
input pipeline on the global batch before it is split between replicas, and
the map order comes from a seeded shuffle. So a run gives the same weights
on one device or on several, and a run killed and restarted from its last
checkpoint (model, optimizer, EMA weights, step and the input iterator's
position) continues where it stopped, with the same batches; both up to
float32 rounding (summation order, and CPU kernels are not bitwise
reproducible from run to run).

Distribution: ``tf.distribute.MultiWorkerMirroredStrategy`` when the
``TF_CONFIG`` environment variable is set (create the strategy at program
start, before other TensorFlow work, or pass it in), ``MirroredStrategy``
over the local GPUs when there are any, else the default one-device
strategy. Every worker runs the same input pipeline and each replica takes
its slice of the global batch. The per-example losses are summed and
divided by the global batch size on every replica, so the all-reduced
(summed) gradient is the gradient of the global-batch mean.

Ratio network (`train_ratio_network`): the same pipeline trains a
`tfp_massmap.priors.ratio.RatioNetwork`, a classifier of (map, θ) pairs
whose logit learns log p_σ(κ | θ) − log p_σ(κ), hence the θ score
∇θ log p_σ(κ | θ) (the ratio module's docstring). Each example is noised the
same way; its loss is the cross-entropy ``ratio.classification_loss`` of the
pair (x + σu, θ) (label 1) and of (x + σu, θ̃) (label 0), θ̃ the θ of the
previous example in the replica's slice of the batch (a draw from the θ
marginal, the maps being shuffled): ln 2 for the untrained network, lower for
a useful one.

Outputs in ``output_dir``: ``checkpoints/`` (``tf.train.CheckpointManager``),
``logs/`` (TensorBoard scalars: loss, loss per σ band, learning rate,
throughput), and at the end ``score_network.keras`` (``ratio_network.keras``
for a ratio network; EMA weights, written atomically) and ``training.json``
(config, steps, wall time, final loss, history).
"""

import collections
import functools
import inspect
import json
import os
import tempfile
import time

from absl import logging
import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2
import tqdm

from tfp_massmap import _checks
from tfp_massmap import outputs
from tfp_massmap import preprocessing
from tfp_massmap import score_network
from tfp_massmap.priors import ratio
from tfp_massmap.score_network import ScoreNetwork

__all__ = [
    'TrainingResult',
    'default_strategy',
    'map_dataset',
    'train_ratio_network',
    'train_score_network',
]

MODEL_FILENAME = 'score_network.keras'
RATIO_MODEL_FILENAME = 'ratio_network.keras'
SUMMARY_FILENAME = 'training.json'
_RUN_CONFIG_FILENAME = 'run_config.json'
_N_SIGMA_BANDS = 4
_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'),
    data_class=summary_pb2.DATA_CLASS_SCALAR)
# Salt separating the training-noise stream from other uses of the seed.
_SEED_SALT = 0x5C03E


class TrainingResult(collections.namedtuple('TrainingResult', ['model', 'history'])):
  """``train_score_network`` and ``train_ratio_network`` output.

  Fields:
    model: the trained ``ScoreNetwork`` (or ``RatioNetwork``) with the EMA
      weights (not under any distribution strategy).
    history: dict of lists, one entry per logging step of this call (a
      resumed run starts where the checkpoint left off; TensorBoard has the
      whole run): 'step', 'loss' (mean weighted loss since the previous
      log), 'learning_rate', 'maps_per_second', 'loss_by_sigma_band' (one
      list per band, None for a band without examples), and
      'sigma_band_edges' (the band edges in σ, dimensionless).
  """
  __slots__ = ()


def default_strategy():
  """The strategy ``train_score_network`` uses when none is given.

  ``MultiWorkerMirroredStrategy`` if ``TF_CONFIG`` is set, ``MirroredStrategy``
  over all local GPUs if any, else the default (one-device) strategy.
  """
  if os.environ.get('TF_CONFIG'):
    return tf.distribute.MultiWorkerMirroredStrategy()
  if tf.config.list_logical_devices('GPU'):
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()


def map_dataset(dataset, feature='kappa', split='train', data_dir=None,
                shuffle_files_seed=0, parameters=None):
  """Turns the accepted dataset forms into an unbatched dataset of maps.

  Args:
    dataset: a ``tf.data.Dataset`` of maps ``[N, N]`` or of batches
      ``[B, N, N]``, or of dicts holding such maps under ``feature``; a
      numpy array ``[M, N, N]``; a dict of numpy arrays (maps ``[M, N, N]``
      under ``feature``, one ``[M]`` array per parameter); or a TFDS name
      such as ``'lognormal_kappa/lognormal_128'`` (loaded with
      ``tfds.load``).
    feature: dict key of the maps (TFDS feature name).
    split: TFDS split, when ``dataset`` is a name.
    data_dir: TFDS data directory, when ``dataset`` is a name.
    shuffle_files_seed: seed of the TFDS file order, when ``dataset`` is a
      name.
    parameters: None, or the names of the parameters θ (dict keys, scalars
      per map, e.g. ``('omega_m', 'sigma8')``) to pair with each map.

  Returns:
    A ``tf.data.Dataset`` of float32 ``[N, N]`` maps, or with
    ``parameters`` of (map ``[N, N]``, θ ``[D]``) float32 pairs.

  Raises:
    ValueError: for another kind of dataset, dict elements without the map
      feature or a parameter, elements that are not maps or batches of maps,
      or parameters that are not one scalar per map.
  """
  if isinstance(dataset, str):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    dataset = tfds.load(
        dataset, split=split, data_dir=data_dir, shuffle_files=True,
        read_config=tfds.ReadConfig(shuffle_seed=shuffle_files_seed))
  elif isinstance(dataset, np.ndarray):
    dataset = tf.data.Dataset.from_tensor_slices(dataset.astype(np.float32))
  elif isinstance(dataset, dict):
    dataset = tf.data.Dataset.from_tensor_slices(
        {k: np.asarray(v) for k, v in dataset.items()})
  elif not isinstance(dataset, tf.data.Dataset):
    raise ValueError(
        'dataset must be a tf.data.Dataset, a numpy array [M, N, N], a dict '
        'of numpy arrays or a TFDS name such as '
        f'"lognormal_kappa/lognormal_128", got {type(dataset).__name__}.')
  spec = dataset.element_spec
  if parameters:
    return _pair_dataset(dataset, feature, tuple(parameters))
  if isinstance(spec, dict):
    if feature not in spec:
      raise ValueError(
          f'dataset elements are dicts with keys {sorted(spec)}; expected the '
          f'maps under feature={feature!r}.')
    dataset = dataset.map(lambda d: d[feature])
    spec = dataset.element_spec
  if not isinstance(spec, tf.TensorSpec) or spec.shape.rank not in (2, 3):
    raise ValueError(
        'dataset elements must be maps [N, N] or batches of maps [B, N, N], '
        f'got element spec {spec}.')
  if spec.shape.rank == 3:
    dataset = dataset.unbatch()
  return dataset.map(lambda x: tf.cast(x, tf.float32))


def _pair_dataset(dataset, feature, parameters):
  """(map ``[N, N]``, θ ``[D]``) float32 pairs from a dataset of dicts."""
  spec = dataset.element_spec
  if not isinstance(spec, dict):
    raise ValueError(
        f'a network conditioned on {parameters} trains on dataset elements '
        f'that are dicts with the maps under {feature!r} and one scalar per '
        f'parameter; got element spec {spec}.')
  missing = [k for k in (feature,) + parameters if k not in spec]
  if missing:
    raise ValueError(
        f'dataset elements are dicts with keys {sorted(spec)}; missing '
        f'{missing} (the maps under feature={feature!r} and the parameters '
        f'{list(parameters)} of the network\'s theta_names).')
  rank = spec[feature].shape.rank
  if rank not in (2, 3):
    raise ValueError(
        'dataset elements must be maps [N, N] or batches of maps [B, N, N], '
        f'got {feature!r} of spec {spec[feature]}.')
  for name in parameters:
    if spec[name].shape.rank != rank - 2:
      raise ValueError(
          f'parameter {name!r} must hold one scalar per map (shape '
          f'{"[]" if rank == 2 else "[B]"}), got spec {spec[name]}.')
  if rank == 3:
    dataset = dataset.unbatch()
  return dataset.map(lambda d: (
      tf.cast(d[feature], tf.float32),
      tf.stack([tf.cast(d[k], tf.float32) for k in parameters])))


def train_score_network(dataset,
                        output_dir,
                        *,
                        network=None,
                        batch_size=16,
                        steps=1500,
                        learning_rate=1e-3,
                        warmup_steps=None,
                        optimizer='adam',
                        sigma_min=1e-3,
                        sigma_max=0.2,
                        ema_decay=0.999,
                        crop_size=None,
                        augment=True,
                        shuffle_buffer=256,
                        feature='kappa',
                        split='train',
                        data_dir=None,
                        seed=0,
                        strategy=None,
                        checkpoint_every=500,
                        log_every=50,
                        jit_compile=None,
                        progress=True):
  """Trains a ``ScoreNetwork`` by denoising score matching.

  Resumes from the latest checkpoint in ``output_dir`` when there is one (the
  run configuration must then be the same).

  Args:
    dataset: training maps (dimensionless convergence): anything
      ``map_dataset`` accepts (tf.data.Dataset, numpy array ``[M, N, N]``,
      dict of numpy arrays, TFDS name such as
      ``'lognormal_kappa/lognormal_128'``). For a network conditioned on θ,
      elements are dicts holding the map under ``feature`` and each
      parameter of ``theta_names`` as a scalar (e.g.
      ``'lognormal_kappa/cosmo_64'`` with ``omega_m`` and ``sigma8``).
    output_dir: folder for checkpoints, TensorBoard logs, the trained network
      and the run summary (created if absent).
    network: a ``ScoreNetwork`` (its config and weights are the starting
      point), a dict of ``ScoreNetwork`` constructor arguments, or None for
      the defaults. With ``theta_names`` and ``theta_bounds`` it is the
      conditional prior p(κ | θ), trained on (map, θ) pairs.
    batch_size: global batch size (maps per step over all replicas); must be
      divisible by the number of replicas.
    steps: total optimisation steps.
    learning_rate: peak learning rate; linear warm-up from
      learning_rate / (warmup_steps + 1) over ``warmup_steps`` steps, then a
      cosine decay to 0 at ``steps``.
    warmup_steps: warm-up length in steps (default ``steps // 20``).
    optimizer: Keras optimizer name ('adam', 'adamw', 'sgd', ...), built with
      the schedule above.
    sigma_min: smallest training noise std (dimensionless, > 0).
    sigma_max: largest training noise std (dimensionless, > sigma_min).
    ema_decay: decay of the exponential moving average of the weights
      (in [0, 1)); the effective decay at step t is
      min(ema_decay, (1 + t) / (10 + t)).
    crop_size: train on random crops of this many pixels per side (must be
      divisible by 2**depth), or None for whole maps.
    augment: apply a random symmetry of the square (rotations by 90°,
      flips) to each map.
    shuffle_buffer: maps in the shuffle buffer (saved in checkpoints).
    feature: dict key of the maps in the dataset elements.
    split: TFDS split, when ``dataset`` is a name.
    data_dir: TFDS data directory, when ``dataset`` is a name.
    seed: integer seed of everything random (initial weights excepted when a
      ``network`` instance is given).
    strategy: a ``tf.distribute.Strategy``, or None for ``default_strategy()``.
    checkpoint_every: steps between checkpoints (a checkpoint is also saved
      at the end).
    log_every: steps between TensorBoard/history entries.
    jit_compile: XLA-compile the loss and gradient; default: on when a GPU is
      visible, off on CPU.
    progress: show a tqdm progress bar.

  Returns:
    ``TrainingResult(model, history)``.

  Raises:
    ValueError: on an invalid configuration (σ range, map or crop size not
      divisible by 2**depth, non-square maps, empty dataset, batch size not
      divisible by the replicas, a checkpoint from another configuration,
      dataset elements without the parameters of a conditioned network, or a
      first example whose θ lies outside ``theta_bounds``).
  """
  return _train(_SCORE_OBJECTIVE, dataset, output_dir, network=network,
                batch_size=batch_size, steps=steps,
                learning_rate=learning_rate, warmup_steps=warmup_steps,
                optimizer=optimizer, sigma_min=sigma_min, sigma_max=sigma_max,
                ema_decay=ema_decay, crop_size=crop_size, augment=augment,
                shuffle_buffer=shuffle_buffer, feature=feature, split=split,
                data_dir=data_dir, seed=seed, strategy=strategy,
                checkpoint_every=checkpoint_every, log_every=log_every,
                jit_compile=jit_compile, progress=progress)


def train_ratio_network(dataset, output_dir, *, network=None, balance=0.0,
                        contrastive=0, **kwargs):
  """Trains a ``RatioNetwork``, the θ score of maps, by classification.

  Each step classifies the global batch's (x + σu, θ) pairs against the same
  noisy maps paired with the θ of the previous map of the batch (module
  docstring, ``tfp_massmap.priors.ratio``). The pipeline (dataset forms,
  σ draws, crops, symmetries, seeds, checkpoints and resuming, EMA weights,
  TensorBoard logs, progress bar, distribution) is `train_score_network`'s;
  the trained network is written to ``ratio_network.keras``.

  Args:
    dataset: (map, θ) training pairs as for a conditioned network in
      `train_score_network`: elements are dicts holding the map under
      ``feature`` and each parameter of ``theta_names`` as a scalar (e.g.
      ``'lognormal_kappa/cosmo_64'``, or a dict of numpy arrays).
    output_dir: folder for checkpoints, logs, the trained network and the
      run summary.
    network: a ``RatioNetwork`` (its config and weights are the starting
      point) or a dict of ``RatioNetwork`` constructor arguments, which must
      hold ``theta_names`` and ``theta_bounds``.
    balance: λ ≥ 0 of balanced neural ratio estimation: the loss of each
      step adds λ · ``ratio.balance_penalty`` of the step's batch (per
      replica) to the cross-entropy, which pushes the classifier towards
      conservative (not too narrow) θ posteriors; Delaunoy et al. (2022)
      use λ = 100. 0 (default): the plain cross-entropy. A nonzero λ is
      recorded in the run configuration.
    contrastive: K >= 2 for contrastive ratio estimation
      (``ratio.contrastive_loss``): each map against its own θ and the θ
      of the K − 1 maps before it in the batch, a K-way classification
      (K network calls per map instead of 2); the logged loss is then
      log K untrained. 0 (default): the binary cross-entropy. K is
      recorded in the run configuration; not combined with ``balance``.
    **kwargs: the other keyword arguments of `train_score_network`
      (``batch_size``, ``steps``, ``sigma_min``, ...), with the same
      defaults and meaning; ``batch_size`` must give at least 2 maps per
      replica (a map's shuffled θ is its neighbour's). The logged loss is
      the cross-entropy per pair, ln 2 ≈ 0.693 untrained (plus λ times
      the balance penalty).

  Returns:
    ``TrainingResult(model, history)``, ``model`` the `RatioNetwork`.

  Raises:
    ValueError: as `train_score_network`, or for a network without
      ``theta_names``, fewer than 2 maps per replica in a batch, or a
      negative ``balance``.
  """
  balance = float(balance)
  if not balance >= 0.0:
    raise ValueError(f'balance must be >= 0 (the weight λ of the balance '
                     f'penalty, dimensionless), got {balance}.')
  if isinstance(contrastive, bool) or not isinstance(contrastive, int) or (
      contrastive < 0 or contrastive == 1):
    raise ValueError(f'contrastive must be 0 (binary) or a number of '
                     f'candidates K >= 2, got {contrastive!r}.')
  if contrastive and balance > 0.0:
    raise ValueError('balance applies to the binary loss; got balance='
                     f'{balance} with contrastive={contrastive}.')
  objective = _RATIO_OBJECTIVE
  if contrastive:
    objective = objective._replace(
        per_example_loss=functools.partial(_contrastive_ratio_loss,
                                           num_candidates=contrastive),
        run_config=dict(objective.run_config, contrastive=contrastive))
  if balance > 0.0:
    objective = objective._replace(
        per_example_loss=functools.partial(_ratio_loss, balance=balance),
        run_config=dict(objective.run_config, balance=balance))
  return _train(objective, dataset, output_dir, network=network, **kwargs)


def _denoising_loss(model, x, sigma, noise, theta):
  """The EDM-weighted denoising error of each example, ``[B]``."""
  denoised = model(x + sigma[:, None, None] * noise, sigma, theta,
                   training=True)
  _, c_out, _ = model.preconditioning(sigma)
  return tf.reduce_mean(tf.square(denoised - x), axis=[-2, -1]) / c_out**2


def _ratio_loss(model, x, sigma, noise, theta, balance=0.0):
  """The classification cross-entropy of each example, ``[B]``.

  The shuffled pair of map i takes the θ of map i − 1 (a roll of the
  shuffled batch, so never the map's own θ when the batch holds 2 maps or
  more). With ``balance`` λ > 0, λ · ``ratio.balance_penalty`` of the batch
  is added to every example, so that the batch mean is the cross-entropy
  plus the penalty.
  """
  noisy = x + sigma[:, None, None] * noise
  logit_joint = model(noisy, sigma, theta, training=True)
  logit_shuffled = model(noisy, sigma, tf.roll(theta, 1, axis=0),
                         training=True)
  loss = ratio.classification_loss(logit_joint, logit_shuffled)
  if balance:
    loss += balance * ratio.balance_penalty(logit_joint, logit_shuffled)
  return loss


def _contrastive_ratio_loss(model, x, sigma, noise, theta, num_candidates):
  """`ratio.contrastive_loss` of each example, ``[B]``.

  Map i's candidates are θ_i, θ_{i−1}, ..., θ_{i−K+1} (rolls of the
  shuffled batch; distinct maps when the batch holds K maps or more), in
  one network call on the K-fold tiled batch.
  """
  size = theta.shape[0]
  if size is not None and size < num_candidates:
    raise ValueError(f'contrastive ratio estimation with K = {num_candidates} '
                     f'candidates needs at least K maps per replica, got '
                     f'{size}.')
  noisy = x + sigma[:, None, None] * noise
  k = num_candidates
  candidates = tf.concat([tf.roll(theta, j, axis=0) for j in range(k)], 0)
  logits = model(tf.tile(noisy, [k, 1, 1]), tf.tile(sigma, [k]), candidates,
                 training=True)
  return ratio.contrastive_loss(tf.transpose(tf.reshape(logits, [k, -1])))


class _Objective(collections.namedtuple(
    '_Objective', ['model_class', 'model_filename', 'description',
                   'per_example_loss', 'needs_theta', 'run_config'])):
  """What the shared training loop trains and how.

  Fields: the Keras model class; the file name of the trained model; the
  progress-bar label; ``per_example_loss(model, x, σ, u, θ or None)`` →
  ``[B]``; whether the network must be conditioned on θ; entries added to
  the stored run config (none for score matching, whose runs predate
  this).
  """
  __slots__ = ()


_SCORE_OBJECTIVE = _Objective(ScoreNetwork, MODEL_FILENAME, 'score matching',
                              _denoising_loss, False, {})
_RATIO_OBJECTIVE = _Objective(ratio.RatioNetwork, RATIO_MODEL_FILENAME,
                              'ratio estimation', _ratio_loss, True,
                              {'objective': 'ratio'})


def _train(objective, dataset, output_dir, *, network=None, batch_size=16,
           steps=1500, learning_rate=1e-3, warmup_steps=None,
           optimizer='adam', sigma_min=1e-3, sigma_max=0.2, ema_decay=0.999,
           crop_size=None, augment=True, shuffle_buffer=256, feature='kappa',
           split='train', data_dir=None, seed=0, strategy=None,
           checkpoint_every=500, log_every=50, jit_compile=None,
           progress=True):
  """The training loop of `train_score_network` and `train_ratio_network`."""
  model_class = objective.model_class
  sigma_min = _checks.positive_scalar(sigma_min, 'sigma_min', 'dimensionless')
  sigma_max = _checks.positive_scalar(sigma_max, 'sigma_max', 'dimensionless')
  if sigma_min >= sigma_max:
    raise ValueError(
        f'sigma_min must be smaller than sigma_max, got sigma_min={sigma_min} '
        f'and sigma_max={sigma_max}.')
  batch_size = _checks.positive_int(batch_size, 'batch_size')
  steps = _checks.positive_int(steps, 'steps')
  checkpoint_every = _checks.positive_int(checkpoint_every, 'checkpoint_every')
  log_every = _checks.positive_int(log_every, 'log_every')
  shuffle_buffer = _checks.positive_int(shuffle_buffer, 'shuffle_buffer')
  learning_rate = _checks.positive_scalar(learning_rate, 'learning_rate')
  if warmup_steps is None:
    warmup_steps = steps // 20
  if int(warmup_steps) != warmup_steps or not 0 <= warmup_steps < steps:
    raise ValueError(
        f'warmup_steps must be an integer in [0, steps = {steps}), got '
        f'{warmup_steps!r}.')
  warmup_steps = int(warmup_steps)
  if not 0.0 <= ema_decay < 1.0:
    raise ValueError(f'ema_decay must be in [0, 1), got {ema_decay!r}.')
  if isinstance(seed, bool) or int(seed) != seed:
    raise ValueError(f'seed must be an integer, got {seed!r}.')
  seed = int(seed)

  network_config = _network_config(network, seed, model_class)
  divisor = 2**network_config['depth']
  theta_names = network_config.get('theta_names')
  if objective.needs_theta and not theta_names:
    raise ValueError(
        f'a {model_class.__name__} learns the θ dependence of the maps: pass '
        'network={"theta_names": [...], "theta_bounds": [[lower, upper], '
        '...]} naming the parameters of the dataset elements.')
  maps = map_dataset(dataset, feature, split, data_dir, shuffle_files_seed=seed,
                     parameters=theta_names)
  first = next(iter(maps.take(1)), None)
  if first is None:
    raise ValueError('dataset is empty: expected at least one map.')
  if theta_names:
    first, first_theta = first
    bounds = np.asarray(network_config['theta_bounds'], np.float64)
    value = first_theta.numpy()
    if np.any(~np.isfinite(value) | (value < bounds[:, 0]) |
              (value > bounds[:, 1])):
      raise ValueError(
          f'the first training example has {tuple(theta_names)} = '
          f'{value.tolist()}, outside the network\'s theta_bounds '
          f'{bounds.tolist()}; set theta_bounds to the range of the data.')
  n = _checks.square_map_shape(first.shape, 'dataset maps')
  if n % divisor:
    raise ValueError(
        f'dataset maps are {n}x{n} pixels; a {model_class.__name__} of depth '
        f'{network_config["depth"]} needs sizes divisible by 2**depth = {divisor} '
        '(crop with crop_size, or lower depth).')
  if crop_size is not None:
    crop_size = _checks.positive_int(crop_size, 'crop_size')
    if crop_size % divisor or crop_size > n:
      raise ValueError(
          f'crop_size must be divisible by 2**depth = {divisor} and at most '
          f'the map size {n}, got {crop_size}.')
  measured_std = float(np.std(first.numpy()))
  if not 0.5 < measured_std / network_config['data_std'] < 2.0:
    logging.warning(
        'The first training map has pixel std %.4g but the network assumes '
        'data_std=%.4g; pass network={"data_std": ...} close to the data.',
        measured_std, network_config['data_std'])

  strategy = strategy or default_strategy()
  replicas = strategy.num_replicas_in_sync
  if batch_size % replicas:
    raise ValueError(
        f'batch_size={batch_size} must be divisible by the number of replicas '
        f'({replicas}).')
  if objective.needs_theta and batch_size // replicas < 2:
    raise ValueError(
        f'batch_size={batch_size} gives {batch_size // replicas} map(s) per '
        f'replica ({replicas} replica(s)); a {model_class.__name__} needs at '
        'least 2 (each map is also paired with its neighbour\'s θ).')
  if jit_compile is None:
    jit_compile = bool(tf.config.list_logical_devices('GPU'))

  run_config = dict(
      dataset=dataset if isinstance(dataset, str) else type(dataset).__name__,
      map_size=n, network=network_config, batch_size=batch_size, steps=steps,
      learning_rate=learning_rate, warmup_steps=warmup_steps,
      optimizer=optimizer, sigma_min=sigma_min, sigma_max=sigma_max,
      ema_decay=float(ema_decay), crop_size=crop_size, augment=bool(augment),
      shuffle_buffer=shuffle_buffer, seed=seed, **objective.run_config)
  # Every worker restores from the chief's checkpoints; only the chief keeps
  # what it writes (the others write to a temporary folder, removed at the end:
  # saving is a collective operation that all workers take part in).
  chief = _is_chief(strategy)
  work_dir = output_dir if chief else tempfile.mkdtemp(prefix='tfp_massmap_worker_')
  os.makedirs(work_dir, exist_ok=True)
  if chief:
    _check_run_config(output_dir, run_config)

  examples = _training_examples(
      maps, seed=seed, sigma_min=sigma_min, sigma_max=sigma_max,
      crop_size=crop_size, augment=augment, shuffle_buffer=shuffle_buffer)
  examples = examples.batch(batch_size, drop_remainder=True).prefetch(2)

  with strategy.scope():
    model = model_class(**network_config)
    if isinstance(network, model_class):
      model.set_weights(network.get_weights())
    ema_model = model_class(**network_config)
    ema_model.set_weights(model.get_weights())
    schedule = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=learning_rate / (warmup_steps + 1),
        decay_steps=steps - warmup_steps, alpha=0.0,
        warmup_target=learning_rate, warmup_steps=warmup_steps)
    opt = keras.optimizers.get({'class_name': optimizer,
                                'config': {'learning_rate': schedule}})
    opt.build(model.trainable_variables)
    iterator = iter(examples)
    checkpoint = tf.train.Checkpoint(
        model=_by_index(model.weights), ema_model=_by_index(ema_model.weights),
        optimizer=_by_index(opt.variables), data=iterator)
  manager = tf.train.CheckpointManager(
      checkpoint, os.path.join(work_dir, 'checkpoints'), max_to_keep=2)
  latest = tf.train.latest_checkpoint(os.path.join(output_dir, 'checkpoints'))
  if latest:
    checkpoint.restore(latest).assert_consumed()
    logging.info('Resumed from %s at step %d.', latest,
                 int(opt.iterations.numpy()))

  train_step = _make_train_step(
      strategy, model, ema_model, opt, objective.per_example_loss,
      global_batch=batch_size,
      ema_decay=float(ema_decay), sigma_min=sigma_min, sigma_max=sigma_max,
      jit_compile=jit_compile)
  band_edges = np.geomspace(sigma_min, sigma_max, _N_SIGMA_BANDS + 1)
  history = dict(step=[], loss=[], learning_rate=[], maps_per_second=[],
                 loss_by_sigma_band=[], sigma_band_edges=band_edges.tolist())
  writer = tf.summary.create_file_writer(os.path.join(work_dir, 'logs'))

  start_step = int(opt.iterations.numpy())
  start_time = time.perf_counter()
  interval = _Interval(_N_SIGMA_BANDS)
  with tqdm.tqdm(total=steps, initial=start_step, disable=not progress,
                 desc=objective.description, unit='step') as bar:
    for step in range(start_step + 1, steps + 1):
      interval.add(*train_step(next(iterator)))
      bar.update(1)
      if step % log_every == 0 or step == steps:
        loss, band_loss = interval.means()
        lr = float(schedule(step - 1))
        rate = interval.examples / (time.perf_counter() - interval.start)
        _log(writer, history, step, loss, band_loss, band_edges, lr, rate)
        bar.set_postfix(loss=f'{loss:.4f}', lr=f'{lr:.2e}')
        interval = _Interval(_N_SIGMA_BANDS)
      if step % checkpoint_every == 0 or step == steps:
        manager.save(checkpoint_number=step)
  wall_time = time.perf_counter() - start_time
  writer.close()

  trained = model_class(**network_config)
  trained.set_weights(ema_model.get_weights())
  if chief:
    _save_atomically(trained,
                     os.path.join(output_dir, objective.model_filename))
    summary = dict(
        config=run_config, steps=steps, resumed_from_step=start_step,
        wall_time_s=wall_time, replicas=replicas, jit_compile=jit_compile,
        final_loss=history['loss'][-1] if history['loss'] else None,
        measured_data_std=measured_std, history=history)
    outputs.write_json_atomic(os.path.join(output_dir, SUMMARY_FILENAME),
                              summary, indent=1)
  else:
    tf.io.gfile.rmtree(work_dir)
  return TrainingResult(trained, history)


def _training_examples(maps, *, seed, sigma_min, sigma_max, crop_size,
                       augment, shuffle_buffer):
  """Infinite stream of (clean map, σ, unit noise map[, θ]) examples.

  ``maps`` holds maps, or (map, θ) pairs for a conditioned network; θ is
  passed through unchanged, and the random draws are the same either way.
  """
  log_min, log_max = np.log(sigma_min), np.log(sigma_max)

  @tf.autograph.experimental.do_not_convert
  def example(index, element):
    x, theta = element if isinstance(element, tuple) else (element, None)
    keys = tf.random.experimental.stateless_split(
        tf.random.experimental.stateless_fold_in(
            tf.constant([seed, _SEED_SALT], tf.int64), index), 4)
    keys = tf.cast(keys % 2**31, tf.int32)  # TFP-style int32[2] seeds.
    if crop_size is not None:
      x = preprocessing.random_crop(x, crop_size, keys[0])
    if augment:
      x = preprocessing.random_dihedral(x, keys[1])
    sigma = tf.exp(tf.random.stateless_uniform(
        [], keys[2], log_min, log_max, tf.float32))
    noise = tf.random.stateless_normal(tf.shape(x), keys[3], dtype=tf.float32)
    return (x, sigma, noise) if theta is None else (x, sigma, noise, theta)

  return (maps.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
          .repeat().enumerate()
          .map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True))


def _make_train_step(strategy, model, ema_model, opt, per_example_loss, *,
                     global_batch, ema_decay, sigma_min, sigma_max,
                     jit_compile):
  """The distributed step: global (x, σ, u[, θ]) → (loss sum, band sums, counts).

  ``per_example_loss(model, x, σ, u, θ)`` gives the ``[B]`` losses of the
  objective (`_Objective`).

  Every replica receives the global batch and takes its own slice, so the
  split does not depend on how a strategy distributes datasets, and the input
  iterator stays an ordinary (checkpointable) ``tf.data`` iterator.
  """
  per_replica = global_batch // strategy.num_replicas_in_sync
  log_min = np.log(sigma_min)
  band_width = (np.log(sigma_max) - log_min) / _N_SIGMA_BANDS

  # No tensor-dependent Python control flow here: autograph is not needed
  # (and converting the Keras code costs seconds of tracing).
  @tf.function(jit_compile=jit_compile, autograph=False)
  def loss_and_grads(x, sigma, noise, theta=None):
    with tf.GradientTape() as tape:
      per_example = per_example_loss(model, x, sigma, noise, theta)
      loss = tf.reduce_sum(per_example) / global_batch
    return per_example, tape.gradient(loss, model.trainable_variables)

  def replica_step(*inputs):
    start = tf.distribute.get_replica_context().replica_id_in_sync_group * per_replica
    # (x, σ, u) or, for a conditioned network, (x, σ, u, θ).
    inputs = [t[start:start + per_replica] for t in inputs]
    sigma = inputs[1]
    per_example, grads = loss_and_grads(*inputs)
    opt.apply_gradients(zip(grads, model.trainable_variables))
    band = tf.clip_by_value(
        tf.cast(tf.floor((tf.math.log(sigma) - log_min) / band_width), tf.int32),
        0, _N_SIGMA_BANDS - 1)
    return (tf.reduce_sum(per_example),
            tf.math.unsorted_segment_sum(per_example, band, _N_SIGMA_BANDS),
            tf.math.unsorted_segment_sum(tf.ones_like(per_example), band,
                                         _N_SIGMA_BANDS))

  def update_ema(ema_var, var, decay):
    return ema_var.assign(decay * ema_var + (1.0 - decay) * var)

  @tf.function(autograph=False)
  def train_step(inputs):
    sums = strategy.run(replica_step, args=inputs)
    t = tf.cast(opt.iterations, tf.float32)
    decay = tf.minimum(ema_decay, (1.0 + t) / (10.0 + t))
    for ema_var, var in zip(ema_model.trainable_variables, model.trainable_variables):
      strategy.extended.update(ema_var.value, update_ema, args=(var.value, decay))
    return [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

  return train_step


class _Interval:
  """Loss sums over the steps between two logs."""

  def __init__(self, n_bands):
    self.start = time.perf_counter()
    self.loss_sum = 0.0
    self.examples = 0
    self.band_sums = np.zeros(n_bands)
    self.band_counts = np.zeros(n_bands)

  def add(self, loss_sum, band_sums, band_counts):
    self.loss_sum += float(loss_sum)
    self.band_sums += band_sums.numpy()
    counts = band_counts.numpy()
    self.band_counts += counts
    self.examples += int(counts.sum())

  def means(self):
    with np.errstate(invalid='ignore'):
      bands = self.band_sums / self.band_counts
    return self.loss_sum / self.examples, bands


def _log(writer, history, step, loss, band_loss, band_edges, lr, rate):
  history['step'].append(step)
  history['loss'].append(loss)
  history['learning_rate'].append(lr)
  history['maps_per_second'].append(rate)
  history['loss_by_sigma_band'].append(
      [None if np.isnan(b) else float(b) for b in band_loss])
  with writer.as_default(step=step):
    _scalar('loss', loss)
    _scalar('learning_rate', lr)
    _scalar('maps_per_second', rate)
    for lo, hi, b in zip(band_edges[:-1], band_edges[1:], band_loss):
      if not np.isnan(b):
        _scalar(f'loss_sigma_band/{lo:.2g}-{hi:.2g}', b)


def _scalar(tag, value):
  """A TensorBoard scalar summary written with TensorFlow alone.

  ``tf.summary.scalar`` needs the ``tensorboard`` package, which TensorFlow
  2.21 no longer installs; this writes the same record (scalars plugin
  metadata) without it.
  """
  tf.summary.write(tag, tf.constant(value, tf.float32), metadata=_SCALAR_METADATA)


def _network_config(network, seed, model_class):
  """Constructor arguments of ``model_class`` (a ScoreNetwork or RatioNetwork).

  The weight seed defaults to ``seed``.
  """
  defaults = {
      name: p.default
      for name, p in inspect.signature(model_class.__init__).parameters.items()
      if p.default is not inspect.Parameter.empty}
  kind = model_class.__name__
  if isinstance(network, model_class):
    config = network.get_config()
    return {k: config[k] for k in defaults if k in config}
  if network is None:
    network = {}
  if not isinstance(network, dict):
    raise ValueError(
        f'network must be a {kind}, a dict of {kind} arguments or None, got '
        f'{type(network).__name__}.')
  unknown = sorted(set(network) - set(defaults))
  if unknown:
    raise ValueError(
        f'network has unknown {kind} argument(s) {unknown}; expected some of '
        f'{list(defaults)}.')
  config = dict(defaults, seed=seed) | network
  _checks.positive_int(config['depth'], 'depth')
  _checks.positive_scalar(config['data_std'], 'data_std', 'dimensionless')
  # θ settings are stored only for a conditioned network (run configs of
  # unconditioned runs keep the keys they had before θ existed); the
  # network's own check, with its messages, normalises them.
  names, bounds = score_network._theta_config(  # pylint: disable=protected-access
      config.pop('theta_names'), config.pop('theta_bounds'))
  if names is not None:
    config.update(theta_names=list(names),
                  theta_bounds=[list(b) for b in bounds])
  return config


def _by_index(variables):
  """Keras variables as a checkpointable dict keyed by their (stable) order.

  ``tf.train.Checkpoint`` does not see Keras 3 layers held in lists, and
  Keras variable names depend on how many layers the process created before;
  the order of ``model.weights`` depends on the configuration only.
  """
  return {f'{i:04d}': v.value for i, v in enumerate(variables)}


def _check_run_config(output_dir, run_config):
  """Stores the run config, or checks it against the stored one on resume."""
  path = os.path.join(output_dir, _RUN_CONFIG_FILENAME)
  current = json.loads(json.dumps(run_config))
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
    changed = sorted(k for k in set(stored) | set(current)
                     if stored.get(k) != current.get(k))
    if changed:
      raise ValueError(
          f'{output_dir} holds a run with a different configuration (changed: '
          f'{", ".join(changed)}); use a new output_dir or the same settings.')
  else:
    outputs.write_json_atomic(path, current, indent=1)


def _save_atomically(model, path):
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(dir=folder, prefix='.tmp_', suffix='.keras')
  os.close(fd)
  try:
    model.save(tmp)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def _is_chief(strategy):
  """True unless this is a non-chief worker of a multi-worker strategy."""
  resolver = getattr(strategy, 'cluster_resolver', None)
  if resolver is None or not resolver.cluster_spec().as_dict():
    return True
  cluster = resolver.cluster_spec().as_dict()
  if 'chief' in cluster:
    return resolver.task_type == 'chief'
  return resolver.task_type == 'worker' and resolver.task_id == 0

