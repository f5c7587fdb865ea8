"""Tests of tfp_massmap.tiling: tiles on the sphere and stitching them."""

import healpy as hp
import numpy as np
import pytest

from tfp_massmap import catalog
from tfp_massmap import sky
from tfp_massmap import tiling

NPIX, PIX_ARCMIN, MARGIN = 32, 2.0, 4


def _disc(center, radius_deg, n, seed=0):
  """n uniform positions in a disc of the gnomonic plane about ``center``."""
  rng = np.random.default_rng(seed)
  x, y = rng.uniform(-radius_deg, radius_deg, (2, 2 * n))
  keep = np.hypot(x, y) < radius_deg
  return sky.inverse_gnomonic(x[keep][:n], y[keep][:n], center)


def _field(ra, dec):
  """A smooth field on the sphere, varying on a scale of about 2 deg."""
  v = sky.unit_vectors(ra, dec)
  return np.sin(20 * v[..., 0]) + np.cos(25 * v[..., 1]) + 10 * v[..., 2]


# Bound on bilinear interpolation errors of `_field` on 2' pixels:
# h²/8 · (|f_xx| + |f_yy|), each second derivative at most
# 20² + 25² + 10 + 20 + 25 rad⁻² (the last terms from the sphere's curvature).
INTERPOLATION_ERROR = np.deg2rad(PIX_ARCMIN / 60)**2 / 8 * 2 * (400 + 625 + 55)


def _tiles(center, radius_deg=1.0, **kwargs):
  ra, dec = _disc(center, radius_deg, 4000)
  kwargs = {'npix': NPIX, 'pixel_scale_arcmin': PIX_ARCMIN,
            'overlap_pix': MARGIN, 'min_fill': 0.0, **kwargs}
  return tiling.plan_tiles(ra, dec, **kwargs), ra, dec


def _catalog(ra, dec, e1, e2):
  return catalog.Catalog(ra=ra, dec=dec, e1=e1, e2=e2, weight=np.ones_like(ra))


# --- Tiles and binning -------------------------------------------------------


@pytest.mark.parametrize('center', [(30.0, 0.0), (200.0, 80.0), (0.0, 90.0),
                                    (359.9, -45.0)])
def test_tile_wcs_and_pixel_radec_match_bin_tile(center):
  tile = tiling.Tile(index=0, ra_deg=center[0], dec_deg=center[1], npix=8,
                     pixel_scale_arcmin=3.0, margin_pix=1)
  ra, dec = tile.pixel_radec()
  n = ra.size
  shear_map = tiling.bin_tile(
      _catalog(ra.ravel(), dec.ravel(), np.zeros(n), np.zeros(n)), tile,
      sigma_e=0.3)
  assert shear_map.wcs.to_header() == tile.wcs.to_header()
  np.testing.assert_array_equal(shear_map.counts, np.ones((8, 8)))  # one per pixel
  world = tile.wcs.pixel_to_world_values(*np.meshgrid(np.arange(8), np.arange(8)))
  np.testing.assert_allclose(sky.unit_vectors(*world),
                             sky.unit_vectors(ra, dec), atol=1e-12)


@pytest.mark.parametrize('center', [(10.0, 0.0), (120.0, 80.0), (0.0, 90.0)])
def test_bin_tile_rotates_into_the_tile_frame(center):
  """A constant grid-frame shear, given in local frames, comes back exactly."""
  tile = tiling.Tile(index=0, ra_deg=center[0], dec_deg=center[1], npix=16,
                     pixel_scale_arcmin=6.0, margin_pix=2)
  ra, dec = _disc(center, 1.5, 3000)
  e1, e2 = sky.to_local_frame(np.full(ra.shape, 0.03), np.full(ra.shape, -0.02),
                              ra, dec, center)
  shear_map = tiling.bin_tile(_catalog(ra, dec, e1, e2), tile, sigma_e=0.3)
  seen = shear_map.mask > 0
  assert seen.sum() > 150
  np.testing.assert_allclose(shear_map.shear[seen], [[0.03, -0.02]] * seen.sum(),
                             atol=1e-6)
  # Identical to binning the whole catalogue about the tile centre.
  whole = catalog.bin_shear_catalog(_catalog(ra, dec, e1, e2), 16, 6.0,
                                    center=center, sigma_e=0.3)
  np.testing.assert_array_equal(shear_map.shear, whole.shear)
  np.testing.assert_array_equal(shear_map.counts, whole.counts)


def test_bin_tile_refuses_what_the_tile_fixes():
  tile = tiling.Tile(0, 10.0, 0.0, 8, 1.0, 1)
  cat = _catalog(np.array([10.0]), np.array([0.0]), np.zeros(1), np.zeros(1))
  with pytest.raises(ValueError, match=r"\['center', 'npix'\].*tile fixes"):
    tiling.bin_tile(cat, tile, npix=16, center=(0, 0))
  with pytest.raises(ValueError, match=r'no galaxy .* of the centre \(50.0000, 0.0000\) '
                     'deg of tile 7'):
    tiling.bin_tile(cat, tiling.Tile(7, 50.0, 0.0, 8, 1.0, 1))
  with pytest.raises(ValueError, match='tile must be a tiling.Tile'):
    tiling.bin_tile(cat, (0, 10.0, 0.0, 8, 1.0, 1))


# --- Edge weights ------------------------------------------------------------


def test_edge_weight_vanishes_at_edges_and_is_one_inside():
  w = tiling.edge_weight(16, 4)
  assert w.shape == (16, 16)
  np.testing.assert_array_equal(w[0], 0.0)
  np.testing.assert_array_equal(w[-1], 0.0)
  np.testing.assert_array_equal(w[:, 0], 0.0)
  np.testing.assert_array_equal(w[:, -1], 0.0)
  np.testing.assert_allclose(w[4:12, 4:12], 1.0)
  # sin²(π/2 · d/4) along the ramp: d = 2 gives 1/2.
  np.testing.assert_allclose(w[8, :5], [0.0, np.sin(np.pi / 8)**2, 0.5,
                                        np.sin(3 * np.pi / 8)**2, 1.0])
  np.testing.assert_allclose(w, w.T)
  np.testing.assert_allclose(w, w[::-1, ::-1])
  np.testing.assert_array_equal(tiling.edge_weight(8, 0), 1.0)


@pytest.mark.parametrize('npix, margin, match', [
    (16, 8, r'margin_pix = 8 leaves no full-weight interior.*<= 7'),
    (16, -1, 'margin_pix must be an integer >= 0'),
    (1, 0, 'npix must be an integer >= 2'),
    (16.0, 2, 'npix must be an integer >= 2'),
])
def test_edge_weight_refuses_bad_sizes(npix, margin, match):
  with pytest.raises(ValueError, match=match):
    tiling.edge_weight(npix, margin)


# --- Planning ----------------------------------------------------------------


def _in_interior(tile, ra, dec):
  cols, rows = tiling._tile_pixel_coords(tile, ra, dec)
  lo, hi = MARGIN, NPIX - 1 - MARGIN
  return (cols >= lo) & (cols <= hi) & (rows >= lo) & (rows <= hi)


def test_every_point_of_the_sphere_is_in_the_interior_of_its_cells_tile():
  layout = tiling.tile_layout(NPIX, PIX_ARCMIN, MARGIN)
  rng = np.random.default_rng(1)
  ra = rng.uniform(0, 360, 30000)
  dec = np.rad2deg(np.arcsin(rng.uniform(-1, 1, 30000)))
  # The poles, cell corners and band edges, where a layout would fail first.
  edges = layout.dec_edges_deg
  ra = np.concatenate([ra, [0.0, 123.0], np.repeat(360.0 / layout.num_ra[1:-1], 2),
                       np.zeros(2 * edges.size)])
  dec = np.concatenate([dec, [90.0, -90.0], np.repeat(edges[2:-1], 2) - [1e-9, -1e-9] * (
      edges.size - 3), np.repeat(edges, 2) + np.tile([-1e-9, 1e-9], edges.size)])
  dec = np.clip(dec, -90, 90)
  index = layout.index_of(ra, dec)
  assert index.min() >= 0 and index.max() < layout.num_tiles
  for i in np.unique(index):
    assert _in_interior(layout.tile(i), ra[index == i], dec[index == i]).all(), i


def test_layout_covers_the_sphere_about_twice_and_refuses_bad_indices():
  layout = tiling.tile_layout(128, 0.8, 16)
  tile_area_deg2 = (128 * 0.8 / 60)**2
  redundancy = layout.num_tiles * tile_area_deg2 / (4 * np.pi * np.rad2deg(1)**2)
  # (128/96)² for the margins times the cells' partial fill of the interior.
  assert (128 / 96)**2 < redundancy < 1.15 * (128 / 96)**2
  with pytest.raises(ValueError, match='tile index -1 is outside this layout'):
    layout.tile(-1)
  with pytest.raises(ValueError, match='expected at most 60 deg'):
    tiling.tile_layout(64, 120.0, 0)


def test_galaxies_near_tiles_matches_a_brute_force_search():
  ra, dec = _disc((150.0, 80.0), 1.5, 3000)
  tiles = tiling.plan_tiles(ra, dec, npix=NPIX, pixel_scale_arcmin=PIX_ARCMIN,
                            overlap_pix=MARGIN, min_fill=0.0)
  for tile, members in zip(tiles, tiling.galaxies_near_tiles(ra, dec, tiles)):
    cos_angle = sky.unit_vectors(ra, dec) @ sky.unit_vectors(*tile.center)
    expected = np.flatnonzero(cos_angle >= np.cos(tiling._corner_radius(tile) * (1 + 1e-6)))
    np.testing.assert_array_equal(members, expected)


@pytest.mark.parametrize('pixel_scale, nside', [(0.8, 4096), (1.7, 2048),
                                                (3.4, 1024), (1e4, 1)])
def test_nside_for_pixel_scale(pixel_scale, nside):
  assert tiling.nside_for_pixel_scale(pixel_scale) == nside


@pytest.mark.parametrize('center', [(30.0, 0.0), (150.0, 80.0), (0.0, 90.0)])
def test_every_galaxy_lies_in_the_interior_of_a_tile(center):
  tiles, ra, dec = _tiles(center)
  covered = np.zeros(ra.size, dtype=bool)
  for tile in tiles:
    covered |= _in_interior(tile, ra, dec)
  assert covered.all()
  layout = tiling.tile_layout(NPIX, PIX_ARCMIN, MARGIN)
  assert [t.index for t in tiles] == sorted(set(layout.index_of(ra, dec).tolist()))


def test_tile_count_does_not_depend_on_where_the_footprint_lies():
  counts = [len(_tiles(center, radius_deg=2.0)[0])
            for center in [(30.0, 0.0), (150.0, 80.0)]]
  # At least the cells of a 2-degree disc, at most those within a cell
  # diagonal of it (cells are at most an interior wide).
  side_deg = 2 * ((NPIX - 1) / 2 - MARGIN) * PIX_ARCMIN / 60
  assert np.pi * 2.0**2 / side_deg**2 <= counts[0]
  assert counts[0] <= np.pi * (2.0 + np.sqrt(2) * side_deg)**2 / side_deg**2
  assert abs(counts[0] - counts[1]) <= 0.15 * counts[0]


def test_mostly_empty_tiles_are_skipped():
  ra, dec = _disc((30.0, 10.0), 1.0, 20000)
  kwargs = {'npix': NPIX, 'pixel_scale_arcmin': PIX_ARCMIN, 'overlap_pix': MARGIN}
  full = tiling.plan_tiles(ra, dec, min_fill=0.0, **kwargs)
  # A stray galaxy 5 deg away has a tile of its own unless tiles must be
  # filled; with 20000 galaxies in 3 deg², interior tiles are full.
  ra_s, dec_s = np.append(ra, 30.0), np.append(dec, 15.0)
  with_stray = tiling.plan_tiles(ra_s, dec_s, min_fill=0.0, **kwargs)
  assert len(with_stray) == len(full) + 1
  kept = tiling.plan_tiles(ra_s, dec_s, **kwargs)
  assert len(kept) < len(full)
  assert set(t.index for t in kept) < set(t.index for t in full)
  # Each tile left out has under 25 % of its pixels filled, the others more.
  for tile in full:
    filled = (tiling.bin_tile(_catalog(ra, dec, 0 * ra, 0 * ra), tile,
                              sigma_e=0.3).mask.mean())
    assert (filled >= 0.25) == (tile in kept)


@pytest.mark.parametrize('kwargs, match', [
    ({'overlap_pix': 16}, 'margin_pix = 16 leaves no full-weight interior'),
    ({'min_fill': 1.5}, r'min_fill must be a number in \[0, 1\], got 1.5'),
    ({'pixel_scale_arcmin': 0.0}, 'pixel_scale_arcmin must be a positive number'),
    ({'ra': np.array([]), 'dec': np.array([])}, 'at least one galaxy'),
    ({'dec': np.array([91.0])}, r'dec_deg spans 91.0..91.0 deg'),
    ({'ra': np.array([np.nan])}, 'ra_deg'),
    ({'ra': np.zeros((1, 1))}, 'must be 1-D arrays of one shape'),
])
def test_plan_tiles_refuses_bad_arguments(kwargs, match):
  args = {'ra': np.array([10.0]), 'dec': np.array([0.0]), 'npix': NPIX,
          'pixel_scale_arcmin': PIX_ARCMIN, 'overlap_pix': MARGIN, **kwargs}
  with pytest.raises(ValueError, match=match):
    tiling.plan_tiles(args.pop('ra'), args.pop('dec'), **args)


# --- Stitching ---------------------------------------------------------------


def _tile_maps(tiles):
  return np.stack([_field(*t.pixel_radec()) for t in tiles])


@pytest.mark.parametrize('center', [(30.0, 0.0), (150.0, 80.0), (0.0, 90.0)])
def test_stitching_a_smooth_field_reproduces_it(center):
  tiles, ra, dec = _tiles(center)
  nside = 1024
  stitched, weight = tiling.stitch_healpix(tiles, _tile_maps(tiles), nside)
  seen = weight > 0
  np.testing.assert_array_equal(stitched[~seen], hp.UNSEEN)
  truth = _field(*hp.pix2ang(nside, np.flatnonzero(seen), lonlat=True))
  np.testing.assert_allclose(stitched[seen], truth, atol=INTERPOLATION_ERROR,
                             rtol=0)
  # Every position of the footprint has full weight in some tile.
  assert weight[hp.ang2pix(nside, ra, dec, lonlat=True)].min() >= 1.0
  assert stitched.dtype == np.float64


def test_stitch_blends_stacks_and_weights():
  tile = tiling.Tile(0, 40.0, -20.0, 16, 4.0, 3)
  nside = 1024
  a = _field(*tile.pixel_radec()).astype(np.float32)
  maps = [np.stack([a, 2 * a]), np.stack([a + 1, 2 * a + 1])]
  stitched, weight = tiling.stitch_healpix(
      [tile, tile], maps, nside, weights=[np.ones((16, 16)), 3 * np.ones((16, 16))])
  assert stitched.shape == (2, hp.nside2npix(nside))
  assert stitched.dtype == np.float32
  seen = weight > 0
  pix_ra, pix_dec = hp.pix2ang(nside, np.flatnonzero(seen), lonlat=True)
  cols, rows = tiling._tile_pixel_coords(tile, pix_ra, pix_dec)
  # Weight 4 × taper; value (1·a + 3·(a + 1)) / 4 = a + 3/4.
  np.testing.assert_allclose(
      weight[seen], 4 * tiling._taper(cols, 16, 3) * tiling._taper(rows, 16, 3),
      rtol=1e-6)
  np.testing.assert_allclose(stitched[0, seen] - 0.75,
                             stitched[1, seen] / 2 - 0.375, atol=1e-5)
  np.testing.assert_allclose(stitched[0, seen] - 0.75,
                             _field(pix_ra, pix_dec),
                             atol=(4.0 / PIX_ARCMIN)**2 * INTERPOLATION_ERROR)  # 4' pixels
  # The footprint-only form holds the same values.
  pixels, values, pixel_weight = tiling.stitch_healpix_pixels(
      [tile, tile], maps, nside, weights=[np.ones((16, 16)), 3 * np.ones((16, 16))])
  np.testing.assert_array_equal(pixels, np.flatnonzero(seen))
  np.testing.assert_array_equal(values, stitched[:, seen])
  np.testing.assert_allclose(pixel_weight, weight[seen], rtol=1e-6)


@pytest.mark.parametrize('maps, weights, match', [
    ([np.zeros((8, 8))], None, 'got 1 maps for 2 tiles'),
    ([np.zeros((8, 8)), np.zeros((9, 9))], None,
     r'maps\[1\] has shape \(9, 9\); expected \(8, 8\)'),
    ([np.zeros((8, 8)), np.full((8, 8), np.nan)], None, r'maps\[1\]'),
    ([np.zeros((8, 8))] * 2, [np.ones((8, 8)), -np.ones((8, 8))],
     r'weights\[1\] holds 64 negative'),
])
def test_stitch_refuses_mismatched_maps(maps, weights, match):
  tiles = [tiling.Tile(0, 40.0, -20.0, 8, 4.0, 1)] * 2
  with pytest.raises(ValueError, match=match):
    tiling.stitch_healpix(tiles, maps, 64, weights=weights)
  with pytest.raises(ValueError, match='tiles is empty'):
    tiling.stitch_healpix([], [], 64)


def test_mosaic_reproduces_a_smooth_field():
  tiles, _, _ = _tiles((100.0, 60.0))
  image, wcs = tiling.mosaic_wcs(tiles, _tile_maps(tiles), PIX_ARCMIN)
  assert image.shape[::-1] == wcs.pixel_shape
  seen = np.isfinite(image)
  assert 0.6 < seen.mean() < 1.0  # the footprint is round, the mosaic square
  rows, cols = np.nonzero(seen)
  world = wcs.pixel_to_world_values(cols, rows)
  np.testing.assert_allclose(image[seen], _field(*world),
                             atol=INTERPOLATION_ERROR, rtol=0)


def test_mosaic_refuses_footprints_too_large_for_one_plane():
  tiles = [tiling.Tile(0, 0.0, 0.0, 8, 4.0, 1), tiling.Tile(1, 80.0, 0.0, 8, 4.0, 1)]
  with pytest.raises(ValueError, match=r'tile corner lies 40.\d deg from the mosaic'):
    tiling.mosaic_wcs(tiles, np.zeros((2, 8, 8)), 4.0)


def test_seam_metric_compares_bands_with_interiors():
  tiles, _, _ = _tiles((30.0, 0.0))
  nside = 1024
  band = tiling.seam_band(tiles, nside)
  stitched, weight = tiling.stitch_healpix(tiles, np.zeros((len(tiles), NPIX, NPIX)),
                                           nside)
  seen = weight > 0
  tapered, covering = tiling._tapered_and_covering(tiles, nside)
  # The band is where two tiles meet; a footprint edge (one tile's taper
  # with no neighbour) is neither seam nor interior.
  np.testing.assert_array_equal(band, tapered & (covering >= 2))
  edge = seen & tapered & ~band
  assert 0 < (band & seen).sum() < seen.sum() and edge.any()
  stitched[seen & band] = 2.0
  stitched[seen & ~tapered] = 0.5
  stitched[edge] = 100.0
  metric = tiling.seam_metric(tiles, stitched, np.zeros_like(stitched))
  assert metric.ratio == pytest.approx(4.0)
  assert metric.rmse_seam == pytest.approx(2.0)
  assert metric.n_seam + metric.n_interior + edge.sum() == seen.sum()
  with pytest.raises(ValueError, match='1-D HEALPix maps of one shape'):
    tiling.seam_metric(tiles, stitched, stitched[:-1])
