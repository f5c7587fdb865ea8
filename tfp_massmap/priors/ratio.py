"""A cosmology ratio network: the θ score of a map, by classification.

A `ScoreNetwork` conditioned on θ gives ∇κ log p_σ(κ | θ), which fixes
log p_σ(κ | θ) only up to a θ-dependent normaliser, so it gives no θ score
(``learned_joint.py``). `RatioNetwork` learns that θ score another way
(neural ratio estimation, Hermans et al. 2020, arXiv:1903.04057): a
classifier d(κ_σ, θ) = sigmoid(ℓ(κ_σ, θ)) tells pairs (κ_σ, θ) drawn
jointly (label 1) from pairs whose θ belongs to another map (label 0), with
κ_σ = κ + σu, u ~ N(0, I), σ drawn as in denoising score matching. The
binary cross-entropy

  L = ½ E_joint[softplus(−ℓ)] + ½ E_shuffled[softplus(ℓ)]

(`classification_loss`) is minimal at the logit

  ℓ*(κ_σ, θ) = log p_σ(κ_σ | θ) − log p_σ(κ_σ) = log p(θ | κ_σ) − log p(θ),

whatever the distribution of θ in the data (the shuffled pairs draw θ from
it), so

  ∇θ ℓ*(κ_σ, θ) = ∇θ log p_σ(κ_σ | θ)

exactly: the normaliser log p_σ(κ_σ) does not depend on θ. ``log_ratio`` is
ℓ, ``theta_score`` its gradient in θ by automatic differentiation.

#### The network

ℓ is extensive: a fully convolutional network, conditioned on (ln σ, θ)
like `ScoreNetwork` (Fourier features of ln σ and θ mapped linearly from
``theta_bounds`` onto [−1, 1], through an MLP, scale and shift the features
of every block), gives a value per pixel at each of ``depth + 1``
resolutions (a linear read-out of the features h and of h², the local
power of the filtered map, which the log density of a Gaussian field is a
sum of), and ℓ is the sum over pixels and resolutions. So the weights
do not depend on the map size, a network trained on crops applies to larger
maps, and the information about θ grows with the area as it should for
independent patches. The blocks are residual without normalisation (a group
norm would divide out the map's amplitude, which carries σ8); the input is
scaled by c_in(σ) = 1 / √(σ² + σ_d²) as in `ScoreNetwork`, and the read-out
layers start at zero, so an untrained network has ℓ = 0 and a loss of ln 2.

Balanced NRE (Delaunoy et al. 2022): ``balance_penalty`` estimates the
squared violation of the balance condition E_joint[d] + E_shuffled[d] = 1,
which the Bayes-optimal classifier satisfies; ``train_ratio_network(...,
balance=λ)`` adds λ times it to the loss. The balance is taken over the
batch, whose σ are mixed, not at each σ.

Contrastive ratio estimation (Durkan et al. 2020): ``contrastive_loss``
classifies which of K candidate θ is a map's own;
``train_ratio_network(..., contrastive=K)`` trains with it. Its optimum is
the log ratio up to a term in the map alone, which θ posteriors and θ
scores do not see (the shipped networks are trained so, K = 4:
docs/joint_prior.md); the pairs' binary cross-entropy does see it, so
it does not rank such networks.

Training: ``training.train_ratio_network`` (the denoising-score-matching
pipeline: dataset, σ draws, crops, symmetries, checkpoints, EMA weights),
or ``examples/train_score.py --objective=ratio``. The saved ``.keras``
file records the pixel scale, ``theta_names`` and ``theta_bounds``, and
loads with `load_ratio_network`. `RatioNetwork.deepened` adds a coarser
resolution level whose read-out starts at zero (the same ℓ until trained),
to continue training with a wider receptive field.
"""

import math
import os

import keras
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import score_network as score_network_lib

__all__ = [
    'RatioNetwork',
    'balance_penalty',
    'classification_loss',
    'contrastive_loss',
    'load_ratio_network',
]

_PACKAGE = 'tfp_massmap'


def classification_loss(logit_joint, logit_shuffled):
  """Per-pair binary cross-entropy of a ratio classifier, ``[B]``.

  ½ [softplus(−ℓ(κ_i, θ_i)) + softplus(ℓ(κ_i, θ̃_i))]: label 1 for the
  joint pair, 0 for the pair with a θ̃ from the marginal. ln 2 at ℓ = 0;
  its expectation is minimal at the log ratio (module docstring).

  Args:
    logit_joint: ``[B]`` logits of the jointly drawn pairs.
    logit_shuffled: ``[B]`` logits of the same maps with shuffled θ.

  Returns:
    ``[B]`` tensor (nats).
  """
  return 0.5 * (tf.math.softplus(-logit_joint) +
                tf.math.softplus(logit_shuffled))


def contrastive_loss(logits):
  """Per-map loss of contrastive ratio estimation, ``[B]``.

  logsumexp_k ℓ(κ_i, θ_k) − ℓ(κ_i, θ_i) over K candidates: the map's own θ
  (column 0) and K − 1 θ of other maps (Durkan et al. 2020,
  arXiv:2002.03712): a K-way classification of which candidate is the
  map's own. log K when ℓ ignores θ. Its expectation is minimal at
  ℓ = log p(θ | κ_σ) − log p(θ) + c(κ_σ), with a term c that depends on the
  map only: the θ score and the θ posterior of a map do not see it, the
  level of ℓ (and the binary cross-entropy of `classification_loss`)
  does. Each step compares the own θ with K − 1 others at once, so a
  near-miss θ (one along a degeneracy) is K − 1 times as likely to be
  among them as in the binary loss.

  Args:
    logits: ``[B, K]`` logits, column 0 the jointly drawn θ.

  Returns:
    ``[B]`` tensor (nats).
  """
  return tf.reduce_logsumexp(logits, axis=-1) - logits[..., 0]


def balance_penalty(logit_joint, logit_shuffled):
  """The balance condition's squared violation, estimated from a batch.

  The balance condition of a classifier d = sigmoid(ℓ) is
  b = E_joint[d] + E_shuffled[d] − 1 = 0; a balanced classifier's ratio
  errs on the conservative side in expectation (balanced neural ratio
  estimation, Delaunoy et al. 2022, arXiv:2208.13624). The Bayes-optimal
  classifier is balanced, so adding λ b² to `classification_loss` keeps its
  minimum and, at finite training, trades a little sharpness for
  posteriors that are not too narrow.

  With a_i = d(κ_i, θ_i) + d(κ_i, θ̃_i) − 1, the estimate is the mean of
  a_i a_j over the pairs i ≠ j, unbiased for b² (the square of the batch
  mean would add Var(a) / B, a penalty on every confident classifier). It
  can be negative by chance.

  Args:
    logit_joint: ``[B]`` logits of the jointly drawn pairs.
    logit_shuffled: ``[B]`` logits of the same maps with shuffled θ.

  Returns:
    scalar tensor.

  Raises:
    ValueError: for a batch of fewer than 2 pairs (a static shape).
  """
  a = tf.sigmoid(logit_joint) + tf.sigmoid(logit_shuffled) - 1.0
  if a.shape[0] is not None and a.shape[0] < 2:
    raise ValueError(
        f'balance_penalty needs at least 2 pairs, got {a.shape[0]}.')
  n = tf.cast(tf.shape(a)[0], a.dtype)
  total = tf.reduce_sum(a)
  return (tf.square(total) - tf.reduce_sum(tf.square(a))) / (n * (n - 1.0))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConditionedBlock(keras.layers.Layer):
  """Residual block without normalisation, scaled and shifted by an embedding.

  ``call(x, embedding)``: x ``[B, H, W, in_channels]``, embedding ``[B, E]``
  → ``[B, H, W, out_channels]``: conv, per-channel (1 + scale, shift) from
  the embedding, SiLU, conv, added to the (1×1 projected when the channel
  counts differ) input and scaled by 1/√2.
  """

  def __init__(self, in_channels, out_channels, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.in_channels = int(in_channels)
    self.out_channels = int(out_channels)
    self.seed = seed
    init = score_network_lib._Initializers(seed)  # pylint: disable=protected-access
    self.conv_in = keras.layers.Conv2D(
        self.out_channels, 3, padding='same', kernel_initializer=init())
    self.embedding_film = keras.layers.Dense(
        2 * self.out_channels, kernel_initializer=init())
    self.conv_out = keras.layers.Conv2D(
        self.out_channels, 3, padding='same', kernel_initializer=init())
    self.project = (
        keras.layers.Conv2D(self.out_channels, 1, kernel_initializer=init())
        if self.in_channels != self.out_channels else None)

  def build(self, x_shape=None, embedding_shape=None):
    del x_shape  # The weights depend on the channel counts only.
    self.conv_in.build((None, None, None, self.in_channels))
    self.embedding_film.build(embedding_shape)
    self.conv_out.build((None, None, None, self.out_channels))
    if self.project is not None:
      self.project.build((None, None, None, self.in_channels))
    self.built = True

  def call(self, x, embedding):
    h = self.conv_in(keras.activations.silu(x))
    scale, shift = tf.split(
        self.embedding_film(embedding)[:, None, None, :], 2, axis=-1)
    h = self.conv_out(keras.activations.silu(h * (1. + scale) + shift))
    skip = x if self.project is None else self.project(x)
    return (skip + h) * (1. / math.sqrt(2.))

  def get_config(self):
    config = super().get_config()
    config.update(in_channels=self.in_channels,
                  out_channels=self.out_channels, seed=self.seed)
    return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RatioNetwork(score_network_lib.ThetaConditioned, keras.Model):
  """The log ratio ℓ(κ_σ, θ) = log p_σ(κ_σ | θ) − log p_σ(κ_σ), learned.

  ``model(x, sigma, theta)`` (Keras ``call``) and ``log_ratio(x, theta,
  sigma)`` return ℓ ``[...]`` (nats) for maps x ``[..., N, N]``
  (dimensionless convergence, N divisible by ``size_divisor``), noise
  levels sigma (dimensionless, > 0, broadcasting against ``[...]``) and
  parameters θ ``[..., D]`` inside ``theta_bounds``; ``theta_score`` is
  ∇θ ℓ = ∇θ log p_σ(κ_σ | θ). See the module docstring.

  Saved and reloaded with the Keras ``.keras`` format (`load_ratio_network`
  names what a wrong file is).

  Args:
    theta_names: the names of the D parameters θ (distinct non-empty str,
      e.g. ``('omega_m', 'sigma8')``); required.
    theta_bounds: ``[D, 2]`` (lower, upper) finite ranges of θ, one row per
      name; θ is normalised over them and refused outside.
    depth: number of 2× downsamplings (int ≥ 1); maps must be divisible by
      2**depth pixels.
    base_channels: feature channels at full resolution (int ≥ 1).
    channel_multipliers: channels at level l are
      ``base_channels * channel_multipliers[l]``, l = 0..depth (depth + 1
      positive ints); default ``min(2**l, 8)``.
    blocks_per_level: blocks per resolution level (int ≥ 1).
    embedding_dim: width of the (ln σ, θ) embedding MLP (int ≥ 1).
    data_std: pixel standard deviation σ_d of the training maps
      (dimensionless, > 0); the input is scaled by 1 / √(σ² + σ_d²).
    seed: integer seed of the initial weights, or None.
    pixel_scale_arcmin: pixel side (arcmin) of the training maps, or None
      (unknown); saved with the model.
    remove_map_mean: if True, ℓ depends on x − mean(x) only (the mean over
      the map's pixels is subtracted first), in training as in use. Shear
      data do not determine the map mean (the Kaiser-Squires k = 0 mode:
      the E-mode map the θ likelihood reads has mean 0), so a network that
      reads the mean of its training maps learns information the data
      never hold and then takes a mean of 0 as evidence about θ. False
      (default, and the shipped files before it existed): the mean is
      read like any other mode.
    **kwargs: Keras ``Model`` arguments (name, dtype, ...).

  Raises:
    ValueError: for a missing ``theta_names``, bounds that are not ``[D, 2]``
      finite with lower < upper, or a malformed architecture argument.
  """

  _network_kind = 'ratio network'  # In error messages.

  def __init__(self,
               theta_names=None,
               theta_bounds=None,
               depth=2,
               base_channels=16,
               channel_multipliers=None,
               blocks_per_level=1,
               embedding_dim=64,
               data_std=0.02,
               seed=None,
               pixel_scale_arcmin=None,
               remove_map_mean=False,
               **kwargs):
    super().__init__(**kwargs)
    _checks.float_dtype(self.compute_dtype, 'RatioNetwork compute dtype')
    if not isinstance(remove_map_mean, bool):
      raise ValueError(f'remove_map_mean must be True or False, got '
                       f'{remove_map_mean!r}.')
    self.remove_map_mean = remove_map_mean
    if theta_names is None:
      raise ValueError(
          'RatioNetwork needs theta_names and theta_bounds: it learns the '
          'log ratio of p(κ | θ) for parameters θ, got theta_names=None.')
    self.theta_names, self.theta_bounds = score_network_lib._theta_config(  # pylint: disable=protected-access
        theta_names, theta_bounds)
    score_network_lib.set_architecture(
        self, depth, base_channels, channel_multipliers, blocks_per_level,
        embedding_dim, data_std, seed)
    self.pixel_scale_arcmin = (
        None if pixel_scale_arcmin is None else _checks.positive_scalar(
            pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin'))
    init = score_network_lib._Initializers(self.seed)  # pylint: disable=protected-access
    channels = score_network_lib.add_embedding_and_stem(self, init)
    self.blocks = []
    self.downsamplers = []
    self.readouts = []
    in_ch = channels[0]
    for level in range(self.depth + 1):
      for _ in range(self.blocks_per_level):
        self.blocks.append(
            ConditionedBlock(in_ch, channels[level], seed=init.block_seed()))
        in_ch = channels[level]
      # Zero-initialised: ℓ = 0 before training.
      self.readouts.append(
          keras.layers.Conv2D(1, 1, kernel_initializer='zeros'))
      if level < self.depth:
        self.downsamplers.append(keras.layers.Conv2D(
            in_ch, 3, strides=2, padding='same', kernel_initializer=init()))
    self._channels = channels
    self.build()

  def build(self, x_shape=None, sigma_shape=None, theta_shape=None):
    """Creates all weights; they depend on channel counts, not on map size."""
    del x_shape, sigma_shape, theta_shape
    if self.built:
      return
    channels = self._channels
    embedding = (None, self.embedding_dim)
    self.embedding_in.build(
        (None, 2 * len(score_network_lib._SIGMA_FREQUENCIES) +  # pylint: disable=protected-access
         self.num_parameters))
    self.embedding_out.build(embedding)
    self.stem.build((None, None, None, 1))
    for block in self.blocks:
      block.build((None, None, None, block.in_channels), embedding)
    for level, layer in enumerate(self.readouts):
      layer.build((None, None, None, 2 * channels[level]))
    for level, layer in enumerate(self.downsamplers):
      layer.build((None, None, None, channels[level]))
    self.built = True

  def get_config(self):
    config = super().get_config()
    config.update(
        theta_names=list(self.theta_names),
        theta_bounds=[list(b) for b in self.theta_bounds],
        depth=self.depth,
        base_channels=self.base_channels,
        channel_multipliers=list(self.channel_multipliers),
        blocks_per_level=self.blocks_per_level,
        embedding_dim=self.embedding_dim,
        data_std=self.data_std,
        seed=self.seed,
        pixel_scale_arcmin=self.pixel_scale_arcmin,
        remove_map_mean=self.remove_map_mean)
    return config

  @property
  def num_parameters(self):
    """D, the number of parameters θ."""
    return len(self.theta_names)

  @property
  def size_divisor(self):
    """2**depth: maps must have a side divisible by it."""
    return 2**self.depth

  def __call__(self, x, sigma, theta, **kwargs):
    # Keras takes only tensors as positional inputs: accept Python numbers
    # and lists for sigma and theta as well.
    if not tf.is_tensor(sigma):
      sigma = tf.convert_to_tensor(sigma, self.compute_dtype)
    if not tf.is_tensor(theta):
      theta = tf.convert_to_tensor(theta, self.compute_dtype)
    return super().__call__(x, sigma, theta, **kwargs)

  def call(self, x, sigma, theta):
    """ℓ(x, σ, θ) ``[...]`` in the network's dtype; see ``log_ratio``."""
    x = tf.convert_to_tensor(x, self.compute_dtype)
    sigma = tf.convert_to_tensor(sigma, self.compute_dtype)
    theta = self._theta_tensor(theta)
    n = _checks.square_map_shape(x.shape, 'x')
    if n is not None and n % self.size_divisor:
      raise ValueError(
          f'RatioNetwork of depth {self.depth} needs maps whose size is '
          f'divisible by 2**depth = {self.size_divisor}; got {n}x{n}.')
    score_network_lib._check_sigma(sigma)  # pylint: disable=protected-access
    if self.remove_map_mean:
      x = x - tf.reduce_mean(x, axis=[-2, -1], keepdims=True)
    batch_shape = tf.broadcast_dynamic_shape(
        tf.broadcast_dynamic_shape(tf.shape(x)[:-2], tf.shape(sigma)),
        tf.shape(theta)[:-1])
    n_dyn = tf.shape(x)[-1]
    x = tf.broadcast_to(x, tf.concat([batch_shape, [n_dyn, n_dyn]], 0))
    flat_sigma = tf.reshape(tf.broadcast_to(sigma, batch_shape), [-1])
    flat_theta = tf.reshape(
        tf.broadcast_to(theta, tf.concat(
            [batch_shape, [self.num_parameters]], 0)),
        [-1, self.num_parameters])
    scale = tf.math.rsqrt(tf.square(flat_sigma) +
                          tf.constant(self.data_std**2, x.dtype))
    flat_x = tf.reshape(x, [-1, n_dyn, n_dyn, 1]) * scale[:, None, None, None]
    return tf.reshape(self._logit(flat_x, tf.math.log(flat_sigma),
                                  flat_theta), batch_shape)

  def log_ratio(self, x, theta, sigma):
    """ℓ(κ_σ, θ) ≈ log p_σ(κ_σ | θ) − log p_σ(κ_σ), in the dtype of x.

    Args:
      x: maps ``[..., N, N]`` (dimensionless), N divisible by
        ``size_divisor``.
      theta: ``[..., D]`` inside ``theta_bounds``.
      sigma: noise standard deviation (dimensionless, > 0), scalar or
        ``[...]``.
      The leading axes of the three broadcast.

    Returns:
      ``[...]`` tensor (nats), the broadcast leading axes.

    Raises:
      ValueError: for maps that are not square or not divisible by
        ``size_divisor``, σ not finite and > 0, θ without a last axis of D
        or (when concrete) outside ``theta_bounds``.
    """
    x = tf.convert_to_tensor(x)
    return tf.cast(self(tf.cast(x, self.compute_dtype),
                        tf.cast(sigma, self.compute_dtype),
                        tf.cast(theta, self.compute_dtype)), x.dtype)

  def theta_score(self, x, theta, sigma):
    """∇θ ℓ(κ_σ, θ) ≈ ∇θ log p_σ(κ_σ | θ), ``[..., D]``.

    Arguments and errors as ``log_ratio``'s; one gradient per (map, θ)
    pair of the broadcast leading axes, in the dtype of θ (inverse
    parameter units).
    """
    theta = tf.convert_to_tensor(theta)
    x = tf.cast(x, self.compute_dtype)
    sigma = tf.cast(sigma, self.compute_dtype)
    batch_shape = tf.broadcast_dynamic_shape(
        tf.broadcast_dynamic_shape(tf.shape(x)[:-2], tf.shape(sigma)),
        tf.shape(theta)[:-1])
    theta_c = tf.broadcast_to(
        tf.cast(theta, self.compute_dtype),
        tf.concat([batch_shape, tf.shape(theta)[-1:]], 0))
    with tf.GradientTape() as tape:
      tape.watch(theta_c)
      logit = self(x, sigma, theta_c)
    return tf.cast(tape.gradient(logit, theta_c), theta.dtype)

  def deepened(self, channel_multiplier=None):
    """A copy with one more resolution level that computes the same ℓ.

    The new level (a 2× downsampler, ``blocks_per_level`` blocks and a
    read-out) goes below the coarsest one. Its read-out starts at zero, so
    the copy's logits equal this network's until it is trained, and
    training it (``examples/train_score.py --init_network``) starts from
    what this network has learned. The receptive field of the coarsest
    read-out about doubles (37 pixels at depth 2, 77 at depth 3, with one
    block per level) and maps must be divisible by 2**(depth + 1).

    Args:
      channel_multiplier: channels of the new level, in units of
        ``base_channels`` (int ≥ 1); default the coarsest level's.

    Returns:
      A new `RatioNetwork` of depth ``depth + 1``, with this network's
      weights in its first ``depth + 1`` levels.
    """
    config = self.get_config()
    config['depth'] = self.depth + 1
    config['channel_multipliers'] = list(self.channel_multipliers) + [
        self.channel_multipliers[-1] if channel_multiplier is None
        else channel_multiplier]
    deeper = type(self).from_config(config)
    pairs = [(self.embedding_in, deeper.embedding_in),
             (self.embedding_out, deeper.embedding_out),
             (self.stem, deeper.stem)]
    for group in ('blocks', 'downsamplers', 'readouts'):
      pairs += list(zip(getattr(self, group), getattr(deeper, group)))
    for source, target in pairs:
      target.set_weights(source.get_weights())
    return deeper

  def _logit(self, h, log_sigma, theta):
    """Scaled maps ``[B, N, N, 1]``, ln σ ``[B]``, θ ``[B, D]`` → ℓ ``[B]``."""
    phase = log_sigma[:, None] * tf.constant(
        score_network_lib._SIGMA_FREQUENCIES, h.dtype)  # pylint: disable=protected-access
    emb = self.embedding_out(self.embedding_in(tf.concat(
        [tf.sin(phase), tf.cos(phase), self.normalised_theta(theta)],
        axis=-1)))
    h = self.stem(h)
    blocks = iter(self.blocks)
    logit = tf.zeros(tf.shape(h)[:1], h.dtype)
    for level in range(self.depth + 1):
      for _ in range(self.blocks_per_level):
        h = next(blocks)(h, emb)
      features = tf.concat([keras.activations.silu(h), tf.square(h)], -1)
      logit += tf.reduce_sum(self.readouts[level](features), axis=[1, 2, 3])
      if level < self.depth:
        h = self.downsamplers[level](h)
    return logit


def load_ratio_network(path):
  """Loads a `RatioNetwork` saved with ``model.save(path)`` (``.keras``).

  Args:
    path: path of a ``.keras`` file.

  Returns:
    The `RatioNetwork`.

  Raises:
    FileNotFoundError: if nothing exists at ``path``.
    ValueError: if ``path`` is not a loadable Keras archive
      (`load_score_network`'s checks and messages) or holds another model,
      such as a `ScoreNetwork`.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'ratio-network file {path} does not exist.')
  try:
    model = score_network_lib.load_score_network(path)
  except ValueError as error:
    if 'expected a ScoreNetwork' not in str(error):
      raise
    model = keras.models.load_model(path, compile=False)
  else:
    raise ValueError(
        f'{path} holds a ScoreNetwork (a κ score), expected a RatioNetwork '
        '(training.train_ratio_network, examples/train_score.py '
        '--objective=ratio).')
  if not isinstance(model, RatioNetwork):
    raise ValueError(
        f'{path} holds a {type(model).__name__}, expected a RatioNetwork.')
  return model
