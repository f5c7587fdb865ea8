"""examples/map_survey.py end to end, and what a user sees for bad flags.

The command runs in a subprocess: its absl flags (--catalog, --ra_col, ...)
share names with examples/map_shear.py's, which other tests import.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import conftest
from tfp_massmap import survey_job

from test_survey_job import _TILES, tiny_survey

_COMMAND = pathlib.Path(__file__).resolve().parents[1] / 'examples' / 'map_survey.py'
_TILE_FLAGS = ('--npix=32', '--pixel_scale_arcmin=2', '--overlap_pix=4',
               '--nside=512')


def _run(*args):
  return conftest.run_script('examples/map_survey.py', *args)


@pytest.fixture(scope='module')
def survey_files(tmp_path_factory):
  """A Parquet catalogue (upper-case columns) and the truth FITS map."""
  folder = tmp_path_factory.mktemp('survey')
  cat, truth = tiny_survey(sigma_e=0.05)
  pq.write_table(pa.table({'RA': cat.ra, 'DEC': cat.dec, 'G1': cat.e1,
                           'G2': cat.e2}), folder / 'cat.parquet')
  hp.write_map(folder / 'truth.fits', truth, dtype=np.float64)
  return cat, truth, folder


def test_command_runs_end_to_end(tmp_path, survey_files):
  cat, truth, folder = survey_files
  out = tmp_path / 'out'
  done = _run(f'--catalog={folder / "cat.parquet"}', '--ra_col=RA',
              '--dec_col=DEC', '--e1_col=G1', '--e2_col=G2',
              '--estimators=ks,wiener', *_TILE_FLAGS, '--workers=1',
              f'--truth={folder / "truth.fits"}', f'--output_dir={out}')
  assert done.returncode == 0, done.stderr
  assert 'tiles 0/' in done.stderr and 'about' in done.stderr  # Progress.
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['workers'] == 'LocalCluster(1)'
  assert summary['num_galaxies'] == len(cat.ra)
  assert summary['truth']['kappa_wiener']['pearson_r'] > 0.9
  assert sorted(os.listdir(out)) == [
      'footprint.fits', 'kappa_ks.fits', 'kappa_wiener.fits', 'manifest.json',
      'maps.png', 'mask.fits', 'summary.json', 'tiles.json', 'weight.fits']
  direct = survey_job.map_survey(cat, tmp_path / 'direct',
                                 estimators=('ks', 'wiener'), n_workers=0,
                                 progress=False, **_TILES)
  for name in ('kappa_ks', 'kappa_wiener'):
    written, header = hp.read_map(out / f'{name}.fits', h=True)
    assert ('RUNID', summary['run_id']) in header
    np.testing.assert_allclose(
        written, direct.full_map(name).astype(np.float32), atol=1e-7)


def _children(pid):
  """Process ids whose parent is ``pid``."""
  out = subprocess.run(['ps', '-o', 'pid=', '--ppid', str(pid)],
                       capture_output=True, text=True, check=False).stdout
  return [int(p) for p in out.split()]


@pytest.mark.slow  # About 40 s: two local clusters of 2 workers.
def test_killed_dask_run_leaves_no_workers_and_resumes(tmp_path, survey_files):
  _, _, folder = survey_files
  out = tmp_path / 'out'
  cache = pathlib.Path(survey_job.tile_cache_dir(out))
  args = [sys.executable, str(_COMMAND), f'--catalog={folder / "cat.parquet"}',
          '--ra_col=RA', '--dec_col=DEC', '--e1_col=G1', '--e2_col=G2',
          *_TILE_FLAGS, '--workers=2', f'--output_dir={out}']
  process = subprocess.Popen(args, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + 180
    while time.time() < deadline and process.poll() is None:
      if cache.is_dir() and len(list(cache.glob('tile_*.json'))) >= 2:
        break
      time.sleep(0.1)
    assert process.poll() is None, 'the run ended before it could be killed'
    workers = _children(process.pid)
    assert len(workers) >= 2
    os.kill(process.pid, signal.SIGKILL)
  finally:
    process.wait()
  finished = len(list(cache.glob('tile_*.json')))
  deadline = time.time() + 30
  while time.time() < deadline and any(
      os.path.exists(f'/proc/{pid}') for pid in workers):
    time.sleep(0.5)
  assert not any(os.path.exists(f'/proc/{pid}') for pid in workers)
  assert not out.exists()
  done = _run(*args[2:])
  assert done.returncode == 0, done.stderr
  summary = json.loads((out / 'summary.json').read_text())
  assert summary['num_tiles_cached'] >= finished
  assert summary['num_tiles_computed'] == (summary['num_tiles'] -
                                           summary['num_tiles_cached'])


@pytest.mark.parametrize('args, message', [
    ([], '--catalog is required'),
    (['--catalog=x.fits', '--estimators=ks,sparse'], '--estimators must be'),
    (['--catalog=x.fits', '--num_samples=8'], "['--num_samples'] apply to the "
     'posterior'),
    (['--catalog=x.fits', '--workers=2', '--scheduler_address=tcp://h:1'],
     'not both'),
    (['--catalog=x.fits', '--pixel_scale_arcmin=-1'],
     '--pixel_scale_arcmin must be a finite number > 0'),
    (['--catalog=x.fits', '--workers=many'], 'invalid literal'),
    (['--catalog=x.fits', '--npix=1'], '--npix must be >= 2, got 1'),
    (['--catalog=x.fits', '--estimators=ks,posterior', '--prior=gaussian',
      '--prior_path=p.keras'], 'either --prior or --prior_path'),
    (['--catalog=missing.parquet'], 'missing.parquet does not exist'),
])
def test_bad_flags_exit_2_before_work(tmp_path, args, message):
  out = tmp_path / 'out'
  done = _run(*args, f'--output_dir={out}')
  assert done.returncode == 2, done.stderr
  assert message in done.stderr
  assert list(tmp_path.iterdir()) == []
