"""Shear catalogues → pixelised shear maps, and FITS map I/O (astropy).

A shear catalogue is a FITS table of galaxies with sky positions (RA, Dec in
degrees) and ellipticities (e1, e2, dimensionless), optionally with shape
weights. `read_catalog` loads one, `bin_shear_catalog` averages it on an
N×N grid into a `ShearMap` (the data of the shear likelihood: per-pixel mean
ellipticity, its noise standard deviation, the mask of pixels holding
galaxies and a celestial WCS), and `write_map_fits` / `read_map_fits` store
maps and stacks of maps with their WCS.

Grid conventions (DESIGN.md §2): arrays are ``[N, N]`` with row index along
Dec (y) and column index along RA (x); both increase with the index, so a map
drawn with ``origin='lower'`` has north up and RA growing to the right. The
ellipticity components are taken along these axes; catalogues with the
opposite e2 convention (COSMOS) need ``flip_e2=True``.

Two gridding modes:

* ``projection='radec'``: plain RA/Dec binning (bins of equal size in degrees
  of RA and of Dec, no cos(Dec) factor), as used for the published COSMOS
  grids. The field is ``[ra0 − s/2, ra0 + s/2] × [dec0 − s/2, dec0 + s/2]``
  with ``s = npix · pixel_scale_arcmin / 60`` deg, and bins follow
  ``numpy.histogram2d``: half-open ``[lo, hi)`` except the last, which also
  holds its upper edge. The WCS is a plate carrée (CAR) whose pixel centres
  are the bin centres.
* ``projection='tan'``: a gnomonic (TAN) projection about the centre with
  square pixels of ``pixel_scale_arcmin`` at the tangent point; pixel i spans
  ``[i − 1/2, i + 1/2)`` in zero-based pixel coordinates (the last pixel also
  holds its upper edge).
"""

import collections
import collections.abc
import contextlib
import os
import uuid
import warnings

from astropy.io import fits
from astropy.wcs import WCS
import numpy as np

from tfp_massmap import _checks

__all__ = [
    'Catalog',
    'ShearMap',
    'read_catalog',
    'bin_shear_catalog',
    'write_map_fits',
    'read_map_fits',
    'read_cluster_list',
]

_PROJECTIONS = ('tan', 'radec')
_NOISE_MODELS = ('weighted', 'counts')


class Catalog(
    collections.namedtuple('Catalog', ['ra', 'dec', 'e1', 'e2', 'weight'])):
  """Galaxy shear catalogue: five float64 arrays ``[n_gal]``.

  Attributes:
    ra: right ascension in degrees.
    dec: declination in degrees.
    e1: ellipticity component along the RA/Dec axes (dimensionless).
    e2: ellipticity component along the diagonals (dimensionless), in the
      convention of the Kaiser-Squires kernel.
    weight: positive shape weights (all ones when the catalogue has none).
  """
  __slots__ = ()


class ShearMap(
    collections.namedtuple('ShearMap', [
        'shear', 'noise_std', 'mask', 'counts', 'wcs', 'pixel_scale_arcmin'])):
  """A binned shear catalogue on an N×N grid (immutable).

  Attributes:
    shear: float32 ``[N, N, 2]``, weighted-mean (e1, e2) per pixel; 0 where
      the pixel holds no galaxy.
    noise_std: float32 ``[N, N, 2]``, standard deviation of the pixel-mean
      ellipticity per component (dimensionless); 0 outside the mask.
    mask: float32 ``[N, N]``, 1 where the pixel holds at least one galaxy.
    counts: int32 ``[N, N]``, galaxies per pixel.
    wcs: 2-D celestial `astropy.wcs.WCS` of the grid; axis 1 is the column
      (RA), axis 2 the row (Dec). ``wcs.world_to_pixel_values(ra, dec)`` gives
      zero-based (column, row) positions, e.g. to overlay sources.
    pixel_scale_arcmin: pixel side in arcmin (for ``'radec'`` grids, the bin
      width in degrees of RA and of Dec, times 60).
  """
  __slots__ = ()


def _named_columns(columns, wanted):
  """Maps each wanted column name to the table's spelling (case-insensitive)."""
  by_lower = {name.lower(): name for name in columns}
  missing = [w for w in wanted if w.lower() not in by_lower]
  if missing:
    raise ValueError(
        f'catalogue has no column(s) {missing}; available columns: '
        f'{list(columns)}.')
  return [by_lower[w.lower()] for w in wanted]


def read_catalog(path, ra_col='ra', dec_col='dec', e1_col='e1', e2_col='e2',
                 weight_col=None, flip_e2=False, hdu=1):
  """Reads a shear catalogue from a FITS binary table.

  Rows with a non-finite RA, Dec, e1, e2 or weight, or a weight <= 0, are
  dropped with a `UserWarning` that counts them.

  Args:
    path: FITS file.
    ra_col, dec_col: column names of RA and Dec, in degrees.
    e1_col, e2_col: column names of the ellipticity components
      (dimensionless).
    weight_col: column name of the shape weights, or None for equal weights.
    flip_e2: whether to negate e2 (catalogues whose e2 sign convention is
      opposite to the Kaiser-Squires kernel's, such as the COSMOS catalogue
      of Schrabback et al. 2010).
    hdu: index or name of the table HDU.

  Returns:
    A `Catalog` of float64 arrays.

  Raises:
    ValueError: if the HDU is not a table, a column is missing (the message
      lists the available ones), or no row is left.
  """
  with fits.open(path, memmap=True) as hdul:
    table = hdul[hdu]
    if not isinstance(table, (fits.BinTableHDU, fits.TableHDU)):
      raise ValueError(f'HDU {hdu!r} of {path} is a {type(table).__name__}, '
                       'expected a FITS table of galaxies.')
    wanted = [ra_col, dec_col, e1_col, e2_col]
    if weight_col is not None:
      wanted.append(weight_col)
    names = _named_columns(table.columns.names, wanted)
    data = table.data
    n_rows = 0 if data is None else len(data)
    if n_rows == 0:
      raise ValueError(f'catalogue {path} (HDU {hdu!r}) has no rows.')
    cols = [np.array(data[name], dtype=np.float64) for name in names]
  if weight_col is None:
    cols.append(np.ones(n_rows))
  ra, dec, e1, e2, weight = cols

  keep = np.ones(n_rows, dtype=bool)
  reasons = []
  for label, values in zip(names, cols):
    bad = ~np.isfinite(values)
    if bad.any():
      reasons.append(f'{int(bad.sum())} with non-finite {label}')
    keep &= ~bad
  if weight_col is not None:
    bad = np.isfinite(weight) & (weight <= 0)
    if bad.any():
      reasons.append(f'{int(bad.sum())} with {names[-1]} <= 0')
    keep &= ~bad
  n_dropped = int(n_rows - keep.sum())
  if n_dropped:
    warnings.warn(
        f'read_catalog dropped {n_dropped} of {n_rows} rows of {path} '
        f'({", ".join(reasons)}).', UserWarning, stacklevel=2)
  if not keep.any():
    raise ValueError(f'catalogue {path} has no usable row left after dropping '
                     f'{n_dropped} invalid rows.')
  sign = -1.0 if flip_e2 else 1.0
  return Catalog(ra=ra[keep], dec=dec[keep], e1=e1[keep], e2=sign * e2[keep],
                 weight=weight[keep])


def _as_catalog(catalog):
  """Validates a `Catalog`, or a mapping with keys ra, dec, e1, e2[, weight]."""
  if hasattr(catalog, '_asdict'):
    catalog = catalog._asdict()
  if not isinstance(catalog, collections.abc.Mapping):
    raise ValueError('catalog must be a Catalog or a mapping with keys ra, dec, '
                     f'e1, e2 (and optionally weight), got {type(catalog).__name__}.')
  missing = [k for k in ('ra', 'dec', 'e1', 'e2') if k not in catalog]
  if missing:
    raise ValueError(f'catalog lacks {missing}; it has keys {sorted(catalog)}.')
  arrays = {k: np.asarray(catalog[k], dtype=np.float64)
            for k in ('ra', 'dec', 'e1', 'e2')}
  weight = catalog.get('weight')
  arrays['weight'] = (np.ones_like(arrays['ra']) if weight is None
                      else np.asarray(weight, dtype=np.float64))
  n = arrays['ra'].shape
  for key, values in arrays.items():
    if values.ndim != 1 or values.shape != n:
      raise ValueError(f'catalog {key} has shape {values.shape}; every column '
                       f'must be 1-D with the shape of ra, {n}.')
    _checks.finite(values, f'catalog {key}')
  if n[0] == 0:
    raise ValueError('catalog is empty (0 galaxies).')
  if (arrays['weight'] <= 0).any():
    raise ValueError(f'catalog weight holds {int((arrays["weight"] <= 0).sum())} '
                     'value(s) <= 0; expected positive weights.')
  if (np.abs(arrays['dec']) > 90).any():
    raise ValueError(f'catalog dec spans {arrays["dec"].min()}..'
                     f'{arrays["dec"].max()} deg; expected values in [-90, 90].')
  return Catalog(**arrays)


def _unwrap_ra(ra, ra_ref):
  """Shifts RA by multiples of 360 deg to within 180 deg of ``ra_ref``."""
  return ra + 360.0 * np.round((ra_ref - ra) / 360.0)


def _default_center(ra, dec):
  """Median RA and Dec (deg); RA unwrapped about its circular mean."""
  rad = np.deg2rad(ra)
  ra_mean = np.rad2deg(np.arctan2(np.sin(rad).mean(), np.cos(rad).mean()))
  return float(np.median(_unwrap_ra(ra, ra_mean))) % 360.0, float(np.median(dec))


def _bin_index(values, edges):
  """Bin index of each value in numpy.histogram's convention; -1 if outside."""
  idx = np.searchsorted(edges, values, side='right') - 1
  idx[values == edges[-1]] = len(edges) - 2
  idx[(idx < 0) | (idx >= len(edges) - 1) | ~np.isfinite(values)] = -1
  return idx


def _radec_grid(ra, dec, npix, pixel_scale_arcmin, ra0, dec0):
  """Rows, columns, WCS and RA/Dec bounds of the plain RA/Dec grid."""
  size = npix * pixel_scale_arcmin / 60.0
  ra_edges = np.linspace(ra0 - size / 2, ra0 + size / 2, npix + 1)
  dec_edges = np.linspace(dec0 - size / 2, dec0 + size / 2, npix + 1)
  if dec_edges[0] < -90 or dec_edges[-1] > 90:
    raise ValueError(
        f'the radec field spans Dec {dec_edges[0]:.4f}..{dec_edges[-1]:.4f} deg, '
        "beyond a pole; use projection='tan' or a smaller field.")
  cols = _bin_index(_unwrap_ra(ra, ra0), ra_edges)
  rows = _bin_index(dec, dec_edges)
  step = size / npix
  wcs = WCS(naxis=2)
  wcs.wcs.ctype = ['RA---CAR', 'DEC--CAR']
  wcs.wcs.cunit = ['deg', 'deg']
  # CAR with CRVAL2 = 0 is linear in RA and Dec; CRPIX2 puts dec0 at the
  # grid centre.
  wcs.wcs.crval = [ra0, 0.0]
  wcs.wcs.cdelt = [step, step]
  wcs.wcs.crpix = [(npix + 1) / 2, (npix + 1) / 2 - dec0 / step]
  bounds = (ra_edges[0], ra_edges[-1], dec_edges[0], dec_edges[-1])
  return rows, cols, wcs, bounds


def _tan_grid(ra, dec, npix, pixel_scale_arcmin, ra0, dec0):
  """Rows, columns, WCS and approximate RA/Dec bounds of the TAN grid."""
  wcs = WCS(naxis=2)
  wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
  wcs.wcs.cunit = ['deg', 'deg']
  wcs.wcs.crval = [ra0, dec0]
  wcs.wcs.cdelt = [pixel_scale_arcmin / 60.0, pixel_scale_arcmin / 60.0]
  wcs.wcs.crpix = [(npix + 1) / 2, (npix + 1) / 2]
  x, y = wcs.wcs_world2pix(ra, dec, 0)  # NaN on the far hemisphere
  edges = np.arange(npix + 1) - 0.5
  corners = wcs.calc_footprint(axes=(npix, npix), center=False)
  corner_ra = _unwrap_ra(corners[:, 0], ra0)
  bounds = (corner_ra.min(), corner_ra.max(), corners[:, 1].min(),
            corners[:, 1].max())
  return _bin_index(y, edges), _bin_index(x, edges), wcs, bounds


def _sigma_pair(sigma_e):
  values = np.broadcast_to(np.asarray(sigma_e, dtype=np.float64), (2,))
  for i, v in enumerate(values):
    _checks.positive_scalar(v, f'sigma_e[{i}]')
  return values


def bin_shear_catalog(catalog, npix, pixel_scale_arcmin, center=None,
                      projection='tan', sigma_e=None, noise_model='weighted'):
  """Averages a shear catalogue on an N×N grid.

  Per pixel p with galaxies i (weights w_i): the shear is the weighted mean
  Σ w_i e_i / Σ w_i per component, and its noise standard deviation, for
  galaxies whose ellipticities scatter by σ_e per component, is

  * ``noise_model='weighted'``: σ_e · sqrt(Σ w_i²) / Σ w_i (the exact standard
    deviation of the weighted mean; σ_e / sqrt(N_p) for equal weights);
  * ``noise_model='counts'``: σ_e / sqrt(N_p), ignoring the weights (the
    published COSMOS ``std1``/``std2`` grids).

  Galaxies outside the field are dropped.

  Args:
    catalog: a `Catalog` (from `read_catalog`), or a mapping with 1-D arrays
      ``ra``, ``dec`` (deg), ``e1``, ``e2`` and optionally ``weight``.
    npix: number of pixels N per side (int > 0).
    pixel_scale_arcmin: pixel side in arcmin (> 0).
    center: (ra, dec) of the grid centre in degrees; default the median RA
      and median Dec of the catalogue.
    projection: ``'tan'`` (gnomonic, square pixels) or ``'radec'`` (plain
      RA/Dec bins); see the module docstring.
    sigma_e: per-component ellipticity dispersion (dimensionless), a scalar
      or a pair (σ_e1, σ_e2); default the unweighted standard deviation
      (ddof = 0) of e1 and of e2 over the galaxies inside the field.
    noise_model: ``'weighted'`` or ``'counts'``, see above.

  Returns:
    A `ShearMap`.

  Raises:
    ValueError: on invalid arguments or catalogue values, or when no galaxy
      falls inside the field (the message gives the field's and the
      catalogue's RA/Dec ranges).
  """
  if isinstance(npix, bool) or not isinstance(npix, (int, np.integer)) or npix <= 0:
    raise ValueError(f'npix must be a positive integer, got {npix!r}.')
  npix = int(npix)
  pixel_scale_arcmin = _checks.positive_scalar(
      pixel_scale_arcmin, 'pixel_scale_arcmin', 'arcmin')
  if projection not in _PROJECTIONS:
    raise ValueError(f'projection must be one of {_PROJECTIONS}, got {projection!r}.')
  if noise_model not in _NOISE_MODELS:
    raise ValueError(f'noise_model must be one of {_NOISE_MODELS}, got {noise_model!r}.')
  cat = _as_catalog(catalog)
  if center is None:
    ra0, dec0 = _default_center(cat.ra, cat.dec)
  else:
    ra0, dec0 = (float(c) for c in center)
    if not (np.isfinite(ra0) and np.isfinite(dec0) and abs(dec0) <= 90):
      raise ValueError(f'center must be finite (ra, dec) in deg with |dec| <= 90, '
                       f'got {center!r}.')

  grid = _tan_grid if projection == 'tan' else _radec_grid
  rows, cols, wcs, bounds = grid(cat.ra, cat.dec, npix, pixel_scale_arcmin, ra0, dec0)
  wcs.pixel_shape = (npix, npix)
  inside = (rows >= 0) & (cols >= 0)
  if not inside.any():
    cat_ra = _unwrap_ra(cat.ra, ra0)
    raise ValueError(
        f'no galaxy falls inside the {npix}x{npix} field ({projection}): field '
        f'RA {bounds[0]:.4f}..{bounds[1]:.4f} deg, Dec {bounds[2]:.4f}..'
        f'{bounds[3]:.4f} deg; catalogue RA {cat_ra.min():.4f}..'
        f'{cat_ra.max():.4f} deg, Dec {cat.dec.min():.4f}..{cat.dec.max():.4f} deg.')

  flat = rows[inside] * npix + cols[inside]
  w = cat.weight[inside]
  e = np.stack([cat.e1[inside], cat.e2[inside]], axis=-1)
  size = npix * npix

  def pixel_sum(values):
    return np.bincount(flat, weights=values, minlength=size).reshape(npix, npix)

  counts = np.bincount(flat, minlength=size).reshape(npix, npix)
  sum_w = pixel_sum(w)
  filled = counts > 0
  safe_w = np.where(filled, sum_w, 1.0)
  shear = np.stack([pixel_sum(w * e[:, c]) / safe_w for c in range(2)], axis=-1)
  shear[~filled] = 0.0

  sigma = e.std(axis=0) if sigma_e is None else _sigma_pair(sigma_e)
  if noise_model == 'weighted':
    per_pixel = np.sqrt(pixel_sum(w * w)) / safe_w
  else:
    per_pixel = 1.0 / np.sqrt(np.where(filled, counts, 1))
  noise_std = np.where(filled, per_pixel, 0.0)[..., None] * sigma

  return ShearMap(
      shear=shear.astype(np.float32),
      noise_std=noise_std.astype(np.float32),
      mask=filled.astype(np.float32),
      counts=counts.astype(np.int32),
      wcs=wcs,
      pixel_scale_arcmin=pixel_scale_arcmin)


def write_map_fits(path, image, wcs=None, header=None, overwrite=False):
  """Writes a map or a stack of maps to a FITS primary HDU, atomically.

  The data go to a temporary file in the target's directory, which is then
  renamed onto ``path``; a failure leaves no file behind (and an existing
  target untouched).

  Args:
    path: target FITS file.
    image: real array ``[N_y, N_x]`` or a stack ``[K, N_y, N_x]`` (e.g.
      posterior samples), stored as float32. For a shear map ``[N, N, 2]``
      pass ``np.moveaxis(shear, -1, 0)``.
    wcs: optional 2-D celestial `astropy.wcs.WCS` of the map (e.g.
      ``ShearMap.wcs``); its pixel shape, when set, must match the map's.
    header: optional extra keywords, a `fits.Header` or a dict whose values
      are values or (value, comment) pairs, e.g. ``{'BUNIT': ('', 'convergence')}``.
    overwrite: whether to replace an existing file.

  Raises:
    ValueError: for images that are not real 2-D/3-D arrays or a WCS that
      does not fit them.
    FileExistsError: if ``path`` exists and ``overwrite`` is False.
  """
  data = np.asarray(image)
  if data.ndim not in (2, 3) or not (np.issubdtype(data.dtype, np.integer) or
                                     np.issubdtype(data.dtype, np.floating)):
    raise ValueError(f'image must be a real 2-D map or 3-D stack of maps, got '
                     f'shape {data.shape} and dtype {data.dtype}.')
  hdr = fits.Header()
  if wcs is not None:
    if not isinstance(wcs, WCS) or wcs.naxis != 2 or not wcs.has_celestial:
      raise ValueError(f'wcs must be a 2-D celestial astropy WCS, got {wcs!r}.')
    map_shape = (data.shape[-1], data.shape[-2])
    if wcs.pixel_shape is not None and tuple(wcs.pixel_shape) != map_shape:
      raise ValueError(f'wcs has pixel shape (x, y) = {tuple(wcs.pixel_shape)} but '
                       f'the map has (x, y) = {map_shape}.')
    hdr.update(wcs.to_header())
  if header is not None:
    hdr.update(header)
  hdu = fits.PrimaryHDU(data.astype(np.float32), header=hdr)

  path = os.fspath(path)
  if os.path.exists(path) and not overwrite:
    raise FileExistsError(f'{path} exists; pass overwrite=True to replace it.')
  directory = os.path.dirname(os.path.abspath(path))
  tmp = os.path.join(directory,
                     f'.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp')
  try:
    hdu.writeto(tmp)
    os.replace(tmp, path)
  finally:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)


def read_map_fits(path, hdu=0):
  """Reads a map (or stack of maps) written by `write_map_fits`, or any image.

  Args:
    path: FITS file.
    hdu: index or name of the image HDU.

  Returns:
    (data, wcs, header): the image as a native-byte-order numpy array in its
    stored dtype; its 2-D celestial `astropy.wcs.WCS`, or None when the header
    has none; and the `fits.Header`.
  """
  with fits.open(path) as hdul:
    image = hdul[hdu]
    if image.data is None or not image.is_image:
      raise ValueError(f'HDU {hdu!r} of {path} holds no image.')
    data = np.array(image.data)
    header = image.header.copy()
  data = data.astype(data.dtype.newbyteorder('='), copy=False)
  wcs = WCS(header)
  wcs = wcs.celestial if wcs.has_celestial else None
  if wcs is not None:
    wcs.pixel_shape = (data.shape[-1], data.shape[-2])
  return data, wcs, header


_CLUSTER_DTYPE = np.dtype([('id', np.int64), ('ra', np.float64),
                           ('dec', np.float64), ('z', np.float64)])


def read_cluster_list(path):
  """Reads the X-ray group/cluster table of Finoguenov et al. (2007).

  The whitespace table has '#' comment lines and 14 columns per row: ID, RA
  and Dec (deg), r500, flux and its error, z, then luminosity, mass and
  temperature-like pairs and a flag. Only ID, RA, Dec and z (columns 0, 1, 2
  and 6, zero-based) are returned.

  Args:
    path: text file, e.g. ``xray_clusters_finoguenov2006.txt``.

  Returns:
    A numpy structured array ``[n_clusters]`` with fields ``id`` (int64),
    ``ra``, ``dec`` (deg) and ``z`` (float64).
  """
  table = np.loadtxt(path, comments='#', ndmin=2)
  if table.shape[0] == 0 or table.shape[1] < 7:
    raise ValueError(f'{path} holds a table of shape {table.shape}; expected rows '
                     'of at least 7 columns (ID, RA, DEC, r500, flux, flux error, z, ...).')
  out = np.empty(table.shape[0], dtype=_CLUSTER_DTYPE)
  out['id'] = table[:, 0].astype(np.int64)
  out['ra'] = table[:, 1]
  out['dec'] = table[:, 2]
  out['z'] = table[:, 6]
  return out
