"""Noise-conditional denoiser of convergence maps and the score it implies.

A denoiser r(x', σ) trained to minimise E‖x − r(x + σu, σ)‖², u ~ N(0, I),
reaches r(x', σ) = x' + σ² ∇log p_σ(x') at its optimum, where p_σ is the map
prior convolved with N(0, σ² I) (Tweedie's formula, docs/design.md §1). So one
network gives both the posterior-mean denoiser and the score of every
smoothed prior along an annealing schedule.

Parametrisation (Karras et al. 2022, "EDM"): with σ_d the pixel standard
deviation of the training maps (dimensionless, ≈ 0.02 for convergence),

    r(x', σ) = c_skip(σ) x' + c_out(σ) F_θ(c_in(σ) x', ln σ),
    c_skip = σ_d² / (σ² + σ_d²),   c_out = σ σ_d / sqrt(σ² + σ_d²),
    c_in = 1 / sqrt(σ² + σ_d²).

F_θ sees unit-variance inputs and, weighted by 1/c_out², has a unit-variance
regression target at every σ; with F_θ = 0 the denoiser is the Wiener filter
of a white prior of variance σ_d², so training starts from a sensible map
estimate and the weighted loss starts near 1. The score is evaluated without
the cancellation in (r − x')/σ² at small σ:

    ∇log p_σ(x') = −x' / (σ² + σ_d²) + σ_d F_θ / (σ sqrt(σ² + σ_d²)).

F_θ is a fully convolutional U-Net (residual blocks with group norm, SiLU,
strided-convolution downsampling, nearest-neighbour upsampling, a Fourier
embedding of ln σ that scales and shifts the features in every block). Its
weights do not depend on the map size, so one trained network serves every
N×N map with N divisible by 2^depth. Convolutions pad with zeros: maps need not be periodic.

Hybrid prior (``gaussian_pixel_scale_arcmin`` set): the skip term c_skip x'
becomes the exact denoiser of the Gaussian prior with the shipped ΛCDM
spectrum at that pixel scale, W_σ x' = F⁻¹[S/(S + σ²) F x'] (a
`GaussianPrior`, rebuilt for each map size N), so

    r(x', σ) = W_σ x' + c_out(σ) F_θ(c_in(σ) x', ln σ),
    ∇log p_σ(x') = −F⁻¹[(S + σ²)⁻¹ F x'] + σ_d F_θ / (σ sqrt(σ² + σ_d²)).

With F_θ = 0 (the zero-initialised head) this is the Wiener denoiser, and the
network learns only the non-Gaussian residual: more robust away from the
training data, and much cheaper to train.

Conditional prior (``theta_names`` set): the network is r(x', σ, θ), the
denoiser of the conditional prior p(κ | θ) for D cosmological parameters θ
(e.g. Ωm and σ8). θ, mapped linearly from ``theta_bounds`` onto [−1, 1], is
appended to the Fourier features of ln σ at the input of the embedding MLP,
so it scales and shifts the features of every block as σ does; every formula
above holds at fixed θ. Without ``theta_names`` (the default) the network,
its weights and its saved config are those of an unconditioned prior.

Maps are ``[..., N, N]`` (no channel axis); the network works in float32 and
``denoise``/``score`` return the dtype of their input (float64 works).
"""

import math
import os
import zipfile

import keras
import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import cosmology

__all__ = [
    'ScoreNetwork',
    'load_score_network',
]

_PACKAGE = 'tfp_massmap'
# Angular frequencies (per unit of ln σ) of the Fourier noise-level features:
# periods from ~0.4 to 25 e-folds cover any σ range used in practice.
_SIGMA_FREQUENCIES = np.geomspace(0.25, 16.0, 16).astype(np.float32)


def _groups(channels):
  """Group-norm groups: up to 8, dividing the channel count."""
  return math.gcd(channels, 8)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualBlock(keras.layers.Layer):
  """Pre-activation residual block conditioned on a noise-level embedding.

  ``call(x, embedding)``: x ``[B, H, W, in_channels]``, embedding ``[B, E]``
  → ``[B, H, W, out_channels]``. The embedding is projected to a per-channel
  scale and shift applied after the second group norm (a plain additive
  bias before a group norm would be removed by it); the sum with the (1×1
  projected when channel counts differ) input is scaled by 1/√2 to keep
  activations of unit scale through deep stacks.
  """

  def __init__(self, in_channels, out_channels, seed=None, **kwargs):
    super().__init__(**kwargs)
    self.in_channels = int(in_channels)
    self.out_channels = int(out_channels)
    self.seed = seed
    init = _Initializers(seed)
    self.norm_in = keras.layers.GroupNormalization(_groups(self.in_channels))
    self.conv_in = keras.layers.Conv2D(
        self.out_channels, 3, padding='same', kernel_initializer=init())
    self.embedding_film = keras.layers.Dense(
        2 * self.out_channels, kernel_initializer=init())
    self.norm_out = keras.layers.GroupNormalization(_groups(self.out_channels))
    self.conv_out = keras.layers.Conv2D(
        self.out_channels, 3, padding='same', kernel_initializer=init())
    self.project = (
        keras.layers.Conv2D(self.out_channels, 1, kernel_initializer=init())
        if self.in_channels != self.out_channels else None)

  def build(self, x_shape=None, embedding_shape=None):
    del x_shape  # The weights depend on the channel counts only.
    feature = (None, None, None, self.in_channels)
    hidden = (None, None, None, self.out_channels)
    self.norm_in.build(feature)
    self.conv_in.build(feature)
    self.embedding_film.build(embedding_shape)
    self.norm_out.build(hidden)
    self.conv_out.build(hidden)
    if self.project is not None:
      self.project.build(feature)
    self.built = True

  def call(self, x, embedding):
    h = self.conv_in(keras.activations.silu(self.norm_in(x)))
    scale, shift = tf.split(self.embedding_film(embedding)[:, None, None, :], 2, axis=-1)
    h = self.norm_out(h) * (1.0 + scale) + shift
    h = self.conv_out(keras.activations.silu(h))
    skip = x if self.project is None else self.project(x)
    return (skip + h) * (1.0 / math.sqrt(2.0))

  def get_config(self):
    config = super().get_config()
    config.update(in_channels=self.in_channels, out_channels=self.out_channels,
                  seed=self.seed)
    return config


def set_architecture(model, depth, base_channels, channel_multipliers,
                     blocks_per_level, embedding_dim, data_std, seed):
  """Checks a network's size arguments and sets them on ``model``.

  Shared by `ScoreNetwork` and `tfp_massmap.priors.ratio.RatioNetwork`:
  ``depth``, ``base_channels``, ``channel_multipliers`` (default min(2^l, 8)
  per level l, depth + 1 entries), ``blocks_per_level``, ``embedding_dim``,
  ``data_std`` (dimensionless) and ``seed`` (int or None).
  """
  model.depth = _checks.positive_int(depth, 'depth')
  model.base_channels = _checks.positive_int(base_channels, 'base_channels')
  if channel_multipliers is None:
    channel_multipliers = [min(2**level, 8) for level in range(model.depth + 1)]
  channel_multipliers = [
      _checks.positive_int(m, 'channel_multipliers entries')
      for m in channel_multipliers]
  if len(channel_multipliers) != model.depth + 1:
    raise ValueError(
        f'channel_multipliers must have depth + 1 = {model.depth + 1} entries '
        f'(one per resolution level), got {channel_multipliers}.')
  model.channel_multipliers = channel_multipliers
  model.blocks_per_level = _checks.positive_int(blocks_per_level,
                                                'blocks_per_level')
  model.embedding_dim = _checks.positive_int(embedding_dim, 'embedding_dim')
  model.data_std = _checks.positive_scalar(data_std, 'data_std',
                                           'dimensionless')
  if seed is not None and (isinstance(seed, bool) or int(seed) != seed):
    raise ValueError(f'seed must be an integer or None, got {seed!r}.')
  model.seed = None if seed is None else int(seed)


def add_embedding_and_stem(model, init):
  """Adds the (ln σ, θ) embedding MLP and the 3×3 stem to ``model``.

  ``model.embedding_in`` and ``model.embedding_out`` (two SiLU dense layers
  of ``embedding_dim``) and ``model.stem`` (a convolution to the first
  level's channels), initialised in that order from ``init`` (an
  `_Initializers`). Shared by `ScoreNetwork` and
  `tfp_massmap.priors.ratio.RatioNetwork`, after `set_architecture`.

  Returns:
    The channel count of each level, ``base_channels · multiplier``.
  """
  channels = [model.base_channels * m for m in model.channel_multipliers]
  model.embedding_in = keras.layers.Dense(
      model.embedding_dim, activation='silu', kernel_initializer=init())
  model.embedding_out = keras.layers.Dense(
      model.embedding_dim, activation='silu', kernel_initializer=init())
  model.stem = keras.layers.Conv2D(
      channels[0], 3, padding='same', kernel_initializer=init())
  return channels


class ThetaConditioned:
  """θ handling of a network conditioned on parameters θ.

  For a Keras model with ``theta_names``, ``theta_bounds`` ([D, 2]),
  ``num_parameters`` and ``compute_dtype``: θ scaled onto [−1, 1] for the
  network's input, and θ checked (shape; a concrete θ inside the bounds).
  Shared by `ScoreNetwork` and `tfp_massmap.priors.ratio.RatioNetwork`.
  """

  # How error messages name the network.
  _network_kind = 'network'

  def normalised_theta(self, theta):
    """θ ``[..., D]`` mapped linearly from ``theta_bounds`` onto [−1, 1]."""
    theta = tf.convert_to_tensor(theta, self.compute_dtype)
    bounds = tf.constant(self.theta_bounds, theta.dtype)
    return 2.0 * (theta - bounds[:, 0]) / (bounds[:, 1] - bounds[:, 0]) - 1.0

  def _theta_tensor(self, theta):
    """θ as a tensor ``[..., D]``; a concrete θ is checked against the bounds."""
    theta = tf.convert_to_tensor(theta, self.compute_dtype)
    if theta.shape.rank is not None and (
        theta.shape.rank == 0 or
        theta.shape[-1] not in (None, self.num_parameters)):
      raise ValueError(
          f'theta must have a last axis of {self.num_parameters} parameters '
          f'{self.theta_names}, got shape {theta.shape}.')
    if _checks._is_concrete(theta):  # pylint: disable=protected-access
      value = np.asarray(theta).reshape(-1, self.num_parameters)
      # In θ's precision: float32(0.4) > 0.4 is the bound, not beyond it.
      bounds = np.asarray(self.theta_bounds).astype(value.dtype)
      outside = ~np.isfinite(value) | (value < bounds[:, 0]) | (
          value > bounds[:, 1])
      if outside.any():
        row, i = np.argwhere(outside)[0]
        raise ValueError(
            f'theta: {self.theta_names[i]} = {float(value[row, i])!r} is '
            f'outside the range the {self._network_kind} was trained on, '
            f'[{bounds[i, 0]:g}, {bounds[i, 1]:g}] (theta_bounds).')
    return theta


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ScoreNetwork(ThetaConditioned, keras.Model):
  """Noise-conditional U-Net denoiser r(x', σ) of convergence maps.

  ``model(x, sigma)`` (Keras ``call``) and ``denoise(x, sigma)`` return the
  denoised map r; ``score(x, sigma)`` returns ∇log p_σ(x) = (r − x)/σ².
  x is ``[..., N, N]`` (dimensionless convergence) with N divisible by
  2**depth; sigma (dimensionless, same units as x, > 0) is a scalar or a
  tensor broadcastable to ``x.shape[:-2]``. A network conditioned on θ
  (``theta_names`` set) is the prior p(κ | θ): ``model(x, sigma, theta)``,
  ``denoise(x, sigma, theta)`` and ``score(x, sigma, theta)`` take θ
  ``[..., D]`` (leading axes broadcastable to ``x.shape[:-2]``) inside
  ``theta_bounds``; `tfp_massmap.priors.learned_joint.LearnedJointPrior`
  makes it a joint prior, whose ``given(theta)`` is a `Prior`.

  It implements the `tfp_massmap.priors.Prior` protocol: ``dtype`` (one
  dtype for weights and computation, float32 by default), ``size_divisor``
  = 2**depth, ``num_pixels_per_side`` None, ``pixel_scale_arcmin`` (below).

  The network is built at construction (its weights do not depend on N), and
  is saved and reloaded with the Keras ``.keras`` format:
  ``model.save('prior.keras')`` then, after ``import tfp_massmap``,
  ``keras.models.load_model('prior.keras')`` with no custom objects.

  Args:
    depth: number of 2× downsamplings (int ≥ 1); maps must be divisible by
      2**depth pixels.
    base_channels: feature channels at full resolution (int ≥ 1).
    channel_multipliers: channels at level l are
      ``base_channels * channel_multipliers[l]``, l = 0..depth (depth + 1
      positive ints). Default ``min(2**l, 8)``: 16-32-64-128 channels with
      the other defaults.
    blocks_per_level: residual blocks per resolution level, in the encoder
      and in the decoder (int ≥ 1).
    embedding_dim: width of the ln σ embedding MLP (int ≥ 1).
    data_std: pixel standard deviation σ_d of the training maps
      (dimensionless, > 0); sets the EDM preconditioning.
    seed: integer seed of the initial weights, or None to draw them from
      Keras's global random state.
    gaussian_pixel_scale_arcmin: pixel side (arcmin) of the maps the network
      will see; when set, the network is a hybrid prior whose skip term is
      the Gaussian denoiser with the shipped ΛCDM spectrum
      (`cosmology.cosmos_convergence_cl`) at that pixel scale. None: the
      plain EDM skip term.
    pixel_scale_arcmin: pixel side (arcmin) of the maps the prior was
      trained on, hence is valid at (`sample_posterior` refuses data at
      another scale); default ``gaussian_pixel_scale_arcmin`` (a hybrid
      prior is tied to it), else None (unknown). Saved with the model;
      files saved before this argument existed load with the default.
    theta_names: None (an unconditioned prior p(κ)), or the names of the D
      parameters θ the network is conditioned on (distinct non-empty str,
      e.g. ``('omega_m', 'sigma8')``): it is then the prior p(κ | θ), and
      ``call``/``denoise``/``score`` take θ ``[..., D]``. Saved with the
      model.
    theta_bounds: ``[D, 2]`` (lower, upper) finite ranges of θ, in each
      parameter's units, one row per name (required with ``theta_names``,
      None without); θ is normalised over them and refused outside. Saved
      with the model.
    **kwargs: Keras ``Model`` arguments (name, dtype, ...).
  """

  def __init__(self,
               depth=3,
               base_channels=16,
               channel_multipliers=None,
               blocks_per_level=1,
               embedding_dim=128,
               data_std=0.02,
               seed=None,
               gaussian_pixel_scale_arcmin=None,
               pixel_scale_arcmin=None,
               theta_names=None,
               theta_bounds=None,
               **kwargs):
    super().__init__(**kwargs)
    # `dtype` (Keras: the variable dtype) is the compute dtype of the
    # `tfp_massmap.priors.Prior` protocol; Keras's mixed policies, the only
    # ones that split the two, compute in 16 bits and are refused here.
    _checks.float_dtype(self.compute_dtype, 'ScoreNetwork compute dtype')
    set_architecture(self, depth, base_channels, channel_multipliers,
                     blocks_per_level, embedding_dim, data_std, seed)
    self.gaussian_pixel_scale_arcmin = (
        None if gaussian_pixel_scale_arcmin is None else _checks.positive_scalar(
            gaussian_pixel_scale_arcmin, 'gaussian_pixel_scale_arcmin', 'arcmin'))
    if pixel_scale_arcmin is None:
      self.pixel_scale_arcmin = self.gaussian_pixel_scale_arcmin
    else:
      self.pixel_scale_arcmin = _checks.positive_scalar(
          pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
      if self.gaussian_pixel_scale_arcmin not in (None,
                                                  self.pixel_scale_arcmin):
        raise ValueError(
            f'pixel_scale_arcmin={pixel_scale_arcmin!r} differs from '
            f'gaussian_pixel_scale_arcmin={gaussian_pixel_scale_arcmin!r}: a '
            'hybrid prior is valid at the pixel scale of its Gaussian part.')
    self.theta_names, self.theta_bounds = _theta_config(theta_names,
                                                        theta_bounds)
    self._gaussian_priors = {}
    init = _Initializers(self.seed)

    channels = add_embedding_and_stem(self, init)
    # Encoder: blocks_per_level blocks at each level, a strided convolution
    # between levels. Decoder: upsample + convolution, concatenate the skip,
    # blocks_per_level blocks. Flat lists, in order of use.
    self.encoder_blocks = []
    self.downsamplers = []
    in_ch = channels[0]
    for level in range(self.depth + 1):
      for _ in range(self.blocks_per_level):
        self.encoder_blocks.append(
            ResidualBlock(in_ch, channels[level], seed=init.block_seed()))
        in_ch = channels[level]
      if level < self.depth:
        self.downsamplers.append(keras.layers.Conv2D(
            in_ch, 3, strides=2, padding='same', kernel_initializer=init()))
    self.upsamplers = []
    self.decoder_blocks = []
    for level in reversed(range(self.depth)):
      self.upsamplers.append(keras.layers.Conv2D(
          channels[level], 3, padding='same', kernel_initializer=init()))
      in_ch = 2 * channels[level]
      for _ in range(self.blocks_per_level):
        self.decoder_blocks.append(
            ResidualBlock(in_ch, channels[level], seed=init.block_seed()))
        in_ch = channels[level]
    self.head_norm = keras.layers.GroupNormalization(_groups(channels[0]))
    # Zero-initialised output: F = 0 at the start, i.e. the white-prior
    # Wiener filter (see the module docstring).
    self.head = keras.layers.Conv2D(1, 3, padding='same', kernel_initializer='zeros')
    self._channels = channels
    self.build()

  def build(self, x_shape=None, sigma_shape=None):
    """Creates all weights; they depend on channel counts, not on map size."""
    del x_shape, sigma_shape
    if self.built:
      return
    channels = self._channels
    embedding = (None, self.embedding_dim)
    self.embedding_in.build(
        (None, 2 * len(_SIGMA_FREQUENCIES) + self.num_parameters))
    self.embedding_out.build(embedding)
    self.stem.build((None, None, None, 1))
    for block in self.encoder_blocks + self.decoder_blocks:
      block.build((None, None, None, block.in_channels), embedding)
    for level, layer in enumerate(self.downsamplers):
      layer.build((None, None, None, channels[level]))
    for i, layer in enumerate(self.upsamplers):
      layer.build((None, None, None, channels[self.depth - i]))
    self.head_norm.build((None, None, None, channels[0]))
    self.head.build((None, None, None, channels[0]))
    self.built = True

  def get_config(self):
    config = super().get_config()
    config.update(
        depth=self.depth,
        base_channels=self.base_channels,
        channel_multipliers=list(self.channel_multipliers),
        blocks_per_level=self.blocks_per_level,
        embedding_dim=self.embedding_dim,
        data_std=self.data_std,
        seed=self.seed,
        gaussian_pixel_scale_arcmin=self.gaussian_pixel_scale_arcmin,
        pixel_scale_arcmin=self.pixel_scale_arcmin)
    if self.num_parameters:
      # Only conditioned networks record θ: an unconditioned network's
      # config is the one written before θ existed.
      config.update(theta_names=list(self.theta_names),
                    theta_bounds=[list(b) for b in self.theta_bounds])
    return config

  @property
  def num_parameters(self):
    """D, the number of parameters θ the network is conditioned on (0: none)."""
    return 0 if self.theta_names is None else len(self.theta_names)

  @property
  def size_divisor(self):
    """2**depth: the U-Net needs maps whose side is a multiple of it."""
    return 2**self.depth

  @property
  def num_pixels_per_side(self):
    """None: the fully convolutional network serves any size (see above)."""
    return None

  @property
  def smoothed_score(self):
    """True: the network is conditioned on σ and scores every σ > 0."""
    return True

  def gaussian_prior(self, n):
    """The analytic `GaussianPrior` of the hybrid skip term for N×N maps."""
    if self.gaussian_pixel_scale_arcmin is None:
      raise ValueError('this ScoreNetwork is not a hybrid prior '
                       '(gaussian_pixel_scale_arcmin is None).')
    if n not in self._gaussian_priors:
      from tfp_massmap.priors import gaussian as gaussian_prior  # pylint: disable=g-import-not-at-top
      ell, cl = cosmology.cosmos_convergence_cl()
      with tf.init_scope():
        self._gaussian_priors[n] = gaussian_prior.GaussianPrior.from_power_spectrum(
            ell, cl, n, self.gaussian_pixel_scale_arcmin, dtype=self.compute_dtype)
    return self._gaussian_priors[n]

  def preconditioning(self, sigma):
    """EDM coefficients (c_skip, c_out, c_in) at noise level sigma.

    Args:
      sigma: noise standard deviation (dimensionless, > 0), any shape.

    Returns:
      Three tensors of sigma's shape: c_skip (dimensionless), c_out (same
      units as the maps) and c_in (inverse map units).
    """
    sigma = tf.convert_to_tensor(sigma)
    sd = tf.constant(self.data_std, sigma.dtype)
    total = tf.sqrt(sigma**2 + sd**2)
    return sd**2 / total**2, sigma * sd / total, 1.0 / total

  def __call__(self, x, sigma, theta=None, **kwargs):
    # Keras takes only tensors as positional inputs: accept Python numbers
    # and lists for sigma and theta as well.
    if not tf.is_tensor(sigma):
      sigma = tf.convert_to_tensor(sigma, self.compute_dtype)
    if theta is None:
      return super().__call__(x, sigma, **kwargs)
    if not tf.is_tensor(theta):
      theta = tf.convert_to_tensor(theta, self.compute_dtype)
    return super().__call__(x, sigma, theta, **kwargs)

  def call(self, x, sigma, theta=None):
    """The denoised map r(x, σ[, θ]), ``[..., N, N]``, in the network's dtype."""
    x, sigma, f = self._raw_output(x, sigma, theta)
    c_skip, c_out, _ = self.preconditioning(sigma)
    if self.gaussian_pixel_scale_arcmin is None:
      skip = _expand(c_skip) * x
    else:
      skip = self.gaussian_prior(x.shape[-1]).denoise(x, sigma)
    return skip + _expand(c_out) * f

  def denoise(self, x, sigma, theta=None):
    """Denoised map r(x, σ[, θ]) = E[x_clean | x(, θ)], in the dtype of x.

    Args:
      x: noisy maps ``[..., N, N]`` (dimensionless), N divisible by
        2**depth.
      sigma: noise std (dimensionless, > 0), broadcastable to
        ``x.shape[:-2]``.
      theta: parameters ``[..., D]`` inside ``theta_bounds``, leading axes
        broadcastable to ``x.shape[:-2]``, for a conditioned network
        (required); None for an unconditioned one.

    Returns:
      ``[..., N, N]`` tensor of x's dtype.
    """
    x = tf.convert_to_tensor(x)
    if theta is not None:
      theta = tf.cast(theta, self.compute_dtype)
    return tf.cast(self(tf.cast(x, self.compute_dtype),
                        tf.cast(sigma, self.compute_dtype), theta), x.dtype)

  def score(self, x, sigma, theta=None):
    """Score ∇log p_σ(x[ | θ]) = (r(x, σ[, θ]) − x)/σ² of the smoothed prior.

    Args:
      x: maps ``[..., N, N]`` (dimensionless), N divisible by 2**depth.
      sigma: noise std (dimensionless, > 0), broadcastable to
        ``x.shape[:-2]``.
      theta: parameters ``[..., D]`` as in ``denoise`` (required for a
        conditioned network, None otherwise).

    Returns:
      ``[..., N, N]`` tensor of x's dtype (units: inverse map units).
    """
    x = tf.convert_to_tensor(x)
    with tf.name_scope('score'):
      xc, sigma, f = self._raw_output(
          tf.cast(x, self.compute_dtype), tf.cast(sigma, self.compute_dtype),
          None if theta is None else tf.cast(theta, self.compute_dtype))
      sd = tf.constant(self.data_std, self.compute_dtype)
      total_sq = _expand(sigma**2 + sd**2)
      s = _expand(sigma)
      if self.gaussian_pixel_scale_arcmin is None:
        base = -xc / total_sq
      else:
        base = self.gaussian_prior(xc.shape[-1]).score(xc, sigma)
      score = base + sd * f / (s * tf.sqrt(total_sq))
      return tf.cast(score, x.dtype)

  def _raw_output(self, x, sigma, theta=None):
    """Validates inputs and runs F_θ; returns (x, σ broadcast, F)."""
    x = tf.convert_to_tensor(x, self.compute_dtype)
    sigma = tf.convert_to_tensor(sigma, self.compute_dtype)
    n = _checks.square_map_shape(x.shape, 'x')
    divisor = 2**self.depth
    if n is not None and n % divisor:
      raise ValueError(
          f'ScoreNetwork of depth {self.depth} needs maps whose size is '
          f'divisible by 2**depth = {divisor}; got {n}x{n}.')
    _check_sigma(sigma)
    batch_shape = tf.shape(x)[:-2]
    sigma = tf.broadcast_to(sigma, batch_shape)
    n_dyn = tf.shape(x)[-1]
    flat_x = tf.reshape(x, [-1, n_dyn, n_dyn, 1])
    flat_sigma = tf.reshape(sigma, [-1])
    _, _, c_in = self.preconditioning(flat_sigma)
    flat_theta = None
    if self.num_parameters:
      theta = self._checked_theta(theta)
      flat_theta = tf.reshape(
          tf.broadcast_to(theta, tf.concat(
              [batch_shape, [self.num_parameters]], axis=0)),
          [-1, self.num_parameters])
    elif theta is not None:
      raise ValueError('theta was given to a ScoreNetwork that is not '
                       'conditioned on parameters (theta_names is None); '
                       'pass theta=None.')
    f = self._unet(flat_x * c_in[:, None, None, None], tf.math.log(flat_sigma),
                   flat_theta)
    return x, sigma, tf.reshape(f, tf.shape(x))

  def _checked_theta(self, theta):
    """θ as a tensor ``[..., D]``; a concrete θ is checked against the bounds."""
    if theta is None:
      raise ValueError(
          f'this ScoreNetwork is the conditional prior p(κ | θ) over '
          f'{self.theta_names}: pass theta [..., {self.num_parameters}] (or use '
          'tfp_massmap.priors.learned_joint.LearnedJointPrior(network)'
          '.given(theta) as a prior of the map alone).')
    return self._theta_tensor(theta)

  def _unet(self, h, log_sigma, theta=None):
    """The U-Net F: scaled maps, ln σ and θ to ``[B, N, N]``.

    Inputs: ``[B, N, N, 1]`` scaled maps, ``[B]`` ln σ, θ ``[B, D]`` or None.
    """
    phase = log_sigma[:, None] * tf.constant(_SIGMA_FREQUENCIES, h.dtype)
    features = [tf.sin(phase), tf.cos(phase)]
    if theta is not None:
      features.append(self.normalised_theta(theta))
    emb = self.embedding_out(self.embedding_in(tf.concat(features, axis=-1)))
    h = self.stem(h)
    skips = []
    blocks = iter(self.encoder_blocks)
    for level in range(self.depth + 1):
      for _ in range(self.blocks_per_level):
        h = next(blocks)(h, emb)
      if level < self.depth:
        skips.append(h)
        h = self.downsamplers[level](h)
    blocks = iter(self.decoder_blocks)
    for upsample in self.upsamplers:
      h = upsample(tf.repeat(tf.repeat(h, 2, axis=1), 2, axis=2))
      h = tf.concat([h, skips.pop()], axis=-1)
      for _ in range(self.blocks_per_level):
        h = next(blocks)(h, emb)
    h = self.head(keras.activations.silu(self.head_norm(h)))
    return h[..., 0]


def load_score_network(path):
  """Loads a ``ScoreNetwork`` saved with ``model.save(path)`` (``.keras``).

  Args:
    path: path of a ``.keras`` file (a zip archive written by Keras).

  Returns:
    The ``ScoreNetwork``.

  Raises:
    FileNotFoundError: if nothing exists at ``path``.
    ValueError: if ``path`` is a directory, is not a Keras archive (a FITS,
      HDF5, text or other file), lacks the ``.keras`` extension, or holds
      another model; the message names the file and the problem.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'score-network file {path} does not exist.')
  if os.path.isdir(path):
    raise ValueError(f'{path} is a directory; expected a .keras file written '
                     'by ScoreNetwork.save (e.g. examples/train_score.py '
                     'writes score_network.keras).')
  if not zipfile.is_zipfile(path):
    raise ValueError(f'{path} is not a Keras archive (a .keras zip file): it '
                     f'is {_describe_file(path)}.')
  with zipfile.ZipFile(path) as archive:
    if 'config.json' not in archive.namelist():
      raise ValueError(f'{path} is a zip archive but not a Keras archive: it '
                       'has no config.json.')
  if not path.endswith('.keras'):
    raise ValueError(f'{path} is a Keras archive without the .keras '
                     'extension, which Keras needs to load it; rename it to '
                     'end in .keras.')
  try:
    model = keras.models.load_model(path, compile=False)
  except (ValueError, TypeError, KeyError, OSError) as error:
    raise ValueError(f'{path} is a Keras archive that does not load as a '
                     f'ScoreNetwork: {error}') from error
  if not isinstance(model, ScoreNetwork):
    raise ValueError(
        f'{path} holds a {type(model).__name__}, expected a ScoreNetwork.')
  return model


# Leading bytes of the files most often passed by mistake.
_FILE_SIGNATURES = (
    (b'SIMPLE  =', 'a FITS file'),
    (b'\x89HDF\r\n\x1a\n', 'an HDF5 file (the Keras 2 .h5 format is not '
     'supported; re-save the model as .keras)'),
    (b'PAR1', 'a Parquet file'),
)


def _describe_file(path):
  """A few words on what a file that is not a zip archive looks like."""
  with open(path, 'rb') as f:
    head = f.read(512)
  if not head:
    return 'empty'
  for signature, description in _FILE_SIGNATURES:
    if head.startswith(signature):
      return description
  if b'\x00' in head:
    return f'a binary file starting with {head[:8]!r}'
  return 'a text file'


class _Initializers:
  """Glorot-uniform kernel initialisers with distinct seeds from one seed."""

  def __init__(self, seed):
    self._seeds = None if seed is None else np.random.SeedSequence(seed)

  def block_seed(self):
    if self._seeds is None:
      return None
    return int(self._seeds.spawn(1)[0].generate_state(1)[0] >> 1)

  def __call__(self):
    return keras.initializers.GlorotUniform(seed=self.block_seed())



def _check_sigma(sigma):
  """Raises if a concrete sigma holds values that are not finite and > 0."""
  if not _checks._is_concrete(sigma):  # pylint: disable=protected-access
    return
  arr = np.asarray(sigma)
  bad = ~np.isfinite(arr) | (arr <= 0)
  if bad.any():
    raise ValueError(
        f'sigma must be finite and > 0 (noise std, dimensionless), got '
        f'{arr[bad].ravel()[0]!r} ({int(bad.sum())} bad value(s)).')


def _theta_config(theta_names, theta_bounds):
  """Checked (theta_names tuple, theta_bounds tuple of pairs), or (None, None)."""
  if theta_names is None:
    if theta_bounds is not None:
      raise ValueError('theta_bounds was given without theta_names; pass both '
                       f'(or neither), got theta_bounds={theta_bounds!r}.')
    return None, None
  if (isinstance(theta_names, str) or
      not isinstance(theta_names, (tuple, list)) or not theta_names or
      not all(isinstance(n, str) and n for n in theta_names) or
      len(set(theta_names)) != len(theta_names)):
    raise ValueError('theta_names must be a non-empty list of distinct '
                     f'non-empty str, got {theta_names!r}.')
  try:
    bounds = np.asarray(theta_bounds, np.float64)
  except (TypeError, ValueError):
    bounds = None
  if bounds is None or bounds.shape != (len(theta_names), 2):
    raise ValueError(
        f'theta_bounds must be [D, 2] = [{len(theta_names)}, 2] (lower, upper) '
        f'for theta_names {tuple(theta_names)}, got {theta_bounds!r}.')
  if not np.all(np.isfinite(bounds)) or np.any(bounds[:, 0] >= bounds[:, 1]):
    raise ValueError('theta_bounds must be finite with lower < upper on every '
                     f'row, got {bounds.tolist()}.')
  return (tuple(theta_names),
          tuple((float(lo), float(hi)) for lo, hi in bounds))


def _expand(per_map):
  """Broadcasts a per-map ``[...]`` tensor against maps ``[..., N, N]``."""
  return per_map[..., None, None]
