"""Tests of the power-spectrum estimator and the C_ℓ → FFT-grid eigenvalues."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import power_spectrum

PIXEL_ARCMIN = 0.29
DELTA = PIXEL_ARCMIN * lensing.ARCMIN_TO_RAD  # Pixel side, rad.


def test_grid_is_exact_for_a_power_law():
  ell = np.geomspace(10., 1e6, 50)
  cl = 3e-9 * ell**-1.2
  grid = power_spectrum.power_spectrum_grid(ell, cl, 32, PIXEL_ARCMIN,
                                            tf.float64).numpy()
  ell_k = lensing.multipoles(32, PIXEL_ARCMIN, tf.float64).numpy()
  expected = np.where(ell_k > 0, 3e-9 * np.where(ell_k > 0, ell_k, 1.)**-1.2,
                      0.) / DELTA**2
  np.testing.assert_allclose(grid, expected, rtol=1e-10)
  assert grid[0, 0] == 0.


def test_parseval_over_all_modes():
  n = 24
  x = np.random.default_rng(0).normal(size=(2, n, n))
  ell_k = lensing.multipoles(n, PIXEL_ARCMIN, tf.float64).numpy()
  edges = np.array([0.5, 2., 4., 20.]) * ell_k[0, 1]  # Up to > the corner.
  assert edges[-1] > ell_k.max()
  _, power = power_spectrum.measure_power_spectrum(x, PIXEL_ARCMIN, edges)
  counts = np.histogram(ell_k[ell_k > 0], edges)[0]
  total = power.numpy() @ counts / DELTA**2  # Σ_{k≠0} |x̂_k|².
  np.testing.assert_allclose(total, n * n * x.var(axis=(1, 2)), rtol=1e-12)


def test_fundamental_modes_are_in_the_first_default_bin():
  # For this size the fundamental ℓ rounds just below the first default edge.
  n = 39
  cols = np.arange(n)
  x = np.broadcast_to(np.cos(2. * np.pi * cols / n), (n, n))
  _, power = power_spectrum.measure_power_spectrum(x, PIXEL_ARCMIN)
  # The first bin holds the four modes (±1, 0), (0, ±1); the cosine puts
  # |x̂|² = N²/4 on two of them.
  np.testing.assert_allclose(power.numpy()[0], DELTA**2 * n * n / 8.,
                             rtol=1e-10)


def test_gaussian_field_from_grid_has_its_spectrum_back():
  n, num = 64, 48
  ell = np.geomspace(10., 1e6, 100)
  cl = 1e-9 * ell**-1.2
  spectrum = power_spectrum.power_spectrum_grid(ell, cl, n, PIXEL_ARCMIN,
                                                tf.float64).numpy()
  white = np.random.default_rng(1).normal(size=(num, n, n))
  field = np.fft.ifft2(np.sqrt(spectrum) * np.fft.fft2(white)).real
  edges = power_spectrum.default_ell_edges(n, PIXEL_ARCMIN, n_bins=10)
  _, measured = power_spectrum.measure_power_spectrum(field, PIXEL_ARCMIN,
                                                      edges)
  measured = measured.numpy().mean(axis=0)
  # Each bin's expectation is the mean of C(ℓ_k) over its m modes; the
  # variance of one map's bin mean is 2 Σ_k C(ℓ_k)² / m² (k, −k share a bin).
  ell_k = lensing.multipoles(n, PIXEL_ARCMIN, tf.float64).numpy().ravel()
  c_k = spectrum.ravel() * DELTA**2
  keep = (ell_k > 0) & (ell_k <= edges[-1] * (1. + 1e-12))
  bins = np.clip(np.digitize(ell_k[keep], edges) - 1, 0, len(edges) - 2)
  counts = np.bincount(bins, minlength=len(edges) - 1)
  assert np.all(counts > 0)
  expected = np.bincount(bins, c_k[keep]) / counts
  std = np.sqrt(2. * np.bincount(bins, c_k[keep]**2) / num) / counts
  np.testing.assert_array_less(np.abs(measured - expected), 5. * std)


def _numpy_binned_power(x, edges):
  """Reference: |DFT|² Δ²/N² averaged per ℓ bin with numpy.bincount."""
  n = x.shape[-1]
  freq = np.fft.fftfreq(n)  # Cycles per pixel.
  ell = 2. * np.pi * np.hypot(*np.meshgrid(freq, freq, indexing='ij')) / DELTA
  mod2 = np.abs(np.fft.fft2(x.astype(np.float64)))**2 * DELTA**2 / n**2
  bins = np.digitize(ell.ravel(), edges) - 1
  keep = (bins >= 0) & (bins < len(edges) - 1) & (ell.ravel() > 0)
  counts = np.bincount(bins[keep], minlength=len(edges) - 1)
  flat = mod2.reshape(-1, n * n)[:, keep]
  sums = np.stack([np.bincount(bins[keep], row, minlength=len(edges) - 1)
                   for row in flat])
  with np.errstate(invalid='ignore'):
    return (np.bincount(bins[keep], ell.ravel()[keep], len(edges) - 1) / counts,
            (sums / counts).reshape(x.shape[:-2] + (len(edges) - 1,)))


# At 256² a bin holds up to ~2·10⁴ modes: a float32 running sum would be off
# by ~7·10⁻⁶, so the float32 tolerance also checks the float64 accumulation.
@pytest.mark.parametrize('n, dtype, rtol', [(40, np.float64, 1e-12),
                                            (256, np.float32, 1e-6)])
def test_binned_power_matches_numpy_bincount(n, dtype, rtol):
  x = np.random.default_rng(2).normal(size=(2, 3, n, n)).astype(dtype)
  fundamental = 2. * np.pi / (n * DELTA)
  # Bin 1 holds no mode (between the fundamental and √2 × it), so it is NaN.
  edges = fundamental * np.array([0.5, 1.2, 1.3, 3.1, 7.7, 20.5, 27.5])
  ell, power = power_spectrum.measure_power_spectrum(x, PIXEL_ARCMIN, edges)
  ell_expected, power_expected = _numpy_binned_power(x, edges)
  assert power.dtype == tf.as_dtype(dtype)
  assert power.shape == (2, 3, 6)
  assert np.isnan(ell[1]) and np.all(np.isnan(power.numpy()[..., 1]))
  np.testing.assert_allclose(ell, ell_expected, rtol=1e-12)
  np.testing.assert_allclose(power.numpy(), power_expected, rtol=rtol)
  # The bins are cached: changing the returned ℓ must not change the next call.
  ell[:] = 0.
  again, _ = power_spectrum.measure_power_spectrum(x, PIXEL_ARCMIN, edges)
  np.testing.assert_allclose(again, ell_expected, rtol=1e-12)


def test_binned_power_inside_a_compiled_function():
  x = np.random.default_rng(3).normal(size=(5, 32, 32)).astype(np.float32)
  edges = power_spectrum.default_ell_edges(32, PIXEL_ARCMIN, n_bins=8)
  compiled = tf.function(
      lambda k: power_spectrum.measure_power_spectrum(k, PIXEL_ARCMIN,
                                                      edges)[1],
      input_signature=[tf.TensorSpec([None, 32, 32], tf.float32)])
  eager = power_spectrum.measure_power_spectrum(x, PIXEL_ARCMIN, edges)[1]
  np.testing.assert_allclose(compiled(x).numpy(), eager.numpy(), rtol=1e-6)


def test_cross_spectrum_of_a_map_with_itself_is_its_power_spectrum():
  x = np.random.default_rng(4).normal(size=(3, 32, 32))
  edges = power_spectrum.default_ell_edges(32, PIXEL_ARCMIN, n_bins=8)
  ell, auto = power_spectrum.measure_power_spectrum(x, PIXEL_ARCMIN, edges)
  ell_x, cross = power_spectrum.measure_cross_spectrum(x, x, PIXEL_ARCMIN,
                                                       edges)
  np.testing.assert_array_equal(ell_x, ell)
  np.testing.assert_allclose(cross.numpy(), auto.numpy(), rtol=1e-12)


def test_cross_spectrum_is_the_polarisation_of_the_power_spectrum():
  # Re(â conj(b̂)) = (|â + b̂|² − |â − b̂|²) / 4 mode by mode, hence per bin;
  # the samples [4, N, N] broadcast against one map [N, N].
  rng = np.random.default_rng(5)
  a = rng.normal(size=(4, 40, 40))
  b = 0.2 * rng.normal(size=(40, 40)) + a[0]
  edges = power_spectrum.default_ell_edges(40, PIXEL_ARCMIN, n_bins=6)
  _, cross = power_spectrum.measure_cross_spectrum(a, b, PIXEL_ARCMIN, edges)
  _, plus = power_spectrum.measure_power_spectrum(a + b, PIXEL_ARCMIN, edges)
  _, minus = power_spectrum.measure_power_spectrum(a - b, PIXEL_ARCMIN, edges)
  assert cross.shape == (4, 6)
  plus, minus = plus.numpy(), minus.numpy()
  np.testing.assert_allclose(cross.numpy(), (plus - minus) / 4., rtol=1e-10,
                             atol=1e-12 * plus.max())
  # b is the first sample plus 20 % noise: their cross spectrum is close to
  # that sample's power spectrum (sign and normalisation).
  _, auto = power_spectrum.measure_power_spectrum(a[0], PIXEL_ARCMIN, edges)
  np.testing.assert_allclose(cross.numpy()[0], auto.numpy(), rtol=0.3)


def test_cross_spectrum_refuses_maps_of_different_shape_or_dtype():
  a = np.zeros((16, 16), np.float32)
  with pytest.raises(ValueError, match=r'kappa_a has map shape \(16, 16\) but '
                     r'kappa_b has map shape \(18, 18\)'):
    power_spectrum.measure_cross_spectrum(a, np.zeros((18, 18), np.float32),
                                          PIXEL_ARCMIN)
  with pytest.raises(ValueError, match='kappa_b has dtype float64 but kappa_a '
                     'has dtype float32; cast kappa_b to float32'):
    power_spectrum.measure_cross_spectrum(a, np.zeros((16, 16)), PIXEL_ARCMIN)
