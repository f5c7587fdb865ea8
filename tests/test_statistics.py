"""Tests of the summary statistics: known maps, analytic answers, posterior summaries."""

import math
import warnings

import astropy.wcs
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import power_spectrum
from tfp_massmap import statistics
from tfp_massmap.mcmc import results

PIX = 0.5  # Pixel side, arcmin.


def _gaussian_fields(num, n, smoothing_px, seed):
  """Periodic Gaussian fields with amplitude filter W = exp(−k² s²/2), W(0) = 0.

  Returns (fields [num, n, n], wavenumbers k1, k2 per pixel, W²/n², the
  variance of each orthonormal mode).
  """
  freq = 2. * np.pi * np.fft.fftfreq(n)
  k2, k1 = np.meshgrid(freq, freq, indexing='ij')
  window = np.exp(-0.5 * (k1**2 + k2**2) * smoothing_px**2)
  window[0, 0] = 0.
  white = np.random.default_rng(seed).normal(size=(num, n, n))
  fields = np.fft.ifft2(window * np.fft.fft2(white)).real
  return fields, k1, k2, window**2 / n**2


@pytest.fixture(scope='module')
def smooth_fields():
  """64 Gaussian fields of 128², smoothed over 5 pixels, and their moments."""
  fields, k1, k2, mode_var = _gaussian_fields(64, 128, 5., seed=11)
  ksq = k1**2 + k2**2
  return dict(
      fields=fields.astype(np.float32),
      sigma0=math.sqrt(mode_var.sum()),
      # Continuous derivatives (per arcmin).
      sigma1=math.sqrt((mode_var * ksq).sum()) / PIX,
      sigma2=math.sqrt((mode_var * ksq**2).sum()) / PIX**2,
      # What the central differences of the estimator see: ⟨|∇κ|²⟩ of the
      # differences, and twice −⟨κ ∂²_x κ⟩ (the σ1² of the V2 formula).
      sigma1_fd=math.sqrt((mode_var * (np.sin(k1)**2 + np.sin(k2)**2)).sum()) / PIX,
      sigma1_v2=math.sqrt((mode_var * 4. * (1. - np.cos(k1))).sum()) / PIX)


# ---------------------------------------------------------------------------
# Peaks.


def _peak_map():
  """A 9×9 map with peaks of known fate, and the expected peak mask."""
  kappa = np.zeros((9, 9), np.float32)
  kappa[2, 2] = 1.0   # A peak.
  kappa[2, 6] = 0.5   # A peak, lower.
  kappa[6, 2] = 0.8   # A peak, whose neighbour (7, 1) is off the mask below.
  kappa[0, 4] = 2.0   # On the border: never a peak.
  kappa[6, 6] = kappa[6, 7] = 0.9  # A plateau: not strictly higher.
  kappa[4, 4] = -0.2  # A dip: its neighbours are local maxima of nothing.
  expected = np.zeros((9, 9), bool)
  expected[2, 2] = expected[2, 6] = expected[6, 2] = True
  return kappa, expected


def test_find_peaks_finds_strict_interior_maxima():
  kappa, expected = _peak_map()
  np.testing.assert_array_equal(statistics.find_peaks(kappa).numpy(), expected)
  mask = np.ones((9, 9), np.float32)
  mask[7, 1] = 0.
  expected[6, 2] = False  # A neighbour off the mask.
  np.testing.assert_array_equal(
      statistics.find_peaks(kappa, mask=mask).numpy(), expected)
  above = statistics.find_peaks(kappa, threshold=0.5, mask=mask).numpy()
  assert np.argwhere(above).tolist() == [[2, 2]]  # 0.5 is not above 0.5.


def test_find_peaks_thresholds_the_snr_map():
  kappa, _ = _peak_map()
  noise = np.full((9, 9), 0.1, np.float32)
  noise[2, 2] = 0.5  # S/N 2 for the highest κ; (2, 6) has S/N 5.
  peaks = statistics.find_peaks(kappa, threshold=3., noise_std=noise).numpy()
  assert np.argwhere(peaks).tolist() == [[2, 6], [6, 2]]


def test_find_peaks_is_batched_with_a_broadcast_mask():
  fields = _gaussian_fields(6, 24, 1.5, seed=1)[0].reshape(2, 3, 24, 24)
  mask = np.ones((24, 24))
  mask[:, 10:13] = 0.
  batched = statistics.find_peaks(fields, 0.1, mask=mask).numpy()
  assert batched.shape == (2, 3, 24, 24)
  for i in range(2):
    for j in range(3):
      np.testing.assert_array_equal(
          batched[i, j], statistics.find_peaks(fields[i, j], 0.1, mask=mask))
  assert not batched[..., :, 9:14].any()  # Next to or on the masked strip.
  assert batched.any()


def test_peak_counts_histogram_with_a_closed_last_bin():
  kappa, _ = _peak_map()  # Peaks of height 1.0, 0.5 and 0.8.
  counts = statistics.peak_counts(kappa, [0.5, 0.8, 1.0]).numpy()
  np.testing.assert_array_equal(counts, [1., 2.])  # [0.5, 0.8), [0.8, 1.0].
  counts = statistics.peak_counts(kappa, [0.6, 0.9]).numpy()
  np.testing.assert_array_equal(counts, [1.])  # 0.5 and 1.0 are outside.
  batch = statistics.peak_counts(np.stack([kappa, 2. * kappa]),
                                 [0., 1.5, 3.]).numpy()
  np.testing.assert_array_equal(batch, [[3., 0.], [1., 2.]])


def test_peak_catalog_positions_heights_and_sky_coordinates():
  kappa, _ = _peak_map()
  wcs = astropy.wcs.WCS(naxis=2)
  wcs.wcs.ctype = ['RA---CAR', 'DEC--CAR']
  wcs.wcs.crval = [150., 0.]
  wcs.wcs.crpix = [1., 1.]  # FITS pixel 1 is numpy index 0.
  wcs.wcs.cdelt = [0.01, 0.02]
  noise = np.full((9, 9), 0.1, np.float32)
  noise[2, 2] = 0.5
  catalog = statistics.peak_catalog(kappa, noise_std=noise, wcs=wcs)
  # Highest S/N first: (row 2, col 6) S/N 5, (6, 2) S/N 8 ... sorted by S/N.
  np.testing.assert_array_equal(catalog['x'], [2, 6, 2])
  np.testing.assert_array_equal(catalog['y'], [6, 2, 2])
  np.testing.assert_allclose(catalog['snr'], [8., 5., 2.], rtol=1e-6)
  np.testing.assert_allclose(catalog['kappa'], [0.8, 0.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(catalog['ra_deg'], 150. + 0.01 * catalog['x'])
  np.testing.assert_allclose(catalog['dec_deg'], 0.02 * catalog['y'],
                             atol=1e-12)
  plain = statistics.peak_catalog(kappa)
  assert set(plain) == {'x', 'y', 'kappa'}
  np.testing.assert_allclose(plain['kappa'], [1.0, 0.8, 0.5], rtol=1e-6)


def test_peak_density_of_a_gaussian_field(smooth_fields):
  # Bond & Efstathiou: n_pk = σ2² / (8√3 π σ1²); peaks are looked for on
  # the (N − 2)² interior pixels.
  fields = smooth_fields['fields']
  counts = statistics.peak_counts(fields, [-1e3, 1e3]).numpy()[:, 0]
  density = counts / ((fields.shape[-1] - 2)**2 * PIX**2)
  expected = statistics.gaussian_peak_density(smooth_fields['sigma1'],
                                              smooth_fields['sigma2'])
  error = density.std() / math.sqrt(density.size)  # 1.3 % of expected.
  assert error < 0.015 * expected
  assert abs(density.mean() - expected) < 4. * error


# ---------------------------------------------------------------------------
# One-point statistics.


def test_one_point_pdf_counts_mask_pixels_per_unit_kappa():
  kappa = np.arange(16, dtype=np.float64).reshape(4, 4) / 10.  # 0 .. 1.5.
  mask = np.ones((4, 4))
  mask[0, :2] = 0.  # Drops 0.0 and 0.1.
  pdf = statistics.one_point_pdf(kappa, [0.2, 0.6, 1.0], mask).numpy()
  # 14 pixels on the mask: 0.2..0.5 in the first bin, 0.6..1.0 in the second
  # (closed), 1.1..1.5 in none.
  np.testing.assert_allclose(pdf, [4. / 14. / 0.4, 5. / 14. / 0.4])
  assert pdf.dtype == np.float64
  np.testing.assert_allclose((pdf * 0.4).sum(), 9. / 14.)


def test_moments_match_scipy_on_the_mask():
  rng = np.random.default_rng(3)
  kappa = rng.gamma(2., size=(3, 20, 20)).astype(np.float32)
  mask = rng.uniform(size=(20, 20)) > 0.3
  m = statistics.moments(kappa, mask)
  values = kappa[:, mask]
  np.testing.assert_allclose(m.mean, values.mean(axis=1), rtol=1e-5)
  np.testing.assert_allclose(m.variance, values.var(axis=1), rtol=1e-4)
  np.testing.assert_allclose(m.skewness, scipy.stats.skew(values, axis=1),
                             rtol=1e-4)
  np.testing.assert_allclose(m.excess_kurtosis,
                             scipy.stats.kurtosis(values, axis=1), rtol=1e-4)


# ---------------------------------------------------------------------------
# Minkowski functionals.


def test_minkowski_functionals_of_one_disc():
  # κ = exp(−r²/2s²): {κ ≥ t} is a disc of radius r_t = s √(−2 ln t), so
  # V0 = π r_t² / A, V1 = 2π r_t / (4A), V2 = 1 / A (one component). The
  # top hat δ must span a few pixels in radius (here 0.2 in κ is 3 to 5
  # pixels): the pixel estimate counts the pixels in a ring, and rings a
  # pixel wide hold a count that jumps with the lattice by ~10 %.
  n, s_px, width = 128, 16., 0.2
  rows = np.arange(n) - 63.8
  kappa = np.exp(-0.5 * (rows[:, None]**2 + rows[None, :]**2) / s_px**2)
  thresholds = np.array([0.2, 0.4, 0.6])
  mf = statistics.minkowski_functionals(kappa, thresholds, PIX,
                                        bin_width=width)
  area = (n - 2)**2 * PIX**2

  def radius(t):
    return s_px * PIX * np.sqrt(-2. * np.log(t))

  # V0 is the fraction of the interior pixels in the set, exactly.
  np.testing.assert_allclose(
      mf.v0.numpy(), [np.mean(kappa[1:-1, 1:-1] >= t) for t in thresholds],
      rtol=1e-12)
  np.testing.assert_allclose(mf.v0.numpy(), np.pi * radius(thresholds)**2 /
                             area, rtol=0.01)
  within = thresholds[:, None] + width * np.linspace(-0.5, 0.5, 101)
  np.testing.assert_allclose(
      mf.v1.numpy(), 2. * np.pi * radius(within).mean(axis=1) / (4. * area),
      rtol=0.02)
  np.testing.assert_allclose(mf.v2.numpy(), 1. / area, rtol=0.02)
  # A hole (the negative map): {−κ ≥ −t} is the map minus a disc, whose
  # contour turns the other way: V2 = −1/A. (The map's edge, which would add
  # the +1 of the whole square, is no contour: edges are not counted.)
  holes = statistics.minkowski_functionals(-kappa, -thresholds[::-1], PIX,
                                           bin_width=width)
  np.testing.assert_allclose(holes.v2.numpy(), -1. / area, rtol=0.02)
  np.testing.assert_allclose(holes.v1.numpy(), mf.v1.numpy()[::-1],
                             rtol=1e-12)


def test_minkowski_functionals_of_gaussian_fields(smooth_fields):
  fields, s0 = smooth_fields['fields'], smooth_fields['sigma0']
  thresholds = np.linspace(-3., 3., 13) * s0
  width = thresholds[1] - thresholds[0]
  mf = statistics.minkowski_functionals(fields, thresholds, PIX)
  # The expectation of the estimator: the analytic functionals averaged
  # over the top-hat δ of width `width`, with the moments of the central
  # differences the estimator uses (then exact for a Gaussian field).
  within = thresholds[:, None] + width * np.linspace(-0.5, 0.5, 201)
  v1_expected = statistics.gaussian_minkowski_functionals(
      within, s0, smooth_fields['sigma1_fd']).v1.mean(axis=1)
  v2_expected = statistics.gaussian_minkowski_functionals(
      within, s0, smooth_fields['sigma1_v2']).v2.mean(axis=1)
  v0_expected = statistics.gaussian_minkowski_functionals(
      thresholds, s0, smooth_fields['sigma1']).v0
  for measured, expected in ((mf.v0, v0_expected), (mf.v1, v1_expected),
                             (mf.v2, v2_expected)):
    measured = measured.numpy()
    error = measured.std(axis=0) / math.sqrt(len(measured))
    np.testing.assert_array_less(np.abs(measured.mean(axis=0) - expected),
                                 4. * error + 1e-12)
  # Smoothed over 5 pixels, the finite differences are within 1 % of the
  # continuous σ1 (the docstring's "about 1 %").
  for key in ('sigma1_fd', 'sigma1_v2'):
    assert abs(smooth_fields[key] / smooth_fields['sigma1'] - 1.) < 0.011


def test_gaussian_minkowski_functionals_formulas():
  # V0 is the Gaussian tail; V1 integrates to ∫ p(t) E|∇κ| dt / 4 =
  # σ1 √π / 8; V2 is odd in ν with its extremes at ν = ±1.
  s0, s1 = 0.02, 0.005
  t = np.linspace(-8., 8., 4001) * s0
  mf = statistics.gaussian_minkowski_functionals(t, s0, s1)
  np.testing.assert_allclose(mf.v0, scipy.stats.norm.sf(t / s0), atol=1e-12)
  np.testing.assert_allclose(np.trapezoid(mf.v1, t), s1 * math.sqrt(math.pi) / 8.,
                             rtol=1e-6)
  np.testing.assert_allclose(mf.v2, -mf.v2[::-1], atol=1e-15)
  assert abs(t[np.argmax(mf.v2)] / s0 - 1.) < 1e-2


# ---------------------------------------------------------------------------
# Aperture mass.


def _sis(n, centre, einstein_px):
  """Pixel-averaged SIS convergence κ = θ_E/(2θ) and its shear (pixel units).

  The convergence is the exact mean of 1/(2r) over each pixel (the
  antiderivative x ln(y + r) + y ln(x + r) of 1/r); the shear is sampled at
  the pixel centres (0 at the centre), γ1 + iγ2 = −γ_t e^{2iφ}.
  """
  d = np.arange(n, dtype=np.float64) - centre
  dy, dx = np.meshgrid(d, d, indexing='ij')

  def primitive(x, y):
    r = np.hypot(x, y)
    with np.errstate(divide='ignore', invalid='ignore'):
      return (np.where(x != 0., x * np.log(y + r), 0.) +
              np.where(y != 0., y * np.log(x + r), 0.))

  mean_inv_r = (primitive(dx + .5, dy + .5) - primitive(dx - .5, dy + .5) -
                primitive(dx + .5, dy - .5) + primitive(dx - .5, dy - .5))
  kappa = 0.5 * einstein_px * mean_inv_r
  r2 = dx**2 + dy**2
  safe = np.where(r2 > 0, r2, 1.)
  tangential = np.where(r2 > 0, 0.5 * einstein_px / np.sqrt(safe), 0.)
  shear = np.stack([-tangential * (dx**2 - dy**2) / safe,
                    -tangential * 2. * dx * dy / safe], axis=-1)
  return kappa, shear


@pytest.mark.parametrize('filter_name, expected_times_r', [
    ('polynomial', 0.8),                           # 4 θ_E / (5R)
    ('exponential', math.sqrt(2. * math.pi) / 8.),  # θ_E √(2π) / (8R)
])
def test_aperture_mass_of_a_singular_isothermal_sphere(filter_name,
                                                       expected_times_r):
  einstein_arcmin, scale_arcmin = 0.2, 4.  # R = 8 pixels.
  kappa, shear = _sis(96, 48, einstein_arcmin / PIX)
  expected = expected_times_r * einstein_arcmin / scale_arcmin
  for periodic in (False, True):
    from_kappa = statistics.aperture_mass_map(kappa, scale_arcmin, PIX,
                                              filter_name, periodic=periodic)
    from_shear = statistics.aperture_mass_from_shear(
        shear, scale_arcmin, PIX, filter_name, periodic=periodic)
    np.testing.assert_allclose(from_kappa.numpy()[48, 48], expected, rtol=0.01)
    np.testing.assert_allclose(from_shear.numpy()[48, 48], expected, rtol=0.01)
  # The map peaks at the halo.
  assert np.unravel_index(np.argmax(from_kappa), (96, 96)) == (48, 48)


# R = 8 pixels for the polynomial filter (the docstring's 1 %), 6 for the
# exponential one (cut at 5R, which must fit in half the periodic map).
@pytest.mark.parametrize('filter_name, scale_px, rtol', [
    ('polynomial', 8, 0.015), ('exponential', 6, 1e-4)])
def test_aperture_mass_from_shear_equals_the_convergence_version(
    filter_name, scale_px, rtol):
  fields = _gaussian_fields(3, 64, 2., seed=5)[0]
  shear = lensing.shear_from_convergence(fields)
  from_kappa = statistics.aperture_mass_map(
      fields, scale_px * PIX, PIX, filter_name, periodic=True).numpy()
  from_shear = statistics.aperture_mass_from_shear(
      shear, scale_px * PIX, PIX, filter_name, periodic=True).numpy()
  rms = np.sqrt(np.mean(from_kappa**2))
  assert np.sqrt(np.mean((from_shear - from_kappa)**2)) < rtol * rms


def test_aperture_mass_ignores_a_mass_sheet_and_wraps_only_when_periodic():
  kappa = _gaussian_fields(1, 48, 2., seed=6)[0][0]
  plain = statistics.aperture_mass_map(kappa, 3., PIX).numpy()
  sheet = statistics.aperture_mass_map(kappa + 0.3, 3., PIX).numpy()
  np.testing.assert_allclose(sheet, plain, atol=1e-12)
  periodic = statistics.aperture_mass_map(kappa, 3., PIX, periodic=True).numpy()
  # R = 6 pixels: pixels >= 6 from every edge see no wrapped pixel.
  np.testing.assert_allclose(periodic[6:-6, 6:-6], plain[6:-6, 6:-6],
                             atol=1e-12)
  assert np.abs(periodic[:3] - plain[:3]).max() > 1e-3 * np.abs(plain).max()


def test_aperture_mass_noise_std_is_the_analytic_and_monte_carlo_std():
  n, sigma, scale = 48, 0.3, 4.  # R = 8 pixels.
  noise = np.full((n, n), sigma)
  std = statistics.aperture_mass_noise_std(noise, scale, PIX).numpy()
  # ∫ Q² d²θ = 6/(5πR²) for the polynomial filter.
  analytic = sigma * PIX * math.sqrt(6. / (5. * math.pi)) / scale
  np.testing.assert_allclose(std[16:-16, 16:-16], analytic, rtol=0.01)
  per_component = statistics.aperture_mass_noise_std(
      np.stack([noise, noise], axis=-1), scale, PIX).numpy()
  np.testing.assert_allclose(per_component, std, rtol=1e-10)
  draws = np.random.default_rng(7).normal(scale=sigma, size=(200, n, n, 2))
  m_ap = statistics.aperture_mass_from_shear(draws, scale, PIX).numpy()
  np.testing.assert_allclose(m_ap[:, 16:-16, 16:-16].std(), analytic,
                             rtol=0.03)
  # Pixels off the mask add no noise: only γ2 noise on... a masked half.
  mask = np.ones((n, n))
  mask[:, :24] = 0.
  masked = statistics.aperture_mass_noise_std(noise, scale, PIX,
                                              mask=mask).numpy()
  np.testing.assert_allclose(masked[:, 40:], std[:, 40:], rtol=1e-10)
  assert np.all(masked[:, 8] < 1e-6 * analytic + 1e-18)


def test_aperture_mass_agrees_with_lenspack():
  lenspack_filters = pytest.importorskip('lenspack.image.filters')
  kappa = _gaussian_fields(1, 64, 1.5, seed=8)[0][0]
  kappa -= kappa.mean()  # Ours removes the mean; lenspack does not.
  ours = statistics.aperture_mass_map(kappa, 6 * PIX, PIX).numpy()
  theirs = lenspack_filters.aperture_mass(kappa, 6., filter='s98')
  # lenspack's s98 carries the normalisation √276/24 of Giocoli et al. 2015.
  np.testing.assert_allclose(ours * math.sqrt(276.) / 24., theirs,
                             atol=1e-12 * np.abs(theirs).max() + 1e-15)
  ours = statistics.aperture_mass_map(kappa, 4 * PIX, PIX, 'exponential')
  theirs = lenspack_filters.aperture_mass(kappa, 4., filter='jbj04')
  # Theirs is cut at a square of half-side 4R, ours at a disc of 5R.
  np.testing.assert_allclose(ours.numpy(), theirs,
                             atol=1e-3 * np.abs(theirs).max())


# ---------------------------------------------------------------------------
# Power spectrum on a mask.


def test_masked_power_spectrum_is_unbiased_for_a_flat_spectrum():
  n = 64
  white = np.random.default_rng(9).normal(scale=0.1, size=(16, n, n))
  mask = np.ones((n, n))
  mask[:20, :30] = 0.
  edges = power_spectrum.default_ell_edges(n, PIX, n_bins=6)
  _, power = statistics.masked_power_spectrum(white, PIX, mask,
                                              ell_edges=edges)
  flat = 0.01 * (PIX * lensing.ARCMIN_TO_RAD)**2  # σ² Δ², sr.
  # The upper bins average ~10³ modes of 16 maps.
  np.testing.assert_allclose(power.numpy().mean(axis=0)[2:], flat, rtol=0.05)
  _, unmasked = statistics.masked_power_spectrum(white, PIX, ell_edges=edges)
  _, reference = power_spectrum.measure_power_spectrum(white, PIX, edges)
  np.testing.assert_array_equal(unmasked.numpy(), reference.numpy())
  _, cross = statistics.masked_power_spectrum(white, PIX, mask,
                                              kappa_b=white, ell_edges=edges)
  np.testing.assert_allclose(cross.numpy(), power.numpy(), rtol=1e-6)


# ---------------------------------------------------------------------------
# Posterior summaries.


def test_band_is_the_mean_and_credible_interval_along_an_axis():
  values = np.random.default_rng(10).normal(size=(4, 50, 3))
  values[2, :, 1] = np.nan
  b = statistics.band(values, level=0.68, axis=1)
  expected = results.credible_interval(np.moveaxis(values, 1, 0), 0.68).numpy()
  assert b.lower.shape == (4, 3)
  np.testing.assert_allclose(b.mean.numpy(), values.mean(axis=1))
  finite = np.ones((4, 3), bool)
  finite[2, 1] = False
  np.testing.assert_allclose(b.lower.numpy()[finite], expected[0][finite])
  np.testing.assert_allclose(b.upper.numpy()[finite], expected[1][finite])
  assert np.isnan(b.lower.numpy()[2, 1]) and np.isnan(b.upper.numpy()[2, 1])


def test_interval_coverage_per_bin():
  truth = np.array([[0., 1., 2.], [0., 5., np.nan], [0., 1., 2.]])
  lower = np.array([-1., 0., 3.])
  upper = np.array([1., 2., 4.])
  np.testing.assert_allclose(statistics.interval_coverage(truth, lower, upper),
                             [1., 2. / 3., 0.])
  assert np.isnan(statistics.interval_coverage([np.nan], [0.], [1.])[0])


def test_posterior_peak_catalog_of_known_samples():
  # One bump (height 1, width 1.5 px) near (20, 20) in 8 of 10 samples,
  # shifted by known offsets; the two others are flat. Radius 2 arcmin = 4 px.
  n = 40
  rows = np.arange(n)
  offsets = [(0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (1, 1), (0, 0), (0, 0)]
  samples = np.zeros((10, n, n), np.float32)
  heights = np.array([1.0, 0.9, 1.1, 1.2, 0.8, 1.0, 0.95, 1.05])
  for s, ((dy, dx), h) in enumerate(zip(offsets, heights)):
    samples[s] = h * np.exp(-0.5 * ((rows[:, None] - 20 - dy)**2 +
                                    (rows[None, :] - 20 - dx)**2) / 1.5**2)
  catalog = statistics.posterior_peak_catalog(samples, 0.3, 2., PIX)
  assert catalog['x'].tolist() == [20] and catalog['y'].tolist() == [20]
  np.testing.assert_allclose(catalog['probability'], [0.8])
  positions = np.array(offsets, np.float64) * PIX
  spread = positions - positions.mean(axis=0)
  np.testing.assert_allclose(catalog['position_scatter_arcmin'],
                             [np.sqrt((spread**2).sum(axis=1).mean())])
  # Heights: each sample's maximum within the disc (0 for the flat ones).
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    expected = results.credible_interval(
        np.concatenate([heights, [0., 0.]])[:, None], 0.68).numpy()[:, 0]
  np.testing.assert_allclose(catalog['height_lower'], [expected[0]], rtol=1e-6)
  np.testing.assert_allclose(catalog['height_upper'], [expected[1]], rtol=1e-6)
  # A threshold above the mean's peak leaves an empty catalogue.
  empty = statistics.posterior_peak_catalog(samples, 5., 2., PIX)
  assert all(len(v) == 0 for v in empty.values())
  assert 'height_lower' in empty
  # At given positions (e.g. clusters): the bump's, one 8 px away (outside
  # the 4-px radius: no peak), one off the map and one off the mask.
  mask = np.ones((n, n), np.float32)
  mask[30:, 30:] = 0
  at = statistics.peak_probability_at(samples, [21, 28, 45, 35], [20, 20, 0, 35],
                                      0.3, 2., PIX, mask=mask)
  np.testing.assert_allclose(at['probability'], [0.8, 0.0, 0.0, 0.0])
  assert np.isnan(at['height_lower'][2:]).all()
  assert np.isfinite(at['height_lower'][:2]).all()
  with pytest.raises(ValueError, match='x and y must be 1-D arrays of one shape'):
    statistics.peak_probability_at(samples, [1, 2], [1], 0.3, 2., PIX)


# ---------------------------------------------------------------------------
# Compilation and dtypes.


def test_statistics_inside_tf_function_match_eager():
  fields = _gaussian_fields(2, 32, 1.5, seed=12)[0].astype(np.float32)
  mask = np.ones((32, 32), np.float32)
  mask[:5] = 0.
  thresholds = np.linspace(-0.1, 0.1, 5)

  def compute(k):
    mf = statistics.minkowski_functionals(k, thresholds, PIX, mask=mask)
    return (tf.cast(statistics.find_peaks(k, 0., mask=mask), tf.float32),
            statistics.peak_counts(k, [-1., 0., 1.], mask=mask), mf.v0, mf.v1,
            mf.v2, statistics.aperture_mass_map(k, 2., PIX, mask=mask))

  compiled = tf.function(compute, input_signature=[
      tf.TensorSpec([None, 32, 32], tf.float32)])
  for eager, graph in zip(compute(tf.constant(fields)), compiled(fields)):
    np.testing.assert_allclose(graph.numpy(), eager.numpy(), rtol=1e-5,
                               atol=1e-7)


def test_float64_in_float64_out():
  kappa = _gaussian_fields(1, 16, 1., seed=13)[0]
  assert statistics.minkowski_functionals(kappa, [0.], PIX,
                                          bin_width=0.1).v1.dtype == tf.float64
  assert statistics.aperture_mass_map(kappa, 1., PIX).dtype == tf.float64
  assert statistics.moments(kappa).variance.dtype == tf.float64


# ---------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize('call, message', [
    (lambda k: statistics.minkowski_functionals(k, [0.1, 0.0], PIX),
     r'thresholds must be a 1-D array of >= 1 finite, strictly increasing'),
    (lambda k: statistics.minkowski_functionals(k, [0.1], PIX),
     r'bin_width is needed with a single threshold'),
    (lambda k: statistics.minkowski_functionals(k, [0.1, 0.2], 0.),
     r'pixel_scale_arcmin must be a positive number in arcmin, got 0.0'),
    (lambda k: statistics.peak_counts(k, [1., 1.]),
     r'bin_edges must be a 1-D array of >= 2 finite, strictly increasing'),
    (lambda k: statistics.one_point_pdf(k, [0.]),
     r'bin_edges must be a 1-D array of >= 2'),
    (lambda k: statistics.aperture_mass_map(k, -1., PIX),
     r'scale_arcmin must be a positive number in arcmin, got -1.0'),
    (lambda k: statistics.aperture_mass_map(k, 1., PIX, filter='tophat'),
     r"filter must be one of \['exponential', 'polynomial'\], got 'tophat'"),
    (lambda k: statistics.aperture_mass_map(k, 6., PIX, periodic=True),
     r'scale_arcmin = 6.0: the polynomial filter reaches 6 arcmin, more than '
     r'half the map side \(4 arcmin\)'),
    (lambda k: statistics.find_peaks(k, mask=np.ones((8, 8))),
     r'mask has map shape \(8, 8\) but kappa has map shape \(16, 16\)'),
    (lambda k: statistics.find_peaks(k, mask=np.full((16, 16), 0.5)),
     r'mask holds 256 value\(s\) other than 0 and 1'),
    (lambda k: statistics.find_peaks(k, mask=np.ones((3, 16, 16))),
     r'mask has leading axes \(3,\) and kappa has \(2,\); they must broadcast'),
    (lambda k: statistics.find_peaks(k, noise_std=np.zeros((16, 16),
                                                           np.float32)),
     r'noise_std holds 256 value\(s\) <= 0 or non-finite on the mask; the '
     r'first, 0.0, at index \(0, 0\)'),
    (lambda k: statistics.find_peaks(k, threshold=float('nan')),
     r'threshold must be a finite number or None, got nan'),
    (lambda k: statistics.find_peaks(k[..., :2, :2]),
     r'kappa must be at least 3×3 pixels'),
    (lambda k: statistics.moments(k, mask=np.zeros((16, 16))),
     r'mask leaves no pixel; expected at least one'),
    (lambda k: statistics.peak_catalog(k),
     r'peak_catalog takes one map \[N, N\], got shape \(2, 16, 16\)'),
    (lambda k: statistics.peak_catalog(k[0], wcs='deg'),
     r"wcs must be a 2-D celestial astropy.wcs.WCS, got 'deg'"),
    (lambda k: statistics.posterior_peak_catalog(k[:1], 0., 1., PIX),
     r'samples must be \[S, N, N\] with S >= 2 samples of one map, got '
     r'shape \(1, 16, 16\)'),
    (lambda k: statistics.posterior_peak_catalog(k, 0., 0., PIX),
     r'match_radius_arcmin must be a positive number in arcmin, got 0.0'),
    (lambda k: statistics.band(k, axis=3),
     r'axis 3 is out of range for values of shape \(2, 16, 16\)'),
    (lambda k: statistics.interval_coverage(k, np.zeros(3), np.zeros(3)),
     r'truth \(2, 16, 16\), lower \(3,\) and upper \(3,\) must broadcast'),
])
def test_bad_input_raises_naming_the_value(call, message):
  kappa = np.zeros((2, 16, 16), np.float32)
  with pytest.raises(ValueError, match=message):
    call(kappa)
