"""Bad and awkward catalogue inputs: each fails early and clearly (issue 11).

Files the user may pass (wrong format, truncated, image-only, wrong HDU),
unphysical ellipticities, an undefined shape-noise estimate and RA/Dec
binning where its pixels are far from square.
"""

import gzip
import re
import warnings

from astropy.io import fits
from astropy.table import Table
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfp_massmap import catalog

# Seven galaxies: one with a NaN e1, one with |e| = 1 exactly, one with
# |e| = sqrt(0.8^2 + 0.7^2) = 1.06; four good ones (|e| <= 0.99).
COLUMNS = {
    'RA': [150.1, 150.2, 150.3, 150.4, 150.5, 150.6, 150.7],
    'DEC': [2.1, 2.2, 2.3, 2.4, 2.5, 2.6, 2.7],
    'E1': [0.1, np.nan, 1.0, 0.8, -0.2, 0.7, 0.05],
    'E2': [-0.3, 0.2, 0.0, 0.7, 0.25, -0.7, 0.0],
    'W': [1.0, 2.0, 0.5, 1.5, 3.0, 1.0, 2.5],
}
GOOD = [0, 4, 5, 6]


def _fits_table(path, columns=None, extra_hdus=(), name=None):
  columns = COLUMNS if columns is None else columns
  table = fits.BinTableHDU.from_columns(
      [fits.Column(name=k, format='D', array=np.asarray(v, np.float64))
       for k, v in columns.items()], name=name)
  fits.HDUList([fits.PrimaryHDU(), *extra_hdus, table]).writeto(path)
  return path


def _read(path, **kwargs):
  return catalog.read_catalog(path, ra_col='ra', dec_col='dec', e1_col='e1',
                              e2_col='e2', weight_col='w', **kwargs)


def _read_quietly(path, **kwargs):
  with pytest.warns(UserWarning, match='dropped 3 of 7 rows'):
    return _read(path, **kwargs)


def _assert_same_catalog(a, b):
  for field in catalog.Catalog._fields:
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)


# ---------------------------------------------------------------- formats


def test_csv_ecsv_parquet_and_gzip_give_the_fits_catalog(tmp_path):
  reference = _read_quietly(_fits_table(tmp_path / 'cat.fits'))
  np.testing.assert_array_equal(reference.ra, np.asarray(COLUMNS['RA'])[GOOD])
  np.testing.assert_array_equal(reference.weight, np.asarray(COLUMNS['W'])[GOOD])
  table = Table(COLUMNS)
  table.write(tmp_path / 'cat.csv')
  table.write(tmp_path / 'cat.ecsv')
  pq.write_table(pa.table(COLUMNS), tmp_path / 'cat.parquet')
  with open(tmp_path / 'cat.fits', 'rb') as f:
    (tmp_path / 'cat.fits.gz').write_bytes(gzip.compress(f.read()))
  (tmp_path / 'cat.txt').write_text((tmp_path / 'cat.csv').read_text())
  for name, kwargs in [('cat.csv', {}), ('cat.ecsv', {}), ('cat.parquet', {}),
                       ('cat.fits.gz', {}), ('cat.txt', {'format': 'csv'})]:
    _assert_same_catalog(_read_quietly(tmp_path / name, **kwargs), reference)


def test_empty_cells_and_nulls_are_dropped_as_non_finite(tmp_path):
  (tmp_path / 'holes.csv').write_text(
      'ra,dec,e1,e2,w\n1.0,2.0,,0.1,1\n1.1,2.1,0.2,0.1,1\n1.2,2.2,0.3,0.0,\n')
  with pytest.warns(UserWarning, match='dropped 2 of 3 rows .*1 with non-finite e1, '
                    '1 with non-finite w'):
    cat = _read(tmp_path / 'holes.csv')
  np.testing.assert_array_equal(cat.e1, [0.2])
  pq.write_table(pa.table({'ra': [1.0, 1.1], 'dec': [2.0, 2.1], 'e1': [None, 0.2],
                           'e2': [0.1, 0.1], 'w': [1, 2]}),
                 tmp_path / 'nulls.parquet')
  with pytest.warns(UserWarning, match='dropped 1 of 2 rows .*non-finite e1'):
    cat = _read(tmp_path / 'nulls.parquet')
  np.testing.assert_array_equal(cat.weight, [2.0])


def test_first_table_hdu_by_default_and_hdu_by_name(tmp_path):
  image = fits.ImageHDU(np.zeros((4, 4)), name='SCI')
  path = _fits_table(tmp_path / 'multi.fits', extra_hdus=[image], name='GALAXIES')
  reference = _read_quietly(path, hdu=2)
  _assert_same_catalog(_read_quietly(path), reference)
  _assert_same_catalog(_read_quietly(path, hdu='galaxies'), reference)


# ---------------------------------------------------------------- bad files


def test_missing_file_names_the_path(tmp_path):
  with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / 'nope.fits'))):
    _read(tmp_path / 'nope.fits')
  with pytest.raises(ValueError, match='is a directory'):
    _read(tmp_path)


def test_image_only_fits_lists_its_hdus(tmp_path):
  path = tmp_path / 'image.fits'
  fits.HDUList([fits.PrimaryHDU(np.zeros((8, 8))),
                fits.ImageHDU(np.zeros(3), name='SCI')]).writeto(path)
  with pytest.raises(ValueError, match=re.escape(
      f"FITS file {path} holds no table HDU, expected a table of galaxies; its "
      "HDUs: 0 'PRIMARY' (image 8x8), 1 'SCI' (image 3).")):
    _read(path)


@pytest.mark.parametrize('hdu, problem', [
    (5, 'has no HDU 5'), ('GAL', "has no HDU 'GAL'"),
    (0, 'HDU 0 of .* is not a table of galaxies')])
def test_wrong_hdu_lists_the_hdus(tmp_path, hdu, problem):
  path = _fits_table(tmp_path / 'cat.fits')
  with pytest.raises(ValueError, match=problem + r".*its HDUs: 0 'PRIMARY' "
                     r"\(empty image\), 1 '' \(table of 7 rows\)"):
    _read(path, hdu=hdu)


def test_bad_hdu_and_format_arguments(tmp_path):
  path = _fits_table(tmp_path / 'cat.fits')
  with pytest.raises(ValueError, match='hdu must be None, an HDU index or an HDU name'):
    _read(path, hdu=1.0)
  Table(COLUMNS).write(tmp_path / 'cat.csv')
  with pytest.raises(ValueError, match='hdu=1 applies to FITS files only'):
    _read(tmp_path / 'cat.csv', hdu=1)
  with pytest.raises(ValueError, match="format must be one of .* got 'xlsx'"):
    _read(path, format='xlsx')


@pytest.mark.parametrize('keep_bytes', [100, 3000, 6000, -10])
def test_truncated_fits_is_named_truncated(tmp_path, keep_bytes):
  """Cut in the primary header, in the table header, in the data, at the end."""
  whole = _fits_table(tmp_path / 'whole.fits').read_bytes()
  assert len(whole) == 3 * 2880
  path = tmp_path / 'cut.fits'
  path.write_bytes(whole[:keep_bytes])
  with pytest.raises(ValueError, match=f'{re.escape(str(path))}.*(truncated|corrupt)'):
    _read(path)
  # Compressed, where astropy itself stops silently at the cut.
  gz = tmp_path / 'cut.fits.gz'
  compressed = gzip.compress(whole)
  cut = keep_bytes * len(compressed) // len(whole) if keep_bytes > 0 else keep_bytes
  gz.write_bytes(compressed[:cut])
  with pytest.raises(ValueError, match=f'{re.escape(str(gz))}.*(truncated|corrupt)'):
    _read(gz)


def test_png_named_fits_is_not_a_fits_file(tmp_path):
  path = tmp_path / 'plot.fits'
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + bytes(300))
  with pytest.raises(ValueError, match=re.escape(str(path)) + ' is not a FITS file: it '
                     r"does not start with the SIMPLE card .*b'\\x89PNG") as info:
    _read(path)
  assert 'ignore_missing_simple' not in str(info.value)
  png = tmp_path / 'plot.png'
  png.write_bytes(path.read_bytes())
  with pytest.raises(ValueError, match='cannot tell the table format of catalogue '
                     f'{re.escape(str(png))}.*pass format='):
    _read(png)


@pytest.mark.parametrize('name, content, fmt', [
    ('notes.csv', b'This is not a catalogue.\nJust some words, really.\n', 'CSV'),
    ('image.csv', b'\x89PNG\r\n\x1a\n' + bytes(range(256)), 'CSV'),
    ('notes.ecsv', b'ra,dec,e1,e2\n1,2,0.1,0.2\n', 'ECSV'),
    ('notes.parquet', b'ra,dec,e1,e2\n1,2,0.1,0.2\n', 'Parquet')])
def test_non_table_files_name_the_file_and_format(tmp_path, name, content, fmt):
  path = tmp_path / name
  path.write_bytes(content)
  with pytest.raises(ValueError, match=f'could not read {re.escape(str(path))} as a '
                     f'{fmt} table'):
    _read(path)


def test_truncated_parquet(tmp_path):
  path = tmp_path / 'cat.parquet'
  pq.write_table(pa.table(COLUMNS), path)
  path.write_bytes(path.read_bytes()[:-20])
  with pytest.raises(ValueError, match=f'could not read {re.escape(str(path))} as a '
                     'Parquet table'):
    _read(path)


def test_missing_and_non_numeric_columns_name_the_file(tmp_path):
  (tmp_path / 'cat.csv').write_text('ra,dec,g1,g2\n1,2,0.1,0.2\n')
  with pytest.raises(ValueError, match=re.escape(
      f"catalogue {tmp_path / 'cat.csv'} has no column(s) ['e1', 'e2', 'w']; "
      "available columns: ['ra', 'dec', 'g1', 'g2'].")):
    _read(tmp_path / 'cat.csv')
  (tmp_path / 'text.csv').write_text('ra,dec,e1,e2,w\n1,2,abc,0.2,1\n')
  with pytest.raises(ValueError, match="column 'e1' of .*text.csv holds non-numeric"):
    _read(tmp_path / 'text.csv')
  pq.write_table(pa.table({'ra': [1.0], 'dec': [2.0], 'e1': ['x'], 'e2': [0.1],
                           'w': [1.0]}), tmp_path / 'text.parquet')
  with pytest.raises(ValueError, match="column 'e1' of .*text.parquet holds non-numeric"):
    _read(tmp_path / 'text.parquet')
  vector = fits.BinTableHDU.from_columns(
      [fits.Column(name=k, format='D', array=np.zeros(2)) for k in ('ra', 'dec', 'e2', 'w')] +
      [fits.Column(name='e1', format='2D', array=np.zeros((2, 2)))])
  vector.writeto(tmp_path / 'vector.fits')
  with pytest.raises(ValueError, match=r"column 'e1' of .*vector.fits \(HDU 1\) holds "
                     r'arrays of shape \(2,\) per row'):
    _read(tmp_path / 'vector.fits')


# ---------------------------------------------------------------- ellipticities


def test_unphysical_ellipticities_dropped_with_count_or_kept(tmp_path):
  path = _fits_table(tmp_path / 'cat.fits')
  with pytest.warns(UserWarning) as record:
    cat = _read(path)
  assert len(record) == 1
  assert re.search(r'dropped 3 of 7 rows .*1 with non-finite E1, 2 with \|e\| = '
                   r'sqrt\(E1² \+ E2²\) >= 1; keep_unphysical_ellipticities=True keeps '
                   'them', str(record[0].message))
  assert np.hypot(cat.e1, cat.e2).max() == pytest.approx(np.hypot(0.7, 0.7))
  with pytest.warns(UserWarning, match=r'dropped 1 of 7 rows .*\(1 with non-finite E1\)'):
    kept = _read(path, keep_unphysical_ellipticities=True)
  np.testing.assert_array_equal(kept.e1, [0.1, 1.0, 0.8, -0.2, 0.7, 0.05])


# ---------------------------------------------------------------- binning


def test_sigma_e_from_one_galaxy_raises_naming_the_cause():
  one = {'ra': [150.0], 'dec': [2.0], 'e1': [0.1], 'e2': [-0.2]}
  for projection in ('tan', 'radec'):
    with pytest.raises(ValueError, match='σ_e estimated from 1 galaxy inside the field '
                       r'is 0 .*pass sigma_e='):
      catalog.bin_shear_catalog(one, 4, 1.0, projection=projection)
  sm = catalog.bin_shear_catalog(one, 4, 1.0, sigma_e=0.3)
  assert sm.noise_std.max() == pytest.approx(0.3) and sm.mask.sum() == 1
  # Two galaxies in the catalogue, one inside the field.
  two = {'ra': [150.0, 170.0], 'dec': [2.0, 2.0], 'e1': [0.1, 0.3], 'e2': [0.0, 0.2]}
  with pytest.raises(ValueError, match='from 1 galaxy inside'):
    catalog.bin_shear_catalog(two, 4, 1.0, center=(150.0, 2.0))


def test_sigma_e_from_equal_ellipticities_raises():
  cat = {'ra': [150.0, 150.01, 150.02], 'dec': [60.0, 60.01, 59.99],
         'e1': [0.1, 0.1, 0.1], 'e2': [0.0, 0.2, -0.1]}
  with pytest.raises(ValueError, match='σ_e estimated from 3 galaxies is 0: all have '
                     r'e1 = 0\.1; pass sigma_e='):
    catalog.bin_shear_catalog(cat, 4, 1.0)


def _radec_field(dec0, size_deg=0.5, n=200):
  rng = np.random.default_rng(4)
  return {'ra': 40.0 + rng.uniform(-0.2, 0.2, n) * size_deg / np.cos(np.deg2rad(dec0)),
          'dec': dec0 + rng.uniform(-0.2, 0.2, n) * size_deg,
          'e1': rng.normal(0, 0.3, n), 'e2': rng.normal(0, 0.3, n)}


def test_radec_square_enough_pixels_are_silent():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    catalog.bin_shear_catalog(_radec_field(2.0), 10, 3.0, center=(40.0, 2.0),
                              projection='radec')


def test_radec_warns_naming_dec_and_aspect():
  # 10 pixels of 3' around Dec 20: the upper edge, Dec 20.25, is the worst.
  with pytest.warns(UserWarning, match=r"projection='radec' bins are not square on the "
                    r'sky: at Dec 20\.2500 deg a bin is 1/cos\(dec\) = 1\.0659 times '
                    r"taller than wide .*projection='tan'"):
    catalog.bin_shear_catalog(_radec_field(20.0), 10, 3.0, center=(40.0, 20.0),
                              projection='radec')
  # Across the equator the worst edge is the one farther from it.
  with pytest.warns(UserWarning, match=r'at Dec -12\.0000 deg .* = 1\.0223 '):
    catalog.bin_shear_catalog(_radec_field(-1.0), 440, 3.0, center=(40.0, -1.0),
                              projection='radec')


@pytest.mark.parametrize('dec0, match', [
    (60.0, r'at Dec 60\.2500 deg a bin is 1/cos\(dec\) = 2\.0152 times taller than '
           r"wide, beyond the limit 2\.0 .*use projection='tan'"),
    (89.9, r"reaches a pole, where RA/Dec bins have no width; use projection='tan'"),
    (-89.9, r"reaches a pole")])
def test_radec_refuses_far_from_square_or_polar_fields(dec0, match):
  with pytest.raises(ValueError, match=match):
    catalog.bin_shear_catalog(_radec_field(dec0, 0.05), 10, 3.0, center=(40.0, dec0),
                              projection='radec')


def test_radec_polar_catalogue_with_default_centre_is_refused():
  rng = np.random.default_rng(5)
  n = 500
  cat = {'ra': rng.uniform(0, 360, n), 'dec': rng.uniform(89.2, 90, n),
         'e1': rng.normal(0, 0.3, n), 'e2': rng.normal(0, 0.3, n)}
  with pytest.raises(ValueError, match='reaches a pole'):
    catalog.bin_shear_catalog(cat, 32, 3.0, projection='radec')
  sm = catalog.bin_shear_catalog(cat, 32, 3.0)  # 'tan' bins every galaxy
  assert sm.counts.sum() == n
