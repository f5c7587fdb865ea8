"""The prior protocol: what an estimator may ask of a prior, and its checks.

A prior on convergence maps ``[..., N, N]`` (dimensionless) is any object
with a ``score(x, sigma)`` method; the other members of `Prior` are optional
and have the defaults documented there when an object lacks them, so a class
with only a score method is a prior for every map size, dtype and pixel
scale. `prior_properties` is the one place that reads those members, and
`check_prior` the one place that checks a prior against the data an
estimator is given (map size, dtype, pixel scale, smoothed score), before
any work. `denoise` gives the prior's denoiser, or Tweedie's formula from its
score.
"""

import collections
import math
import typing

import tensorflow as tf

from tfp_massmap import _checks

__all__ = [
    'PIXEL_SCALE_TOLERANCE',
    'Prior',
    'PriorCheck',
    'PriorProperties',
    'check_prior',
    'denoise',
    'prior_properties',
]

# Relative difference between the data's and the prior's pixel scales that
# `check_prior` tolerates without allow_pixel_scale_mismatch: 1 % rescales
# every multipole ℓ by 1 %, well inside what a prior's spectrum can tell.
PIXEL_SCALE_TOLERANCE = 0.01


class Prior(typing.Protocol):
  """The protocol of a prior on N×N convergence maps (dimensionless).

  Only ``score`` is required. `check_prior` reads every other member, and
  takes an object that lacks one to have the default given below.
  `GaussianPrior`, `LognormalPrior` and `ScoreNetwork` implement all of them.

  Attributes:
    dtype: the dtype the prior computes in, float32 or float64 (a
      ``tf.DType`` or its name); estimators refuse data of another dtype.
      Default None: any dtype.
    pixel_scale_arcmin: the pixel side in arcmin the prior is valid at (the
      one its spectrum was made for, or its training maps had), a float > 0;
      estimators refuse data binned at another scale. Default None: unknown,
      not checked.
    num_pixels_per_side: N when the prior is defined on N×N maps only (an
      analytic prior holds one spectrum per mode), an int; None when it
      serves any size (a convolutional network). Default None.
    size_divisor: maps must have N % size_divisor == 0 (2**depth for a U-Net
      of that depth), an int >= 1. Default 1: any N.
    smoothed_score: True when ``score(x, sigma)`` is the score of the
      σ-smoothed prior for every σ >= 0, as annealed samplers need; False
      when it is defined at σ = 0 only (a density whose convolution with a
      Gaussian has no closed form, such as the lognormal one). Default True.
  """

  def score(self, x, sigma):
    """Score ∇ log p_σ(x) of the prior convolved with N(0, σ² I).

    Args:
      x: maps ``[..., N, N]`` (dimensionless convergence).
      sigma: noise standard deviation (dimensionless, >= 0), a scalar or a
        tensor ``[...]`` broadcasting against the leading axes of ``x``.

    Returns:
      Tensor ``[..., N, N]`` (inverse convergence units).
    """

  def denoise(self, x, sigma):
    """Optional: the posterior mean E[κ | κ + σu = x], u ~ N(0, I).

    Args and returns as ``score``, in convergence units. Without it,
    `denoise` uses Tweedie's formula ``x + σ² score(x, σ)``.
    """


class PriorProperties(
    collections.namedtuple('PriorProperties', [
        'dtype', 'pixel_scale_arcmin', 'num_pixels_per_side', 'size_divisor',
        'smoothed_score'])):
  """The checked members of a `Prior`, defaults filled in.

  Attributes:
    dtype: ``tf.float32`` or ``tf.float64``, or None (any).
    pixel_scale_arcmin: float > 0 (arcmin), or None (unknown).
    num_pixels_per_side: int N, or None (any size).
    size_divisor: int >= 1.
    smoothed_score: bool.
  """
  __slots__ = ()


class PriorCheck(
    collections.namedtuple('PriorCheck', [
        'num_pixels_per_side', 'dtype', 'pixel_scale_arcmin',
        'prior_pixel_scale_arcmin'])):
  """What `check_prior` established about a prior and the data.

  Attributes:
    num_pixels_per_side: N of the data's N×N map (int).
    dtype: the data dtype checked against the prior's, or None when no data
      dtype was given.
    pixel_scale_arcmin: the data's pixel side in arcmin (float), or None
      when unknown.
    prior_pixel_scale_arcmin: the prior's (float), or None when unknown.
  """
  __slots__ = ()


def prior_properties(prior):
  """The optional members of a prior, checked, with their defaults.

  Args:
    prior: an object with a ``score(x, sigma)`` method (see `Prior`).

  Returns:
    A `PriorProperties`.

  Raises:
    ValueError: if ``prior`` has no callable ``score``, or a member holds a
      value of the wrong kind (a dtype that is not float32 or float64, a
      pixel scale that is not a positive number, a size or divisor that is
      not a positive int, a smoothed_score that is not a bool).
  """
  if not callable(getattr(prior, 'score', None)):
    raise ValueError('prior must have a score(x, sigma) method (a '
                     f'ScoreNetwork, a GaussianPrior, ...), got {prior!r}.')
  dtype = getattr(prior, 'dtype', None)
  if dtype is not None:
    try:
      dtype = tf.as_dtype(dtype)
    except TypeError:
      raise ValueError(f'prior.dtype must be float32 or float64 (the dtype '
                       f'the prior computes in) or None, got {dtype!r}.'
                      ) from None
    dtype = _checks.float_dtype(dtype, 'prior.dtype')
  pixel_scale = getattr(prior, 'pixel_scale_arcmin', None)
  if pixel_scale is not None:
    pixel_scale = _checks.positive_scalar(pixel_scale,
                                          'prior.pixel_scale_arcmin', 'arcmin')
  size = getattr(prior, 'num_pixels_per_side', None)
  if size is not None:
    size = _checks.positive_int(size, 'prior.num_pixels_per_side')
  divisor = _checks.positive_int(getattr(prior, 'size_divisor', 1),
                                 'prior.size_divisor')
  smoothed = getattr(prior, 'smoothed_score', True)
  if not isinstance(smoothed, bool):
    raise ValueError('prior.smoothed_score must be a Python bool, got '
                     f'{smoothed!r}.')
  return PriorProperties(dtype=dtype, pixel_scale_arcmin=pixel_scale,
                         num_pixels_per_side=size, size_divisor=divisor,
                         smoothed_score=smoothed)


def _is_shear_map(value):
  return all(hasattr(value, a) for a in ('shear', 'noise_std', 'mask'))


def _map_size(shear_map_or_n):
  """N of an N×N ShearMap-like object's shear ``[..., N, N, C]``, or of N."""
  if not _is_shear_map(shear_map_or_n):
    return _checks.positive_int(shear_map_or_n, 'shear_map_or_n (the map '
                                'size N, or a ShearMap)')
  shear = shear_map_or_n.shear
  shape = tf.TensorShape(shear.shape if hasattr(shear, 'shape') else
                         tf.convert_to_tensor(shear).shape)
  if shape.rank is None or shape.rank < 3:
    raise ValueError('the shear map\'s shear must have shape [..., N, N, C], '
                     f'got shape {shape}.')
  n = _checks.square_map_shape(shape[:-1], 'shear')
  if n is None:
    raise ValueError(f'the shear map\'s shear has no static map size: shape '
                     f'{shape}.')
  return n


def _data_pixel_scale(shear_map_or_n, pixel_scale_arcmin):
  """The data's pixel scale (arcmin): the keyword, the ShearMap's, or None."""
  carried = None
  if _is_shear_map(shear_map_or_n):
    carried = getattr(shear_map_or_n, 'pixel_scale_arcmin', None)
  if carried is not None:
    carried = _checks.positive_scalar(carried, 'shear.pixel_scale_arcmin',
                                      'arcmin')
  if pixel_scale_arcmin is None:
    return carried
  given = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin',
                                  'arcmin')
  if carried is not None and not math.isclose(given, carried, rel_tol=1e-6):
    raise ValueError(f'pixel_scale_arcmin={given!r} contradicts the pixel '
                     f'scale the shear map carries, {carried!r} arcmin; pass '
                     'one of them.')
  return given


def check_prior(prior,
                shear_map_or_n,
                *,
                dtype=None,
                pixel_scale_arcmin=None,
                allow_pixel_scale_mismatch=False,
                smoothed_score=True):
  """Checks that a prior fits the data, before an estimator does any work.

  Args:
    prior: the prior (see `Prior`).
    shear_map_or_n: the data, a ShearMap(-like) object (shear
      ``[..., N, N, C]``, noise_std, mask and optionally
      pixel_scale_arcmin), or the map size N (int).
    dtype: the dtype the estimator will compute in (float32 or float64),
      checked against the prior's; None: not checked.
    pixel_scale_arcmin: the data's pixel side in arcmin, when
      ``shear_map_or_n`` does not carry it (giving both with different
      values is an error); None: the shear map's, or unknown.
    allow_pixel_scale_mismatch: Python bool; False refuses data whose pixel
      scale differs from the prior's by more than `PIXEL_SCALE_TOLERANCE`
      (when both are known), naming ``allow_pixel_scale_mismatch=True`` as
      the way to go on; True skips that check; None refuses too, for
      callers that offer no such override (the message does not name it).
    smoothed_score: whether the estimator needs the score of the σ-smoothed
      prior at σ > 0 (annealed samplers do); a prior with
      ``smoothed_score`` False is then refused.

  Returns:
    A `PriorCheck`.

  Raises:
    ValueError: if the prior has no score method or malformed members (see
      `prior_properties`), is defined on another map size, needs a size
      divisor the map does not have, computes in another dtype, is valid at
      another pixel scale, or knows its score at σ = 0 only when the
      estimator needs it at every σ; or if the arguments are malformed.
  """
  if not (allow_pixel_scale_mismatch is None or
          isinstance(allow_pixel_scale_mismatch, bool)):
    raise ValueError('allow_pixel_scale_mismatch must be a Python bool, got '
                     f'{allow_pixel_scale_mismatch!r}.')
  n = _map_size(shear_map_or_n)
  data_scale = _data_pixel_scale(shear_map_or_n, pixel_scale_arcmin)
  if dtype is not None:
    dtype = _checks.float_dtype(dtype, 'dtype')
  properties = prior_properties(prior)
  if properties.dtype is not None and dtype is not None and (
      properties.dtype != dtype):
    wanted = properties.dtype.name
    raise ValueError(
        f'shear has dtype {dtype.name} but the prior computes in {wanted}; '
        f'pass {wanted} shear, noise_std and mask (e.g. '
        f'np.asarray(shear, np.{wanted})), or a {dtype.name} prior.')
  size = properties.num_pixels_per_side
  if size is not None and size != n:
    raise ValueError(f'the prior is defined on {size}x{size} maps but the '
                     f'shear map is {n}x{n}.')
  divisor = properties.size_divisor
  if n % divisor:
    raise ValueError(f'the prior needs maps whose size is divisible by its '
                     f'size_divisor = {divisor}; the shear map is {n}x{n}.')
  if smoothed_score and not properties.smoothed_score:
    raise ValueError(
        f'the prior ({type(prior).__name__}) has a score at sigma = 0 only '
        '(its smoothed_score is False), but this estimator anneals through '
        'noise levels sigma > 0 and needs the score of the sigma-smoothed '
        'prior; for the lognormal prior use tfp_massmap.lognormal_posterior, '
        'which samples its exact posterior.')
  prior_scale = properties.pixel_scale_arcmin
  if (prior_scale is not None and data_scale is not None and
      allow_pixel_scale_mismatch is not True and
      abs(data_scale / prior_scale - 1.) > PIXEL_SCALE_TOLERANCE):
    override = ('' if allow_pixel_scale_mismatch is None else
                ', or pass allow_pixel_scale_mismatch=True to use it anyway')
    raise ValueError(
        f'the data have {data_scale:g} arcmin pixels but the prior is valid at '
        f'{prior_scale:g} arcmin pixels (they differ by more than '
        f'{PIXEL_SCALE_TOLERANCE:.0%}): a prior made for one pixel scale is '
        f'the wrong prior at another. Bin the shear at {prior_scale:g} '
        f'arcmin, or use a prior made for pixels of {data_scale:g} arcmin '
        '(for a Gaussian prior: GaussianPrior.from_power_spectrum(ell, cl, n, '
        f'pixel_scale_arcmin={data_scale:g})){override}.')
  return PriorCheck(num_pixels_per_side=n, dtype=dtype,
                    pixel_scale_arcmin=data_scale,
                    prior_pixel_scale_arcmin=prior_scale)


def denoise(prior, x, sigma):
  """The prior's denoiser E[κ | x] at noise level σ.

  ``prior.denoise(x, sigma)`` when the prior has one, else Tweedie's
  formula ``x + σ² prior.score(x, sigma)``.

  Args:
    prior: the prior (see `Prior`).
    x: noisy maps ``[..., N, N]`` (dimensionless).
    sigma: noise standard deviation (dimensionless, > 0), scalar or ``[...]``
      broadcasting against the leading axes of ``x``.

  Returns:
    Tensor ``[..., N, N]``.
  """
  if callable(getattr(prior, 'denoise', None)):
    return prior.denoise(x, sigma)
  x = tf.convert_to_tensor(x)
  sigma = tf.convert_to_tensor(sigma, dtype=x.dtype)
  return x + tf.square(sigma)[..., tf.newaxis, tf.newaxis] * prior.score(
      x, sigma)
