"""Tests of tfp_massmap.synthetic_survey: spherical lognormal field, catalogue."""

import json
import os
import subprocess
import sys

import healpy as hp
import numpy as np
import pytest
from scipy import stats

from tfp_massmap import catalog
from tfp_massmap import cosmology
from tfp_massmap import lognormal
from tfp_massmap import synthetic_survey as ss


def _binned_ratio(cl_map, cl_model, lo, hi, width):
  """Ratios of binned spectra and their Gaussian sampling errors (full sky)."""
  ratios, errors = [], []
  for start in range(lo, hi, width):
    ell = np.arange(start, start + width)
    ratios.append(cl_map[ell].sum() / cl_model[ell].sum())
    # Var of a band sum of C_l estimates: sum 2 C_l^2 / (2l + 1).
    errors.append(np.sqrt(np.sum(2 * cl_model[ell]**2 / (2 * ell + 1)))
                  / cl_model[ell].sum())
  return np.array(ratios), np.array(errors)


def test_gaussian_field_has_the_table_spectrum():
  field = ss.SphericalLognormalField(None, nside=128)
  ell, cl = cosmology.cosmos_convergence_cl()
  # The table interpolated in log-log at integer multipoles; none below 2.
  expected = np.exp(np.interp(np.log([100.0, 300.0]), np.log(ell), np.log(cl)))
  np.testing.assert_allclose(field.cl_target[[100, 300]], expected, rtol=1e-12)
  assert field.cl_target[0] == field.cl_target[1] == 0
  kappa = field.sample(seed=5)
  cl_map = hp.anafast(kappa, lmax=field.lmax)
  ratios, errors = _binned_ratio(cl_map, field.cl_target, 8, 248, 16)
  assert np.all(np.abs(ratios - 1) < 4 * errors), (ratios, errors)
  assert np.abs(np.mean((ratios - 1) / errors)) < 4 / np.sqrt(len(ratios))
  assert kappa.var() == pytest.approx(field.variance, rel=0.05)


def test_large_shift_is_the_gaussian_limit():
  # lambda -> infinity: the Legendre transforms C_l -> xi -> log -> C_g -> ...
  # must give back the target spectrum.
  field = ss.SphericalLognormalField(10.0, nside=64)
  np.testing.assert_allclose(field.cl[2:], field.cl_target[2:], rtol=1e-4)
  np.testing.assert_allclose(field.cl_latent[2:] * 100.0, field.cl_target[2:],
                             rtol=2e-3)
  assert field.skewness == pytest.approx(3 * np.sqrt(field.variance) / 10.0,
                                         rel=1e-3)


def test_lognormal_field_spectrum_and_skewness():
  nside = 256
  field = ss.SphericalLognormalField(cosmology.COSMOS_SHIFT, nside=nside)
  assert field.clipped_fraction < 1e-5
  np.testing.assert_allclose(field.cl[2:], field.cl_target[2:], rtol=1e-3)
  kappa = field.sample(seed=1)
  assert kappa.min() > -cosmology.COSMOS_SHIFT
  cl_map = hp.anafast(kappa, lmax=2 * nside)
  ratios, errors = _binned_ratio(cl_map, field.cl, 16, 496, 32)
  # A lognormal field's band powers scatter more than a Gaussian's.
  assert np.all(np.abs(ratios - 1) < 0.1), ratios
  assert abs(np.mean(ratios) - 1) < 0.02
  # One-point moments: the sample against the model, the model against the
  # flat-sky field with the same pixel area.
  assert kappa.var() == pytest.approx(field.variance, rel=0.03)
  assert stats.skew(kappa) == pytest.approx(field.skewness, rel=0.05)
  assert field.skewness > 0.5
  flat = lognormal.LognormalField(cosmology.COSMOS_SHIFT, 256,
                                  np.rad2deg(hp.nside2resol(nside)) * 60)
  assert field.skewness == pytest.approx(flat.skewness, rel=0.1)
  assert field.variance == pytest.approx(flat.variance, rel=0.15)


def test_same_seed_same_map():
  field = ss.SphericalLognormalField(cosmology.COSMOS_SHIFT, nside=32)
  np.testing.assert_array_equal(field.sample(3), field.sample(3))
  assert not np.array_equal(field.sample(3), field.sample(4))


def test_footprint_area_mask_and_positions():
  assert ss.footprint_area_deg2(ss.DEFAULT_FOOTPRINT) >= 100
  assert max(r.dec_deg + r.radius_deg for r in ss.DEFAULT_FOOTPRINT
             if isinstance(r, ss.Disc)) > 70
  # A 2 x 2 deg box at the equator: 4 deg^2 less the cos(dec) loss.
  box = ss.Box(30.0, 32.0, -1.0, 1.0)
  assert ss.footprint_area_deg2([box]) == pytest.approx(
      2 * np.rad2deg(2 * np.sin(np.deg2rad(1.0))), rel=1e-12)
  # A cap: 2 pi (1 - cos r) sr.
  disc = ss.Disc(120.0, 85.0, 2.0)
  area = ss.footprint_area_deg2([disc])
  assert area == pytest.approx(np.pi * 4.0, rel=1e-3)
  # The HEALPix mask holds the same area to within its boundary pixels.
  nside = 512
  for region, a in ((box, 4.0), (disc, area)):
    mask = ss.footprint_mask([region], nside)
    assert mask.sum() * hp.nside2pixarea(nside, degrees=True) == pytest.approx(
        a, rel=0.03)
  # Box across RA = 0.
  wrap = ss.Box(359.0, 1.0, 10.0, 11.0)
  ra, dec = ss.galaxy_positions([wrap], 5.0, seed=0)
  assert np.all((ra >= 359.0) | (ra <= 1.0))
  assert ra.min() < 0.5 and ra.max() > 359.5


@pytest.mark.parametrize('region', [ss.Box(30.0, 32.0, -1.0, 1.0),
                                    ss.Disc(120.0, 85.0, 1.2)])
def test_galaxy_density(region):
  density = 10.0
  ra, dec = ss.galaxy_positions([region], density, seed=2)
  expected = density * ss.footprint_area_deg2([region]) * 3600
  assert abs(ra.size - expected) < 5 * np.sqrt(expected)
  assert np.all(ss.in_footprint([region], ra, dec))
  # Uniform on the sphere: the two halves of the region (by Dec for the box,
  # by distance**2 from the centre for the cap) hold equal numbers.
  if isinstance(region, ss.Box):
    half = dec < 0
  else:
    cos_r = np.cos(np.deg2rad(region.radius_deg))
    centre = hp.ang2vec(region.ra_deg, region.dec_deg, lonlat=True)
    half = hp.ang2vec(ra, dec, lonlat=True) @ centre > (1 + cos_r) / 2
  assert abs(half.sum() - ra.size / 2) < 5 * np.sqrt(ra.size / 4)


def test_overlapping_regions_keep_the_density_uniform():
  a = ss.Box(30.0, 32.0, -1.0, 1.0)
  b = ss.Box(31.0, 33.0, -1.0, 1.0)
  ra, dec = ss.galaxy_positions([a, b], 10.0, seed=3)
  both = (ra >= 31.0) & (ra <= 32.0)
  only_a = ra < 31.0
  assert abs(both.sum() - only_a.sum()) < 5 * np.sqrt(only_a.sum())


def test_small_survey_ellipticities_carry_the_truth_shear():
  survey = ss.small_synthetic_survey(seed=0)
  cat = survey.catalog
  area = ss.footprint_area_deg2(ss.SMALL_FOOTPRINT)
  assert cat.ra.size == pytest.approx(20.0 * area * 3600, rel=0.01)
  assert np.all(np.hypot(cat.e1, cat.e2) < 1)
  assert np.all(cat.weight == 1)
  assert np.std(cat.e1) == pytest.approx(0.26, rel=0.02)
  assert survey.mask.sum() * hp.nside2pixarea(survey.nside, degrees=True) == (
      pytest.approx(area, rel=0.3))  # 13.7 arcmin pixels on a 2 deg box.


def test_mean_ellipticity_per_pixel_is_the_truth_shear():
  # A dense patch (100 galaxies per arcmin^2): per HEALPix pixel of 13.7
  # arcmin, the mean ellipticity scatters about the truth shear by the shape
  # noise alone, and not about zero.
  survey = ss.small_synthetic_survey(seed=0, density_arcmin2=100.0)
  cat = survey.catalog
  pix = hp.ang2pix(survey.nside, cat.ra, cat.dec, lonlat=True)
  used, index, counts = np.unique(pix, return_inverse=True, return_counts=True)
  full = counts > 0.8 * counts.max()  # Pixels not cut by the footprint edge.
  assert survey.mask[used[full]].min() == 1
  chi2_truth, chi2_zero, slopes = [], [], []
  for e, gamma in ((cat.e1, survey.gamma1), (cat.e2, survey.gamma2)):
    mean_e = (np.bincount(index, weights=e) / counts)[full]
    truth = gamma[used][full]
    sigma = 0.26 / np.sqrt(counts[full])
    chi2_truth.append(((mean_e - truth) / sigma)**2)
    chi2_zero.append((mean_e / sigma)**2)
    slopes.append(np.polyfit(truth, mean_e, 1)[0])
  assert np.mean(chi2_truth) == pytest.approx(1.0, abs=0.4)
  assert np.mean(chi2_zero) > 5
  np.testing.assert_allclose(slopes, 1.0, atol=0.1)


def test_noiseless_catalogue_is_the_pixel_shear():
  nside = 64
  g1 = np.linspace(-0.1, 0.1, hp.nside2npix(nside))
  g2 = -g1[::-1]
  ra, dec = ss.galaxy_positions([ss.Disc(10.0, 75.0, 5.0)], 0.01, seed=1)
  cat = ss.shear_catalog(ra, dec, g1, g2, 0.0, seed=1)
  pix = hp.ang2pix(nside, ra, dec, lonlat=True)
  np.testing.assert_array_equal(cat.e1, g1[pix])
  np.testing.assert_array_equal(cat.e2, g2[pix])


def test_make_synthetic_survey_script_writes_catalogue_and_truth(tmp_path):
  script = os.path.join(os.path.dirname(__file__), '..', 'benchmarks',
                        'make_synthetic_survey.py')
  out = tmp_path / 'survey'
  subprocess.run([sys.executable, script, '--small', '--nside=64', '--seed=7',
                  f'--output_dir={out}'], check=True, capture_output=True)
  expected = ss.make_synthetic_survey(nside=64, footprint=ss.SMALL_FOOTPRINT,
                                      seed=7)
  cat = catalog.read_catalog(out / 'catalog.parquet', weight_col='weight')
  for name in cat._fields:
    np.testing.assert_array_equal(getattr(cat, name),
                                  getattr(expected.catalog, name))
  for name in ('kappa', 'gamma1', 'gamma2', 'mask'):
    np.testing.assert_allclose(hp.read_map(out / f'{name}.fits'),
                               getattr(expected, name), rtol=1e-6, atol=1e-12)
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['n_galaxies'] == expected.catalog.ra.size
  assert summary['nside'] == 64
  assert summary['footprint'][0] == {'kind': 'Box', 'ra_min_deg': 30.0,
                                     'ra_max_deg': 32.0, 'dec_min_deg': -1.0,
                                     'dec_max_deg': 1.0}


@pytest.mark.parametrize('call, message', [
    (lambda: ss.SphericalLognormalField(0.035, nside=100), 'power of 2'),
    (lambda: ss.SphericalLognormalField(1e-4, nside=64), 'too small'),
    (lambda: ss.SphericalLognormalField(-1.0, nside=64), 'shift'),
    (lambda: ss.SphericalLognormalField(None, 64, ell=[10, 20]), 'together'),
    (lambda: ss.SphericalLognormalField(None, 64, ell=[20, 10], cl=[1, 1]),
     'increasing'),
    (lambda: ss.footprint_area_deg2([]), 'at least one'),
    (lambda: ss.footprint_area_deg2([ss.Box(0, 10, 5, -5)]), 'dec_min_deg'),
    (lambda: ss.footprint_area_deg2([ss.Disc(0, 95, 1)]), 'dec'),
    (lambda: ss.footprint_area_deg2([ss.Disc(0, 0, 100)]), 'radius_deg'),
    (lambda: ss.footprint_area_deg2([(0, 10, 0, 5)]), 'Box or Disc'),
    (lambda: ss.galaxy_positions(ss.SMALL_FOOTPRINT, 0.0, seed=0),
     'density_arcmin2'),
    (lambda: ss.shear_catalog([0.0], [0.0], np.zeros(12), np.zeros(12), 1.5, 0),
     'sigma_e'),
])
def test_bad_inputs_raise(call, message):
  with pytest.raises(ValueError, match=message):
    call()
