"""Input validation shared by the public functions.

Every check raises ``ValueError`` naming the offending value and what was
expected (docs/design.md §4). Checks run on concrete (eager or numpy) values; on
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


def zero_one_mask(mask):
  """Raises if a concrete mask holds values other than 0 and 1; no-op when symbolic.

  The mask is the indicator of observed pixels (docs/design.md), not a
  weight: the message says to put weights in the noise std instead.
  """
  if not _is_concrete(mask):
    return
  values = np.asarray(mask)
  bad = ~((values == 0) | (values == 1))
  if bad.any():
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    raise ValueError(
        f'mask holds {int(bad.sum())} value(s) other than 0 and 1; the first, '
        f'{float(values[first])}, at index {first}. The mask is the 0/1 '
        'indicator of observed pixels, not a weight: give a pixel that should '
        'count less a larger noise_std (σ/√w for a weight w).')


def hmc_adaptation(target_accept_prob, step_size_jitter):
  """Checks the acceptance target in (0, 1) and the jitter in [0, 1).

  Returns both as floats.
  """
  target_accept_prob = float(target_accept_prob)
  if not 0. < target_accept_prob < 1.:
    raise ValueError('target_accept_prob must be in (0, 1), got '
                     f'{target_accept_prob!r}.')
  step_size_jitter = float(step_size_jitter)
  if not 0. <= step_size_jitter < 1.:
    raise ValueError('step_size_jitter must be in [0, 1), got '
                     f'{step_size_jitter!r}.')
  return target_accept_prob, step_size_jitter


def float_dtype(dtype, name):
  """Checks a dtype is float32 or float64 and returns the tf.DType."""
  dtype = tf.as_dtype(dtype)
  if dtype not in (tf.float32, tf.float64):
    raise ValueError(f'{name} must be float32 or float64, got {dtype.name}.')
  return dtype


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
