"""Survey input and output formats: HATS catalogues (lsdb), HealSparse maps."""

import os
import pathlib
import subprocess
import sys
import warnings

import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfp_massmap import survey_job

from test_survey_job import _NSIDE, _TILES, tiny_survey

_COMMAND = pathlib.Path(__file__).resolve().parents[1] / 'examples' / 'map_survey.py'
_NO_LSDB = 'HATS input needs lsdb: pip install "tfp_massmap[hats]"'


def _table(cat):
  """The tiny survey as columns, with two rows read_catalog drops."""
  columns = {'RA': cat.ra, 'DEC': cat.dec, 'g1': cat.e1.copy(),
             'g2': cat.e2.copy(), 'mag': np.linspace(20, 25, len(cat.ra))}
  columns['g1'][5] = np.nan      # Non-finite.
  columns['g2'][7] = 1.5         # |e| >= 1.
  return columns


@pytest.fixture(scope='module')
def hats_survey(tmp_path_factory):
  """The tiny survey as one Parquet file and as a HATS collection of it.

  lsdb writes the collection (a catalogue partitioned on HEALPix, and a
  margin cache of the rows within 30 arcsec of each partition's edge).
  """
  lsdb = pytest.importorskip('lsdb', reason=_NO_LSDB)
  import pandas as pd  # pylint: disable=g-import-not-at-top
  folder = tmp_path_factory.mktemp('hats')
  cat, _ = tiny_survey(sigma_e=0.05)
  columns = _table(cat)
  pq.write_table(pa.table(columns), folder / 'cat.parquet')
  hats_catalog = lsdb.from_dataframe(
      pd.DataFrame(columns), ra_column='RA', dec_column='DEC',
      partition_rows=2000, margin_threshold=30.0)
  hats_catalog.write_catalog(folder / 'hats', catalog_name='tiny',
                             progress_bar=False)
  return cat, folder


def _read(source, **kwargs):
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', 'read_catalog dropped')
    return survey_job.read_survey_catalog(
        source, ra_col='RA', dec_col='DEC', e1_col='g1', e2_col='g2',
        **kwargs)


def _sorted(cat):
  order = np.lexsort((cat.dec, cat.ra))
  return [np.asarray(c)[order] for c in cat]


def test_hats_catalogue_gives_the_rows_of_its_parquet_table(hats_survey):
  cat, folder = hats_survey
  hats = folder / 'hats'
  assert (hats / 'collection.properties').exists()
  assert len(list((hats / 'tiny' / 'dataset').rglob('*.parquet'))) >= 4
  margin = list((hats / 'tiny_30arcs' / 'dataset').rglob('Npix=*.parquet'))
  assert sum(pq.ParquetFile(f).metadata.num_rows for f in margin) > 100
  expected = _sorted(_read(folder / 'cat.parquet', flip_e2=True))
  assert len(expected[0]) == len(cat.ra) - 2  # The two bad rows dropped.
  # The collection (its margin cache not read) and its object catalogue.
  for source in (hats, hats / 'tiny', [hats / 'tiny']):
    got = _sorted(_read(source, flip_e2=True))
    for name, g, e in zip(cat._fields, got, expected):
      np.testing.assert_array_equal(g, e, err_msg=name)


def test_survey_job_runs_on_a_hats_catalogue(tmp_path, hats_survey):
  _, folder = hats_survey
  kwargs = dict(estimators=('ks',), n_workers=0, progress=False, **_TILES)
  from_hats = survey_job.map_survey(_read(folder / 'hats'), tmp_path / 'hats',
                                    **kwargs)
  from_parquet = survey_job.map_survey(_read(folder / 'cat.parquet'),
                                       tmp_path / 'parquet', **kwargs)
  assert from_hats.summary['num_galaxies'] == from_parquet.summary[
      'num_galaxies']
  np.testing.assert_array_equal(from_hats.pixels, from_parquet.pixels)
  # The rows come in another order: sums differ in the last bits only.
  np.testing.assert_allclose(from_hats.maps['kappa_ks'],
                             from_parquet.maps['kappa_ks'], rtol=0,
                             atol=1e-12)


def test_hats_margin_cache_alone_is_refused(hats_survey):
  _, folder = hats_survey
  with pytest.raises(ValueError, match='is a HATS margin catalogue, not a '
                     'catalogue of galaxies; pass the object catalogue'):
    _read(folder / 'hats' / 'tiny_30arcs')


def test_hats_catalogue_without_lsdb_names_the_extra(tmp_path, monkeypatch):
  (tmp_path / 'cat').mkdir()
  (tmp_path / 'cat' / 'hats.properties').write_text('#HATS catalog\n')
  monkeypatch.setitem(sys.modules, 'lsdb', None)  # import lsdb fails.
  with pytest.raises(ImportError, match=r'is a HATS catalogue; reading it '
                     r'needs lsdb.*pip install "tfp_massmap\[hats\]"'):
    survey_job.read_survey_catalog(tmp_path / 'cat')


def test_broken_hats_catalogue_is_a_value_error(tmp_path):
  pytest.importorskip('lsdb', reason=_NO_LSDB)
  (tmp_path / 'cat').mkdir()
  (tmp_path / 'cat' / 'hats.properties').write_text('#HATS catalog\n')
  with pytest.raises(ValueError, match='could not open HATS catalogue .*cat '
                     'with lsdb'):
    survey_job.read_survey_catalog(tmp_path / 'cat')


def _read_fits_products(path):
  return {name[:-len('.fits')]: hp.read_map(os.path.join(path, name),
                                            field=None, dtype=None)
          for name in os.listdir(path) if name.endswith('.fits')}


def test_healsparse_products_equal_the_fits_products(tmp_path):
  import healsparse  # pylint: disable=g-import-not-at-top
  cat, _ = tiny_survey(sigma_e=0.05)
  out = tmp_path / 'out'
  kwargs = dict(estimators=('ks',), n_workers=0, progress=False, **_TILES)
  fits_run = survey_job.map_survey(cat, out, **kwargs)
  fits_maps = _read_fits_products(out)
  hsp_run = survey_job.map_survey(cat, out, output_format='healsparse',
                                  **kwargs)
  assert hsp_run.summary['num_tiles_cached'] == len(fits_run.tiles)
  assert hsp_run.summary['output_format'] == 'healsparse'
  names = sorted(n for n in os.listdir(out) if n.endswith('.hsp'))
  assert names == ['footprint.hsp', 'kappa_ks.hsp', 'mask.hsp', 'weight.hsp']
  assert not any(n.endswith('.fits') for n in os.listdir(out))
  assert sorted(fits_maps) == [n[:-len('.hsp')] for n in names]
  for name, fits_map in fits_maps.items():
    sparse = healsparse.HealSparseMap.read(str(out / f'{name}.hsp'))
    assert sparse.nside_sparse == _NSIDE and sparse.nside_coverage == 32
    assert sparse.dtype == np.float32 and sparse.sentinel == hp.UNSEEN
    assert sparse.metadata['RUNID'] == hsp_run.run_id
    ring = np.sort(hp.nest2ring(_NSIDE, sparse.valid_pixels))
    np.testing.assert_array_equal(ring, np.flatnonzero(fits_map != hp.UNSEEN),
                                  err_msg=name)
    np.testing.assert_array_equal(
        sparse.generate_healpix_map(nest=False), fits_map, err_msg=name)
  np.testing.assert_array_equal(hsp_run.pixels, fits_run.pixels)


def test_healsparse_samples_are_one_record_map(tmp_path):
  import healsparse  # pylint: disable=g-import-not-at-top
  nside, pixels = 64, np.array([3, 700, 701, 40000])
  samples = np.arange(12.0).reshape(3, 4) / 7
  path = str(tmp_path / 'samples.hsp')
  survey_job._write_healsparse_map(path, nside, pixels, samples, 'run-1')  # pylint: disable=protected-access
  sparse = healsparse.HealSparseMap.read(path)
  assert sparse.dtype.names == ('sample0', 'sample1', 'sample2')
  assert sparse.nside_coverage == 32 and sparse.metadata['RUNID'] == 'run-1'
  for k in range(3):
    full = sparse[f'sample{k}'].generate_healpix_map(nest=False)
    np.testing.assert_array_equal(full[pixels], samples[k].astype(np.float32))
    assert (full != hp.UNSEEN).sum() == len(pixels)
  low = str(tmp_path / 'low.hsp')  # The coverage NSIDE is at most NSIDE.
  survey_job._write_healsparse_map(low, 8, pixels[:2], samples[0, :2], 'r')  # pylint: disable=protected-access
  assert healsparse.HealSparseMap.read(low).nside_coverage == 8


def test_command_without_lsdb_exits_2_naming_the_extra(tmp_path):
  (tmp_path / 'cat').mkdir()
  (tmp_path / 'cat' / 'hats.properties').write_text('#HATS catalog\n')
  script = ('import runpy, sys\n'
            'sys.modules["lsdb"] = None\n'
            f'sys.argv = [{str(_COMMAND)!r}, "--catalog={tmp_path / "cat"}", '
            f'"--output_dir={tmp_path / "out"}"]\n'
            f'runpy.run_path({str(_COMMAND)!r}, run_name="__main__")\n')
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  done = subprocess.run([sys.executable, '-c', script], capture_output=True,
                        text=True, env=env, timeout=300, check=False)
  assert done.returncode == 2, done.stderr
  assert 'Traceback' not in done.stderr
  assert 'pip install "tfp_massmap[hats]"' in done.stderr
  assert not (tmp_path / 'out').exists()


@pytest.mark.slow  # 17 s: a command run (TensorFlow, lsdb) and a map_survey.
def test_command_maps_a_hats_catalogue_into_healsparse_files(tmp_path,
                                                             hats_survey):
  import healsparse  # pylint: disable=g-import-not-at-top
  _, folder = hats_survey
  out = tmp_path / 'out'
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  done = subprocess.run(
      [sys.executable, str(_COMMAND), f'--catalog={folder / "hats"}',
       '--ra_col=RA', '--dec_col=DEC', '--e1_col=g1', '--e2_col=g2',
       '--estimators=ks', '--npix=32', '--pixel_scale_arcmin=2',
       '--overlap_pix=4', f'--nside={_NSIDE}', '--workers=0',
       '--output_format=healsparse', f'--output_dir={out}'],
      capture_output=True, text=True, env=env, timeout=300, check=False)
  assert done.returncode == 0, done.stderr
  assert '(healsparse, nside 512)' in done.stdout
  expected = survey_job.map_survey(
      _read(folder / 'cat.parquet'), tmp_path / 'parquet', estimators=('ks',),
      n_workers=0, progress=False, **_TILES)
  sparse = healsparse.HealSparseMap.read(str(out / 'kappa_ks.hsp'))
  np.testing.assert_allclose(
      sparse.generate_healpix_map(nest=False)[expected.pixels],
      expected.maps['kappa_ks'].astype(np.float32), rtol=0, atol=1e-7)
