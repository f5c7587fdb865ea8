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
