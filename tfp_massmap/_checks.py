"""Input validation shared by the public functions.

Every check raises ``ValueError`` naming the offending value and what was
expected (DESIGN.md §2). Checks run on concrete (eager or numpy) values; on
symbolic tensors inside ``tf.function`` they check only static shapes.
"""

import numpy as np
import tensorflow as tf


def _is_concrete(x):
  return not isinstance(x, tf.Tensor) or tf.executing_eagerly()


def square_map_shape(shape, name, channels=None):
  """Checks that ``shape`` ends in ``[N, N]`` (or ``[N, N, channels]``).

  Returns N (an int) when it is statically known, else None.
  """
  shape = tf.TensorShape(shape)
  min_rank = 2 if channels is None else 3
  if shape.rank is not None and shape.rank < min_rank:
    raise ValueError(
        f'{name} must have shape [..., N, N{"" if channels is None else f", {channels}"}], '
        f'got shape {shape}.')
  if shape.rank is None:
    return None
  dims = shape.as_list()
  if channels is not None:
    if dims[-1] is not None and dims[-1] != channels:
      raise ValueError(
          f'{name} must have {channels} channels in its last axis, got shape {shape}.')
    dims = dims[:-1]
  ny, nx = dims[-2], dims[-1]
  if ny is not None and nx is not None and ny != nx:
    raise ValueError(f'{name} must be a square map [..., N, N], got shape {shape}.')
  return nx if nx is not None else ny


def same_map_shape(a_shape, b_shape, a_name, b_name):
  """Checks that two maps have the same trailing [N, N]."""
  a = tf.TensorShape(a_shape)
  b = tf.TensorShape(b_shape)
  if a.rank is None or b.rank is None:
    return
  if not a[-2:].is_compatible_with(b[-2:]):
    raise ValueError(
        f'{a_name} has map shape {a[-2:]} but {b_name} has map shape {b[-2:]}; '
        'they must match.')


def positive_scalar(value, name, unit=''):
  """Checks a Python/numpy scalar is finite and > 0; returns it as float."""
  try:
    v = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{name} must be a positive number{unit and " in " + unit}, '
                     f'got {value!r}.') from None
  if not np.isfinite(v) or v <= 0:
    raise ValueError(f'{name} must be a positive number{unit and " in " + unit}, '
                     f'got {value!r}.')
  return v


def positive_int(value, name, minimum=1):
  """Checks ``value`` is an integer (not a bool) >= ``minimum``; returns int."""
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or
      value < minimum):
    raise ValueError(f'{name} must be an integer >= {minimum}, got {value!r}.')
  return int(value)


def finite(x, name):
  """Raises if a concrete tensor/array holds NaN or inf; no-op when symbolic."""
  if not _is_concrete(x):
    return
  arr = np.asarray(x)
  bad = ~np.isfinite(arr)
  if bad.any():
    raise ValueError(
        f'{name} holds {int(bad.sum())} non-finite value(s) (NaN or inf) out of '
        f'{arr.size}; expected finite numbers.')


def non_negative(x, name):
  """Raises if a concrete tensor/array holds negative or non-finite values."""
  if not _is_concrete(x):
    return
  arr = np.asarray(x)
  bad = ~np.isfinite(arr) | (arr < 0)
  if bad.any():
    first = arr[bad].ravel()[0]
    raise ValueError(
        f'{name} holds {int(bad.sum())} negative or non-finite value(s) '
        f'(first: {first!r}); expected finite values >= 0.')


def float_dtype(dtype, name):
  """Checks a dtype is float32 or float64 and returns the tf.DType."""
  dtype = tf.as_dtype(dtype)
  if dtype not in (tf.float32, tf.float64):
    raise ValueError(f'{name} must be float32 or float64, got {dtype.name}.')
  return dtype


def unpack_shear_data(shear, noise_std, mask):
  """Accepts a ShearMap-like object in place of (shear, noise_std, mask).

  Returns (shear, noise_std, mask) as given (mask may be None); raises when
  a ShearMap-like object comes with a second noise_std or mask, or when
  noise_std is missing.
  """
  if all(hasattr(shear, a) for a in ('shear', 'noise_std', 'mask')):
    if noise_std is not None or mask is not None:
      raise ValueError('shear is a ShearMap-like object that carries its own '
                       'noise_std and mask; do not pass them again (got '
                       f'noise_std={type(noise_std).__name__}, '
                       f'mask={type(mask).__name__}).')
    return shear.shear, shear.noise_std, shear.mask
  if noise_std is None:
    raise ValueError('noise_std is required: the per-pixel noise standard '
                     'deviation of the data, [..., N, N] or [..., N, N, C].')
  return shear, noise_std, mask


def declared_float_dtype(x):
  """The float dtype an input declares (tensor, variable, numpy array), or None.

  Python numbers and lists and numpy scalars declare none: they are converted
  to whatever dtype the computation uses, as TensorFlow does.
  """
  dtype = getattr(x, 'dtype', None)
  if dtype is None or isinstance(x, np.generic):
    return None
  try:
    dtype = tf.as_dtype(dtype)
  except TypeError:
    return None
  return dtype if dtype.is_floating else None


def same_float_dtype(x, dtype, name, reference, remedy=''):
  """Raises if ``x`` declares a float dtype other than ``dtype``.

  The message reads "{name} has dtype D but {reference} has dtype
  {dtype}; cast {name} to {dtype}{remedy}".
  """
  declared = declared_float_dtype(x)
  if declared is not None and declared != dtype:
    raise ValueError(
        f'{name} has dtype {declared.name} but {reference} has dtype '
        f'{dtype.name}; cast {name} to {dtype.name}{remedy}.')


def noise_is_per_component(noise_shape, n, channels):
  """Whether noise_std is ``[..., N, N, C]`` (True) or ``[..., N, N]`` (False).

  A shape ending in ``[N, N]`` is read as the second form.
  """
  shape = tf.TensorShape(noise_shape)
  if shape.rank is not None and shape.rank >= 2 and shape[-2:] == [n, n]:
    return False
  if (shape.rank is not None and shape.rank >= 3 and
      shape[-3:].is_compatible_with([n, n, channels])):
    return True
  raise ValueError(
      f'noise_std must have shape [..., N, N] or [..., N, N, {channels}] with '
      f'N = {n} (the map size of the data), got shape {shape}.')


def noise_and_mask(noise_std, mask, n=None):
  """Checks the noise std and mask that go with shear data on an N x N grid.

  The noise counts only where there is data: ``noise_std`` may hold anything
  (NaN, negative) where ``mask`` is 0.

  Args:
    noise_std: float tensor, the per-pixel noise std of the shear
      (dimensionless), ``[..., N, N]`` (both components) or ``[..., N, N, 2]``.
    mask: float tensor ``[..., N, N]``, >= 0, > 0 on observed pixels.
    n: the map size N of the shear, or None to take it from ``mask``.

  Returns:
    (noise_std, observed, inverse_variance): ``noise_std`` with a component
    axis (``[..., N, N, 1]`` or ``[..., N, N, 2]``), set to 1 where mask = 0;
    ``observed`` the bool ``(mask > 0)[..., N, N, 1]``; ``inverse_variance``
    the noise precision N⁻¹ = mask / noise_std² of both shear components,
    ``[..., N, N, 2]``, 0 where mask = 0.

  Raises:
    ValueError: for non-square or mismatched map shapes, batch axes of
      noise_std and mask that do not broadcast, a negative or non-finite mask,
      a negative or non-finite noise_std where mask > 0, and (eagerly) a map
      with no observed pixel or noise_std = 0 on an observed pixel.
  """
  mask_n = square_map_shape(mask.shape, 'mask')
  if n is not None and not mask.shape[-2:].is_compatible_with([n, n]):
    raise ValueError(f'mask has map shape {mask.shape[-2:]}, expected [{n}, {n}] '
                     'like the shear.')
  n = n or mask_n
  per_component = (noise_std.shape.rank is not None and
                   noise_std.shape.rank >= 3 and
                   noise_std.shape[-3:].as_list() == [n, n, 2])
  if not per_component:
    square_map_shape(noise_std.shape, 'noise_std')
    same_map_shape(noise_std.shape, mask.shape, 'noise_std', 'mask')
    noise_std = noise_std[..., tf.newaxis]
  try:
    tf.broadcast_static_shape(noise_std.shape[:-3], mask.shape[:-2])
  except ValueError:
    raise ValueError(
        'the leading (batch) axes of noise_std and mask must broadcast; got '
        f'noise_std {noise_std.shape} and mask {mask.shape}.') from None
  non_negative(mask, 'mask')
  observed = (mask > 0)[..., tf.newaxis]
  noise_std = tf.where(observed, noise_std, tf.ones_like(noise_std))
  non_negative(noise_std, 'noise_std on observed pixels (mask > 0)')
  if tf.executing_eagerly():
    counts = tf.reduce_sum(tf.cast(observed, tf.int32), axis=[-3, -2, -1]).numpy()
    if np.any(counts == 0):
      raise ValueError(
          f'mask has no observed pixel (mask > 0) in {int(np.sum(counts == 0))} '
          f'of its {counts.size} map(s); expected at least one per map.')
    zeros = int(tf.reduce_sum(tf.cast(tf.equal(noise_std, 0.), tf.int32)))
    if zeros:
      raise ValueError(
          f'noise_std is 0 on {zeros} observed pixel value(s) (mask > 0); '
          'expected noise_std > 0 wherever mask > 0.')
  inverse_variance = tf.where(observed, mask[..., tf.newaxis] / noise_std**2,
                              tf.zeros_like(noise_std))
  return noise_std, observed, inverse_variance * tf.ones([2], noise_std.dtype)
