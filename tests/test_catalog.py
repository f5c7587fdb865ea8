"""Tests of tfp_massmap.catalog: catalogue reading, binning, FITS map I/O."""

import os

from astropy.io import fits
from astropy.wcs import WCS
import numpy as np
import pytest

from tfp_massmap import catalog
from tfp_massmap import sky

# A 3x3 'radec' grid of 0.1 deg bins centred on (40, -5) deg.
RA0, DEC0, NPIX, PIX_ARCMIN = 40.0, -5.0, 3, 6.0
STEP = PIX_ARCMIN / 60.0


def _bin_centre(row, col):
  return (RA0 + (col - (NPIX - 1) / 2) * STEP,
          DEC0 + (row - (NPIX - 1) / 2) * STEP)


def _synthetic():
  """Galaxies with known per-pixel answers, as columns of a table.

  Pixel (0, 0): weights 1, 3; e1 0.2, 0.6 -> 0.5; e2 -0.1, 0.3 -> 0.2.
  Pixel (1, 2): one galaxy, weight 2, e = (-0.4, 0.1).
  Pixel (2, 1): three galaxies of weight 1, e1 = 0.1, 0.2, 0.6 -> 0.3,
  e2 = 0 -> 0.
  Plus one galaxy far outside the field (dropped).
  """
  rows = [(0, 0, 1.0, 0.2, -0.1, -0.3, 0.2), (0, 0, 3.0, 0.6, 0.3, 0.3, -0.3),
          (1, 2, 2.0, -0.4, 0.1, 0.1, 0.1),
          (2, 1, 1.0, 0.1, 0.0, -0.2, 0.4), (2, 1, 1.0, 0.2, 0.0, 0.0, 0.0),
          (2, 1, 1.0, 0.6, 0.0, 0.4, -0.4)]
  ra, dec, w, e1, e2 = [], [], [], [], []
  for row, col, wi, e1i, e2i, dx, dy in rows:
    r, d = _bin_centre(row, col)
    ra.append(r + dx * STEP)  # offsets within +-0.4 bin
    dec.append(d + dy * STEP)
    w.append(wi)
    e1.append(e1i)
    e2.append(e2i)
  ra.append(RA0 + 5.0)
  dec.append(DEC0)
  w.append(1.0)
  e1.append(0.6)
  e2.append(0.6)
  return {'RA_DEG': ra, 'DEC_DEG': dec, 'G1': e1, 'G2': e2, 'W': w}


def _write_table(path, columns):
  cols = [fits.Column(name=k, format='D', array=np.asarray(v, np.float64))
          for k, v in columns.items()]
  fits.BinTableHDU.from_columns(cols).writeto(path)
  return path


@pytest.fixture
def synthetic_path(tmp_path):
  return _write_table(tmp_path / 'cat.fits', _synthetic())


def _read_synthetic(path, **kwargs):
  return catalog.read_catalog(path, ra_col='ra_deg', dec_col='DEC_DEG',
                              e1_col='G1', e2_col='G2', **kwargs)


def test_read_catalog_columns_weights_and_flip(synthetic_path):
  cols = _synthetic()
  cat = _read_synthetic(synthetic_path, weight_col='W', flip_e2=True)
  np.testing.assert_array_equal(cat.ra, cols['RA_DEG'])
  np.testing.assert_array_equal(cat.e1, cols['G1'])
  np.testing.assert_array_equal(cat.e2, -np.asarray(cols['G2']))
  np.testing.assert_array_equal(cat.weight, cols['W'])
  unweighted = _read_synthetic(synthetic_path)
  np.testing.assert_array_equal(unweighted.weight, np.ones(7))
  np.testing.assert_array_equal(unweighted.e2, cols['G2'])


def test_read_catalog_missing_column_lists_available(synthetic_path):
  with pytest.raises(ValueError, match=r"no column\(s\) \['e1', 'e2'\].*'RA_DEG', 'DEC_DEG', 'G1'"):
    catalog.read_catalog(synthetic_path, ra_col='RA_DEG', dec_col='DEC_DEG')


def test_read_catalog_drops_non_finite_with_count(tmp_path):
  cols = _synthetic()
  cols['G1'][0] = np.nan
  cols['G2'][1] = np.inf
  cols['DEC_DEG'][2] = -np.inf
  cols['W'][3] = np.nan
  path = _write_table(tmp_path / 'bad.fits', cols)
  with pytest.warns(UserWarning, match='dropped 4 of 7 rows'):
    cat = _read_synthetic(path, weight_col='W')
  assert cat.ra.shape == (3,)
  np.testing.assert_array_equal(cat.e1, cols['G1'][4:])


def test_read_catalog_empty_raises(tmp_path):
  empty = _write_table(tmp_path / 'empty.fits',
                       {k: [] for k in _synthetic()})
  with pytest.raises(ValueError, match='no rows'):
    _read_synthetic(empty)
  cols = _synthetic()
  cols['G1'] = [np.nan] * 7
  all_bad = _write_table(tmp_path / 'all_bad.fits', cols)
  with pytest.warns(UserWarning, match='dropped 7 of 7'):
    with pytest.raises(ValueError, match='no usable row'):
      _read_synthetic(all_bad)


def test_bin_radec_known_pixel_values(synthetic_path):
  cat = _read_synthetic(synthetic_path, weight_col='W')
  sm = catalog.bin_shear_catalog(cat, NPIX, PIX_ARCMIN, center=(RA0, DEC0),
                                 projection='radec', sigma_e=0.3)
  expected_counts = np.zeros((3, 3), np.int32)
  expected_counts[0, 0], expected_counts[1, 2], expected_counts[2, 1] = 2, 1, 3
  np.testing.assert_array_equal(sm.counts, expected_counts)
  np.testing.assert_array_equal(sm.mask, (expected_counts > 0).astype(np.float32))
  expected_shear = np.zeros((3, 3, 2), np.float32)
  expected_shear[0, 0] = (0.5, 0.2)
  expected_shear[1, 2] = (-0.4, 0.1)
  expected_shear[2, 1] = (0.3, 0.0)
  np.testing.assert_allclose(sm.shear, expected_shear, atol=1e-7)
  # sigma_pix = sigma_e sqrt(sum w^2) / sum w.
  expected_std = np.zeros((3, 3))
  expected_std[0, 0] = 0.3 * np.sqrt(10.0) / 4.0
  expected_std[1, 2] = 0.3
  expected_std[2, 1] = 0.3 / np.sqrt(3.0)
  np.testing.assert_allclose(sm.noise_std, np.stack([expected_std] * 2, -1),
                             rtol=1e-6)
  assert sm.shear.dtype == np.float32 and sm.noise_std.dtype == np.float32
  assert sm.pixel_scale_arcmin == PIX_ARCMIN
  with pytest.raises(AttributeError):
    sm.mask = None


def test_bin_counts_noise_model_and_default_sigma_e(synthetic_path):
  cat = _read_synthetic(synthetic_path, weight_col='W')
  sm = catalog.bin_shear_catalog(cat, NPIX, PIX_ARCMIN, center=(RA0, DEC0),
                                 projection='radec', noise_model='counts')
  inside = slice(0, 6)  # the seventh galaxy is outside the field
  sigma = np.array([np.std(cat.e1[inside]), np.std(cat.e2[inside])])
  np.testing.assert_allclose(sm.noise_std[0, 0], sigma / np.sqrt(2.0), rtol=1e-6)
  np.testing.assert_allclose(sm.noise_std[2, 1], sigma / np.sqrt(3.0), rtol=1e-6)
  assert sm.noise_std[1, 1].tolist() == [0.0, 0.0]


def test_bin_radec_edges_match_histogram2d():
  rng = np.random.default_rng(0)
  n, pix = 8, 3.0
  size = n * pix / 60.0
  ra = rng.uniform(RA0 - 0.6 * size, RA0 + 0.6 * size, 2000)
  dec = rng.uniform(DEC0 - 0.6 * size, DEC0 + 0.6 * size, 2000)
  ra_edges = np.linspace(RA0 - size / 2, RA0 + size / 2, n + 1)
  dec_edges = np.linspace(DEC0 - size / 2, DEC0 + size / 2, n + 1)
  ra[:n + 1], dec[:n + 1] = ra_edges, dec_edges  # exactly on the edges
  sm = catalog.bin_shear_catalog(
      {'ra': ra, 'dec': dec, 'e1': np.zeros(2000), 'e2': np.zeros(2000)},
      n, pix, center=(RA0, DEC0), projection='radec', sigma_e=0.3)
  expected, _, _ = np.histogram2d(dec, ra, bins=(dec_edges, ra_edges))
  np.testing.assert_array_equal(sm.counts, expected)


def test_radec_wcs_maps_pixel_centres_to_bin_centres(synthetic_path):
  cat = _read_synthetic(synthetic_path)
  sm = catalog.bin_shear_catalog(cat, NPIX, PIX_ARCMIN, center=(RA0, DEC0),
                                 projection='radec')
  rows, cols = np.mgrid[:NPIX, :NPIX]
  world = sm.wcs.pixel_to_world(cols.ravel(), rows.ravel())
  ra_c, dec_c = _bin_centre(rows.ravel(), cols.ravel())
  np.testing.assert_allclose(world.ra.deg, ra_c, atol=1e-10)
  np.testing.assert_allclose(world.dec.deg, dec_c, atol=1e-10)
  x, y = sm.wcs.world_to_pixel_values(cat.ra[:6], cat.dec[:6])
  np.testing.assert_array_equal(sm.counts[np.round(y).astype(int),
                                          np.round(x).astype(int)] > 0, True)


def test_tan_grid_known_answers():
  n, pix, ra0, dec0 = 6, 2.0, 210.0, 50.0
  reference = WCS(naxis=2)
  reference.wcs.ctype = ['RA---TAN', 'DEC--TAN']
  reference.wcs.crval = [ra0, dec0]
  reference.wcs.cdelt = [pix / 60.0, pix / 60.0]
  reference.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
  rows, cols = np.array([0, 0, 5, 2, 2]), np.array([0, 0, 1, 4, 5])
  ra, dec = reference.wcs_pix2world(cols + 0.3, rows - 0.2, 0)
  # Just north-east of the tangent point (a pixel corner for even n), and a
  # point on the far side of the sphere (dropped).
  ra = np.append(ra, [ra0 + 0.01 * pix / 60, ra0 + 180.0])
  dec = np.append(dec, [dec0 + 0.01 * pix / 60, -dec0])
  e1 = np.array([0.1, 0.3, -0.2, 0.5, 0.4, 0.7, 0.9])
  # Ellipticities (e1, -e1) in the grid frame, given in the galaxies' local
  # RA/Dec frames as a catalogue holds them (tests/test_sky_geometry.py
  # checks the rotation).
  local_e1, local_e2 = sky.to_local_frame(e1, -e1, ra, dec, (ra0, dec0))
  sm = catalog.bin_shear_catalog(
      {'ra': ra, 'dec': dec, 'e1': local_e1, 'e2': local_e2}, n, pix,
      center=(ra0, dec0), projection='tan', sigma_e=(0.2, 0.4))
  expected = np.zeros((n, n), np.int32)
  expected[0, 0], expected[5, 1], expected[2, 4], expected[2, 5] = 2, 1, 1, 1
  expected[n // 2, n // 2] = 1
  np.testing.assert_array_equal(sm.counts, expected)
  np.testing.assert_allclose(sm.shear[0, 0], [0.2, -0.2], atol=1e-7)
  np.testing.assert_allclose(sm.noise_std[0, 0], [0.2 / np.sqrt(2), 0.4 / np.sqrt(2)],
                             rtol=1e-6)
  np.testing.assert_allclose(sm.wcs.world_to_pixel_values(ra0, dec0),
                             [(n - 1) / 2, (n - 1) / 2], atol=1e-9)
  # Pixel centres round-trip, and neighbours near the tangent point are one
  # pixel apart on the sky.
  yy, xx = np.mgrid[:n, :n]
  world = sm.wcs.pixel_to_world(xx.ravel(), yy.ravel())
  back_x, back_y = sm.wcs.world_to_pixel(world)
  np.testing.assert_allclose(back_x, xx.ravel(), atol=1e-8)
  np.testing.assert_allclose(back_y, yy.ravel(), atol=1e-8)
  a = sm.wcs.pixel_to_world(n // 2 - 1, n // 2)
  b = sm.wcs.pixel_to_world(n // 2, n // 2)
  np.testing.assert_allclose(a.separation(b).arcmin, pix, rtol=1e-6)
  # Column grows with RA and row with Dec.
  assert sm.wcs.pixel_to_world(1, 0).ra.deg > sm.wcs.pixel_to_world(0, 0).ra.deg
  assert sm.wcs.pixel_to_world(0, 1).dec.deg > sm.wcs.pixel_to_world(0, 0).dec.deg


def test_default_centre_is_median(synthetic_path):
  cat = _read_synthetic(synthetic_path)
  with pytest.warns(UserWarning, match=r'at Dec -14\.99.* 1\.035. times taller'):
    sm = catalog.bin_shear_catalog(cat, 200, PIX_ARCMIN, projection='radec')
  centre = sm.wcs.pixel_to_world(99.5, 99.5)
  np.testing.assert_allclose([centre.ra.deg, centre.dec.deg],
                             [np.median(cat.ra), np.median(cat.dec)], atol=1e-10)


def test_field_without_galaxies_raises_with_bounds(synthetic_path):
  cat = _read_synthetic(synthetic_path)
  for projection in ('radec', 'tan'):
    with pytest.raises(ValueError, match=r'field RA .* catalogue RA'):
      catalog.bin_shear_catalog(cat, 4, 1.0, center=(100.0, 3.0),
                                projection=projection)


@pytest.mark.parametrize('npix, pix', [(4, 0.0), (4, -1.0), (4, np.nan),
                                       (0, 1.0), (-3, 1.0), (2.5, 1.0)])
def test_bad_grid_arguments_raise(synthetic_path, npix, pix):
  cat = _read_synthetic(synthetic_path)
  with pytest.raises(ValueError, match='npix|pixel_scale_arcmin'):
    catalog.bin_shear_catalog(cat, npix, pix)


def test_bad_catalogue_arrays_raise():
  good = {'ra': [1.0], 'dec': [2.0], 'e1': [0.1], 'e2': [0.0]}
  with pytest.raises(ValueError, match='empty'):
    catalog.bin_shear_catalog({k: [] for k in good}, 4, 1.0)
  with pytest.raises(ValueError, match='non-finite'):
    catalog.bin_shear_catalog(dict(good, e1=[np.nan]), 4, 1.0)
  with pytest.raises(ValueError, match='weight'):
    catalog.bin_shear_catalog(dict(good, weight=[0.0]), 4, 1.0)
  with pytest.raises(ValueError, match='projection'):
    catalog.bin_shear_catalog(good, 4, 1.0, projection='sin')


def _tan_wcs(n):
  wcs = WCS(naxis=2)
  wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
  wcs.wcs.crval = [150.1, 2.2]
  wcs.wcs.cdelt = [0.29 / 60, 0.29 / 60]
  wcs.wcs.crpix = [(n + 1) / 2, (n + 1) / 2]
  wcs.pixel_shape = (n, n)
  return wcs


def test_fits_round_trip_map_and_stack(tmp_path):
  rng = np.random.default_rng(1)
  wcs = _tan_wcs(16)
  image = rng.normal(size=(16, 16)).astype(np.float32)
  path = tmp_path / 'kappa.fits'
  catalog.write_map_fits(path, image, wcs=wcs,
                         header={'BUNIT': ('', 'convergence'), 'NSAMPLE': 1})
  data, wcs_back, header = catalog.read_map_fits(path)
  np.testing.assert_array_equal(data, image)
  assert header['NSAMPLE'] == 1 and header.comments['BUNIT'] == 'convergence'
  pix = np.array([0.0, 7.5, 15.0])
  np.testing.assert_allclose(wcs_back.wcs_pix2world(pix, pix, 0),
                             wcs.wcs_pix2world(pix, pix, 0), atol=1e-12)

  stack = rng.normal(size=(3, 16, 16))
  catalog.write_map_fits(path, stack, wcs=wcs, overwrite=True)
  data, wcs_back, _ = catalog.read_map_fits(path)
  assert data.dtype == np.float32 and data.shape == (3, 16, 16)
  np.testing.assert_allclose(data, stack, rtol=1e-6)
  assert wcs_back.naxis == 2 and wcs_back.pixel_shape == (16, 16)
  np.testing.assert_allclose(wcs_back.wcs_pix2world(pix, pix, 0),
                             wcs.wcs_pix2world(pix, pix, 0), atol=1e-12)
  assert sorted(os.listdir(tmp_path)) == ['kappa.fits']


def test_failed_writes_leave_nothing(tmp_path, monkeypatch):
  path = tmp_path / 'map.fits'
  for bad in (np.zeros(4), np.zeros((2, 2, 2, 2)), np.array([['a', 'b']]),
              np.zeros((2, 2), np.complex64)):
    with pytest.raises(ValueError, match='image must be'):
      catalog.write_map_fits(path, bad)
  with pytest.raises(ValueError, match='pixel shape'):
    catalog.write_map_fits(path, np.zeros((8, 8)), wcs=_tan_wcs(16))
  assert os.listdir(tmp_path) == []

  catalog.write_map_fits(path, np.ones((4, 4)))
  with pytest.raises(FileExistsError):
    catalog.write_map_fits(path, np.zeros((4, 4)))
  np.testing.assert_array_equal(catalog.read_map_fits(path)[0], 1.0)

  def broken_writeto(self, name, *args, **kwargs):
    with open(name, 'wb') as f:
      f.write(b'SIMPLE  =                    T')  # half a header
    raise OSError('disk full')

  monkeypatch.setattr(fits.PrimaryHDU, 'writeto', broken_writeto)
  with pytest.raises(OSError, match='disk full'):
    catalog.write_map_fits(path, np.zeros((4, 4)), overwrite=True)
  with pytest.raises(OSError, match='disk full'):
    catalog.write_map_fits(tmp_path / 'new.fits', np.zeros((4, 4)))
  assert os.listdir(tmp_path) == ['map.fits']
  monkeypatch.undo()
  np.testing.assert_array_equal(catalog.read_map_fits(path)[0], 1.0)


def test_read_cluster_list_synthetic(tmp_path):
  path = tmp_path / 'clusters.txt'
  path.write_text(
      '# ID RA DEC r500 flux z ...\n'
      '3\t150.80244\t1.98985\t1.0\t0.70   0.16\t0.25\t0.69   0.14\t2.2   0.5\t0.56   0.06\t1\n'
      '# a comment line\n'
      '42\t150.41533\t2.43096\t2.8\t11.45   0.26\t0.12\t2.26   0.05\t7.1   0.2\t1.01   0.01\t0\n')
  clusters = catalog.read_cluster_list(path)
  np.testing.assert_array_equal(clusters['id'], [3, 42])
  np.testing.assert_array_equal(clusters['ra'], [150.80244, 150.41533])
  np.testing.assert_array_equal(clusters['dec'], [1.98985, 2.43096])
  np.testing.assert_array_equal(clusters['z'], [0.25, 0.12])
  np.testing.assert_array_equal(clusters['m500'], [0.69, 2.26])
  np.testing.assert_array_equal(clusters['m500_error'], [0.14, 0.05])
  path.write_text('3\t150.8\t1.9\t1.0\t0.70\t0.16\t0.25\t0.69\n')
  with pytest.raises(ValueError, match='at least 9 columns'):
    catalog.read_cluster_list(path)


def test_cosmos_reference_grids(cosmos_dir):
  """The README recipe reproduces the published COSMOS grids.

  The published grids include the 3,650 galaxies with |e| >= 1, which
  read_catalog drops by default.
  """
  path = cosmos_dir / 'cosmos_shear_cat.fits'
  with pytest.warns(UserWarning, match=r'dropped 3650 of 417117 rows .*\(3650 with \|e\|'):
    cat = catalog.read_catalog(path, weight_col='nhweight_int', flip_e2=True)
  assert cat.ra.shape == (417117 - 3650,) and np.hypot(cat.e1, cat.e2).max() < 1
  cat = catalog.read_catalog(path, weight_col='nhweight_int', flip_e2=True,
                             keep_unphysical_ellipticities=True)
  assert cat.ra.shape == (417117,)
  sm = catalog.bin_shear_catalog(cat, 360, 0.29, projection='radec',
                                 noise_model='counts')

  def ref(name):
    return catalog.read_map_fits(cosmos_dir / name)[0]

  np.testing.assert_allclose(sm.shear[..., 0], ref('cosmos_full_e1_0.29arcmin360.fits'),
                             rtol=0, atol=1e-6)
  np.testing.assert_allclose(sm.shear[..., 1], ref('cosmos_full_e2_0.29arcmin360.fits'),
                             rtol=0, atol=1e-6)
  np.testing.assert_array_equal(sm.mask, ref('cosmos_full_mask_0.29arcmin360.fits'))
  np.testing.assert_allclose(sm.noise_std[..., 0], ref('std1.fits'), rtol=0, atol=1e-6)
  np.testing.assert_allclose(sm.noise_std[..., 1], ref('std2.fits'), rtol=0, atol=1e-6)
  assert sm.counts.sum() == 417117

  clusters = catalog.read_cluster_list(
      cosmos_dir / 'xray_clusters_finoguenov2006.txt')
  assert clusters.shape == (72,)
  row = clusters[clusters['id'] == 42][0]
  assert (row['ra'], row['dec'], row['z']) == (150.41533, 2.43096, 0.12)
  # 12 groups above 5e13 solar masses, the most massive 2.6e14 at z = 0.37.
  assert (clusters['m500'] > 5).sum() == 12
  assert clusters['z'][np.argmax(clusters['m500'])] == 0.37
  x, y = sm.wcs.world_to_pixel_values(clusters['ra'], clusters['dec'])
  inside = (x > -0.5) & (x < 359.5) & (y > -0.5) & (y < 359.5)
  assert inside.mean() > 0.9


@pytest.mark.parametrize('projection', ['radec', 'tan'])
def test_field_across_ra_zero(projection):
  ra = np.array([359.93, 359.98, 0.02, 0.07])  # 0.05-deg bins centred on 0
  cat = {'ra': ra, 'dec': np.zeros(4), 'e1': np.zeros(4), 'e2': np.zeros(4)}
  sm = catalog.bin_shear_catalog(cat, 4, 3.0, projection=projection, sigma_e=0.3)
  np.testing.assert_array_equal(sm.counts.sum(axis=0), [1, 1, 1, 1])
  centre = sm.wcs.pixel_to_world(1.5, 1.5)
  np.testing.assert_allclose(centre.ra.wrap_at('180d').deg, 0.0, atol=1e-10)
