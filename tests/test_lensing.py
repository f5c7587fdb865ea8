"""Known answers for the shear operator A and Kaiser-Squires."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import lognormal


def _gaussian_field(shape, seed, dtype=np.float32):
  rng = np.random.default_rng(seed)
  n = shape[-1]
  white = rng.standard_normal(shape)
  k = np.fft.fftfreq(n)
  kk = np.sqrt(k[:, None]**2 + k[None, :]**2)
  filt = np.where(kk > 0, kk, 1.0)**-1.0
  return np.real(np.fft.ifft2(np.fft.fft2(white) * filt)).astype(dtype)


def _remove_mean(x):
  return x - x.mean(axis=(-2, -1), keepdims=True)


@pytest.mark.parametrize('dtype,rtol,btol', [(np.float32, 1e-5, 1e-6),
                                              (np.float64, 1e-12, 1e-14)])
def test_noise_free_round_trip(dtype, rtol, btol):
  kappa = _gaussian_field([3, 64, 64], seed=0, dtype=dtype) * 0.02
  kappa_e, kappa_b = lensing.kaiser_squires(lensing.shear_from_convergence(kappa))
  assert kappa_e.dtype == dtype and kappa_e.shape == (3, 64, 64)
  expect = _remove_mean(kappa)
  rel = np.linalg.norm(kappa_e - expect) / np.linalg.norm(expect)
  assert rel < rtol
  assert np.abs(kappa_b).max() < btol


def test_round_trip_with_padding_matches_inside():
  # With zero padding A and KS are no longer exact inverses, but a compact
  # source far from the edges round-trips exactly up to the mean.
  n = 64
  y, x = np.mgrid[:n, :n]
  kappa = np.exp(-((x - 32.)**2 + (y - 32.)**2) / (2 * 3.**2)).astype(np.float64)
  e, b = lensing.kaiser_squires(lensing.shear_from_convergence(kappa, pad=2), pad=2)
  assert e.shape == (n, n)
  # The lost signal is the shear that leaves the box: small but not zero.
  assert np.abs(e.numpy() - kappa)[24:40, 24:40].max() < 0.02
  assert np.abs(b.numpy())[24:40, 24:40].max() < 0.02


def test_rotation_by_45_degrees_swaps_e_and_b():
  kappa = _gaussian_field([32, 32], seed=1) * 0.02
  shear = lensing.shear_from_convergence(kappa)
  # Rotating every ellipticity by 45 degrees multiplies γ1 + iγ2 by e^{-iπ/2}.
  rotated = tf.stack([shear[..., 1], -shear[..., 0]], axis=-1)
  e, b = lensing.kaiser_squires(rotated)
  np.testing.assert_allclose(b, -_remove_mean(kappa), atol=1e-7)
  np.testing.assert_allclose(e, 0.0, atol=1e-7)


def _gaussian_halo(n, pix, width, kappa0=0.1):
  """Analytic κ and shear of a circular Gaussian halo at the map centre."""
  c = (n - 1) / 2.0
  y, x = (np.mgrid[:n, :n] - c) * pix
  r2 = x**2 + y**2
  kappa = kappa0 * np.exp(-r2 / (2 * width**2))
  with np.errstate(invalid='ignore', divide='ignore'):
    mean_inside = np.where(r2 > 0, kappa0 * 2 * width**2 / r2 *
                           (1 - np.exp(-r2 / (2 * width**2))), kappa0)
  gamma_t = mean_inside - kappa
  phi = np.arctan2(y, x)
  shear = np.stack([-gamma_t * np.cos(2 * phi), -gamma_t * np.sin(2 * phi)], -1)
  return kappa, shear


def test_kaiser_squires_of_analytic_gaussian_halo():
  n = 128
  kappa, shear = _gaussian_halo(n, pix=1.0, width=4.0)
  e, b = lensing.kaiser_squires(shear.astype(np.float64), pad=2)
  inner = slice(32, 96)
  # The analytic shear beyond the box is missing (it falls as 1/r²): compare
  # after removing the mean of the inner region, to 1% of the peak.
  err = (e.numpy() - kappa)[inner, inner]
  err -= err.mean()
  assert np.abs(err).max() < 0.01 * kappa.max()
  assert np.abs(b.numpy()[inner, inner]).max() < 0.01 * kappa.max()


def test_forward_operator_on_analytic_gaussian_halo():
  n = 128
  kappa, shear = _gaussian_halo(n, pix=1.0, width=4.0)
  g = lensing.shear_from_convergence(kappa, pad=4).numpy()
  inner = slice(40, 88)
  np.testing.assert_allclose(g[inner, inner], shear[inner, inner], atol=2e-3 * 0.1)


def test_kaiser_squires_is_adjoint_of_shear_operator():
  kappa = _gaussian_field([32, 32], seed=2).astype(np.float64)
  shear = np.random.default_rng(3).standard_normal([32, 32, 2])
  lhs = np.sum(lensing.shear_from_convergence(kappa).numpy() * shear)
  rhs = np.sum(kappa * lensing.kaiser_squires(shear)[0].numpy())
  np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


def test_works_in_tf_function_and_xla():
  kappa = _gaussian_field([2, 32, 32], seed=4)

  @tf.function(jit_compile=True)
  def round_trip(k):
    return lensing.kaiser_squires(lensing.shear_from_convergence(k, pad=2),
                                  pad=2, smoothing_arcmin=1.0,
                                  pixel_scale_arcmin=0.5)

  e_xla, _ = round_trip(tf.constant(kappa))
  e_eager, _ = lensing.kaiser_squires(lensing.shear_from_convergence(kappa, pad=2),
                                      pad=2, smoothing_arcmin=1.0,
                                      pixel_scale_arcmin=0.5)
  np.testing.assert_allclose(e_xla, e_eager, atol=1e-6)


def test_smoothing_preserves_mean_and_matches_gaussian_kernel():
  n, pix, s = 64, 0.5, 2.0
  delta = np.zeros([n, n])
  delta[0, 0] = 1.0
  out = lensing.gaussian_smooth(delta, smoothing_arcmin=s, pixel_scale_arcmin=pix).numpy()
  np.testing.assert_allclose(out.sum(), 1.0, rtol=1e-10)
  # Periodic distance to the origin, in arcmin.
  d = np.minimum(np.arange(n), n - np.arange(n)) * pix
  r2 = d[:, None]**2 + d[None, :]**2
  expect = np.exp(-r2 / (2 * s**2)) * pix**2 / (2 * np.pi * s**2)
  np.testing.assert_allclose(out, expect, atol=1e-6)


def test_multipoles_units():
  ell = lensing.multipoles(4, pixel_scale_arcmin=60.0, dtype=tf.float64).numpy()
  # Fundamental mode of a 4-degree box: 2π / (4° in rad) = 90.
  np.testing.assert_allclose(ell[0, 1], 90.0, rtol=1e-12)
  np.testing.assert_allclose(ell[2, 0], 180.0, rtol=1e-12)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='square'):
    lensing.shear_from_convergence(np.zeros([8, 16], np.float32))
  with pytest.raises(ValueError, match='2 channels'):
    lensing.kaiser_squires(np.zeros([8, 8, 3], np.float32))
  with pytest.raises(ValueError, match='float32 or float64'):
    lensing.shear_from_convergence(np.zeros([8, 8], np.int32))
  with pytest.raises(ValueError, match='pixel_scale_arcmin'):
    lensing.kaiser_squires(np.zeros([8, 8, 2], np.float32), smoothing_arcmin=1.0,
                           pixel_scale_arcmin=-0.3)
  with pytest.raises(ValueError, match='pixel_scale_arcmin'):
    lensing.multipoles(8, 0.0)
  with pytest.raises(ValueError, match='pad'):
    lensing.shear_from_convergence(np.zeros([8, 8], np.float32), pad=0)


def _shear_dropping_the_nyquist_odd_part(kappa):
  """γ_i = Re F⁻¹[D_i F κ] per component (numpy, float64), as in lenspack."""
  n = kappa.shape[-1]
  freq = 2. * np.pi * np.fft.fftfreq(n)
  k2, k1 = np.meshgrid(freq, freq, indexing='ij')
  ksq = k1**2 + k2**2
  safe = np.where(ksq > 0, ksq, 1.)
  spectrum = np.fft.fft2(kappa)
  return np.stack([
      np.fft.ifft2(np.where(ksq > 0, (k1**2 - k2**2) / safe, 0.) * spectrum).real,
      np.fft.ifft2(np.where(ksq > 0, 2. * k1 * k2 / safe, 0.) * spectrum).real,
  ], axis=-1)


def _without_nyquist_lines(x):
  """x ``[N, N]`` with its Fourier modes on k1 = −π and k2 = −π removed."""
  n = x.shape[-1]
  spectrum = np.fft.fft2(x)
  spectrum[n // 2, :] = 0.
  spectrum[:, n // 2] = 0.
  return np.fft.ifft2(spectrum).real


def test_nyquist_convention_puts_the_odd_part_in_gamma1():
  # The first held-out lognormal_128 map (0.8 arcmin, test seed 4608).
  field = lognormal.LognormalField(cosmology.COSMOS_SHIFT, 128, 0.8,
                                   dtype=tf.float64)
  kappa = field.maps_from_seeds([4608])[0].astype(np.float64)
  shear = lensing.shear_from_convergence(kappa).numpy()
  dropped = _shear_dropping_the_nyquist_odd_part(kappa)
  difference = shear - dropped
  # γ2 is the same; γ1 differs by 3.2e-3 (3 % of the largest shear) ...
  assert np.abs(difference[..., 1]).max() < 1e-16
  assert 3.1e-3 < np.abs(difference[..., 0]).max() < 3.3e-3
  assert np.abs(difference[..., 0]).max() > 0.02 * np.abs(shear).max()
  # ... only through the Nyquist lines: off them it is float64 rounding.
  assert np.abs(_without_nyquist_lines(difference[..., 0])).max() < 1e-16
  # The odd part is -Im F⁻¹[D2 F κ], which KS needs for A's exact inverse.
  kappa_e, _ = lensing.kaiser_squires(shear)
  np.testing.assert_allclose(kappa_e, kappa - kappa.mean(), atol=1e-15)
  kappa_dropped, _ = lensing.kaiser_squires(dropped)
  assert np.abs(kappa_dropped - (kappa - kappa.mean())).max() > 1e-3


@pytest.mark.parametrize('n', [7, 8])
def test_rfft_multiplicity_is_parseval_on_the_half_plane(n):
  x = np.random.default_rng(n).standard_normal((n, n))
  half = np.abs(np.fft.rfft2(x))**2
  np.testing.assert_allclose(
      np.sum(lensing.rfft_multiplicity(n) * half), n * n * np.sum(x**2),
      rtol=1e-12)
