"""Training-time transforms of convergence maps: crops, resampling, flips.

They let simulated maps of one pixel scale and size (MassiveNuS: 512² at
0.41 arcmin, κTNG: 1024² at 0.29 arcmin) serve a training setting of
another (the COSMOS setting, 360² at 0.29 arcmin; the demo setting, 128² at
0.8 arcmin). Every function acts on the last two axes of maps ``[..., N, N]``
and works eagerly, inside ``tf.function`` and in ``tf.data.Dataset.map``,
also when N is only known at run time (TFDS features of shape
``(None, None)``). Random transforms take stateless seeds (TFP semantics: an
``int32[2]`` tensor or a pair of ints gives reproducible results).

Resampling is area averaging: an output pixel is the mean of the input map
over its area, each input pixel weighted by its overlap with it. It is the
exact answer for pixelised maps (a pixel value is the mean convergence over
the pixel), conserves the mean of the covered area, keeps constants
constant, reduces to block averaging for integer downsampling factors and
to pixel repetition for integer upsampling factors. It multiplies the power
spectrum by the window of the larger pixel, so scales well above the new
pixel keep their power.
"""

import math

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap import _checks

__all__ = [
    'random_crop',
    'resample_to_pixel_scale',
    'dihedral_transform',
    'random_dihedral',
    'training_pipeline',
]

# Slack on N · from / to before rounding down the output size, so that
# 0.41 · 512 / 0.41 does not become 511 through rounding errors.
_SIZE_RTOL = 1e-6


def _map_size(kappa, name):
  """Static N if known (checking squareness), and the run-time N."""
  n = _checks.square_map_shape(kappa.shape, name)
  shape = tf.shape(kappa)
  if n is None:
    tf.debugging.assert_equal(
        shape[-1], shape[-2],
        message=f'{name} must be a square map [..., N, N]')
  return n, shape[-1]


def _positive_arcmin(value, name):
  """(float64 tensor, Python float or None) of a positive pixel side.

  Checked now when the value is known, else by an op at run time.
  """
  static = value if not tf.is_tensor(value) else tf.get_static_value(value)
  if static is not None:
    static = _checks.positive_scalar(static, name, 'arcmin')
    return tf.constant(static, tf.float64), static
  value = tf.cast(value, tf.float64)
  tf.debugging.assert_positive(value, message=f'{name} must be > 0 (arcmin)')
  return value, None


def random_crop(kappa, size, seed, name=None):
  """A uniformly placed ``size`` × ``size`` window of maps ``[..., N, N]``.

  All leading maps get the same window.

  Args:
    kappa: tensor ``[..., N, N]``.
    size: side of the window in pixels (Python int, 1 ≤ size ≤ N).
    seed: stateless seed (``int32[2]`` or a pair of ints).
    name: optional name scope.

  Returns:
    Tensor ``[..., size, size]``, same dtype.
  """
  with tf.name_scope(name or 'random_crop'):
    kappa = tf.convert_to_tensor(kappa)
    n_static, n = _map_size(kappa, 'kappa')
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
      raise ValueError(f'size must be a Python int, got {size!r}.')
    if size < 1 or (n_static is not None and size > n_static):
      raise ValueError(f'size must be in [1, N = {n_static}] pixels, got {size}.')
    if n_static is None:
      tf.debugging.assert_less_equal(
          size, n, message=f'crop size {size} exceeds the map size')
    seed = tfp.random.sanitize_seed(seed, salt='random_crop')
    crop = _crop(kappa, n, size, seed)
    return tf.ensure_shape(crop, kappa.shape[:-2].concatenate([size, size]))


def _crop(kappa, n, size, seed):
  """Uniformly placed size × size window (size ≤ n may be a tensor)."""
  start = tf.random.stateless_uniform(
      [2], seed, minval=0, maxval=n - size + 1, dtype=tf.int32)
  return kappa[..., start[0]:start[0] + size, start[1]:start[1] + size]


def _area_weights(n, ratio, dtype):
  """[M, N] area-averaging matrix; output pixel side = ``ratio`` input pixels.

  M = ⌊N / ratio⌋ output pixels are centred on the input field. Entry (i, j)
  is the overlap of output pixel i with input pixel j divided by the area of
  output pixel i, so every row sums to one.
  """
  n_float = tf.cast(n, tf.float64)
  m = tf.cast(tf.floor(n_float / ratio * (1 + _SIZE_RTOL)), tf.int32)
  tf.debugging.assert_positive(
      m, message='the new pixel is larger than the whole map')
  offset = tf.maximum(n_float - tf.cast(m, tf.float64) * ratio, 0.0) / 2
  lower = offset + tf.range(m, dtype=tf.float64)[:, None] * ratio
  edges = tf.range(n, dtype=tf.float64)[None, :]
  overlap = tf.nn.relu(
      tf.minimum(lower + ratio, edges + 1) - tf.maximum(lower, edges))
  return tf.cast(overlap / tf.reduce_sum(overlap, axis=1, keepdims=True), dtype)


def resample_to_pixel_scale(kappa, from_arcmin, to_arcmin, name=None):
  """Resamples maps ``[..., N, N]`` to another pixel scale by area averaging.

  The output has M = ⌊N · from / to⌋ pixels a side, centred on the input
  field (which it covers exactly when N · from / to is an integer); each
  output pixel is the area-weighted mean of the input pixels it overlaps
  (see the module docstring).

  Args:
    kappa: float32 or float64 tensor ``[..., N, N]``.
    from_arcmin: pixel side of ``kappa``, arcmin (number or scalar tensor).
    to_arcmin: pixel side of the output, arcmin (number or scalar tensor).
    name: optional name scope.

  Returns:
    Tensor ``[..., M, M]``, dtype of ``kappa``; M is static when N is and
    both pixel sides are numbers.
  """
  with tf.name_scope(name or 'resample_to_pixel_scale'):
    kappa = tf.convert_to_tensor(kappa)
    dtype = _checks.float_dtype(kappa.dtype, 'kappa dtype')
    n_static, n = _map_size(kappa, 'kappa')
    to_pix, to_static = _positive_arcmin(to_arcmin, 'to_arcmin')
    from_pix, from_static = _positive_arcmin(from_arcmin, 'from_arcmin')
    m = None
    if None not in (n_static, to_static, from_static):
      m = math.floor(n_static / (to_static / from_static) * (1 + _SIZE_RTOL))
      if m < 1:
        raise ValueError(
            f'to_arcmin = {to_static} is larger than the whole map '
            f'({n_static} pixels of {from_static} arcmin).')
    weights = _area_weights(n, to_pix / from_pix, dtype)
    out = tf.matmul(tf.matmul(weights, kappa), weights, transpose_b=True)
    return tf.ensure_shape(out, kappa.shape[:-2].concatenate([m, m]))


def dihedral_transform(kappa, index, name=None):
  """One of the eight symmetries of the square applied to maps ``[..., N, N]``.

  ``index`` in 0 … 7 reads as three bits: bit 0 flips the columns (x → −x),
  bit 1 flips the rows (y → −y), bit 2 then transposes (x ↔ y). The eight
  results are the four rotations by multiples of 90° of the map and of its
  transpose. Valid for scalar fields such as κ; shear components would
  also need their signs and order changed.

  Args:
    kappa: tensor ``[..., N, N]``.
    index: integer scalar (Python or tensor) in [0, 8).
    name: optional name scope.

  Returns:
    Tensor of the shape and dtype of ``kappa``.
  """
  with tf.name_scope(name or 'dihedral_transform'):
    kappa = tf.convert_to_tensor(kappa)
    _map_size(kappa, 'kappa')
    static_index = tf.get_static_value(index)
    if static_index is not None and not 0 <= int(static_index) < 8:
      raise ValueError(f'index must be in [0, 8), got {static_index!r}.')
    index = tf.cast(index, tf.int32)

    def apply_if(bit, transform, x):
      return tf.cond(tf.bitwise.bitwise_and(index, bit) > 0,
                     lambda: transform(x), lambda: x)

    kappa = apply_if(1, lambda x: tf.reverse(x, axis=[-1]), kappa)
    kappa = apply_if(2, lambda x: tf.reverse(x, axis=[-2]), kappa)
    return apply_if(4, tf.linalg.matrix_transpose, kappa)


def random_dihedral(kappa, seed, name=None):
  """A uniformly drawn ``dihedral_transform`` of maps ``[..., N, N]``.

  Args:
    kappa: tensor ``[..., N, N]`` (all leading maps get the same symmetry).
    seed: stateless seed (``int32[2]`` or a pair of ints).
    name: optional name scope.

  Returns:
    Tensor of the shape and dtype of ``kappa``.
  """
  with tf.name_scope(name or 'random_dihedral'):
    seed = tfp.random.sanitize_seed(seed, salt='random_dihedral')
    index = tf.random.stateless_uniform(
        [], seed, minval=0, maxval=8, dtype=tf.int32)
    return dihedral_transform(kappa, index)


def training_pipeline(dataset, map_size, pixel_scale_arcmin, seed,
                      source_pixel_scale_arcmin=None, key='kappa',
                      remove_mean=False, batch_size=None,
                      num_parallel_calls=tf.data.AUTOTUNE):
  """Training maps of a given size and pixel scale from a dataset of maps.

  For each element: a random window just large enough is cut from the map,
  resampled to ``pixel_scale_arcmin`` by area averaging, randomly cropped to
  ``map_size`` pixels and given a random ``dihedral_transform``. Element i
  uses the seed ``stateless_fold_in(seed, i)``, so the output is
  reproducible, and differs between epochs when the input is repeated
  before this call (``dataset.repeat()``).

  Examples:
    COSMOS setting from MassiveNuS (0.41 → 0.29 arcmin):
    ``training_pipeline(tfds.load('massivenus', split='train'), 360, 0.29,
    seed=(1, 2))``; the demo setting: ``map_size=128,
    pixel_scale_arcmin=0.8``.

  Args:
    dataset: ``tf.data.Dataset`` of dicts holding the maps under ``key`` and,
      unless ``source_pixel_scale_arcmin`` is given, their pixel side under
      ``'pixel_scale_arcmin'`` (as the TFDS builders of this package yield),
      or of map tensors ``[..., N, N]``.
    map_size: side of the output maps, pixels.
    pixel_scale_arcmin: pixel side of the output maps, arcmin.
    seed: stateless seed (``int32[2]`` or a pair of ints).
    source_pixel_scale_arcmin: pixel side of the input maps, arcmin; needed
      when the elements are plain tensors.
    key: key of the maps in dict elements.
    remove_mean: subtract each output map's mean (the mean is not
      constrained by shear).
    batch_size: if given, batches of this size (the last partial batch is
      dropped).
    num_parallel_calls: parallelism of the map step.

  Returns:
    ``tf.data.Dataset`` of maps ``[..., map_size, map_size]`` (with a
    leading ``batch_size`` axis if batched), dtype of the input maps.
  """
  if (isinstance(map_size, bool) or not isinstance(map_size, (int, np.integer))
      or map_size < 1):
    raise ValueError(f'map_size must be a positive Python int, got {map_size!r}.')
  target = _checks.positive_scalar(
      pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  is_dict = isinstance(dataset.element_spec, dict)
  if is_dict and key not in dataset.element_spec:
    raise ValueError(f'dataset elements have keys {sorted(dataset.element_spec)}; '
                     f'expected the maps under key={key!r}.')
  if source_pixel_scale_arcmin is None and not (
      is_dict and 'pixel_scale_arcmin' in dataset.element_spec):
    raise ValueError('source_pixel_scale_arcmin is required when the dataset '
                     "elements do not carry 'pixel_scale_arcmin'.")
  if source_pixel_scale_arcmin is not None:
    _checks.positive_scalar(
        source_pixel_scale_arcmin, 'source_pixel_scale_arcmin', 'arcmin')
  if batch_size is not None and (
      isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
      or batch_size < 1):
    raise ValueError(
        f'batch_size must be None or a positive int, got {batch_size!r}.')
  seed = tfp.random.sanitize_seed(seed, salt='training_pipeline')

  def transform(index, element):
    kappa = element[key] if is_dict else element
    source = (element['pixel_scale_arcmin'] if source_pixel_scale_arcmin is None
              else source_pixel_scale_arcmin)
    source = tf.cast(source, tf.float64)
    element_seed = tf.cast(  # fold_in gives int64; keep the low 32 bits.
        tf.random.experimental.stateless_fold_in(seed, index), tf.int32)
    window_seed, crop_seed, flip_seed = tfp.random.split_seed(element_seed, n=3)
    n = tf.shape(kappa)[-1]
    # Input pixels needed for map_size output pixels, plus one for the
    # window's sub-pixel position.
    window = tf.cast(tf.math.ceil(map_size * target / source), tf.int32) + 1
    too_small = tf.debugging.assert_less_equal(
        window - 1, n, message=(
            f'input maps are smaller than {map_size} pixels of {target} arcmin'))
    # The check must run before any op that would fail on a small map with a
    # less readable error (the crops); tf.data does not order them otherwise.
    with tf.control_dependencies([too_small]):
      kappa = tf.identity(kappa)
    kappa = _crop(kappa, n, tf.minimum(window, n), window_seed)
    kappa = resample_to_pixel_scale(kappa, source, target)
    kappa = random_crop(kappa, map_size, crop_seed)
    kappa = random_dihedral(kappa, flip_seed)
    if remove_mean:
      kappa -= tf.reduce_mean(kappa, axis=[-2, -1], keepdims=True)
    return kappa

  dataset = dataset.enumerate().map(
      transform, num_parallel_calls=num_parallel_calls, deterministic=True)
  if batch_size is not None:
    dataset = dataset.batch(batch_size, drop_remainder=True)
  return dataset.prefetch(tf.data.AUTOTUNE)
