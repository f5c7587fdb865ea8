"""Tests of tfp_massmap.sky and of TAN binning on the sphere (issue 11, part 4)."""

from astropy.wcs import WCS
import numpy as np
import pytest

from tfp_massmap import catalog
from tfp_massmap import sky

CENTRES = [(150.0, 0.0), (150.0, 60.0), (150.0, 89.0), (150.0, 89.5),
           (0.0, 90.0), (0.0, -90.0), (0.0, 20.0), (359.5, -45.0)]


def _astropy_tan(center, lonpole=None):
  wcs = WCS(naxis=2)
  wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
  wcs.wcs.crval = list(center)
  wcs.wcs.cdelt = [1.0, 1.0]  # pixel coordinates = plane coordinates in deg
  wcs.wcs.crpix = [1.0, 1.0]
  if lonpole is not None:
    wcs.wcs.lonpole = lonpole
  return wcs


@pytest.mark.parametrize('center', CENTRES)
def test_gnomonic_round_trip_and_astropy(center):
  rng = np.random.default_rng(0)
  x, y = rng.uniform(-4, 4, (2, 500))
  ra, dec = sky.inverse_gnomonic(x, y, center)
  assert ((ra >= 0) & (ra < 360)).all()
  back_x, back_y = sky.gnomonic(ra, dec, center)
  np.testing.assert_allclose(back_x, x, rtol=0, atol=1e-12)
  np.testing.assert_allclose(back_y, y, rtol=0, atol=1e-12)
  # The FITS TAN projection (LONPOLE = 180, the default except on the north
  # pole, where the grid would turn by 180 deg).
  wcs = _astropy_tan(center, lonpole=180.0)
  wx, wy = wcs.wcs_world2pix(ra, dec, 0)
  np.testing.assert_allclose(wx, x, rtol=0, atol=1e-9)
  np.testing.assert_allclose(wy, y, rtol=0, atol=1e-9)
  wra, wdec = wcs.wcs_pix2world(x, y, 0)
  np.testing.assert_allclose(sky.unit_vectors(wra, wdec), sky.unit_vectors(ra, dec),
                             rtol=0, atol=1e-12)


def test_gnomonic_known_answers():
  # One degree north and east of (10, 0): tan(1 deg) in plane degrees.
  x, y = sky.gnomonic([10.0, 10.0, 11.0, 190.0], [0.0, 1.0, 0.0, 0.0],
                      (10.0, 0.0))
  t = np.rad2deg(np.tan(np.deg2rad(1.0)))
  np.testing.assert_allclose(x[:3], [0, 0, t], atol=1e-13)
  np.testing.assert_allclose(y[:3], [0, t, 0], atol=1e-13)
  assert np.isnan(x[3]) and np.isnan(y[3])  # the far hemisphere
  # Default FITS orientation matches away from the north pole.
  for center in [(150.0, 60.0), (0.0, -90.0)]:
    wx, wy = _astropy_tan(center).wcs_world2pix(200.0, 62.0 * np.sign(center[1]), 0)
    np.testing.assert_allclose(sky.gnomonic(200.0, 62.0 * np.sign(center[1]), center),
                               [wx, wy], atol=1e-9)
  # On the north pole, up points along RA = ra0 + 180 deg, right along +90.
  ra, _ = sky.inverse_gnomonic([0.0, 1.0], [1.0, 0.0], (37.0, 90.0))
  np.testing.assert_allclose(ra, [217.0, 127.0], atol=1e-9)


def test_field_center_known_answers():
  assert sky.field_center([359.0, 1.0], [0.0, 0.0]) == pytest.approx((0.0, 0.0), abs=1e-12)
  ra0, dec0 = sky.field_center([359.0, 1.0], [10.0, 10.0])
  assert abs((ra0 + 180) % 360 - 180) < 1e-12 and 10.0 < dec0 < 10.0 + 1e-2
  # Around the pole the mean of RA and Dec is meaningless, the mean vector
  # is the pole.
  assert sky.field_center([0.0, 90.0, 180.0, 270.0], [89.0] * 4) == (0.0, 90.0)
  assert sky.field_center([10.0, 190.0], [-88.0] * 2) == (0.0, -90.0)
  ra0, dec0 = sky.field_center([0.0, 120.0], [89.0, 89.0])
  assert ra0 == pytest.approx(60.0) and dec0 > 89.0
  with pytest.raises(ValueError, match='surround the sphere'):
    sky.field_center([0.0, 180.0], [0.0, 0.0])
  with pytest.raises(ValueError, match='at least one'):
    sky.field_center([], [])
  with pytest.raises(ValueError, match=r'\|dec\| <= 90'):
    sky.gnomonic(0.0, 0.0, (0.0, 91.0))


def test_grid_up_angle_known_answers():
  # Equator centre: meridians are the grid's columns along the equator.
  np.testing.assert_allclose(sky.grid_up_angle([3.0, -5.0], [0.0, 0.0], (0.0, 0.0)),
                             0.0, atol=1e-15)
  # North-pole centre: psi = ra - ra0; at ra0 + 90 deg local north points to
  # the grid's left (the pole), so e -> -e.
  np.testing.assert_allclose(sky.grid_up_angle([127.0, 37.0, 0.0], [89.0] * 3, (37.0, 90.0)),
                             np.deg2rad([90.0, 0.0, -37.0]), atol=1e-12)
  e1, e2 = sky.to_grid_frame(0.3, 0.1, 127.0, 89.0, (37.0, 90.0))
  np.testing.assert_allclose([e1, e2], [-0.3, -0.1], atol=1e-12)
  # Near the centre, the convergence of meridians: psi = d_ra sin(dec0).
  psi = sky.grid_up_angle(150.001, 60.0, (150.0, 60.0))
  np.testing.assert_allclose(psi, np.deg2rad(0.001) * np.sin(np.deg2rad(60.0)),
                             rtol=1e-5)


@pytest.mark.parametrize('center', [(150.0, 60.0), (20.0, -30.0), (0.0, 90.0)])
def test_grid_up_angle_is_rotation_of_projection_jacobian(center):
  """psi is the rotation in the polar decomposition of the TAN Jacobian."""
  rng = np.random.default_rng(1)
  x, y = rng.uniform(-2.5, 2.5, (2, 20))
  ra, dec = sky.inverse_gnomonic(x, y, center)
  h = 1e-5  # deg; central differences along local east and north
  d_ra = h / np.cos(np.deg2rad(dec))
  xe, ye = np.subtract(sky.gnomonic(ra + d_ra, dec, center),
                       sky.gnomonic(ra - d_ra, dec, center)) / (2 * h)
  xn, yn = np.subtract(sky.gnomonic(ra, dec + h, center),
                       sky.gnomonic(ra, dec - h, center)) / (2 * h)
  psi = sky.grid_up_angle(ra, dec, center)
  for i in range(len(ra)):
    jac = np.array([[xe[i], xn[i]], [ye[i], yn[i]]])
    u, _, vt = np.linalg.svd(jac)
    rotation = u @ vt
    up = rotation.T @ [0.0, 1.0]  # grid up in (east, north) components
    np.testing.assert_allclose(np.arctan2(up[0], up[1]), psi[i], atol=1e-7)
  # The image of the local north is not it (the projection is not
  # conformal), except on a polar grid, where meridians are radial.
  north_image = np.arctan2(-xn, yn)
  if abs(center[1]) < 90:
    assert np.abs(north_image - psi).max() > 1e-5
  else:
    np.testing.assert_allclose(north_image, psi, atol=1e-9)


def test_spin2_rotation_round_trip():
  rng = np.random.default_rng(2)
  e1, e2 = rng.normal(0, 0.3, (2, 100))
  ra, dec = rng.uniform(0, 360, 100), rng.uniform(-89, 89, 100)
  for center in [(150.0, 60.0), (0.0, 90.0)]:
    g1, g2 = sky.to_grid_frame(e1, e2, ra, dec, center)
    np.testing.assert_allclose(np.hypot(g1, g2), np.hypot(e1, e2), rtol=1e-12)
    back = sky.to_local_frame(g1, g2, ra, dec, center)
    np.testing.assert_allclose(back, [e1, e2], rtol=0, atol=1e-14)
  # A quarter turn of the frame flips a spin-2 field; a half turn keeps it.
  np.testing.assert_allclose(sky.rotate_spin2(0.3, -0.1, np.pi / 2), [-0.3, 0.1],
                             atol=1e-15)
  np.testing.assert_allclose(sky.rotate_spin2(0.3, -0.1, np.pi), [0.3, -0.1],
                             atol=1e-15)
  np.testing.assert_allclose(sky.rotate_spin2(0.3, 0.0, np.pi / 8), [0.3 / np.sqrt(2)] * 2,
                             atol=1e-15)


NPIX, PIX_ARCMIN = 32, 3.0


def _planar_field():
  """Galaxies in the tangent plane with a smooth shear and shape noise.

  Positions are point-symmetric about the centre (so the mean of their unit
  vectors on the sphere is the tangent point exactly) and at least 0.1
  pixel from a pixel edge. Returns plane (x, y) in deg, grid-frame (e1, e2)
  and the expected pixel-mean shear, counts.
  """
  rng = np.random.default_rng(3)
  n_half = 900
  pix = rng.integers(0, NPIX, (n_half, 2))
  offset = rng.uniform(-0.4, 0.4, (n_half, 2))
  col = np.concatenate([pix[:, 0] + offset[:, 0], NPIX - 1 - pix[:, 0] - offset[:, 0]])
  row = np.concatenate([pix[:, 1] + offset[:, 1], NPIX - 1 - pix[:, 1] - offset[:, 1]])
  step = PIX_ARCMIN / 60.0
  x, y = (col - (NPIX - 1) / 2) * step, (row - (NPIX - 1) / 2) * step
  size = NPIX * step
  e1 = 0.05 * np.cos(2 * np.pi * x / size) + rng.normal(0, 0.25, x.size)
  e2 = 0.04 * np.sin(2 * np.pi * (x + 2 * y) / size) + rng.normal(0, 0.25, x.size)
  flat = np.round(row).astype(int) * NPIX + np.round(col).astype(int)
  counts = np.bincount(flat, minlength=NPIX * NPIX).reshape(NPIX, NPIX)
  safe = np.maximum(counts, 1)
  shear = np.stack([np.bincount(flat, e, NPIX * NPIX).reshape(NPIX, NPIX) / safe
                    for e in (e1, e2)], axis=-1)
  return x, y, e1, e2, shear, counts


@pytest.mark.parametrize('center', CENTRES)
def test_same_field_anywhere_on_the_sphere_gives_the_same_map(center):
  x, y, e1, e2, shear, counts = _planar_field()
  assert 0 < (counts == 0).sum() < NPIX * NPIX // 4  # the mask has holes
  ra, dec = sky.inverse_gnomonic(x, y, center)
  local_e1, local_e2 = sky.to_local_frame(e1, e2, ra, dec, center)
  sm = catalog.bin_shear_catalog(
      {'ra': ra, 'dec': dec, 'e1': local_e1, 'e2': local_e2}, NPIX, PIX_ARCMIN)
  # The default centre lands on the field centre and every galaxy is binned.
  ra0, dec0 = sm.wcs.wcs.crval
  expected_ra0 = 0.0 if abs(center[1]) == 90 else center[0]
  assert abs((ra0 - expected_ra0 + 180) % 360 - 180) < 1e-9
  assert abs(dec0 - center[1]) < 1e-9
  assert sm.counts.sum() == x.size
  np.testing.assert_array_equal(sm.counts, counts)
  np.testing.assert_array_equal(sm.mask, (counts > 0).astype(np.float32))
  np.testing.assert_allclose(sm.shear, shear, rtol=0, atol=1e-5)
  sigma = np.std(np.stack([e1, e2], -1), axis=0)
  expected_std = np.where(counts > 0, 1 / np.sqrt(np.maximum(counts, 1)), 0)
  np.testing.assert_allclose(sm.noise_std, expected_std[..., None] * sigma,
                             rtol=1e-5, atol=1e-7)
  # The WCS written with the map agrees with the binning.
  wx, wy = sm.wcs.world_to_pixel_values(ra, dec)
  step = PIX_ARCMIN / 60.0
  np.testing.assert_allclose(wx, x / step + (NPIX - 1) / 2, atol=1e-6)
  np.testing.assert_allclose(wy, y / step + (NPIX - 1) / 2, atol=1e-6)


@pytest.mark.parametrize('center', [(150.0, 89.0), (0.0, 90.0)])
def test_without_rotation_high_dec_maps_are_wrong(center):
  """The invariance above needs the rotation: unrotated frames differ a lot."""
  x, y, e1, e2, shear, counts = _planar_field()
  ra, dec = sky.inverse_gnomonic(x, y, center)
  local_e1, local_e2 = sky.to_local_frame(e1, e2, ra, dec, center)
  filled = counts > 0
  unrotated = np.stack([np.bincount(
      np.round(y / (PIX_ARCMIN / 60) + (NPIX - 1) / 2).astype(int) * NPIX +
      np.round(x / (PIX_ARCMIN / 60) + (NPIX - 1) / 2).astype(int),
      e, NPIX * NPIX).reshape(NPIX, NPIX) for e in (local_e1, local_e2)], -1)
  unrotated[filled] /= counts[filled][:, None]
  assert np.abs(unrotated - shear).max() > 0.1


def test_radec_and_tan_agree_near_the_equator():
  """Both modes bin a small equatorial field alike (frames nearly equal)."""
  x, y, e1, e2, _, _ = _planar_field()
  ra, dec = sky.inverse_gnomonic(x, y, (30.0, 0.0))
  cat = {'ra': ra, 'dec': dec, 'e1': e1, 'e2': e2}
  tan = catalog.bin_shear_catalog(cat, NPIX, PIX_ARCMIN, center=(30.0, 0.0))
  radec = catalog.bin_shear_catalog(cat, NPIX, PIX_ARCMIN, center=(30.0, 0.0),
                                    projection='radec')
  same = (tan.counts == radec.counts) & (tan.counts > 0)
  assert same.sum() > 0.6 * (tan.counts > 0).sum()
  # The frames differ by psi <= d_ra sin(dec) = 2e-4 rad at the corners, so
  # the shears by at most 2 psi |e| < 4e-4 |e|.
  np.testing.assert_allclose(tan.shear[same], radec.shear[same], atol=1.5e-4)
  assert np.abs(tan.shear[same] - radec.shear[same]).max() > 1e-5
