"""Tests of tfp_massmap.curved_sky: spin-2 harmonics, signs, Kaiser-Squires."""

import healpy as hp
import numpy as np
import pytest

from tfp_massmap import catalog
from tfp_massmap import curved_sky
from tfp_massmap import lensing
from tfp_massmap import sky


def _band_limited_kappa(nside, lmax, seed):
  """A Gaussian random κ HEALPix map with a flat spectrum up to lmax."""
  rng = np.random.default_rng(seed)
  cl = np.full(lmax + 1, 1e-6)
  cl[:2] = 0.0
  ell, m = hp.Alm.getlm(lmax)
  z = rng.standard_normal((2, ell.size))
  alm = np.sqrt(cl[ell]) * np.where(m == 0, z[0], (z[0] + 1j * z[1]) / np.sqrt(2))
  return hp.alm2map(alm, nside, lmax=lmax)


def _blob(nside, ra0, dec0, sigma_arcmin, amplitude=0.05):
  """A Gaussian κ profile of width sigma about (ra0, dec0), 0 beyond 6 σ."""
  kappa = np.zeros(hp.nside2npix(nside))
  centre = hp.ang2vec(ra0, dec0, lonlat=True)
  sigma = np.deg2rad(sigma_arcmin / 60)
  pix = hp.query_disc(nside, centre, 6 * sigma)
  theta = np.arccos(np.clip(np.stack(hp.pix2vec(nside, pix), -1) @ centre, -1, 1))
  kappa[pix] = amplitude * np.exp(-0.5 * (theta / sigma)**2)
  return kappa


@pytest.mark.parametrize('ra0, dec0', [(40.0, 0.0), (200.0, 75.0)])
def test_shear_agrees_with_flat_sky_on_a_tangent_tile(ra0, dec0):
  # A 1.5 deg blob: its curved-sky shear, given to galaxies at the HEALPix
  # pixel centres and binned into a TAN tile by catalog.bin_shear_catalog
  # (local frame -> grid frame), matches the flat-sky shear of the blob
  # sampled on the same tile. A wrong sign of either component would give
  # a slope of -1 (or a rotated field at Dec 75).
  nside, npix, pix_arcmin = 512, 48, 13.7
  kappa = _blob(nside, ra0, dec0, 90.0)
  g1, g2 = curved_sky.shear_from_convergence_healpix(kappa, lmax=1024)
  centre = hp.ang2vec(ra0, dec0, lonlat=True)
  pix = hp.query_disc(nside, centre, np.deg2rad(npix * pix_arcmin / 60 * 0.8))
  ra, dec = hp.pix2ang(nside, pix, lonlat=True)
  cat = catalog.Catalog(ra, dec, g1[pix], g2[pix], np.ones(pix.size))
  binned = catalog.bin_shear_catalog(cat, npix, pix_arcmin, center=(ra0, dec0),
                                     sigma_e=0.3)
  rows, cols = np.mgrid[0:npix, 0:npix]
  c = (npix - 1) / 2
  tile_ra, tile_dec = sky.inverse_gnomonic((cols - c) * pix_arcmin / 60,
                                           (rows - c) * pix_arcmin / 60,
                                           (ra0, dec0))
  kappa_tile = hp.get_interp_val(kappa, tile_ra, tile_dec, lonlat=True)
  flat = lensing.shear_from_convergence(kappa_tile, pad=4).numpy()
  seen = binned.mask > 0
  for comp in range(2):
    curved, expected = binned.shear[..., comp][seen], flat[..., comp][seen]
    slope = np.polyfit(expected, curved, 1)[0]
    assert slope == pytest.approx(1.0, abs=0.02), comp
    assert np.std(curved - expected) < 0.03 * np.std(expected), comp


def test_kaiser_squires_inverts_the_shear_operator():
  nside, lmax = 64, 128
  kappa = _band_limited_kappa(nside, lmax, seed=1)
  g1, g2 = curved_sky.shear_from_convergence_healpix(kappa, lmax=lmax)
  kappa_e, kappa_b = curved_sky.kaiser_squires_healpix(g1, g2, lmax=lmax)
  # The field has no monopole or dipole (cl[:2] = 0 above).
  assert np.max(np.abs(kappa_e - kappa)) < 2e-3 * np.max(np.abs(kappa))
  assert np.std(kappa_b) < 1e-3 * np.std(kappa)


def test_rotated_shear_is_a_pure_b_mode():
  # i * gamma (each shape turned by 45 deg): kappa_B = kappa, kappa_E = 0, as
  # in lensing.kaiser_squires.
  nside, lmax = 64, 128
  kappa = _band_limited_kappa(nside, lmax, seed=2)
  g1, g2 = curved_sky.shear_from_convergence_healpix(kappa, lmax=lmax)
  kappa_e, kappa_b = curved_sky.kaiser_squires_healpix(-g2, g1, lmax=lmax)
  assert np.max(np.abs(kappa_b - kappa)) < 2e-3 * np.max(np.abs(kappa))
  assert np.std(kappa_e) < 1e-3 * np.std(kappa)


def test_flat_sky_b_mode_convention_is_the_same():
  n = 32
  kappa = np.random.default_rng(3).standard_normal((n, n))
  kappa -= kappa.mean()
  g = lensing.shear_from_convergence(kappa).numpy()
  rotated = np.stack([-g[..., 1], g[..., 0]], -1)
  kappa_e, kappa_b = lensing.kaiser_squires(rotated)
  np.testing.assert_allclose(kappa_b.numpy(), kappa, atol=1e-10)
  np.testing.assert_allclose(kappa_e.numpy(), 0.0, atol=1e-10)


def test_mask_ignores_values_outside_and_smoothing_is_a_gaussian_beam():
  nside, lmax = 64, 128
  kappa = _band_limited_kappa(nside, lmax, seed=4)
  g1, g2 = curved_sky.shear_from_convergence_healpix(kappa, lmax=lmax)
  mask = np.zeros(g1.size)
  mask[: g1.size // 2] = 1  # Northern hemisphere.
  bad1, bad2 = g1.copy(), g2.copy()
  bad1[mask == 0] = np.nan
  bad2[mask == 0] = hp.UNSEEN
  zeroed = curved_sky.kaiser_squires_healpix(np.where(mask == 1, g1, 0),
                                             np.where(mask == 1, g2, 0), lmax=lmax)
  masked = curved_sky.kaiser_squires_healpix(bad1, bad2, mask=mask, lmax=lmax)
  np.testing.assert_allclose(masked[0], zeroed[0], atol=1e-12)
  np.testing.assert_allclose(masked[1], zeroed[1], atol=1e-12)

  sigma_arcmin = 120.0
  smooth_e, _ = curved_sky.kaiser_squires_healpix(g1, g2, lmax=lmax,
                                                  smoothing_arcmin=sigma_arcmin)
  expected = hp.smoothing(kappa, sigma=np.deg2rad(sigma_arcmin / 60), lmax=lmax,
                          iter=3, use_pixel_weights=False)
  assert np.max(np.abs(smooth_e - expected)) < 2e-3 * np.max(np.abs(expected))


def test_healpix_shear_maps_average_and_invert():
  # Two galaxies at every pixel centre whose weighted mean is the shear of a
  # known field: the binned maps are that shear and KS gives the field back.
  nside, lmax = 32, 64
  kappa = _band_limited_kappa(nside, lmax, seed=5)
  g1, g2 = curved_sky.shear_from_convergence_healpix(kappa, lmax=lmax)
  ra, dec = hp.pix2ang(nside, np.arange(g1.size), lonlat=True)
  d = 0.01 * np.cos(np.arange(g1.size))
  cat = catalog.Catalog(np.r_[ra, ra], np.r_[dec, dec],
                        np.r_[g1 + d, g1 - d / 3], np.r_[g2 - d, g2 + d / 3],
                        np.r_[np.ones(g1.size), np.full(g1.size, 3.0)])
  maps = curved_sky.healpix_shear_maps(cat, nside)
  np.testing.assert_allclose(maps.gamma1, g1, atol=1e-15)
  np.testing.assert_allclose(maps.gamma2, g2, atol=1e-15)
  np.testing.assert_array_equal(maps.counts, 2)
  np.testing.assert_array_equal(maps.mask, 1)
  kappa_e, _ = curved_sky.kaiser_squires_healpix(maps.gamma1, maps.gamma2,
                                                 mask=maps.mask, lmax=lmax)
  assert np.max(np.abs(kappa_e - kappa)) < 2e-3 * np.max(np.abs(kappa))
  # Half the sky: empty pixels are masked out.
  north = dec > 0
  half = curved_sky.healpix_shear_maps(
      catalog.Catalog(ra[north], dec[north], g1[north], g2[north],
                      np.ones(north.sum())), nside)
  np.testing.assert_array_equal(half.mask, north.astype(float))
  np.testing.assert_array_equal(half.gamma1[~north], 0.0)


def test_masked_kaiser_squires_recovers_the_field_inside_a_cap():
  nside, lmax = 64, 128
  kappa = _band_limited_kappa(nside, lmax, seed=6)
  g1, g2 = curved_sky.shear_from_convergence_healpix(kappa, lmax=lmax)
  centre = hp.ang2vec(60.0, 70.0, lonlat=True)
  mask = np.zeros(g1.size)
  mask[hp.query_disc(nside, centre, np.deg2rad(30.0))] = 1
  interior = hp.query_disc(nside, centre, np.deg2rad(20.0))
  kappa_e, kappa_b = curved_sky.kaiser_squires_healpix(g1, g2, mask=mask,
                                                       lmax=lmax)
  assert np.corrcoef(kappa_e[interior], kappa[interior])[0, 1] > 0.98
  # Leakage from the mask edge into B stays well below the E signal.
  assert np.std(kappa_b[interior]) < 0.1 * np.std(kappa[interior])


def test_spin2_factor():
  f = curved_sky.spin2_factor(4)
  np.testing.assert_allclose(f, [0, 0, 1 / np.sqrt(1.5), np.sqrt(10 / 12),
                                 np.sqrt(18 / 20)])


@pytest.mark.parametrize('call, message', [
    (lambda: curved_sky.shear_from_convergence_healpix(np.zeros(100)),
     '12 NSIDE'),
    (lambda: curved_sky.shear_from_convergence_healpix(
        np.r_[np.nan, np.zeros(47)]), 'kappa_map'),
    (lambda: curved_sky.shear_from_convergence_healpix(np.zeros(48), lmax=1),
     'lmax'),
    (lambda: curved_sky.kaiser_squires_healpix(np.zeros(48), np.zeros(192)),
     'same NSIDE'),
    (lambda: curved_sky.kaiser_squires_healpix(np.zeros(48), np.zeros(48),
                                               mask=np.full(48, 0.5)),
     'only 0 and 1'),
    (lambda: curved_sky.kaiser_squires_healpix(np.zeros(48), np.zeros(48),
                                               mask=np.ones(192)),
     'mask has NSIDE'),
    (lambda: curved_sky.kaiser_squires_healpix(np.r_[np.inf, np.zeros(47)],
                                               np.zeros(48)), 'gamma1'),
    (lambda: curved_sky.kaiser_squires_healpix(np.zeros(48), np.zeros(48),
                                               smoothing_arcmin=-1),
     'smoothing_arcmin'),
    (lambda: curved_sky.healpix_shear_maps(
        catalog.Catalog([0.0], [0.0], [0.0], [0.0], [1.0]), 3), 'power of 2'),
    (lambda: curved_sky.healpix_shear_maps(
        catalog.Catalog([0.0], [0.0], [0.0], [0.0], [0.0]), 4), 'weight'),
    (lambda: curved_sky.healpix_shear_maps(
        catalog.Catalog([0.0], [np.nan], [0.0], [0.0], [1.0]), 4), 'dec'),
    (lambda: curved_sky.healpix_shear_maps(
        catalog.Catalog([0.0, 1.0], [0.0], [0.0], [0.0], [1.0]), 4),
     'one length'),
])
def test_bad_inputs_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()
