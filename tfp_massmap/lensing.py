"""Flat-sky weak-lensing operators: convergence <-> shear.

Conventions (docs/design.md §1, §4): maps are ``[..., N, N]`` with row = y (Dec)
and column = x (RA); shear is ``[..., N, N, 2]`` with channels (γ1, γ2).
Wavenumber k1 runs along x (columns), k2 along y (rows). With
``D = (k1² − k2² + 2i k1 k2) / k²`` (and D = 0 at k = 0):

* the shear operator A:  γ1 + iγ2 = F⁻¹[D F κ]
* Kaiser-Squires:         κ_E + iκ_B = F⁻¹[conj(D) F(γ1 + iγ2)]

|D| = 1 away from k = 0, so Kaiser-Squires is both the adjoint of A (its
E-mode part) and the exact inverse of A on E-mode fields up to the mean
(mass-sheet degeneracy).

The Nyquist convention. On an even grid the Nyquist lines (k1 = −π or
k2 = −π) hold modes that are their own partner −k, where the imaginary part
D2 = 2 k1 k2 / k² of the kernel is not Hermitian: F⁻¹[D2 F κ] has an
imaginary part there. A keeps the whole complex result, γ1 + iγ2 =
F⁻¹[D F κ], so that odd part goes into γ1 (γ1 = Re F⁻¹[D1 F κ] −
Im F⁻¹[D2 F κ], γ2 = Re F⁻¹[D2 F κ]); this keeps Kaiser-Squires the exact
adjoint and inverse of A. Codes that compute each component as
Re F⁻¹[D_i F κ] (lenspack's ``ks93inv``, and the seed code of this project)
drop it. The two conventions give the same γ2, and the same γ1 off the
Nyquist lines; on the held-out 128² lognormal maps of 0.8 arcmin
(``lognormal_kappa/lognormal_128``, test seeds 4608-4615) their γ1 differ by
up to 2.9e-3 to 4.2e-3 (about 3 % of the largest shear), made only of
Nyquist-line modes: with those modes removed the difference is float
rounding (1e-8 in float32, 1e-16 in float64; tests/test_lensing.py).
Convergence and shear are dimensionless; angles are in arcmin. All
functions are plain TF ops: they work eagerly, inside
``tf.function`` and under XLA, in float32 and float64, batched over leading
axes.
"""

import functools
import math

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks

__all__ = [
    'wavenumbers',
    'multipoles',
    'rfft_multiplicity',
    'shear_from_convergence',
    'kaiser_squires',
    'gaussian_smooth',
]

_COMPLEX = {tf.float32: tf.complex64, tf.float64: tf.complex128}
ARCMIN_TO_RAD = math.pi / (180.0 * 60.0)


def wavenumbers(n, dtype=tf.float32):
  """Angular wavenumbers of an N×N FFT grid, in radians per pixel.

  Args:
    n: map size in pixels (int).
    dtype: float32 or float64.

  Returns:
    (k1, k2): ``[N, N]`` tensors; k1 varies along columns (x), k2 along rows
    (y), in FFT order, in [−π, π).
  """
  dtype = _checks.float_dtype(dtype, 'dtype')
  freq = 2.0 * math.pi * tf.cast(
      tf.concat([tf.range(0, (n + 1) // 2), tf.range(-(n // 2), 0)], axis=0),
      dtype) / tf.cast(n, dtype)
  k2, k1 = tf.meshgrid(freq, freq, indexing='ij')
  return k1, k2


def rfft_multiplicity(n):
  """Weights of the `tf.signal.rfft2d` half-plane columns in the full grid.

  ``[N//2 + 1]`` numpy float64: 2, but 1 for the k = 0 column and (N even)
  the Nyquist column, so Σ_full f = Σ_half multiplicity · f for any f
  symmetric under k → −k (Parseval on the half-plane).
  """
  multiplicity = np.full(n // 2 + 1, 2.)
  multiplicity[0] = 1.
  if n % 2 == 0:
    multiplicity[-1] = 1.
  return multiplicity


def multipoles(n, pixel_scale_arcmin, dtype=tf.float32):
  """Multipole modulus ℓ (rad⁻¹) of each FFT mode of an N×N map, ``[N, N]``.

  Args:
    n: map size in pixels.
    pixel_scale_arcmin: pixel side in arcmin (> 0).
    dtype: float32 or float64.
  """
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  k1, k2 = wavenumbers(n, dtype)
  return tf.sqrt(k1**2 + k2**2) / tf.constant(pix * ARCMIN_TO_RAD, dtype)


@functools.lru_cache(maxsize=32)
def _kernel_numpy(n, dtype_name):
  """Real and imaginary parts of D on the N×N grid (numpy, cached)."""
  freq = 2.0 * np.pi * np.fft.fftfreq(n)
  k2, k1 = np.meshgrid(freq, freq, indexing='ij')
  ksq = k1**2 + k2**2
  safe = np.where(ksq > 0, ksq, 1.0)
  d1 = np.where(ksq > 0, (k1**2 - k2**2) / safe, 0.0).astype(dtype_name)
  d2 = np.where(ksq > 0, 2.0 * k1 * k2 / safe, 0.0).astype(dtype_name)
  d1.flags.writeable = False
  d2.flags.writeable = False
  return d1, d2


def _kernel(n, dtype):
  """The complex KS kernel D = (k1² − k2² + 2i k1 k2)/k², with D(0) = 0."""
  d1, d2 = _kernel_numpy(int(n), dtype.name)
  return tf.complex(tf.constant(d1), tf.constant(d2))


def _pad(x, n, pad):
  """Zero-pads the last two axes of x from n to n * pad (top-left corner)."""
  if pad == 1:
    return x
  extra = n * (pad - 1)
  paddings = [[0, 0]] * (len(x.shape) - 2) + [[0, extra], [0, extra]]
  return tf.pad(x, paddings)


def _check_pad(pad):
  if pad not in (1, 2, 3, 4) or isinstance(pad, bool):
    raise ValueError(f'pad must be an integer factor in 1..4, got {pad!r}.')
  return int(pad)


def _smoothing_window(n, dtype, smoothing_arcmin, pixel_scale_arcmin):
  """Fourier-space Gaussian window exp(−k²s²/2), s = smoothing in pixels."""
  if smoothing_arcmin is None or smoothing_arcmin == 0:
    return None
  s = _checks.positive_scalar(smoothing_arcmin, 'smoothing_arcmin', 'arcmin')
  if pixel_scale_arcmin is None:
    raise ValueError('smoothing_arcmin was given without pixel_scale_arcmin; '
                     'both are needed to convert arcmin to pixels.')
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  k1, k2 = wavenumbers(n, dtype)
  return tf.exp(-0.5 * (k1**2 + k2**2) * (s / pix)**2)


def _check_finite_shear(shear):
  """Raises if a concrete shear holds NaN or inf, naming the first such value.

  Kaiser-Squires mixes every pixel into every other one, so one bad value
  would make the whole map NaN. Symbolic tensors (inside ``tf.function``)
  are not checked.
  """
  if not tf.executing_eagerly() or bool(
      tf.reduce_all(tf.math.is_finite(shear))):
    return
  values = shear.numpy()
  bad = np.argwhere(~np.isfinite(values))
  first = tuple(int(i) for i in bad[0])
  raise ValueError(
      f'shear holds {len(bad)} non-finite value(s) (NaN or inf) out of '
      f'{values.size}; the first, {float(values[first])}, is at index {first} '
      '([..., row, column, component]). Kaiser-Squires mixes all pixels, so '
      'one bad value would make the whole map NaN: set the shear to 0 where '
      'there is no data (e.g. pixels without galaxies).')


def shear_from_convergence(kappa, pad=1, name=None):
  """Applies the shear operator A: convergence → shear.

  Args:
    kappa: float tensor ``[..., N, N]`` (dimensionless convergence).
    pad: integer zero-padding factor (1 = periodic FFT, 2 = pad to 2N and
      crop back).
    name: optional name scope.

  Returns:
    Shear ``[..., N, N, 2]`` (γ1, γ2), same dtype as ``kappa``.
  """
  with tf.name_scope(name or 'shear_from_convergence'):
    kappa = tf.convert_to_tensor(kappa)
    dtype = _checks.float_dtype(kappa.dtype, 'kappa dtype')
    n = _checks.square_map_shape(kappa.shape, 'kappa')
    pad = _check_pad(pad)
    m = n * pad
    padded = _pad(kappa, n, pad)
    kc = tf.complex(padded, tf.zeros_like(padded))
    g = tf.signal.ifft2d(_kernel(m, dtype) * tf.signal.fft2d(kc))
    g = g[..., :n, :n]
    return tf.stack([tf.math.real(g), tf.math.imag(g)], axis=-1)


def kaiser_squires(shear, pad=1, smoothing_arcmin=None,
                   pixel_scale_arcmin=None, name=None):
  """Kaiser-Squires inversion: shear → (κ_E, κ_B).

  Args:
    shear: float tensor ``[..., N, N, 2]`` (γ1, γ2), finite everywhere.
      Masked pixels should be zero: there is no mask here, and a NaN or inf
      anywhere would spread to every pixel of the result, so such values
      raise (when the value is known, i.e. outside ``tf.function``).
    pad: integer zero-padding factor (1 = periodic FFT).
    smoothing_arcmin: optional Gaussian smoothing standard deviation in
      arcmin applied to both modes (needs ``pixel_scale_arcmin``).
    pixel_scale_arcmin: pixel side in arcmin (only used for smoothing).
    name: optional name scope.

  Returns:
    (kappa_e, kappa_b): two ``[..., N, N]`` tensors, same dtype as shear. The
    E-mode is A's adjoint applied to the shear; the B-mode vanishes for shear
    made by A.

  Raises:
    ValueError: if ``shear`` is not ``[..., N, N, 2]`` float32 or float64,
      holds NaN or inf (the message counts them and gives the index of the
      first; checked eagerly only), or for a bad ``pad`` or smoothing
      setting.
  """
  with tf.name_scope(name or 'kaiser_squires'):
    shear = tf.convert_to_tensor(shear)
    dtype = _checks.float_dtype(shear.dtype, 'shear dtype')
    n = _checks.square_map_shape(shear.shape, 'shear', channels=2)
    _check_finite_shear(shear)
    pad = _check_pad(pad)
    m = n * pad
    g = tf.complex(_pad(shear[..., 0], n, pad), _pad(shear[..., 1], n, pad))
    spec = tf.math.conj(_kernel(m, dtype)) * tf.signal.fft2d(g)
    window = _smoothing_window(m, dtype, smoothing_arcmin, pixel_scale_arcmin)
    if window is not None:
      spec = spec * tf.cast(window, spec.dtype)
    k = tf.signal.ifft2d(spec)[..., :n, :n]
    return tf.math.real(k), tf.math.imag(k)


def gaussian_smooth(image, smoothing_arcmin, pixel_scale_arcmin, name=None):
  """Periodic Gaussian smoothing of maps ``[..., N, N]``.

  Args:
    image: float tensor ``[..., N, N]``.
    smoothing_arcmin: Gaussian standard deviation in arcmin (> 0).
    pixel_scale_arcmin: pixel side in arcmin (> 0).
    name: optional name scope.
  """
  with tf.name_scope(name or 'gaussian_smooth'):
    image = tf.convert_to_tensor(image)
    dtype = _checks.float_dtype(image.dtype, 'image dtype')
    n = _checks.square_map_shape(image.shape, 'image')
    window = _smoothing_window(n, dtype, smoothing_arcmin, pixel_scale_arcmin)
    if window is None:
      return image
    spec = tf.signal.fft2d(tf.complex(image, tf.zeros_like(image)))
    return tf.math.real(tf.signal.ifft2d(spec * tf.cast(window, spec.dtype)))
