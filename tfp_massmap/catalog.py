"""Shear catalogues → pixelised shear maps, and FITS map I/O (astropy).

A shear catalogue is a table of galaxies (FITS, CSV, ECSV or Parquet) with sky
positions (RA, Dec in degrees) and ellipticities (e1, e2, dimensionless),
optionally with shape weights. `read_catalog` loads one, `bin_shear_catalog`
averages it on an N×N grid into a `shear_map.ShearMap` (the data of the shear
likelihood: per-pixel mean ellipticity, its noise standard deviation, the 0/1
mask of pixels holding galaxies and a celestial WCS; also importable as
``catalog.ShearMap``), and `write_map_fits` / `read_map_fits` store maps and
stacks of maps with their WCS.

Grid conventions (docs/design.md §4): arrays are ``[N, N]`` with row index along
Dec (y) and column index along RA (x); both increase with the index, so a map
drawn with ``origin='lower'`` has north up and RA growing to the right.
Catalogues give each ellipticity in the galaxy's local frame (e1 along
east-west and north-south); catalogues with the opposite e2 convention
(COSMOS) need ``flip_e2=True``.

Two gridding modes:

* ``projection='radec'``: plain RA/Dec binning (bins of equal size in degrees
  of RA and of Dec, no cos(Dec) factor), as used for the published COSMOS
  grids. The field is ``[ra0 − s/2, ra0 + s/2] × [dec0 − s/2, dec0 + s/2]``
  with ``s = npix · pixel_scale_arcmin / 60`` deg, and bins follow
  ``numpy.histogram2d``: half-open ``[lo, hi)`` except the last, which also
  holds its upper edge. The WCS is a plate carrée (CAR) whose pixel centres
  are the bin centres. Meridians are the grid's columns, so the local frames
  are the grid frame and the ellipticities are averaged as given; but a bin
  is 1/cos(Dec) times taller than wide on the sky, so this mode warns when
  that aspect ratio exceeds 1.02 anywhere in the field and refuses fields
  beyond 2 (|Dec| > 60°) or reaching a pole.
* ``projection='tan'``: a gnomonic (TAN) projection (`tfp_massmap.sky`) about
  the centre with square pixels of ``pixel_scale_arcmin`` at the tangent
  point; pixel i spans ``[i − 1/2, i + 1/2)`` in zero-based pixel coordinates
  (the last pixel also holds its upper edge). Each ellipticity is rotated
  from its local frame into the grid frame (`sky.to_grid_frame`) before
  averaging, so the map does not depend on where the field lies on the
  sphere (at the equator, at high Dec or around a pole).
"""

import bz2
import collections
import collections.abc
import contextlib
import gzip
import os
import uuid
import warnings

from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
import numpy as np

from tfp_massmap import _checks
from tfp_massmap import sky
from tfp_massmap.shear_map import ShearMap

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
_FORMATS = ('fits', 'csv', 'ecsv', 'parquet')
# Longer suffixes first, so that '.fits.gz' is not read as '.gz'.
_EXTENSIONS = (('.fits.gz', 'fits'), ('.fit.gz', 'fits'), ('.fts.gz', 'fits'),
               ('.fits', 'fits'), ('.fit', 'fits'), ('.fts', 'fits'),
               ('.csv', 'csv'), ('.ecsv', 'ecsv'), ('.parquet', 'parquet'),
               ('.pq', 'parquet'))
# Pixel aspect ratio 1/cos(Dec) of 'radec' bins above which binning warns:
# square-pixel estimators (Kaiser-Squires, the likelihood's FFT operator) then
# err by about (aspect - 1) of the signal, 2 %, the level of the shear
# calibration uncertainty of current surveys; |Dec| > 11.4 deg.
_RADEC_WARN_ASPECT = 1.02
# ... and above which it refuses: the error is then as large as the signal;
# |Dec| > 60 deg.
_RADEC_MAX_ASPECT = 2.0


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

  The ellipticities are in each galaxy's local RA/Dec frame.
  """
  __slots__ = ()


def _catalog_format(path, format):  # pylint: disable=redefined-builtin
  """The table format of a catalogue: ``format`` or from the file's name."""
  if format is not None:
    if format not in _FORMATS:
      raise ValueError(f'format must be one of {_FORMATS}, got {format!r}.')
    return format
  name = os.path.basename(path).lower()
  for suffix, fmt in _EXTENSIONS:
    if name.endswith(suffix):
      return fmt
  raise ValueError(
      f'cannot tell the table format of catalogue {path} from its name; '
      f'expected a name ending in one of {[s for s, _ in _EXTENSIONS]}, or '
      f'pass format= one of {_FORMATS}.')


def _named_columns(columns, wanted, where):
  """Maps each wanted column name to the table's spelling (case-insensitive)."""
  by_lower = {name.lower(): name for name in columns}
  missing = [w for w in wanted if w.lower() not in by_lower]
  if missing:
    raise ValueError(
        f'catalogue {where} has no column(s) {missing}; available columns: '
        f'{list(columns)}.')
  return [by_lower[w.lower()] for w in wanted]


def _float_column(values, name, where):
  """A table column as a 1-D float64 array; masked entries become NaN."""
  if values.ndim != 1:
    raise ValueError(
        f'column {name!r} of {where} holds arrays of shape {values.shape[1:]} '
        'per row; expected one number per galaxy.')
  try:
    if np.ma.isMaskedArray(values):
      return np.ma.filled(np.ma.asarray(values).astype(np.float64), np.nan)
    return np.array(values, dtype=np.float64)
  except (TypeError, ValueError) as exc:
    raise ValueError(f'column {name!r} of {where} holds non-numeric values '
                     f'(dtype {values.dtype}).') from exc


def _is_table_hdu(hdu):
  return (isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)) and
          not isinstance(hdu, fits.CompImageHDU))


def _describe_hdus(hdul):
  """One line listing the HDUs of a FITS file, e.g. "0 'PRIMARY' (image 8x8)"."""
  parts = []
  for i, hdu in enumerate(hdul):
    if _is_table_hdu(hdu):
      kind = f'table of {hdu.header.get("NAXIS2", 0)} rows'
    elif hdu.is_image:
      shape = hdu.shape
      kind = f'image {"x".join(map(str, shape))}' if shape else 'empty image'
    else:
      kind = type(hdu).__name__
    parts.append(f'{i} {hdu.name!r} ({kind})')
  return ', '.join(parts)


def _read_fits_columns(path, hdu, wanted):
  """Columns ``wanted`` of a FITS table; returns (names, arrays, where)."""
  if hdu is not None and (isinstance(hdu, bool) or
                          not isinstance(hdu, (int, np.integer, str))):
    raise ValueError(f'hdu must be None, an HDU index or an HDU name, got {hdu!r}.')
  with open(path, 'rb') as f:
    head = f.read(16)
  for magic, opener in ((b'\x1f\x8b', gzip.open), (b'BZh', bz2.open)):
    if head.startswith(magic):
      # astropy stops silently at the end of a truncated compressed stream.
      try:
        with opener(path) as f:
          while f.read(1 << 24):
            pass
      except (OSError, EOFError, ValueError) as exc:
        raise ValueError(f'compressed FITS file {path} is truncated or corrupt '
                         f'({exc}).') from exc
  hdul = None
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always')
    try:
      hdul = fits.open(path, memmap=True)
      len(hdul)  # Reads every header.
    except (OSError, ValueError, TypeError, IndexError, EOFError) as exc:
      if hdul is not None:
        hdul.close()
      if 'SIMPLE' in str(exc):
        raise ValueError(f'{path} is not a FITS file: it does not start with the '
                         f'SIMPLE card of a FITS header (its first bytes are '
                         f'{head!r}).') from exc
      raise ValueError(f'{path} is not a readable FITS file ({exc}).') from exc
  with hdul:
    damaged = [' '.join(str(w.message).split()) for w in caught
               if 'Error validating header' in str(w.message) or
               'truncated' in str(w.message)]
    if damaged:
      raise ValueError(f'FITS file {path} is truncated or corrupt: {damaged[0]}')
    for w in caught:  # Other warnings (e.g. non-standard keywords) pass on.
      warnings.warn(w.message, w.category, stacklevel=3)
    listing = _describe_hdus(hdul)
    if hdu is None:
      tables = [i for i, h in enumerate(hdul) if _is_table_hdu(h)]
      if not tables:
        raise ValueError(f'FITS file {path} holds no table HDU, expected a table '
                         f'of galaxies; its HDUs: {listing}.')
      index = tables[0]
    else:
      try:
        index = hdul.index(hdul[hdu])
      except (KeyError, IndexError) as exc:
        raise ValueError(f'FITS file {path} has no HDU {hdu!r}; its HDUs: '
                         f'{listing}.') from exc
      if not _is_table_hdu(hdul[index]):
        raise ValueError(f'HDU {hdu!r} of {path} is not a table of galaxies; '
                         f'its HDUs: {listing}.')
    table = hdul[index]
    where = f'{path} (HDU {index})'
    names = _named_columns(table.columns.names, wanted, where)
    try:
      data = table.data
      if data is None or len(data) == 0:
        return names, [np.zeros(0)] * len(names), where
      return names, [_float_column(data[n], n, where) for n in names], where
    except (OSError, TypeError, IndexError, EOFError) as exc:
      raise ValueError(f'FITS file {path} is truncated or corrupt: reading HDU '
                       f'{index} failed ({exc}).') from exc


def _read_text_columns(path, fmt, wanted):
  """Columns ``wanted`` of a CSV or ECSV table; returns (names, arrays, where)."""
  try:
    table = Table.read(path, format=f'ascii.{fmt}')
  except (OSError, ValueError, TypeError, IndexError) as exc:
    raise ValueError(f'could not read {path} as a {fmt.upper()} table ({exc}).'
                     ) from exc
  names = _named_columns(table.colnames, wanted, path)
  return names, [_float_column(table[n], n, path) for n in names], path


def _read_parquet_columns(path, wanted):
  """Columns ``wanted`` of a Parquet table; returns (names, arrays, where)."""
  import pyarrow as pa  # pylint: disable=g-import-not-at-top
  import pyarrow.compute as pc  # pylint: disable=g-import-not-at-top
  import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
  try:
    available = pq.read_schema(path).names
    names = _named_columns(available, wanted, path)
    table = pq.read_table(path, columns=names)
  except (OSError, pa.ArrowException) as exc:
    raise ValueError(f'could not read {path} as a Parquet table ({exc}).') from exc
  arrays = []
  for name in names:
    try:
      column = pc.cast(table.column(name), pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
      raise ValueError(f'column {name!r} of {path} holds non-numeric values '
                       f'(type {table.column(name).type}).') from exc
    arrays.append(column.to_numpy())  # Nulls become NaN.
  return names, arrays, path


def read_catalog(path, ra_col='ra', dec_col='dec', e1_col='e1', e2_col='e2',
                 weight_col=None, flip_e2=False, hdu=None, format=None,  # pylint: disable=redefined-builtin
                 keep_unphysical_ellipticities=False):
  """Reads a shear catalogue from a FITS, CSV, ECSV or Parquet table.

  Rows with a non-finite RA, Dec, e1, e2 or weight (empty cells and nulls
  count as non-finite), or a weight <= 0, are dropped; so are rows with
  |e| = sqrt(e1² + e2²) >= 1, which no galaxy ellipticity (|e| < 1 in both
  the (a − b)/(a + b) and the (a² − b²)/(a² + b²) definitions) can have,
  unless ``keep_unphysical_ellipticities``. One `UserWarning` counts
  the dropped rows by cause. (The COSMOS catalogue of Schrabback et al. 2010
  holds 3,650 rows with |e| >= 1 among its 417,117; its published grids
  include them.)

  Args:
    path: the catalogue file.
    ra_col, dec_col: column names of RA and Dec, in degrees (matched
      case-insensitively, as are the other column names).
    e1_col, e2_col: column names of the ellipticity components
      (dimensionless), in each galaxy's local RA/Dec frame.
    weight_col: column name of the shape weights, or None for equal weights.
    flip_e2: whether to negate e2 (catalogues whose e2 sign convention is
      opposite to the Kaiser-Squires kernel's, such as the COSMOS catalogue
      of Schrabback et al. 2010).
    hdu: for FITS files, the index or name of the table HDU; None takes the
      first table HDU.
    format: ``'fits'``, ``'csv'``, ``'ecsv'`` or ``'parquet'``; None infers
      it from the file name (``.fits``, ``.fit``, ``.fts``, optionally
      ``.gz``; ``.csv``; ``.ecsv``; ``.parquet``, ``.pq``).
    keep_unphysical_ellipticities: whether to keep rows with |e| >= 1.

  Returns:
    A `Catalog` of float64 arrays.

  Raises:
    FileNotFoundError: if ``path`` does not exist.
    ValueError: naming the file and the problem, if the format cannot be
      told or the file cannot be read in it (not a table, truncated or
      corrupt), the FITS file has no table HDU or no HDU ``hdu`` (the
      message lists its HDUs), a column is missing (the message lists the
      available ones) or non-numeric, or no row is left.
  """
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f'catalogue file {path} does not exist.')
  if os.path.isdir(path):
    raise ValueError(f'catalogue path {path} is a directory, expected a file.')
  fmt = _catalog_format(path, format)
  if hdu is not None and fmt != 'fits':
    raise ValueError(f'hdu={hdu!r} applies to FITS files only; {path} is read '
                     f'as {fmt}.')
  wanted = [ra_col, dec_col, e1_col, e2_col]
  if weight_col is not None:
    wanted.append(weight_col)
  if fmt == 'fits':
    names, cols, where = _read_fits_columns(path, hdu, wanted)
  elif fmt == 'parquet':
    names, cols, where = _read_parquet_columns(path, wanted)
  else:
    names, cols, where = _read_text_columns(path, fmt, wanted)
  n_rows = len(cols[0])
  if n_rows == 0:
    raise ValueError(f'catalogue {where} has no rows.')
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
  if not keep_unphysical_ellipticities:
    with np.errstate(invalid='ignore'):
      bad = np.hypot(e1, e2) >= 1
    if bad.any():
      reasons.append(
          f'{int(bad.sum())} with |e| = sqrt({names[2]}² + {names[3]}²) >= 1; '
          'keep_unphysical_ellipticities=True keeps them')
    keep &= ~bad
  n_dropped = int(n_rows - keep.sum())
  if n_dropped:
    warnings.warn(
        f'read_catalog dropped {n_dropped} of {n_rows} rows of {where} '
        f'({", ".join(reasons)}).', UserWarning, stacklevel=2)
  if not keep.any():
    raise ValueError(f'catalogue {where} has no usable row left after dropping '
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


def _median_center(ra, dec):
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


def _check_radec_aspect(dec_lo, dec_hi):
  """Warns or raises when 'radec' bins are far from square on the sky."""
  if dec_lo <= -90 or dec_hi >= 90:
    raise ValueError(
        f'the radec field spans Dec {dec_lo:.4f}..{dec_hi:.4f} deg and reaches a '
        "pole, where RA/Dec bins have no width; use projection='tan'.")
  worst = dec_hi if abs(dec_hi) >= abs(dec_lo) else dec_lo
  aspect = 1.0 / np.cos(np.deg2rad(worst))
  message = (f"projection='radec' bins are not square on the sky: at Dec "
             f'{worst:.4f} deg a bin is 1/cos(dec) = {aspect:.4f} times taller '
             'than wide')
  if aspect > _RADEC_MAX_ASPECT:
    raise ValueError(f'{message}, beyond the limit {_RADEC_MAX_ASPECT} (|Dec| > '
                     "60 deg); use projection='tan', which has square pixels.")
  if aspect > _RADEC_WARN_ASPECT:
    warnings.warn(f'{message} (warning threshold {_RADEC_WARN_ASPECT}), which '
                  f'distorts the map by about {100 * (aspect - 1):.1f} %; '
                  "projection='tan' has square pixels.", UserWarning,
                  stacklevel=4)


def _radec_grid(ra, dec, npix, pixel_scale_arcmin, ra0, dec0):
  """Rows, columns, WCS and RA/Dec bounds of the plain RA/Dec grid."""
  size = npix * pixel_scale_arcmin / 60.0
  ra_edges = np.linspace(ra0 - size / 2, ra0 + size / 2, npix + 1)
  dec_edges = np.linspace(dec0 - size / 2, dec0 + size / 2, npix + 1)
  _check_radec_aspect(dec_edges[0], dec_edges[-1])
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
  step = pixel_scale_arcmin / 60.0
  x, y = sky.gnomonic(ra, dec, (ra0, dec0))  # NaN on the far hemisphere
  centre = (npix - 1) / 2
  edges = np.arange(npix + 1) - 0.5
  wcs = WCS(naxis=2)
  wcs.wcs.ctype = ['RA---TAN', 'DEC--TAN']
  wcs.wcs.cunit = ['deg', 'deg']
  wcs.wcs.crval = [ra0, dec0]
  wcs.wcs.cdelt = [step, step]
  wcs.wcs.crpix = [centre + 1, centre + 1]
  wcs.wcs.lonpole = 180.0  # The orientation of `sky` also on the north pole.
  corners = wcs.calc_footprint(axes=(npix, npix), center=False)
  corner_ra = _unwrap_ra(corners[:, 0], ra0)
  bounds = (corner_ra.min(), corner_ra.max(), corners[:, 1].min(),
            corners[:, 1].max())
  return (_bin_index(y / step + centre, edges),
          _bin_index(x / step + centre, edges), wcs, bounds)


def _sigma_pair(sigma_e):
  values = np.broadcast_to(np.asarray(sigma_e, dtype=np.float64), (2,))
  for i, v in enumerate(values):
    _checks.positive_scalar(v, f'sigma_e[{i}]')
  return values


def _estimate_sigma_e(e, e_catalogue):
  """Per-component standard deviation of ``e`` [n, 2]; raises when 0."""
  n = e.shape[0]
  if n < 2:
    raise ValueError(
        f'σ_e estimated from {n} galaxy inside the field is 0 (a dispersion '
        'needs at least 2 galaxies); pass sigma_e= (the shape noise per '
        'ellipticity component, dimensionless).')
  for c in range(2):
    if np.ptp(e_catalogue[:, c]) == 0:
      raise ValueError(
          f'σ_e estimated from {n} galaxies is 0: all have e{c + 1} = '
          f'{e_catalogue[0, c]:.6g}; pass sigma_e= (the shape noise per '
          'ellipticity component, dimensionless).')
  return e.std(axis=0)


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

  With ``projection='tan'`` each e_i is first rotated from the galaxy's local
  RA/Dec frame into the grid frame (`sky.to_grid_frame`), always; with
  ``'radec'`` the local frames are the grid frame and e_i is used as given.
  Galaxies outside the field are dropped.

  Args:
    catalog: a `Catalog` (from `read_catalog`), or a mapping with 1-D arrays
      ``ra``, ``dec`` (deg), ``e1``, ``e2`` (in the local RA/Dec frames) and
      optionally ``weight``.
    npix: number of pixels N per side (int > 0).
    pixel_scale_arcmin: pixel side in arcmin (> 0).
    center: (ra, dec) of the grid centre in degrees. Default: for ``'tan'``
      the direction of the mean of the galaxies' unit vectors
      (`sky.field_center`, right across RA = 0 and around a pole, where the
      grid's orientation follows the `sky` convention); for ``'radec'`` the
      median RA and median Dec, as for the published COSMOS grids.
    projection: ``'tan'`` (gnomonic, square pixels) or ``'radec'`` (plain
      RA/Dec bins, which warns when its bins are more than 1.02 times
      taller than wide and refuses beyond 2 or at a pole); see the module
      docstring.
    sigma_e: per-component ellipticity dispersion (dimensionless), a scalar
      or a pair (σ_e1, σ_e2); default the unweighted standard deviation
      (ddof = 0) of the grid-frame e1 and e2 over the galaxies inside the
      field, which needs at least 2 of them and not all with equal e1 (or
      e2).
    noise_model: ``'weighted'`` or ``'counts'``, see above.

  Returns:
    A `ShearMap` of numpy arrays: shear float32 ``[N, N, 2]`` (weighted-mean
    (e1, e2) per pixel in the grid frame, 0 where the pixel holds no galaxy),
    noise_std float32 ``[N, N, 2]`` (0 outside the mask), mask float32
    ``[N, N]`` (1 where the pixel holds at least one galaxy, else 0), counts
    int32 ``[N, N]`` (galaxies per pixel), the grid's WCS and
    ``pixel_scale_arcmin`` (for ``'radec'`` grids, the bin width in degrees
    of RA and of Dec, times 60).

  Raises:
    ValueError: on invalid arguments or catalogue values, when no galaxy
      falls inside the field (the message gives the field's and the
      catalogue's RA/Dec ranges), when the default σ_e would be 0, or for a
      ``'radec'`` field reaching a pole or with bins more than 2 times
      taller than wide.
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
  if center is not None:
    ra0, dec0 = sky.as_center(center)
  elif projection == 'tan':
    ra0, dec0 = sky.field_center(cat.ra, cat.dec)
  else:
    ra0, dec0 = _median_center(cat.ra, cat.dec)

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
  e_catalogue = np.stack([cat.e1[inside], cat.e2[inside]], axis=-1)
  if projection == 'tan':
    e = np.stack(sky.to_grid_frame(e_catalogue[:, 0], e_catalogue[:, 1],
                                   cat.ra[inside], cat.dec[inside], (ra0, dec0)),
                 axis=-1)
  else:
    e = e_catalogue
  size = npix * npix

  def pixel_sum(values):
    return np.bincount(flat, weights=values, minlength=size).reshape(npix, npix)

  counts = np.bincount(flat, minlength=size).reshape(npix, npix)
  sum_w = pixel_sum(w)
  filled = counts > 0
  safe_w = np.where(filled, sum_w, 1.0)
  shear = np.stack([pixel_sum(w * e[:, c]) / safe_w for c in range(2)], axis=-1)
  shear[~filled] = 0.0

  sigma = (_estimate_sigma_e(e, e_catalogue) if sigma_e is None
           else _sigma_pair(sigma_e))
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
                           ('dec', np.float64), ('z', np.float64),
                           ('m500', np.float64), ('m500_error', np.float64)])


def read_cluster_list(path):
  """Reads the X-ray group/cluster table of Finoguenov et al. (2007).

  The whitespace table has '#' comment lines and 14 columns per row: ID, RA
  and Dec (deg), r500 (arcmin), flux and its error, z, M500 and its error
  (10¹³ M☉), luminosity and its error, temperature (keV) and its error,
  and a flag. (The file's header names only some columns; M500 is the pair
  after z: its logarithm correlates with that of the temperature pair at
  r = 0.99 over the 72 rows, as the mass-temperature relation of the
  paper's scaling laws requires.) ID, RA, Dec, z and M500 with its error
  are returned.

  Args:
    path: text file, e.g. ``xray_clusters_finoguenov2006.txt``.

  Returns:
    A numpy structured array ``[n_clusters]`` with fields ``id`` (int64),
    ``ra``, ``dec`` (deg), ``z``, ``m500`` and ``m500_error`` (10¹³ M☉)
    (float64).
  """
  table = np.loadtxt(path, comments='#', ndmin=2)
  if table.shape[0] == 0 or table.shape[1] < 9:
    raise ValueError(f'{path} holds a table of shape {table.shape}; expected rows '
                     'of at least 9 columns (ID, RA, DEC, r500, flux, flux error, z, '
                     'M500, M500 error, ...).')
  out = np.empty(table.shape[0], dtype=_CLUSTER_DTYPE)
  out['id'] = table[:, 0].astype(np.int64)
  out['ra'] = table[:, 1]
  out['dec'] = table[:, 2]
  out['z'] = table[:, 6]
  out['m500'] = table[:, 7]
  out['m500_error'] = table[:, 8]
  return out
