"""`ShearMap`, the one type of observed shear data, and `as_shear_map`.

Every estimator of the package (Kaiser-Squires aside, which takes a bare
shear array) reads its data through `as_shear_map`: the Wiener filter and the
exact Gaussian samples, the sparse, TV and MCALens maps, the learned and
lognormal posterior samplers and the MAP estimate. It accepts either a
`ShearMap` (or any object with the attributes ``shear``, ``noise_std`` and
``mask``, such as the result of `catalog.bin_shear_catalog`) or three arrays,
checks them once and returns a `ShearMap` of tensors in one dtype.

The data model is that of `likelihood.ShearLikelihood` (docs/design.md): the
mean ellipticity of the galaxies in pixel p is e_p = (Aκ)_p + n_p with
n_p ~ N(0, noise_std_p²) per shear component, on the pixels that hold data.

The mask. ``mask`` is the 0/1 indicator of the pixels that hold data: 1
(or True) observed, 0 (or False) not observed. Any other value raises
(when the value is known, i.e. outside `tf.function`): a mask is not a
weight. A pixel that should count less has a larger ``noise_std`` (for shape
weights w, σ/√w), which is what `catalog.bin_shear_catalog` computes.
Inside `tf.function`, where values are unknown, a pixel is observed where
mask > 0.

The dtype policy. Shear, noise and mask share one float dtype, float32 or
float64, the computation's. A `ShearMap` given as input is cast to the
requested ``dtype`` (its storage dtype, float32 from a catalogue, is no
choice of the user's); separate arrays must declare the requested dtype, or
one dtype between them when none is requested (Python numbers and lists
declare none; they default to float32), and a mismatch raises naming the
array to cast.

Values off the mask carry no information: in the returned map the shear is 0
and the noise std 1 there, so every array is finite (the input may hold NaN,
inf or 0 at those pixels).
"""

import collections

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks

__all__ = ['ShearMap', 'as_shear_map', 'inverse_variance', 'is_shear_map']


class ShearMap(
    collections.namedtuple('ShearMap', [
        'shear', 'noise_std', 'mask', 'counts', 'wcs', 'pixel_scale_arcmin'])):
  """Shear data on an N×N grid (immutable).

  Attributes:
    shear: float ``[..., N, N, 2]``, mean ellipticity (γ1, γ2) per pixel in
      the grid frame (dimensionless).
    noise_std: float ``[..., N, N]`` (both components) or ``[..., N, N, 2]``
      (per component), the standard deviation of the pixel-mean ellipticity
      (dimensionless); > 0 on observed pixels, any value elsewhere.
    mask: ``[..., N, N]``, the 0/1 indicator of observed pixels (module
      docstring), or None when every pixel is observed.
    counts: optional int ``[..., N, N]``, galaxies per pixel, or None.
    wcs: optional 2-D celestial `astropy.wcs.WCS` of the grid (axis 1 the
      column, RA; axis 2 the row, Dec), or None.
    pixel_scale_arcmin: pixel side in arcmin, or None when unknown.

  Only ``shear`` and ``noise_std`` are required: ``ShearMap(shear,
  noise_std)`` is data observed on every pixel at an unknown pixel scale.
  `catalog.bin_shear_catalog` fills every field (float32 numpy arrays, 0
  off the mask); `as_shear_map` returns a checked map of tensors.
  """
  __slots__ = ()

  def __new__(cls, shear, noise_std, mask=None, counts=None, wcs=None,
              pixel_scale_arcmin=None):
    return super().__new__(cls, shear, noise_std, mask, counts, wcs,
                           pixel_scale_arcmin)


def is_shear_map(x):
  """Whether ``x`` is ShearMap-like: it has ``shear``, ``noise_std``, ``mask``."""
  return all(hasattr(x, a) for a in ('shear', 'noise_std', 'mask'))


def _first_index(bad):
  return tuple(int(i) for i in np.argwhere(bad)[0])


def _to_tensor(x, dtype, name):
  """Converts x to a ``dtype`` tensor; complex or non-numeric input raises."""
  try:
    x = tf.convert_to_tensor(x, name=name)
  except (TypeError, ValueError) as exc:
    raise ValueError(f'{name} must be a numeric array, got '
                     f'{type(x).__name__} ({exc}).') from None
  if x.dtype.is_complex or not (x.dtype.is_floating or x.dtype.is_integer or
                                x.dtype == tf.bool):
    raise ValueError(f'{name} must be real, got dtype {x.dtype.name}.')
  return tf.cast(x, dtype)


def _unpack(shear, noise_std, mask, pixel_scale_arcmin):
  """(shear, noise_std, mask, counts, wcs, pixel scale, is_map) from either form."""
  if not is_shear_map(shear):
    if noise_std is None:
      raise ValueError(
          'noise_std is required: the per-pixel noise standard deviation of '
          'the data, [..., N, N] or [..., N, N, 2] (or pass a ShearMap).')
    return shear, noise_std, mask, None, None, pixel_scale_arcmin, False
  if noise_std is not None or mask is not None:
    raise ValueError(
        'shear is a ShearMap-like object that carries its own noise_std and '
        f'mask; do not pass them again (got noise_std='
        f'{type(noise_std).__name__}, mask={type(mask).__name__}).')
  carried = getattr(shear, 'pixel_scale_arcmin', None)
  if carried is not None:
    carried = _checks.positive_scalar(carried, 'shear_map.pixel_scale_arcmin',
                                      'arcmin')
    if pixel_scale_arcmin is not None and not np.isclose(
        _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                'arcmin'), carried, rtol=1e-6, atol=0.):
      raise ValueError(
          f'pixel_scale_arcmin={pixel_scale_arcmin!r} contradicts the pixel '
          f'scale the shear map carries, {carried!r} arcmin; pass one of '
          'them.')
    pixel_scale_arcmin = carried
  return (shear.shear, shear.noise_std, shear.mask,
          getattr(shear, 'counts', None), getattr(shear, 'wcs', None),
          pixel_scale_arcmin, True)


def _data_dtype(shear, noise_std, dtype, is_map):
  """The dtype of the result; raises when separate arrays disagree with it."""
  if dtype is not None:
    dtype = _checks.float_dtype(dtype, 'dtype')
    if not is_map:
      for name, x in (('shear', shear), ('noise_std', noise_std)):
        _checks.same_float_dtype(x, dtype, name, 'the requested dtype=')
    return dtype
  shear_dtype = _checks.declared_float_dtype(shear)
  if is_map:
    return _checks.float_dtype(shear_dtype or tf.float32, 'shear dtype')
  if shear_dtype is not None:
    _checks.same_float_dtype(noise_std, shear_dtype, 'noise_std', 'shear')
  dtype = shear_dtype or _checks.declared_float_dtype(noise_std) or tf.float32
  return _checks.float_dtype(dtype, 'shear dtype')


def _check_mask_values(mask, allow_empty_mask):
  """Raises for mask values other than 0 and 1, or a map without data."""
  if not _checks._is_concrete(mask):  # pylint: disable=protected-access
    return
  _checks.zero_one_mask(mask)
  if allow_empty_mask:
    return
  empty = ~(np.asarray(mask) != 0).any(axis=(-2, -1))
  if np.any(empty):
    raise ValueError(
        f'mask has no pixel with data (no observed pixel, mask = 1) in '
        f'{int(np.sum(empty))} of its {np.size(empty)} map(s); expected at '
        'least one per map.')


def _check_observed_values(shear, noise_std, observed, per_component):
  """Raises for non-finite shear, or noise not finite and > 0, where observed."""
  if not all(_checks._is_concrete(x) for x in (shear, noise_std, observed)):  # pylint: disable=protected-access
    return
  where = np.asarray(observed)[..., np.newaxis]
  values, where = np.broadcast_arrays(np.asarray(shear), where)
  bad = where & ~np.isfinite(values)
  if bad.any():
    first = _first_index(bad)
    raise ValueError(
        f'shear on observed pixels (mask = 1) holds {int(bad.sum())} '
        f'non-finite value(s) (NaN or inf); the first, {float(values[first])}, '
        f'at index {first} ([..., row, column, component]). Expected finite '
        'values there; set the mask to 0 where there is no data.')
  noise = np.asarray(noise_std)
  if not per_component:
    noise = noise[..., np.newaxis]
  noise, where = np.broadcast_arrays(noise, np.asarray(observed)[..., np.newaxis])
  bad = where & ~(np.isfinite(noise) & (noise > 0))
  if bad.any():
    first = _first_index(bad)
    value = float(noise[first])
    values = noise[bad]
    if not per_component:
      bad, first = bad[..., 0], first[:-1]
    raise ValueError(
        f'noise_std holds {int(bad.sum())} value(s) that are not finite and '
        f'> 0 on observed pixels (mask = 1) ({int(np.sum(values == 0))} zero, '
        f'{int(np.sum(values < 0))} negative, '
        f'{int(np.sum(~np.isfinite(values)))} NaN or inf); the first, {value},'
        f' at index {first} ([..., row, column'
        f'{", component" if per_component else ""}]). Expected a positive '
        'standard deviation wherever there is data.')


def as_shear_map(shear, noise_std=None, mask=None, *, pixel_scale_arcmin=None,
                 dtype=None, channels=2, allow_empty_mask=False, name=None):
  """The checked `ShearMap` of shear data given in either form.

  Args:
    shear: a `ShearMap`-like object (attributes ``shear``, ``noise_std``,
      ``mask`` and optionally ``counts``, ``wcs``, ``pixel_scale_arcmin``;
      then leave ``noise_std`` and ``mask`` None), or the observed mean
      ellipticity ``[..., N, N, C]`` (dimensionless; C = ``channels``).
    noise_std: with an array ``shear``, the per-pixel noise std
      ``[..., N, N]`` (all components) or ``[..., N, N, C]`` (dimensionless;
      > 0 and finite where mask = 1, any value elsewhere).
    mask: with an array ``shear``, the 0/1 indicator of observed pixels
      ``[..., N, N]`` (bool, int or float), or None: every pixel observed.
    pixel_scale_arcmin: pixel side in arcmin; with a `ShearMap` that carries
      one, it must agree (relative 1e-6).
    dtype: float32 or float64, the dtype of the result; None keeps the
      data's (module docstring: the dtype policy).
    channels: C, the shear components per pixel (2; 1 for the identity
      forward model of `likelihood.identity_operator`).
    allow_empty_mask: whether a map with no observed pixel is accepted
      (for samplers, whose posterior is then the prior).
    name: optional name scope.

  Returns:
    A `ShearMap` whose ``shear``, ``noise_std`` and ``mask`` are tensors of
    one float dtype: the shear ``[..., N, N, C]`` with 0 off the mask, the
    noise std per component ``[..., N, N, C]`` (a ``[..., N, N]`` input
    repeated over the components) with 1 off the mask, and the mask
    ``[..., N, N]`` of 0 and 1 (ones when none was given); their batch axes
    broadcast (the noise std's also against the mask's). ``counts``
    and ``wcs`` are carried over from a `ShearMap` (None for arrays).

  Raises:
    ValueError: for a `ShearMap` given with a second noise_std or mask, a
      missing noise_std, a non-float or mismatched dtype (naming the array
      to cast), a shear that is not ``[..., N, N, C]``, a noise_std or mask
      of another map shape, batch axes that do not broadcast, a bad or
      contradicting pixel scale, and, when values are known (outside
      `tf.function`): a mask value other than 0 and 1, a map with no
      observed pixel (unless ``allow_empty_mask``), a non-finite shear on
      an observed pixel, and a noise_std that is not finite and > 0 on one.
      The messages give the count and the index of the first bad value.
  """
  with tf.name_scope(name or 'as_shear_map'):
    shear, noise_std, mask, counts, wcs, pixel_scale_arcmin, is_map = _unpack(
        shear, noise_std, mask, pixel_scale_arcmin)
    if pixel_scale_arcmin is not None:
      pixel_scale_arcmin = _checks.positive_scalar(
          pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
    channels = _checks.positive_int(channels, 'channels')
    dtype = _data_dtype(shear, noise_std, dtype, is_map)
    shear = _to_tensor(shear, dtype, 'shear')
    noise_std = _to_tensor(noise_std, dtype, 'noise_std')
    n = _checks.square_map_shape(shear.shape, 'shear', channels=channels)
    if n is None:
      raise ValueError('shear must have a statically known map shape [..., N, '
                       f'N, {channels}], got shape {shear.shape}.')
    per_component = _checks.noise_is_per_component(noise_std.shape, n,
                                                   channels)
    if mask is None:
      mask = tf.ones([n, n], dtype)
    else:
      _check_mask_values(mask, allow_empty_mask)
      mask = _to_tensor(mask, dtype, 'mask')
      _checks.square_map_shape(mask.shape, 'mask')
      if not mask.shape[-2:].is_compatible_with([n, n]):
        raise ValueError(f'mask must have shape [..., N, N] = [..., {n}, {n}] '
                         f'(the map shape of the shear), got shape '
                         f'{mask.shape}.')
    noise_batch = noise_std.shape[:-3] if per_component else noise_std.shape[:-2]
    try:
      tf.broadcast_static_shape(
          tf.broadcast_static_shape(shear.shape[:-3], noise_batch),
          mask.shape[:-2])
    except ValueError:
      raise ValueError(
          'the leading (batch) axes of shear, noise_std and mask must '
          f'broadcast; got shear {shear.shape}, noise_std {noise_std.shape}, '
          f'mask {mask.shape}.') from None
    observed = mask > 0
    _check_observed_values(shear, noise_std, observed, per_component)
    if not per_component:
      noise_std = noise_std[..., tf.newaxis] * tf.ones([channels], dtype)
    shear = tf.where(observed[..., tf.newaxis], shear, tf.zeros([], dtype))
    noise_std = tf.where(observed[..., tf.newaxis], noise_std,
                         tf.ones([], dtype))
    return ShearMap(shear=shear, noise_std=noise_std,
                    mask=tf.cast(observed, dtype), counts=counts, wcs=wcs,
                    pixel_scale_arcmin=pixel_scale_arcmin)


def inverse_variance(data):
  """N⁻¹ = mask / noise_std² ``[..., N, N, C]`` of a checked `ShearMap`.

  Args:
    data: a `ShearMap` from `as_shear_map` (0/1 mask, noise std per
      component, 1 off the mask).

  Returns:
    The noise precision per pixel and shear component (dimensionless), 0 on
    pixels without data.
  """
  return data.mask[..., tf.newaxis] / tf.square(data.noise_std)
