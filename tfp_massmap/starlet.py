"""The starlet transform: the isotropic undecimated wavelet of sparse priors.

The starlet (Starck, Fadili & Murtagh 2007) is the "à trous" wavelet built on
the separable B3-spline scaling function, with 1-D filter
h = [1, 4, 6, 4, 1] / 16. With c_0 = x, scale j (0-based) smooths by h
dilated by 2^j (holes between taps) along both axes,

    c_{j+1} = H_j c_j,    w_j = c_j − c_{j+1},    j = 0 .. J−1,

and the transform of x is the stack [w_0, ..., w_{J−1}, c_J] of J wavelet
planes (finest first; scale j has a typical size of 2^j pixels) and one coarse
plane. The planes add up to x (telescoping sum), so `starlet_reconstruct` is
the plain sum.

Boundaries are periodic, like the FFT-based lensing operators of this
package. Every H_j is then a circulant operator, diagonal in the 2-D DFT with
the real transfer function ĥ(2^j k1) ĥ(2^j k2), where
ĥ(ω) = (3 + 4 cos ω + cos 2ω) / 8 = cos⁴(ω/2) is the DFT of h (wrap-around of
the dilated taps included), so the cascade is applied exactly as one FFT and
one inverse FFT per plane, with transfer functions

    W_j(k) = Π_{i<j} H_i(k) · (1 − H_j(k)),    C_J(k) = Π_{i<J} H_i(k).

These are real, even, in [0, 1] and sum to 1. Hence the adjoint Wᵀ
(`starlet_adjoint`, needed by analysis-prior proximal schemes) applies the
same filters and sums the planes; it differs from the reconstruction, and
the operator norm of W is exactly 1 (Σ_j W_j² <= (Σ_j W_j)² = 1, with equality
for the map mean, which lives in the coarse plane only).

All functions are plain TF ops: batched over leading axes, float32 or
float64, eager or inside ``tf.function`` (XLA included). Maps are
``[..., N, N]``, values in the units of the input (dimensionless for
convergence).
"""

import functools

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks

__all__ = [
    'starlet_transform',
    'starlet_reconstruct',
    'starlet_adjoint',
    'starlet_noise_levels',
]


def _check_num_scales(num_scales, n):
  if (isinstance(num_scales, bool) or
      not isinstance(num_scales, (int, np.integer)) or num_scales < 1):
    raise ValueError(
        f'num_scales must be a positive integer, got {num_scales!r}.')
  if n is not None and 2**int(num_scales) > n:
    raise ValueError(
        f'num_scales = {num_scales} needs maps of at least 2^{num_scales} = '
        f'{2**int(num_scales)} pixels per side, got N = {n}.')
  return int(num_scales)


@functools.lru_cache(maxsize=32)
def _transfer_functions(n, num_scales):
  """Real transfer functions of the J + 1 planes on the rfft grid, float64.

  Returns a numpy array ``[J + 1, N, N // 2 + 1]`` (rows: all k2; columns:
  k1 >= 0), the layout of ``tf.signal.rfft2d``.
  """
  omega_rows = 2.0 * np.pi * np.fft.fftfreq(n)[:, np.newaxis]
  omega_columns = 2.0 * np.pi * np.fft.rfftfreq(n)[np.newaxis, :]

  def spline(omega, spacing):  # DFT of h dilated by `spacing`: cos⁴(ω s / 2).
    return (3.0 + 4.0 * np.cos(spacing * omega) + np.cos(2 * spacing * omega)) / 8.0

  planes = []
  smooth = np.ones([n, n // 2 + 1])
  for j in range(num_scales):
    h = spline(omega_rows, 2**j) * spline(omega_columns, 2**j)
    planes.append(smooth * (1.0 - h))
    smooth = smooth * h
  planes.append(smooth)
  return np.stack(planes)


def _check_map(image, name):
  image = tf.convert_to_tensor(image, name=name)
  _checks.float_dtype(image.dtype, f'{name} dtype')
  n = _checks.square_map_shape(image.shape, name)
  if n is None:
    raise ValueError(f'{name} must have a statically known map size N, got '
                     f'shape {image.shape}.')
  return image, n


def starlet_transform(image, num_scales, name=None):
  """Starlet coefficients of maps ``[..., N, N]``.

  Args:
    image: float32/float64 tensor ``[..., N, N]``.
    num_scales: number J of wavelet scales (Python int, 1 <= J and
      2^J <= N); scale j has a typical size of 2^j pixels.
    name: optional name scope.

  Returns:
    Tensor ``[..., J + 1, N, N]``: wavelet planes w_0 (finest) .. w_{J−1},
    then the coarse plane c_J; same dtype and units as ``image``.

  Raises:
    ValueError: for a non-square or non-float map or a bad ``num_scales``.
  """
  with tf.name_scope(name or 'starlet_transform'):
    image, n = _check_map(image, 'image')
    num_scales = _check_num_scales(num_scales, n)
    spec = tf.signal.rfft2d(image)[..., tf.newaxis, :, :]
    transfer = tf.constant(_transfer_functions(n, num_scales), spec.dtype)
    return tf.signal.irfft2d(transfer * spec, fft_length=[n, n])


def starlet_reconstruct(coefficients, name=None):
  """Inverse starlet transform: the sum of all planes, ``[..., N, N]``.

  Args:
    coefficients: float tensor ``[..., J + 1, N, N]`` as returned by
      `starlet_transform`.
    name: optional name scope.

  Returns:
    The map ``[..., N, N]``; exact (up to rounding) for unmodified
    coefficients.
  """
  with tf.name_scope(name or 'starlet_reconstruct'):
    coefficients, _ = _check_map(coefficients, 'coefficients')
    if coefficients.shape.rank is not None and coefficients.shape.rank < 3:
      raise ValueError('coefficients must have shape [..., J + 1, N, N], got '
                       f'shape {coefficients.shape}.')
    return tf.reduce_sum(coefficients, axis=-3)


def starlet_adjoint(coefficients, name=None):
  """Adjoint Wᵀ of `starlet_transform`: ``[..., J + 1, N, N]`` → ``[..., N, N]``.

  ⟨W x, c⟩ = ⟨x, Wᵀ c⟩ for every map x and coefficient stack c: each plane
  is filtered by its (real, even) transfer function and the results are
  summed. Unlike `starlet_reconstruct`, Wᵀ is not an inverse of W
  (WᵀW ≠ I); it is what gradients and dual (analysis-prior) proximal schemes
  need.

  Args:
    coefficients: float tensor ``[..., J + 1, N, N]`` (J wavelet planes, then
      the coarse plane).
    name: optional name scope.

  Returns:
    Tensor ``[..., N, N]``, same dtype.
  """
  with tf.name_scope(name or 'starlet_adjoint'):
    coefficients, n = _check_map(coefficients, 'coefficients')
    rank = coefficients.shape.rank
    if rank is None or rank < 3 or coefficients.shape[-3] is None:
      raise ValueError('coefficients must have a static shape [..., J + 1, N, N]'
                       f', got shape {coefficients.shape}.')
    num_scales = _check_num_scales(coefficients.shape[-3] - 1, n)
    spec = tf.signal.rfft2d(coefficients)
    transfer = tf.constant(_transfer_functions(n, num_scales), spec.dtype)
    spec = tf.reduce_sum(transfer * spec, axis=-3)
    return tf.signal.irfft2d(spec, fft_length=[n, n])


def starlet_noise_levels(num_scales, n):
  """Standard deviation of each starlet plane of unit white noise.

  For white noise of unit variance on an N×N periodic map, every pixel of
  plane j has standard deviation ‖W_j δ‖₂ (the l2 norm of that plane's impulse
  response), computed here exactly in float64 from the transfer functions.
  For N ≫ 2^J the values tend to the classical table 0.890, 0.201, 0.086,
  0.041, 0.020, ... (Starck & Murtagh). Noise of std σ has σ times these
  levels (the transform is linear), which is how thresholds k σ_j follow the
  noise.

  Args:
    num_scales: number J of wavelet scales (2^J <= N).
    n: map side N in pixels.

  Returns:
    numpy float64 array ``[J + 1]``: J wavelet levels, finest first, then the
    coarse plane (dimensionless, per unit noise std).
  """
  if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
    raise ValueError(f'n must be an integer map side >= 2 pixels, got {n!r}.')
  num_scales = _check_num_scales(num_scales, int(n))
  responses = np.fft.irfft2(_transfer_functions(int(n), num_scales), s=(n, n))
  return np.sqrt(np.sum(responses**2, axis=(-2, -1)))
