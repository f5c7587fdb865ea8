"""Tiles on the sphere for survey-scale maps, and stitching them back.

A survey footprint is too large for one flat map. It is covered by square
tiles, each a gnomonic (TAN) grid of ``npix`` × ``npix`` pixels of
``pixel_scale_arcmin`` about its own centre (the grids of
`catalog.bin_shear_catalog` with ``projection='tan'``, whose spin-2 rotation
of the ellipticities into each tile's frame `bin_tile` shares). The maps
estimated on the tiles are combined on a HEALPix map (`stitch_healpix`, RING
ordering) or on one large TAN grid (`mosaic_wcs`) by a weighted mean.

Tile layout (`tile_layout`, `plan_tiles`). The sphere is cut into cells:
a polar cap at each pole and, between them, declination bands of equal
height, each cut into equal RA cells, as few as fit; each cell is the
full-weight interior's share of one north-up tile centred on it (the cap's
tile on the pole). Each tile has a tapered band of ``margin_pix`` pixels
along its edges (`edge_weight`) inside which its neighbours' interiors
reach. Every point of the sky has weight 1 in the tile of its cell, and the
layout works the same at the equator, at high declination and around a
pole. Tiles are numbered band after band (`TileLayout.index_of`). The price
of square tiles with margins is redundancy: the tiles' pixels cover the sky
about 2.0 times for 128² tiles with 16-pixel margins ((128/96)² for the
margins, 1.1 for cells that fill their interiors only partly; a layout of
tiles centred on a coarse HEALPix grid, whose diamond pixels fill a
north-up square poorly, covers it 3–4 times).

Blending. A tile's map is read at any sky position by projecting the
position into the tile (`sky.gnomonic`) and interpolating bilinearly between
the four surrounding pixel centres; the interpolation exists between the
first and last pixel centres, where the taper is defined as a continuous
function of the pixel coordinate (0 at the outermost pixel centres, so the
weight vanishes wherever interpolation is not available). The stitched value
is Σ_t w_t m_t / Σ_t w_t over the tiles t covering the position.

Blending samples. Stitching posterior samples tile by tile (sample k of
every tile combined into stitched sample k) gives maps with the right
one-point distribution in tile interiors; in the overlap bands the weighted
mean of two independent draws has a variance smaller by up to a factor
Σ w_t² / (Σ w_t)² (1/2 at equal weights), and the correlations across a
seam are those of independent tiles, not of one posterior. Stitched
posterior means and standard deviations per pixel are what is meant to be
read; stitched samples are for display.

Use (κ maps of the tiles from any estimator of the package)::

  tiles = tiling.plan_tiles(cat.ra, cat.dec, npix=128,
                            pixel_scale_arcmin=0.8, overlap_pix=16)
  kappas = [estimate(tiling.bin_tile(cat, t, sigma_e=0.26)) for t in tiles]
  nside = tiling.nside_for_pixel_scale(0.8)
  kappa_map, weight = tiling.stitch_healpix(tiles, kappas, nside)
"""

import collections
import functools

from astropy.wcs import WCS
import healpy as hp
import numpy as np

from tfp_massmap import _checks
from tfp_massmap import catalog as catalog_lib
from tfp_massmap import sky

__all__ = [
    'Tile',
    'TileLayout',
    'tile_layout',
    'nside_for_pixel_scale',
    'plan_tiles',
    'galaxies_near_tiles',
    'bin_tile',
    'edge_weight',
    'stitch_healpix_pixels',
    'stitch_healpix',
    'mosaic_wcs',
    'seam_band',
    'SeamMetric',
    'seam_metric',
]

# Keyword arguments of `catalog.bin_shear_catalog` that a tile fixes.
_TILE_FIXED_KWARGS = ('npix', 'pixel_scale_arcmin', 'center', 'projection')
# Largest angle (deg) between a mosaic's centre and a tile corner: the TAN
# scale there is 1/cos²(30°) = 1.33 times that at the centre.
_MOSAIC_MAX_RADIUS_DEG = 30.0


class Tile(
    collections.namedtuple('Tile', [
        'index', 'ra_deg', 'dec_deg', 'npix', 'pixel_scale_arcmin',
        'margin_pix'])):
  """One square gnomonic tile of a survey.

  Attributes:
    index: the tile's number in its `TileLayout` (int), unique on the
      sphere for one tile size, pixel scale and margin.
    ra_deg, dec_deg: the tile centre (tangent point) in degrees.
    npix: pixels N per side.
    pixel_scale_arcmin: pixel side at the tangent point in arcmin.
    margin_pix: width in pixels of the tapered band along each edge
      (`edge_weight`).

  Pixel (row, col) has plane coordinates ``x = (col − (N−1)/2) · s``,
  ``y = (row − (N−1)/2) · s`` (s the pixel side in degrees) in the
  `sky.gnomonic` projection about the centre: rows along Dec, columns along
  RA, as in `catalog.bin_shear_catalog`.
  """
  __slots__ = ()

  @property
  def center(self):
    """The tile centre ``(ra_deg, dec_deg)``."""
    return (self.ra_deg, self.dec_deg)

  @property
  def wcs(self):
    """The tile's celestial WCS: TAN, CDELT1 > 0, LONPOLE 180.

    The same WCS as the `ShearMap` that `bin_tile` returns.
    """
    step = self.pixel_scale_arcmin / 60.0
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
    wcs.wcs.cunit = ['deg', 'deg']
    wcs.wcs.crval = [self.ra_deg, self.dec_deg]
    wcs.wcs.cdelt = [step, step]
    wcs.wcs.crpix = [(self.npix + 1) / 2, (self.npix + 1) / 2]
    wcs.wcs.lonpole = 180.0
    wcs.pixel_shape = (self.npix, self.npix)
    return wcs

  def pixel_radec(self):
    """Sky positions ``(ra, dec)`` (deg) of the pixel centres, each ``[N, N]``."""
    offsets = (np.arange(self.npix) - (self.npix - 1) / 2) * (
        self.pixel_scale_arcmin / 60.0)
    x, y = np.meshgrid(offsets, offsets)
    return sky.inverse_gnomonic(x, y, self.center)


def _check_npix_margin(npix, margin_pix):
  npix = _checks.positive_int(npix, 'npix', minimum=2)
  margin_pix = _checks.positive_int(margin_pix, 'margin_pix', minimum=0)
  if 2 * margin_pix > npix - 2:
    raise ValueError(
        f'margin_pix = {margin_pix} leaves no full-weight interior in a tile of '
        f'npix = {npix}; expected 2 * margin_pix <= npix - 2 '
        f'(margin_pix <= {(npix - 2) // 2}).')
  return npix, margin_pix


class TileLayout(
    collections.namedtuple('TileLayout', [
        'npix', 'pixel_scale_arcmin', 'margin_pix', 'dec_edges_deg',
        'num_ra', 'first_index'])):
  """Square tiles on the whole sphere in declination bands (`tile_layout`).

  Attributes:
    npix, pixel_scale_arcmin, margin_pix: the tiles' size, pixel side
      (arcmin) and tapered margin (pixels), as in `Tile`.
    dec_edges_deg: ``[B + 1]`` increasing band edges in degrees, from −90 to
      90; bands 0 and B − 1 are the polar caps.
    num_ra: ``[B]`` number of cells (tiles) along RA in each band (1 in a
      cap).
    first_index: ``[B]`` index of the first tile of each band; tiles are
      numbered band after band, from RA 0 eastwards.
  """
  __slots__ = ()

  @property
  def num_tiles(self):
    """Number of tiles covering the sphere (int)."""
    return int(self.first_index[-1] + self.num_ra[-1])

  def index_of(self, ra_deg, dec_deg):
    """Index of the tile whose cell holds each position (int array)."""
    ra = np.mod(np.asarray(ra_deg, dtype=np.float64), 360.0)
    dec = np.asarray(dec_deg, dtype=np.float64)
    band = np.clip(np.searchsorted(self.dec_edges_deg, dec, side='right') - 1,
                   0, len(self.num_ra) - 1)
    num = self.num_ra[band]
    cell = np.minimum(np.floor(ra / 360.0 * num).astype(np.int64), num - 1)
    return self.first_index[band] + cell

  def tile(self, index):
    """The `Tile` of an index: centred on its cell (the pole for a cap)."""
    index = int(index)
    if not 0 <= index < self.num_tiles:
      raise ValueError(f'tile index {index} is outside this layout of '
                       f'{self.num_tiles} tiles; expected 0..{self.num_tiles - 1}.')
    band = int(np.searchsorted(self.first_index, index, side='right') - 1)
    num = int(self.num_ra[band])
    lo, hi = self.dec_edges_deg[band], self.dec_edges_deg[band + 1]
    if band == 0 or band == len(self.num_ra) - 1:
      ra0, dec0 = 0.0, (-90.0 if band == 0 else 90.0)
    else:
      ra0 = (index - self.first_index[band] + 0.5) * 360.0 / num
      dec0 = 0.5 * (lo + hi)
    return Tile(index=index, ra_deg=float(ra0), dec_deg=float(dec0),
                npix=self.npix, pixel_scale_arcmin=self.pixel_scale_arcmin,
                margin_pix=self.margin_pix)


def _interior_half_width_deg(npix, pixel_scale_arcmin, margin_pix):
  """Half-width (gnomonic plane degrees) of a tile's full-weight interior."""
  return ((npix - 1) / 2 - margin_pix) * pixel_scale_arcmin / 60.0


def _cell_fits(lo_deg, hi_deg, width_deg, half_width_deg):
  """Whether the cell [−w/2, w/2] × [lo, hi] fits in the interior square.

  The cell's boundary (two meridian segments and two arcs of parallels,
  densely sampled) is projected about the cell's centre; the interior is
  convex, so the cell is inside when its boundary is (with a 0.1 % margin
  for the sampling).
  """
  decs = np.linspace(lo_deg, hi_deg, 33)
  ras = np.linspace(-0.5 * width_deg, 0.5 * width_deg, 65)
  ra = np.concatenate([np.full_like(decs, ras[0]), np.full_like(decs, ras[-1]),
                       ras, ras])
  dec = np.concatenate([decs, decs, np.full_like(ras, lo_deg),
                        np.full_like(ras, hi_deg)])
  x, y = sky.gnomonic(ra, dec, (0.0, 0.5 * (lo_deg + hi_deg)))
  extent = np.maximum(np.abs(x), np.abs(y))
  return bool(np.all(np.isfinite(extent))
              and extent.max() <= half_width_deg * 0.999)


@functools.cache
def tile_layout(npix, pixel_scale_arcmin, margin_pix):
  """The tiles of a given size covering the sphere (module docstring).

  A polar cap at each pole holds the points within the interior's inscribed
  circle of the pole's tile. Between the caps, declination is cut into the
  fewest equal bands no taller than 0.92 of the interior's side (the rest
  leaves room for the curvature of the parallels), and each band into the
  fewest equal RA cells whose every point, projected about the cell's
  centre, lies inside the tile interior (checked on the cell's boundary).
  So every point of the sphere has weight 1 in the tile of its cell.

  Args:
    npix: pixels N per tile side (int >= 2).
    pixel_scale_arcmin: pixel side in arcmin (> 0).
    margin_pix: width of the tapered band in pixels (int >= 0,
      2 · margin_pix <= N − 2).

  Returns:
    A `TileLayout`.

  Raises:
    ValueError: on invalid arguments, or tiles wider than 60 deg (a
      gnomonic grid that large is not a flat map).
  """
  npix, margin_pix = _check_npix_margin(npix, margin_pix)
  pixel_scale_arcmin = _checks.positive_scalar(
      pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  half_width = _interior_half_width_deg(npix, pixel_scale_arcmin, margin_pix)
  if half_width > 30.0:
    raise ValueError(
        f'tiles of {npix} pixels of {pixel_scale_arcmin} arcmin with margin '
        f'{margin_pix} have a {2 * half_width:.1f} deg interior; expected at '
        'most 60 deg.')
  cap_deg = np.rad2deg(np.arctan(np.deg2rad(half_width))) * 0.999
  span = 180.0 - 2.0 * cap_deg
  num_bands = max(1, int(np.ceil(span / (0.92 * 2.0 * cap_deg))))
  edges = np.concatenate([[-90.0], np.linspace(-90.0 + cap_deg, 90.0 - cap_deg,
                                               num_bands + 1), [90.0]])
  num_ra = [1]
  for lo, hi in zip(edges[1:-2], edges[2:-1]):
    widest = np.cos(np.deg2rad(min(abs(lo), abs(hi)) if lo * hi > 0 else 0.0))
    num = max(1, int(360.0 * widest / (2.0 * half_width)))  # A lower bound.
    while not _cell_fits(lo, hi, 360.0 / num, half_width):
      num += 1
    num_ra.append(num)
  num_ra = np.array(num_ra + [1], dtype=np.int64)
  first = np.concatenate([[0], np.cumsum(num_ra)[:-1]])
  return TileLayout(npix=npix, pixel_scale_arcmin=pixel_scale_arcmin,
                    margin_pix=margin_pix, dec_edges_deg=edges, num_ra=num_ra,
                    first_index=first)


def nside_for_pixel_scale(pixel_scale_arcmin):
  """The power-of-2 NSIDE whose pixel side is closest to a pixel scale.

  The pixel side of NSIDE is the square root of its pixel area,
  ``healpy.nside2resol``; the closest is in ratio (log scale). For 0.8′
  this is 4096 (0.86′).

  Args:
    pixel_scale_arcmin: pixel side in arcmin (> 0).

  Returns:
    NSIDE, a power of 2 between 1 and 2**29.
  """
  pixel_scale_arcmin = _checks.positive_scalar(
      pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  orders = np.arange(30)
  resolutions = np.array([hp.nside2resol(2**o, arcmin=True) for o in orders])
  best = np.argmin(np.abs(np.log(resolutions / pixel_scale_arcmin)))
  return int(2**orders[best])


def _as_positions(ra_deg, dec_deg):
  ra = np.asarray(ra_deg, dtype=np.float64)
  dec = np.asarray(dec_deg, dtype=np.float64)
  if ra.ndim != 1 or ra.shape != dec.shape:
    raise ValueError(f'ra_deg and dec_deg must be 1-D arrays of one shape, got '
                     f'shapes {ra.shape} and {dec.shape}.')
  if ra.size == 0:
    raise ValueError('plan_tiles needs at least one galaxy position, got none.')
  _checks.finite(ra, 'ra_deg')
  _checks.finite(dec, 'dec_deg')
  if (np.abs(dec) > 90).any():
    raise ValueError(f'dec_deg spans {dec.min()}..{dec.max()} deg; expected '
                     'values in [-90, 90].')
  return ra, dec


def _tile_pixel_coords(tile, ra, dec):
  """Zero-based (column, row) coordinates of positions in a tile; NaN far."""
  x, y = sky.gnomonic(ra, dec, tile.center)
  step = tile.pixel_scale_arcmin / 60.0
  centre = (tile.npix - 1) / 2
  return x / step + centre, y / step + centre


def _corner_radius(tile):
  """Angle (rad) from a tile's centre to the outer corner of its pixels."""
  half = np.deg2rad(tile.npix / 2 * tile.pixel_scale_arcmin / 60.0)
  return np.arctan(np.sqrt(2.0) * half)


def galaxies_near_tiles(ra_deg, dec_deg, tiles):
  """Per tile, the indices of the positions within its corner radius.

  Positions are bucketed once in HEALPix pixels about a quarter of a tile
  across, so each tile looks only at the buckets of a disc about its
  centre: the cost is one pass over the positions plus the galaxies near
  each tile, not positions × tiles.

  Args:
    ra_deg, dec_deg: 1-D arrays of positions in degrees.
    tiles: a sequence of `Tile`.

  Returns:
    A list with, per tile, the sorted int64 indices of the positions whose
    angle from the tile centre is at most that of the tile's outer corners
    (every position that can fall on the tile's grid).
  """
  ra, dec = _as_positions(ra_deg, dec_deg)
  if not tiles:
    return []
  radius = max(_corner_radius(t) for t in tiles) * (1 + 1e-6)
  lookup = 1
  while hp.nside2resol(2 * lookup) > 0.25 * radius and lookup < 2**13:
    lookup *= 2
  buckets = hp.ang2pix(lookup, ra, dec, lonlat=True)
  order = np.argsort(buckets, kind='stable')
  starts = np.searchsorted(buckets[order], np.arange(hp.nside2npix(lookup) + 1))
  xyz = sky.unit_vectors(ra, dec)
  selections = []
  for tile in tiles:
    centre = sky.unit_vectors(tile.ra_deg, tile.dec_deg)
    near = hp.query_disc(lookup, centre, radius, inclusive=True)
    candidates = np.sort(np.concatenate(
        [order[starts[p]:starts[p + 1]] for p in near] or [np.zeros(0, np.int64)]))
    within = np.cos(_corner_radius(tile) * (1 + 1e-6))
    selections.append(candidates[xyz[candidates] @ centre >= within])
  return selections


def plan_tiles(ra_deg, dec_deg, *, npix, pixel_scale_arcmin, overlap_pix,
               min_fill=0.25):
  """Tiles covering the footprint of a set of galaxy positions.

  The tiles of `tile_layout` (``margin_pix = overlap_pix``) whose cells
  hold at least one galaxy; every galaxy lies in the full-weight interior
  of its cell's tile. A tile in which fewer than ``min_fill`` of the N²
  pixels hold a galaxy is skipped (its galaxies then count only where
  neighbouring tiles reach them: footprint edges and stray galaxies are
  given up, not mapped from a mostly empty tile).

  Args:
    ra_deg, dec_deg: 1-D arrays of galaxy positions in degrees.
    npix: pixels N per tile side (int >= 2; the prior's size, e.g. 128).
    pixel_scale_arcmin: pixel side in arcmin (> 0; the prior's, e.g. 0.8).
    overlap_pix: width in pixels of the tapered band along each tile edge,
      which lies inside neighbouring tiles (int >= 0, 2 · overlap_pix <=
      N − 2); ``Tile.margin_pix``.
    min_fill: smallest fraction of a tile's pixels holding galaxies for it
      to be kept, in [0, 1].

  Returns:
    A list of `Tile`, ordered by index (`TileLayout.index_of`).

  Raises:
    ValueError: on invalid arguments or positions.
  """
  npix, margin_pix = _check_npix_margin(npix, overlap_pix)
  pixel_scale_arcmin = _checks.positive_scalar(
      pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  try:
    min_fill = float(min_fill)
  except (TypeError, ValueError):
    raise ValueError(f'min_fill must be a number in [0, 1], got {min_fill!r}.'
                     ) from None
  if not 0.0 <= min_fill <= 1.0:
    raise ValueError(f'min_fill must be a number in [0, 1], got {min_fill!r}.')
  ra, dec = _as_positions(ra_deg, dec_deg)
  layout = tile_layout(npix, pixel_scale_arcmin, margin_pix)
  tiles = [layout.tile(i) for i in np.unique(layout.index_of(ra, dec))]
  if min_fill == 0:
    return tiles
  kept = []
  for tile, members in zip(tiles, galaxies_near_tiles(ra, dec, tiles)):
    cols, rows = _tile_pixel_coords(tile, ra[members], dec[members])
    cols, rows = np.floor(cols + 0.5), np.floor(rows + 0.5)
    inside = (cols >= 0) & (cols < npix) & (rows >= 0) & (rows < npix)
    filled = np.unique(rows[inside] * npix + cols[inside]).size
    if filled >= min_fill * npix * npix:
      kept.append(tile)
  return kept


def bin_tile(catalog, tile, **bin_kwargs):
  """The shear map of a catalogue on a tile's grid.

  `catalog.bin_shear_catalog` with the tile's ``npix``, pixel scale and
  centre and ``projection='tan'``, so each ellipticity is rotated from its
  local RA/Dec frame into the tile frame (`sky.to_grid_frame`). Only the
  galaxies within the tile's corner radius are passed on (the others fall
  outside the grid anyway), so a large catalogue costs one dot product per
  galaxy and tile.

  Args:
    catalog: a `catalog.Catalog`, or a mapping with 1-D arrays ``ra``,
      ``dec`` (deg), ``e1``, ``e2`` (local frames) and optionally ``weight``.
    tile: a `Tile`.
    **bin_kwargs: other arguments of `catalog.bin_shear_catalog`
      (``sigma_e``, ``noise_model``); pass ``sigma_e`` for a survey, or each
      tile estimates its own from its galaxies.

  Returns:
    A `ShearMap` on the tile grid, with WCS ``tile.wcs``.

  Raises:
    ValueError: if ``bin_kwargs`` sets what the tile fixes (npix,
      pixel_scale_arcmin, center, projection), or as
      `catalog.bin_shear_catalog` (e.g. no galaxy inside the tile).
  """
  if not isinstance(tile, Tile):
    raise ValueError(f'tile must be a tiling.Tile, got {type(tile).__name__}.')
  fixed = sorted(set(bin_kwargs) & set(_TILE_FIXED_KWARGS))
  if fixed:
    raise ValueError(f'bin_tile got {fixed}, which the tile fixes; expected only '
                     'other arguments of catalog.bin_shear_catalog (sigma_e, '
                     'noise_model).')
  if hasattr(catalog, '_asdict'):
    catalog = catalog._asdict()
  if not hasattr(catalog, 'keys') or 'ra' not in catalog or 'dec' not in catalog:
    raise ValueError('catalog must be a Catalog or a mapping with keys ra, dec, '
                     f'e1, e2 (and optionally weight), got {type(catalog).__name__}.')
  ra = np.asarray(catalog['ra'], dtype=np.float64)
  dec = np.asarray(catalog['dec'], dtype=np.float64)
  cos_distance = (sky.unit_vectors(ra, dec)
                  @ sky.unit_vectors(tile.ra_deg, tile.dec_deg))
  radius = _corner_radius(tile) * (1 + 1e-6)
  near = cos_distance >= np.cos(radius)
  if not near.any():
    raise ValueError(
        f'no galaxy of the catalogue lies within {np.rad2deg(radius):.4f} deg of '
        f'the centre ({tile.ra_deg:.4f}, {tile.dec_deg:.4f}) deg of tile '
        f'{tile.index}; expected a tile planned for this catalogue.')
  subset = {key: (None if values is None else np.asarray(values)[near])
            for key, values in catalog.items()}
  return catalog_lib.bin_shear_catalog(
      subset, tile.npix, tile.pixel_scale_arcmin, center=tile.center,
      projection='tan', **bin_kwargs)


def _taper(u, npix, margin_pix):
  """Taper of continuous pixel coordinates u along one axis (module docstring).

  sin²(π/2 · d/margin_pix), d the distance in pixels from the nearer
  outermost pixel centre, is 0 there and 1 from d = margin_pix on; 0 outside
  the pixel centres (where bilinear interpolation has no neighbours).
  """
  u = np.asarray(u, dtype=np.float64)
  inside = (u >= 0) & (u <= npix - 1)
  if margin_pix == 0:
    return inside.astype(np.float64)
  d = np.clip(np.minimum(u, npix - 1 - u) / margin_pix, 0.0, 1.0)
  return np.where(inside, np.sin(0.5 * np.pi * d)**2, 0.0)


def edge_weight(npix, margin_pix):
  """The blending weight of a tile's pixels, ``[N, N]``.

  The product of one taper per axis: sin²(π/2 · d/margin_pix), d the
  distance in pixels from the outermost pixel centre, so 0 on the edge
  pixels, rising smoothly (zero slope at both ends) to 1 at ``margin_pix``
  pixels from the edge and 1 in the interior. ``margin_pix = 0`` gives 1
  everywhere.

  Args:
    npix: pixels N per side (int >= 2).
    margin_pix: width of the tapered band in pixels (int >= 0,
      2 · margin_pix <= N − 2).

  Returns:
    float64 ``[N, N]`` in [0, 1].

  Raises:
    ValueError: on invalid arguments.
  """
  npix, margin_pix = _check_npix_margin(npix, margin_pix)
  w = _taper(np.arange(npix), npix, margin_pix)
  return np.outer(w, w)


def _bilinear(image, cols, rows):
  """Bilinear interpolation of ``image [..., N, N]`` at pixel coordinates."""
  n = image.shape[-1]
  c0 = np.clip(np.floor(cols).astype(np.int64), 0, n - 2)
  r0 = np.clip(np.floor(rows).astype(np.int64), 0, n - 2)
  fc, fr = cols - c0, rows - r0
  return ((1 - fr) * ((1 - fc) * image[..., r0, c0] + fc * image[..., r0, c0 + 1])
          + fr * ((1 - fc) * image[..., r0 + 1, c0] + fc * image[..., r0 + 1, c0 + 1]))


def _tile_weight_at(tile, ra, dec):
  """Pixel coordinates and taper weight of sky positions in a tile."""
  cols, rows = _tile_pixel_coords(tile, ra, dec)
  cols, rows = np.nan_to_num(cols, nan=-1.0), np.nan_to_num(rows, nan=-1.0)
  w = (_taper(cols, tile.npix, tile.margin_pix)
       * _taper(rows, tile.npix, tile.margin_pix))
  return cols, rows, w


def _tile_corners(tile):
  """Sky positions (ra, dec) of the outermost pixel centres of a tile."""
  half = (tile.npix - 1) / 2 * tile.pixel_scale_arcmin / 60.0
  return sky.inverse_gnomonic(np.array([-half, half, half, -half]),
                              np.array([-half, -half, half, half]), tile.center)


def _tile_healpix(tile, nside):
  """HEALPix pixels with positive weight in a tile: pix, cols, rows, weight."""
  corners = hp.ang2vec(*_tile_corners(tile), lonlat=True)
  pix = hp.query_polygon(nside, corners, inclusive=False)
  ra, dec = hp.pix2ang(nside, pix, lonlat=True)
  cols, rows, w = _tile_weight_at(tile, ra, dec)
  keep = w > 0
  return pix[keep], cols[keep], rows[keep], w[keep]


def _check_tiles_maps(tiles, maps, weights):
  """Validates tiles, their maps [T, ..., N, N] and optional weights [T, N, N]."""
  tiles = list(tiles)
  if not tiles:
    raise ValueError('tiles is empty; expected at least one Tile.')
  for i, tile in enumerate(tiles):
    if not isinstance(tile, Tile):
      raise ValueError(f'tiles[{i}] must be a tiling.Tile, got '
                       f'{type(tile).__name__}.')
  maps = [np.asarray(m) for m in maps]
  if len(maps) != len(tiles):
    raise ValueError(f'got {len(maps)} maps for {len(tiles)} tiles; expected one '
                     'map (or stack of maps) per tile.')
  lead = maps[0].shape[:-2]
  for i, (tile, m) in enumerate(zip(tiles, maps)):
    if m.shape != lead + (tile.npix, tile.npix):
      raise ValueError(f'maps[{i}] has shape {m.shape}; expected '
                       f'{lead + (tile.npix, tile.npix)} (the leading shape of '
                       'maps[0] and the tile size).')
    _checks.finite(m, f'maps[{i}]')
  if weights is not None:
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    if len(weights) != len(tiles):
      raise ValueError(f'got {len(weights)} weight maps for {len(tiles)} tiles.')
    for i, (tile, w) in enumerate(zip(tiles, weights)):
      if w.shape != (tile.npix, tile.npix):
        raise ValueError(f'weights[{i}] has shape {w.shape}; expected '
                         f'{(tile.npix, tile.npix)}.')
      _checks.finite(w, f'weights[{i}]')
      if (w < 0).any():
        raise ValueError(f'weights[{i}] holds {int((w < 0).sum())} negative '
                         'value(s); expected weights >= 0.')
  dtype = np.result_type(maps[0].dtype, np.float32)
  return tiles, maps, weights, lead, dtype


def _accumulate(index, w, values, size, lead):
  """Sums of w and w·values per target index; values [..., n]."""
  wsum = np.bincount(index, weights=w, minlength=size)
  flat = values.reshape((-1, values.shape[-1]))
  vsum = np.stack([np.bincount(index, weights=w * v, minlength=size)
                   for v in flat]).reshape(lead + (size,))
  return vsum, wsum


def stitch_healpix_pixels(tiles, maps, nside, weights=None):
  """Tiles' maps blended at the HEALPix pixels (RING) they cover.

  Each HEALPix pixel centre is projected into every tile
  (`sky.gnomonic`); a tile contributes its bilinearly interpolated value
  with weight taper × (interpolated ``weights``), the taper of
  `edge_weight` as a continuous function of the pixel coordinates (module
  docstring). The value is Σ w m / Σ w. Memory scales with the footprint,
  not the sphere: use this form for stacks of samples or large NSIDE, and
  `stitch_healpix` for full-sky maps.

  Args:
    tiles: sequence of T `Tile`.
    maps: T arrays ``[..., N, N]`` (one leading shape for all, e.g. samples
      ``[S, N, N]``), or one array ``[T, ..., N, N]``, in each tile's grid.
    nside: NSIDE of the output (int >= 1; `nside_for_pixel_scale` for the
      one matching the tiles).
    weights: optional T non-negative arrays ``[N, N]`` multiplying the taper
      (e.g. inverse variances); default none.

  Returns:
    (pixels, values, weight): the sorted RING pixels with positive total
    weight, int64 ``[n]``; the blended values ``[..., n]`` in the maps' float
    dtype (at least float32); the total weight Σ w ``[n]`` (float64).

  Raises:
    ValueError: on an empty tile list, maps or weights that do not match
      the tiles, or non-finite values.
  """
  tiles, maps, weights, lead, dtype = _check_tiles_maps(tiles, maps, weights)
  nside = _checks.positive_int(nside, 'nside')
  pixels, ws, values = [], [], []
  for i, tile in enumerate(tiles):
    pix, cols, rows, w = _tile_healpix(tile, nside)
    if weights is not None:
      w = w * _bilinear(weights[i], cols, rows)
    pixels.append(pix)
    ws.append(w)
    values.append(_bilinear(maps[i].astype(np.float64), cols, rows))
  pixels = np.concatenate(pixels).astype(np.int64)
  unique, index = np.unique(pixels, return_inverse=True)
  vsum, wsum = _accumulate(index, np.concatenate(ws),
                           np.concatenate(values, axis=-1), unique.size, lead)
  seen = wsum > 0
  return (unique[seen], (vsum[..., seen] / wsum[seen]).astype(dtype),
          wsum[seen])


def stitch_healpix(tiles, maps, nside, weights=None):
  """Tiles' maps combined on a full-sky HEALPix map (RING) by weighted mean.

  `stitch_healpix_pixels` written into full-sky maps (12·nside² values per
  map: 0.8 GB in float32 at NSIDE 4096).

  Args:
    tiles: sequence of T `Tile`.
    maps: T arrays ``[..., N, N]`` (one leading shape for all), or one array
      ``[T, ..., N, N]``, in each tile's grid.
    nside: NSIDE of the output (int >= 1).
    weights: optional T non-negative arrays ``[N, N]`` multiplying the taper.

  Returns:
    (stitched, total_weight): ``[..., 12·nside²]`` in the maps' float dtype
    (at least float32), ``healpy.UNSEEN`` where no tile has weight; and the
    sum of the weights ``[12·nside²]`` in the same dtype (0 there).

  Raises:
    ValueError: as `stitch_healpix_pixels`.
  """
  pixels, values, weight = stitch_healpix_pixels(tiles, maps, nside, weights)
  npix_sky = hp.nside2npix(nside)
  stitched = np.full(values.shape[:-1] + (npix_sky,), hp.UNSEEN,
                     dtype=values.dtype)
  stitched[..., pixels] = values
  total = np.zeros(npix_sky, dtype=values.dtype)
  total[pixels] = weight
  return stitched, total


def mosaic_wcs(tiles, maps, pixel_scale_arcmin, center=None, weights=None):
  """Tiles' maps combined on one TAN grid (for fields of a few tens of deg²).

  The mosaic is a `sky.gnomonic` grid about ``center`` with square pixels of
  ``pixel_scale_arcmin``, just large enough to hold every tile; each of its
  pixel centres is blended from the tiles as in `stitch_healpix`.

  Args:
    tiles: sequence of T `Tile`.
    maps: T arrays ``[..., N, N]``, or one array ``[T, ..., N, N]``.
    pixel_scale_arcmin: mosaic pixel side in arcmin (> 0).
    center: (ra, dec) of the mosaic's tangent point in degrees; default
      `sky.field_center` of the tile centres.
    weights: optional T non-negative arrays ``[N, N]`` multiplying the taper.

  Returns:
    (image, wcs): ``[..., ny, nx]`` (rows along Dec, columns along RA; NaN
    where no tile has weight) and its TAN `astropy.wcs.WCS` (CDELT1 > 0,
    LONPOLE 180, pixel shape (nx, ny)).

  Raises:
    ValueError: on invalid arguments, or when a tile corner is more than
      30° from the centre (use `stitch_healpix` for such footprints).
  """
  tiles, maps, weights, lead, dtype = _check_tiles_maps(tiles, maps, weights)
  pixel_scale_arcmin = _checks.positive_scalar(
      pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  if center is None:
    center = sky.field_center([t.ra_deg for t in tiles], [t.dec_deg for t in tiles])
  center = sky.as_center(center)
  step = pixel_scale_arcmin / 60.0
  corners = np.array([_tile_corners(t) for t in tiles])  # [T, 2, 4]
  cos_max = np.cos(np.deg2rad(_MOSAIC_MAX_RADIUS_DEG))
  cos_corner = (sky.unit_vectors(corners[:, 0], corners[:, 1])
                @ sky.unit_vectors(*center))
  if not (cos_corner >= cos_max).all():
    far = np.rad2deg(np.arccos(np.clip(cos_corner.min(), -1, 1)))
    raise ValueError(
        f'a tile corner lies {far:.1f} deg from the mosaic centre {center}; a TAN '
        f'mosaic holds tiles within {_MOSAIC_MAX_RADIUS_DEG} deg of its centre. '
        'Use stitch_healpix for larger footprints.')
  x, y = sky.gnomonic(corners[:, 0], corners[:, 1], center)
  # Pixel k (zero-based) of the mosaic is at plane coordinate (k + k0)·step.
  col0, row0 = int(np.floor(x.min() / step)), int(np.floor(y.min() / step))
  nx = int(np.ceil(x.max() / step)) - col0 + 1
  ny = int(np.ceil(y.max() / step)) - row0 + 1
  wcs = WCS(naxis=2)
  wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
  wcs.wcs.cunit = ['deg', 'deg']
  wcs.wcs.crval = list(center)
  wcs.wcs.cdelt = [step, step]
  wcs.wcs.crpix = [1 - col0, 1 - row0]
  wcs.wcs.lonpole = 180.0
  wcs.pixel_shape = (nx, ny)

  vsum = np.zeros(lead + (ny * nx,))
  wsum = np.zeros(ny * nx)
  for i, tile in enumerate(tiles):
    # Gnomonic projections map great circles to lines, so the tile is the
    # convex quadrilateral of its corners in the mosaic plane.
    c_lo = max(int(np.floor(x[i].min() / step)) - col0, 0)
    c_hi = min(int(np.ceil(x[i].max() / step)) - col0, nx - 1)
    r_lo = max(int(np.floor(y[i].min() / step)) - row0, 0)
    r_hi = min(int(np.ceil(y[i].max() / step)) - row0, ny - 1)
    rr, cc = np.meshgrid(np.arange(r_lo, r_hi + 1), np.arange(c_lo, c_hi + 1),
                         indexing='ij')
    ra, dec = sky.inverse_gnomonic((cc + col0) * step, (rr + row0) * step, center)
    cols, rows, w = _tile_weight_at(tile, ra.ravel(), dec.ravel())
    keep = w > 0
    cols, rows, w = cols[keep], rows[keep], w[keep]
    if weights is not None:
      w = w * _bilinear(weights[i], cols, rows)
    flat = (rr.ravel() * nx + cc.ravel())[keep]
    wsum[flat] += w
    vsum[..., flat] += w * _bilinear(maps[i].astype(np.float64), cols, rows)
  image = np.full(lead + (ny * nx,), np.nan, dtype=dtype)
  seen = wsum > 0
  image[..., seen] = vsum[..., seen] / wsum[seen]
  return image.reshape(lead + (ny, nx)), wcs


def seam_band(tiles, nside):
  """HEALPix pixels (RING) where tiles are blended across a seam.

  A pixel is in the band when it lies in the tapered band of at least one
  tile (its taper strictly between 0 and 1, within ``margin_pix`` pixels of
  its outermost pixel centres) and at least two tiles cover it: there the
  stitched map mixes the edges of tiles. The band of a tile with no
  neighbour (the edge of the footprint, or beside a skipped tile) is not a
  seam and is left out.

  Args:
    tiles: sequence of `Tile`.
    nside: NSIDE (int >= 1).

  Returns:
    bool ``[12·nside²]``.
  """
  tapered, covering = _tapered_and_covering(tiles, nside)
  return tapered & (covering >= 2)


def _tapered_and_covering(tiles, nside):
  """Pixels in some tile's tapered band, and the number of tiles covering each."""
  nside = _checks.positive_int(nside, 'nside')
  tapered = np.zeros(hp.nside2npix(nside), dtype=bool)
  covering = np.zeros(hp.nside2npix(nside), dtype=np.int32)
  for tile in tiles:
    pix, _, _, w = _tile_healpix(tile, nside)
    tapered[pix[w < 1]] = True
    covering[pix[w > 0]] += 1
  return tapered, covering


class SeamMetric(
    collections.namedtuple('SeamMetric', [
        'ratio', 'rmse_seam', 'rmse_interior', 'n_seam', 'n_interior'])):
  """RMSE of a stitched map in the tiles' tapered bands over that elsewhere.

  Attributes:
    ratio: rmse_seam / rmse_interior (1 when seams cost nothing).
    rmse_seam: RMSE against the truth over the pixels of `seam_band`.
    rmse_interior: RMSE over the stitched pixels in no tile's tapered band.
    n_seam, n_interior: the numbers of pixels of each set.
  """
  __slots__ = ()


def seam_metric(tiles, stitched, truth):
  """The seam metric of a stitched HEALPix map against its truth.

  Args:
    tiles: the `Tile` list the map was stitched from.
    stitched: HEALPix map ``[12·nside²]`` (RING), ``healpy.UNSEEN`` off the
      tiles (as `stitch_healpix` returns).
    truth: HEALPix map of the same NSIDE; pixels that are UNSEEN or not
      finite are left out.

  Returns:
    A `SeamMetric`.

  Raises:
    ValueError: if the maps are not HEALPix maps of one NSIDE, or either set
      of pixels is empty.
  """
  stitched = np.asarray(stitched, dtype=np.float64)
  truth = np.asarray(truth, dtype=np.float64)
  if stitched.ndim != 1 or stitched.shape != truth.shape:
    raise ValueError(f'stitched and truth must be 1-D HEALPix maps of one shape, '
                     f'got {stitched.shape} and {truth.shape}.')
  if not hp.isnpixok(stitched.size):
    raise ValueError(f'stitched has {stitched.size} pixels, not 12·nside² for '
                     'any nside.')
  valid = ((stitched != hp.UNSEEN) & np.isfinite(stitched) & (truth != hp.UNSEEN)
           & np.isfinite(truth))
  tapered, covering = _tapered_and_covering(tiles, hp.npix2nside(stitched.size))
  seam, interior = valid & tapered & (covering >= 2), valid & ~tapered
  if not seam.any() or not interior.any():
    raise ValueError(f'the stitched map has {int(seam.sum())} pixels in tile '
                     f'seams and {int(interior.sum())} elsewhere; the seam metric '
                     'needs both.')
  error = stitched - truth
  rmse_seam = float(np.sqrt(np.mean(error[seam]**2)))
  rmse_interior = float(np.sqrt(np.mean(error[interior]**2)))
  return SeamMetric(ratio=rmse_seam / rmse_interior, rmse_seam=rmse_seam,
                    rmse_interior=rmse_interior, n_seam=int(seam.sum()),
                    n_interior=int(interior.sum()))
