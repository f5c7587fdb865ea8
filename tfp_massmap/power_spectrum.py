"""Angular power spectra of flat-sky maps, and C_ℓ tables on the FFT grid.

Normalisation. For an N×N map with pixel side Δ (radians), let κ̂ be its
orthonormal 2-D DFT (``fft2d(κ) / N``). For a statistically homogeneous field
with angular power spectrum P(ℓ) (the flat-sky C_ℓ, units of sr = rad²)

    ⟨|κ̂_k|²⟩ = P(ℓ_k) / Δ²,

so the pixel covariance S of the map is diagonal in this basis, with
eigenvalues ``P(ℓ_k) / Δ²`` (dimensionless). ``power_spectrum_grid`` builds
these eigenvalues from a theory table; ``measure_power_spectrum`` inverts the
relation on maps, in ℓ bins, and ``measure_cross_spectrum`` does the same for
Re(κ̂_a conj(κ̂_b)) of two sets of maps. Multipoles ℓ are in rad⁻¹ and follow
from the pixel scale in arcmin. The k = 0 mode (the map mean) is not constrained by
shear (mass-sheet degeneracy) and gets eigenvalue 0.
"""

import functools
import math

import numpy as np
import tensorflow as tf

from tfp_massmap import _checks
from tfp_massmap import lensing

__all__ = [
    'measure_cross_spectrum',
    'measure_power_spectrum',
    'power_spectrum_grid',
    'default_ell_edges',
]


def default_ell_edges(n, pixel_scale_arcmin, n_bins=20):
  """Log-spaced ℓ bin edges (rad⁻¹) from the fundamental mode to Nyquist.

  Args:
    n: map size in pixels.
    pixel_scale_arcmin: pixel side in arcmin.
    n_bins: number of bins.

  Returns:
    numpy array of ``n_bins + 1`` edges in rad⁻¹.
  """
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  if int(n_bins) < 1:
    raise ValueError(f'n_bins must be >= 1, got {n_bins!r}.')
  delta = pix * lensing.ARCMIN_TO_RAD
  ell_min = 2.0 * math.pi / (n * delta)
  ell_max = math.pi / delta
  return np.geomspace(ell_min, ell_max, int(n_bins) + 1)


@functools.lru_cache(maxsize=8)
def _mode_bins(n, pixel_scale_arcmin, ell_edges):
  """The ℓ bin of every FFT mode of an N×N map, cached per (N, pixel, edges).

  Args:
    n: map size in pixels.
    pixel_scale_arcmin: pixel side in arcmin.
    ell_edges: tuple of increasing bin edges, rad⁻¹.

  Returns:
    (segment, ell_mean, inverse_counts), read-only numpy arrays: the bin of
    each mode, int32 ``[N²]`` (``n_bins`` for the k = 0 mode and modes in no
    bin); the mean ℓ per bin (rad⁻¹) and 1 / (modes per bin), ``[n_bins]``,
    NaN for a bin with no mode.
  """
  ell_edges = np.asarray(ell_edges)
  with tf.init_scope():  # Static numpy work, also inside tf.function.
    ell = lensing.multipoles(n, pixel_scale_arcmin, tf.float64).numpy().ravel()
  idx = np.digitize(ell, ell_edges) - 1
  n_b = ell_edges.size - 1
  # Both end edges are inclusive, up to rounding: the default edges sit
  # exactly on the fundamental and the axis Nyquist modes, which float
  # rounding can otherwise push just outside.
  idx[np.isclose(ell, ell_edges[0], rtol=1e-10, atol=0.)] = 0
  idx[np.isclose(ell, ell_edges[-1], rtol=1e-10, atol=0.)] = n_b - 1
  valid = (idx >= 0) & (idx < n_b) & (ell > 0)
  # Modes in no bin go to an extra segment n_b, dropped after the sum.
  segment = np.where(valid, idx, n_b).astype(np.int32)
  counts = np.bincount(segment, minlength=n_b + 1)[:n_b]
  with np.errstate(invalid='ignore', divide='ignore'):
    ell_mean = np.bincount(segment, ell, minlength=n_b + 1)[:n_b] / counts
    inverse_counts = np.where(counts > 0, 1. / counts, np.nan)
  for array in (segment, ell_mean, inverse_counts):
    array.flags.writeable = False
  return segment, ell_mean, inverse_counts


def _binned_spectrum(kappa, other, pixel_scale_arcmin, ell_edges, n_bins):
  """Per-bin mean of Re(κ̂_a conj(κ̂_b)) Δ² / N², the shared core of the spectra.

  Args:
    kappa: float tensor ``[..., N, N]``.
    other: None (auto spectrum) or a tensor of the same dtype and map shape,
      leading axes broadcasting with those of ``kappa``.
    pixel_scale_arcmin, ell_edges, n_bins: as in `measure_power_spectrum`.

  Returns:
    (ell, power) as in `measure_power_spectrum`.
  """
  dtype = _checks.float_dtype(kappa.dtype, 'kappa dtype')
  n = _checks.square_map_shape(kappa.shape, 'kappa')
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  if ell_edges is None:
    ell_edges = default_ell_edges(n, pix, n_bins)
  ell_edges = np.asarray(ell_edges, dtype=np.float64)
  if ell_edges.ndim != 1 or ell_edges.size < 2 or np.any(np.diff(ell_edges) <= 0):
    raise ValueError(f'ell_edges must be a 1-D increasing array of >= 2 edges, '
                     f'got {ell_edges!r}.')
  segment, ell_mean, inverse_counts = _mode_bins(
      n, pix, tuple(ell_edges.tolist()))
  n_b = ell_edges.size - 1

  delta = pix * lensing.ARCMIN_TO_RAD
  complex_dtype = tf.complex64 if dtype == tf.float32 else tf.complex128
  spec = tf.signal.fft2d(tf.cast(kappa, complex_dtype))
  if other is None:
    product = tf.square(tf.math.real(spec)) + tf.square(tf.math.imag(spec))
  else:
    spec_b = tf.signal.fft2d(tf.cast(other, complex_dtype))
    product = (tf.math.real(spec) * tf.math.real(spec_b) +
               tf.math.imag(spec) * tf.math.imag(spec_b))
  batch_shape = tf.shape(product)[:-2]
  # Segment sums run over the leading axis (modes first, maps second), in
  # float64: a float32 running sum over ~10⁵ modes would lose ~10⁻⁵.
  modes_first = tf.transpose(tf.reshape(tf.cast(product, tf.float64),
                                        [-1, n * n]))
  sums = tf.math.unsorted_segment_sum(
      modes_first, tf.constant(segment), n_b + 1)[:n_b]
  power = tf.transpose(sums) * tf.constant(
      inverse_counts * delta**2 / n**2, tf.float64)
  power = tf.reshape(tf.cast(power, dtype),
                     tf.concat([batch_shape, [n_b]], axis=0))
  return ell_mean.copy(), power


def measure_power_spectrum(kappa, pixel_scale_arcmin, ell_edges=None,
                           n_bins=20, name=None):
  """Binned angular power spectrum of maps ``[..., N, N]``.

  The bins are fixed in numpy (N must be static) and cached per (N, pixel
  scale, edges); the per-bin sums of |κ̂_k|² are one segment sum over the N²
  modes (memory and time linear in the map size), so the function also runs
  inside `tf.function`.

  Args:
    kappa: float tensor ``[..., N, N]`` (periodic maps; apodise or pad
      yourself for masked fields).
    pixel_scale_arcmin: pixel side in arcmin.
    ell_edges: bin edges in rad⁻¹ (increasing); defaults to
      ``default_ell_edges(N, pixel_scale_arcmin, n_bins)``.
    n_bins: number of log bins when ``ell_edges`` is None.
    name: optional name scope.

  Returns:
    (ell, power): ``ell`` the mean ℓ of the modes in each bin (rad⁻¹,
    numpy ``[n_bins]``), ``power`` the mean P(ℓ) (sr) per bin, a tensor
    ``[..., n_bins]`` (NaN for a bin with no mode).
  """
  with tf.name_scope(name or 'measure_power_spectrum'):
    return _binned_spectrum(tf.convert_to_tensor(kappa), None,
                            pixel_scale_arcmin, ell_edges, n_bins)


def measure_cross_spectrum(kappa_a, kappa_b, pixel_scale_arcmin,
                           ell_edges=None, n_bins=20, name=None):
  """Binned angular cross spectrum of two sets of maps ``[..., N, N]``.

  The per-bin mean of Re(κ̂_a,k conj(κ̂_b,k)) Δ² / N², with the bins,
  normalisation and edge rules of `measure_power_spectrum`; for
  ``kappa_b = kappa_a`` it is that function's power spectrum. With the
  auto spectra, r(ℓ) = P_ab / √(P_aa P_bb) is the correlation coefficient
  per bin (1 for identical maps, ≈ 0 for independent ones).

  Args:
    kappa_a: float tensor ``[..., N, N]``.
    kappa_b: float tensor of the same dtype and map shape; leading axes
      broadcast with those of ``kappa_a`` (e.g. samples ``[S, N, N]``
      against one truth ``[N, N]``).
    pixel_scale_arcmin: pixel side in arcmin.
    ell_edges: bin edges in rad⁻¹ (increasing); defaults to
      ``default_ell_edges(N, pixel_scale_arcmin, n_bins)``.
    n_bins: number of log bins when ``ell_edges`` is None.
    name: optional name scope.

  Returns:
    (ell, cross): ``ell`` the mean ℓ of the modes in each bin (rad⁻¹, numpy
    ``[n_bins]``), ``cross`` the cross spectrum (sr) per bin, a tensor
    ``[..., n_bins]`` with the broadcast leading axes (NaN for a bin with
    no mode).

  Raises:
    ValueError: if the two map shapes or dtypes differ, or as
      `measure_power_spectrum`.
  """
  with tf.name_scope(name or 'measure_cross_spectrum'):
    kappa_a = tf.convert_to_tensor(kappa_a)
    _checks.same_float_dtype(kappa_b, kappa_a.dtype, 'kappa_b', 'kappa_a')
    kappa_b = tf.convert_to_tensor(kappa_b, kappa_a.dtype)
    _checks.square_map_shape(kappa_b.shape, 'kappa_b')
    _checks.same_map_shape(kappa_a.shape, kappa_b.shape, 'kappa_a', 'kappa_b')
    return _binned_spectrum(kappa_a, kappa_b, pixel_scale_arcmin, ell_edges,
                            n_bins)


def power_spectrum_grid(ell, cl, n, pixel_scale_arcmin, dtype=tf.float32):
  """Eigenvalues of the pixel covariance S on the N×N FFT grid.

  Interpolates a theory table log-linearly in ℓ (linear in log C_ℓ where all
  C_ℓ > 0, else linear) and returns ``C(ℓ_k) / Δ²`` for every FFT mode, with
  0 at k = 0. Modes beyond the table's ℓ range take the end values.

  Args:
    ell: increasing multipoles of the table, rad⁻¹.
    cl: C_ℓ of the table, sr.
    n: map size in pixels.
    pixel_scale_arcmin: pixel side in arcmin.
    dtype: float32 or float64.

  Returns:
    Tensor ``[N, N]`` (dimensionless variances of the orthonormal-DFT modes).
  """
  ell = np.asarray(ell, dtype=np.float64)
  cl = np.asarray(cl, dtype=np.float64)
  if ell.ndim != 1 or ell.shape != cl.shape or ell.size < 2:
    raise ValueError(f'ell and cl must be 1-D arrays of the same length >= 2, got '
                     f'shapes {ell.shape} and {cl.shape}.')
  if np.any(np.diff(ell) <= 0) or ell[0] <= 0:
    raise ValueError('ell must be positive and strictly increasing.')
  if not np.all(np.isfinite(cl)) or np.any(cl < 0):
    raise ValueError('cl must be finite and non-negative.')
  pix = _checks.positive_scalar(pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  ell_k = lensing.multipoles(n, pix, tf.float64).numpy()
  log_l = np.log(np.clip(ell_k, ell[0], ell[-1]))
  if np.all(cl > 0):
    grid = np.exp(np.interp(log_l, np.log(ell), np.log(cl)))
  else:
    grid = np.interp(log_l, np.log(ell), cl)
  grid[0, 0] = 0.0
  delta = pix * lensing.ARCMIN_TO_RAD
  return tf.constant(grid / delta**2, dtype=_checks.float_dtype(dtype, 'dtype'))
