"""Stationary Gaussian random-field prior on convergence maps.

A statistically homogeneous Gaussian field on a periodic N×N grid has a pixel
covariance C that is diagonal in the orthonormal 2-D DFT basis
(x̂ = ``fft2d(x) / N``): ``C = F⁻¹ diag(S) F`` with ``S_k = P(ℓ_k) / Δ²``
(``power_spectrum.power_spectrum_grid``; dimensionless, Δ the pixel side in
radians, P(ℓ) in sr). Every operator of this module is such a Fourier-diagonal
multiplication, applied with two FFTs.

The k = 0 mode (the map mean) has ``S_0 = 0``: shear does not constrain it
(mass-sheet degeneracy) and the prior pins it to zero. The covariance is then
singular and the prior is a degenerate Gaussian supported on the zero-mean
maps. ``GaussianPrior`` treats every mode with ``S_k = 0`` this way: its
density is taken with respect to Lebesgue measure on the support, with the
pseudo-determinant and pseudo-inverse of C (as ``scipy.stats.multivariate_normal``
with ``allow_singular=True``).

``GaussianPrior`` implements the `tfp_massmap.priors.Prior` protocol (score,
denoise, dtype, pixel scale, map size).
"""

import numpy as np
import tensorflow as tf

from tensorflow_probability.python.bijectors import identity as identity_bijector
from tensorflow_probability.python.distributions import distribution
from tensorflow_probability.python.internal import assert_util
from tensorflow_probability.python.internal import dtype_util
from tensorflow_probability.python.internal import parameter_properties
from tensorflow_probability.python.internal import prefer_static as ps
from tensorflow_probability.python.internal import reparameterization
from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.internal import tensor_util

from tfp_massmap import _checks
from tfp_massmap import power_spectrum

__all__ = [
    'GaussianPrior',
    'fourier_filter',
]


def fourier_filter(x, transfer):
  """Applies the Fourier-diagonal operator F⁻¹[T F x] to real maps.

  Args:
    x: float tensor ``[..., N, N]``.
    transfer: real tensor ``[..., N, N]`` in FFT order, broadcasting against
      ``x``. It must be even (T_k = T_{−k}), as any function of |k| is, so
      that the result is real; only its half-plane ``[..., :N // 2 + 1]`` is
      read (real FFTs).

  Returns:
    Real tensor with the broadcast shape of ``x`` and ``transfer``. The FFT
    normalisation cancels, so this is the same with the orthonormal DFT.
  """
  x = tf.convert_to_tensor(x)
  dtype = _checks.float_dtype(x.dtype, 'x dtype')
  n = x.shape[-1] if x.shape[-1] is not None else tf.shape(x)[-1]
  half = tf.cast(transfer[..., :n // 2 + 1], dtype)
  # tf.complex, not a cast to complex: the gradient of that cast casts complex
  # to real, which TensorFlow logs as a warning at every call.
  half = tf.complex(half, tf.zeros_like(half))
  return tf.signal.irfft2d(half * tf.signal.rfft2d(x), fft_length=[n, n])


def _safe_reciprocal(v):
  """1 / v where v > 0, else 0 (the pseudo-inverse of a diagonal)."""
  positive = v > 0
  return tf.where(positive, 1. / tf.where(positive, v, tf.ones_like(v)),
                  tf.zeros_like(v))


class GaussianPrior(distribution.AutoCompositeTensorDistribution):
  """Zero-mean stationary Gaussian random field on N×N periodic maps.

  The pixel covariance is ``C = F⁻¹ diag(S) F`` in the orthonormal DFT basis,
  with ``spectrum = S`` (``[..., N, N]``, dimensionless, FFT order; leading
  axes are batch axes). The event shape is ``[N, N]``.

  Modes with ``S_k = 0`` (always k = 0, the map mean, when built from a C_ℓ
  table) are degenerate directions: samples have no component there,
  ``log_prob`` uses the pseudo-determinant and pseudo-inverse of C (density
  on the support, that component of the argument being ignored), and
  ``score``/``denoise`` follow the σ-convolved prior, whose covariance
  ``S + σ²`` is regular for σ > 0.

  #### Examples

  ```python
  prior = GaussianPrior.from_power_spectrum(ell, cl, n=360,
                                            pixel_scale_arcmin=0.29)
  kappa = prior.sample(4, seed=(1, 2))        # [4, 360, 360]
  prior.log_prob(kappa)                       # [4]
  prior.score(kappa + 0.01 * noise, sigma=0.01)
  ```
  """

  def __init__(self,
               spectrum,
               pixel_scale_arcmin=None,
               validate_args=False,
               allow_nan_stats=True,
               name='GaussianPrior'):
    """Builds the prior from its covariance eigenvalues.

    Args:
      spectrum: float tensor ``[..., N, N]`` of non-negative eigenvalues S of
        the pixel covariance in the orthonormal DFT basis (dimensionless, FFT
        order, even in k), e.g. from ``power_spectrum.power_spectrum_grid``.
      pixel_scale_arcmin: optional pixel side in arcmin of the grid the
        spectrum was made for (``from_power_spectrum`` sets it). Not used in
        any computation: it lets callers check that data binned at another
        pixel scale are not combined with this prior.
      validate_args: Python `bool`; when True, also assert non-negativity of
        ``spectrum`` in graph mode. Concrete values are always checked.
      allow_nan_stats: Python `bool`, as for every TFP distribution.
      name: name prefixed to the ops created by this class.

    Raises:
      ValueError: if ``spectrum`` is not ``[..., N, N]`` or holds negative or
        non-finite values (checked when its value is known), or if
        ``pixel_scale_arcmin`` is given and not a positive number.
    """
    parameters = dict(locals())
    with tf.name_scope(name) as name:
      dtype = dtype_util.common_dtype([spectrum], dtype_hint=tf.float32)
      _checks.float_dtype(dtype, 'spectrum dtype')
      self._spectrum = tensor_util.convert_nonref_to_tensor(
          spectrum, dtype=dtype, name='spectrum')
      self._n = _checks.square_map_shape(self._spectrum.shape, 'spectrum')
      if not tensor_util.is_ref(self._spectrum):
        _checks.non_negative(self._spectrum, 'spectrum')
      self._pixel_scale_arcmin = (
          None if pixel_scale_arcmin is None else _checks.positive_scalar(
              pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin'))
      super().__init__(
          dtype=dtype,
          reparameterization_type=reparameterization.FULLY_REPARAMETERIZED,
          validate_args=validate_args,
          allow_nan_stats=allow_nan_stats,
          parameters=parameters,
          name=name)

  @classmethod
  def from_power_spectrum(cls, ell, cl, n, pixel_scale_arcmin,
                          dtype=tf.float32, validate_args=False,
                          name='GaussianPrior'):
    """The prior of a field with angular power spectrum C_ℓ on an N×N grid.

    Args:
      ell: increasing multipoles of the table, rad⁻¹.
      cl: C_ℓ of the table, sr (interpolated as in
        ``power_spectrum.power_spectrum_grid``).
      n: map size in pixels.
      pixel_scale_arcmin: pixel side in arcmin.
      dtype: float32 or float64.
      validate_args: as in the constructor.
      name: as in the constructor.

    Returns:
      A ``GaussianPrior`` with batch shape ``[]``, event shape ``[n, n]`` and
      ``pixel_scale_arcmin`` set.
    """
    spectrum = power_spectrum.power_spectrum_grid(
        ell, cl, n, pixel_scale_arcmin, dtype=dtype)
    return cls(spectrum, pixel_scale_arcmin=pixel_scale_arcmin,
               validate_args=validate_args, name=name)

  @classmethod
  def _parameter_properties(cls, dtype, num_classes=None):
    return dict(
        spectrum=parameter_properties.ParameterProperties(
            event_ndims=2,
            default_constraining_bijector_fn=(
                parameter_properties.BIJECTOR_NOT_IMPLEMENTED)))

  @property
  def spectrum(self):
    """Covariance eigenvalues S ``[..., N, N]`` in the orthonormal DFT basis."""
    return self._spectrum

  @property
  def pixel_scale_arcmin(self):
    """Pixel side in arcmin of the spectrum's grid (float), or None if unknown."""
    return self._pixel_scale_arcmin

  @property
  def num_pixels_per_side(self):
    """N, the map side in pixels (Python int, or None if not static)."""
    return self._n

  @property
  def size_divisor(self):
    """1: the prior holds one spectrum value per mode of its own N×N grid."""
    return 1

  @property
  def smoothed_score(self):
    """True: ``score`` and ``denoise`` are exact at every σ >= 0."""
    return True

  def _event_shape(self):
    return tf.TensorShape([self._n, self._n])

  def _event_shape_tensor(self):
    return ps.shape(self._spectrum)[-2:]

  def _sample_n(self, n, seed=None):
    spectrum = tf.convert_to_tensor(self._spectrum)
    shape = ps.concat([[n], ps.shape(spectrum)], axis=0)
    white = samplers.normal(shape=shape, dtype=self.dtype, seed=seed)
    return fourier_filter(white, tf.sqrt(spectrum))

  def _log_prob(self, x):
    spectrum = tf.convert_to_tensor(self._spectrum)
    if x.dtype != self.dtype:
      raise ValueError(
          f'x has dtype {x.dtype.name} but this GaussianPrior has dtype '
          f'{self.dtype.name}; cast x to {self.dtype.name}.')
    n2 = tf.cast(ps.reduce_prod(ps.shape(spectrum)[-2:]), self.dtype)
    # tf.complex (gradient: the real part) rather than a cast, whose gradient
    # casts complex to real and logs a warning at every call.
    spec = tf.signal.fft2d(tf.complex(x, tf.zeros_like(x)))
    power = tf.math.real(spec * tf.math.conj(spec)) / n2  # |x̂_k|², orthonormal.
    support = spectrum > 0
    safe = tf.where(support, spectrum, tf.ones_like(spectrum))
    mahalanobis = tf.reduce_sum(
        tf.where(support, power / safe, tf.zeros_like(power)), axis=[-2, -1])
    log_pdet = tf.reduce_sum(tf.math.log(safe), axis=[-2, -1])
    rank = tf.reduce_sum(tf.cast(support, self.dtype), axis=[-2, -1])
    return -0.5 * (mahalanobis + log_pdet + rank * np.log(2. * np.pi))

  def _mean(self):
    return tf.zeros_like(self._spectrum)

  _mode = _mean

  def _variance(self):
    # Diagonal of the circulant C: (1/N²) Σ_k S_k, the same for every pixel.
    spectrum = tf.convert_to_tensor(self._spectrum)
    return tf.reduce_mean(spectrum, axis=[-2, -1], keepdims=True) * tf.ones_like(
        spectrum)

  def _default_event_space_bijector(self):
    return identity_bijector.Identity(validate_args=self.validate_args)

  def _parameter_control_dependencies(self, is_init):
    if not self.validate_args:
      return []
    assertions = []
    if is_init != tensor_util.is_ref(self._spectrum):
      assertions.append(assert_util.assert_non_negative(
          self._spectrum, message='Argument `spectrum` must be non-negative.'))
    return assertions

  def _noise_variance(self, sigma):
    """σ² ``[..., 1, 1]``, to broadcast against maps."""
    sigma = tf.convert_to_tensor(sigma, dtype=self.dtype, name='sigma')
    _checks.non_negative(sigma, 'sigma')
    return tf.square(sigma)[..., tf.newaxis, tf.newaxis]

  def _check_map(self, x):
    x = tf.convert_to_tensor(x, dtype=self.dtype, name='x')
    _checks.square_map_shape(x.shape, 'x')
    _checks.same_map_shape(x.shape, self._spectrum.shape, 'x', 'spectrum')
    return x

  @tf.autograph.experimental.do_not_convert
  def score(self, x, sigma=0., name='score'):
    """Score ∇ log p_σ(x) of the prior convolved with N(0, σ² I).

    ``p_σ`` is Gaussian with covariance ``F⁻¹ diag(S + σ²) F``, so the score
    is ``−F⁻¹[(S + σ²)⁺ F x]``. On a mode with ``S_k = 0`` (the map mean) it
    is ``−x̂_k / σ²`` for σ > 0 and 0 for σ = 0 (the pseudo-inverse: the
    gradient of ``log_prob``, which ignores that component).

    Args:
      x: maps ``[..., N, N]`` (dimensionless convergence).
      sigma: noise standard deviation (dimensionless, >= 0), a scalar or a
        tensor ``[...]`` broadcasting against the leading axes of ``x``.
      name: name scope.

    Returns:
      Tensor with the broadcast shape of ``x`` (and ``sigma[..., None, None]``).
    """
    with self._name_and_control_scope(name):
      x = self._check_map(x)
      variance = tf.convert_to_tensor(self._spectrum) + self._noise_variance(sigma)
      return -fourier_filter(x, _safe_reciprocal(variance))

  @tf.autograph.experimental.do_not_convert
  def denoise(self, x, sigma, name='denoise'):
    """Posterior mean E[x | x + σu = y] under this prior, u ~ N(0, I).

    Equal to ``F⁻¹[S / (S + σ²) F y]`` (the Wiener filter of white noise),
    and to Tweedie's formula ``y + σ² score(y, σ)``. The map mean (S_0 = 0)
    is set to zero for σ > 0; at σ = 0 this is the identity.

    Args:
      x: noisy maps y ``[..., N, N]``.
      sigma: noise standard deviation (dimensionless, >= 0), scalar or
        ``[...]`` broadcasting against the leading axes of ``x``.
      name: name scope.

    Returns:
      Tensor with the broadcast shape of ``x`` and ``sigma[..., None, None]``.
    """
    with self._name_and_control_scope(name):
      x = self._check_map(x)
      spectrum = tf.convert_to_tensor(self._spectrum)
      variance = spectrum + self._noise_variance(sigma)
      transfer = tf.where(variance > 0, spectrum * _safe_reciprocal(variance),
                          tf.ones_like(variance))
      return fourier_filter(x, transfer)
