"""Output folders of the main job (issue 11, part 1): whole sets or nothing.

Pins what a user sees for a bad output folder (a file, an unwritable parent,
an existing folder with --nooverwrite, a folder holding someone else's
files): a message, exit code 2 and nothing written, before any work. A rerun
with fewer methods replaces the whole previous set; every product carries
the run id; summary.json is strict JSON; maps.png has the FITS files'
permissions. Kill-during-write is tested with real SIGKILLs: of a small
script that commits slowly through `tfp_massmap.outputs` (many trials, no
TensorFlow), and of ``examples/map_shear.py`` itself.
"""

import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import time

from absl import flags
from astropy.io import fits
import numpy as np
import PIL.Image
import pytest

from tfp_massmap import outputs
from tfp_massmap import pipeline

import conftest

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SCRIPT = _ROOT / 'examples' / 'map_shear.py'
_OUTPUTS = _ROOT / 'tfp_massmap' / 'outputs.py'

KS_PRODUCTS = {'kappa_ks.fits', 'mask.fits', 'noise_std.fits', 'maps.png',
               'summary.json', outputs.MANIFEST_NAME}


@pytest.fixture(scope='module')
def catalogue(tmp_path_factory):
  """A FITS catalogue filling a 32² grid of 0.7 arcmin, and its flags."""
  path = conftest.write_catalogue(
      tmp_path_factory.mktemp('catalogue') / 'cat.fits', seed=0, upper_case=True)
  return [f'--catalog={path}', '--ra_col=RA', '--dec_col=DEC', '--e1_col=E1',
          '--e2_col=E2', '--npix=32', '--pixel_scale_arcmin=0.7']


def _parse(*args):
  flags.FLAGS.unparse_flags()
  return flags.FLAGS(['map_shear.py', *args])


def _run(module, *args):
  module.main(_parse(*args))


def _cli(module, *args):
  """The command-line entry point in process: its exit code."""
  return module._exit_code_main(_parse(*args))  # pylint: disable=protected-access


def _no_work(module, monkeypatch):
  """Makes any start of the estimators fail the test."""
  def fail(*_):
    raise AssertionError('the estimators ran although the input was bad')
  monkeypatch.setattr(module, '_run_methods', fail)


def _snapshot(folder):
  """{relative path: (bytes, mtime_ns)} of everything under ``folder``."""
  folder = pathlib.Path(folder)
  return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
          for p in folder.rglob('*') if p.is_file()}


def _run_id_of_set(out, products=None):
  """Asserts ``out`` holds one complete set of one run; returns its id."""
  manifest = outputs.verify(out)
  run_id = manifest['run_id']
  names = set(os.listdir(out))
  if products is not None:
    assert names == products
  assert json.loads((out / 'summary.json').read_text())['run_id'] == run_id
  for name in names:
    if name.endswith('.fits'):
      assert fits.getheader(out / name)['RUNID'] == run_id, name
  with PIL.Image.open(out / 'maps.png') as image:
    assert image.text['RunID'] == run_id
  return run_id


def _hidden_beside(out):
  return sorted(p.name for p in out.parent.iterdir() if p.name.startswith('.'))


def test_output_dir_that_is_a_file_fails_before_work(map_shear, catalogue,
                                                     tmp_path, monkeypatch,
                                                     capsys):
  target = tmp_path / 'out'
  target.write_text('not a folder')
  _no_work(map_shear, monkeypatch)
  assert _cli(map_shear, *catalogue, '--methods=ks', f'--output_dir={target}') == 2
  assert 'exists and is not a folder' in capsys.readouterr().err
  assert target.read_text() == 'not a folder'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['out']
  # A parent that is a file.
  assert _cli(map_shear, *catalogue, '--methods=ks',
              f'--output_dir={target / "sub"}') == 2
  assert 'is a file, not a folder' in capsys.readouterr().err


def test_unwritable_parent_fails_before_work(map_shear, catalogue, tmp_path,
                                             monkeypatch, capsys):
  parent = tmp_path / 'locked'
  parent.mkdir()
  parent.chmod(0o555)
  if os.geteuid() == 0:
    # Permission bits do not stop root: make os.access report what they say.
    def access(path, mode):
      return not mode & os.W_OK or bool(os.stat(path).st_mode & stat.S_IWUSR)
    monkeypatch.setattr(outputs.os, 'access', access)
  _no_work(map_shear, monkeypatch)
  try:
    code = _cli(map_shear, *catalogue, '--methods=ks',
                f'--output_dir={parent / "a" / "out"}')
    assert code == 2
    assert f'{parent} is not writable' in capsys.readouterr().err
    assert not list(parent.iterdir())
  finally:
    parent.chmod(0o755)


def test_nooverwrite_and_foreign_files_fail_before_work(map_shear, catalogue,
                                                        tmp_path, monkeypatch,
                                                        capsys):
  out = tmp_path / 'out'
  _run(map_shear, *catalogue, '--methods=ks', f'--output_dir={out}')
  before = _snapshot(tmp_path)
  with monkeypatch.context() as patch:
    _no_work(map_shear, patch)
    assert _cli(map_shear, *catalogue, '--methods=ks', f'--output_dir={out}',
                '--nooverwrite') == 2
    assert 'exists and is not empty' in capsys.readouterr().err
    # A file the job did not write is never deleted by a replacement.
    (out / 'notes.txt').write_text('mine')
    before = _snapshot(tmp_path)
    assert _cli(map_shear, *catalogue, '--methods=ks', f'--output_dir={out}') == 2
    assert "no earlier run wrote there: ['notes.txt']" in capsys.readouterr().err
  assert _snapshot(tmp_path) == before
  # An empty existing folder is fine even with --nooverwrite.
  empty = tmp_path / 'empty'
  empty.mkdir()
  _run(map_shear, *catalogue, '--methods=ks', f'--output_dir={empty}',
       '--nooverwrite')
  _run_id_of_set(empty, KS_PRODUCTS)


def test_ks_rerun_replaces_the_whole_set_with_one_run_id(map_shear, catalogue,
                                                         tmp_path):
  out = tmp_path / 'out'
  _run(map_shear, *catalogue, '--methods=ks,wiener', f'--output_dir={out}')
  first = _run_id_of_set(out, KS_PRODUCTS | {'kappa_wiener.fits'})
  _run(map_shear, *catalogue, '--methods=ks', f'--output_dir={out}')
  second = _run_id_of_set(out, KS_PRODUCTS)
  assert second != first
  summary = json.loads((out / 'summary.json').read_text())
  assert list(summary['methods']) == ['ks']
  assert _hidden_beside(out) == []  # staging folder and old set are gone
  # Permissions: those of any new file under the umask, for the PNG too.
  umask = os.umask(0)
  os.umask(umask)
  modes = {name: stat.S_IMODE((out / name).stat().st_mode)
           for name in KS_PRODUCTS}
  assert set(modes.values()) == {0o666 & ~umask}, modes
  assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask


def test_summary_is_strict_json_when_a_solver_reports_nan(map_shear, catalogue,
                                                          tmp_path, monkeypatch):
  from tfp_massmap import wiener  # pylint: disable=g-import-not-at-top
  real = wiener.wiener_filter

  def nan_residual(*args, **kwargs):
    kappa, info = real(*args, **kwargs)
    return kappa, info._replace(relative_residual=np.float64(np.nan))

  monkeypatch.setattr(wiener, 'wiener_filter', nan_residual)
  out = tmp_path / 'out'
  _run(map_shear, *catalogue, '--methods=ks,wiener', f'--output_dir={out}')
  text = (out / 'summary.json').read_text()
  assert 'NaN' not in text and 'Infinity' not in text
  summary = json.loads(text, parse_constant=lambda c: pytest.fail(c))
  assert summary['methods']['wiener']['relative_residual'] is None
  assert pipeline.strict_json(
      {'a': (np.float32(np.inf), -np.inf, [np.nan, 1.5]), 'b': np.arange(2)}) == {
          'a': [None, None, [None, 1.5]], 'b': [0, 1]}


def test_failure_while_writing_leaves_the_previous_set(map_shear, catalogue,
                                                       tmp_path, monkeypatch):
  from tfp_massmap import plotting  # pylint: disable=g-import-not-at-top
  out = tmp_path / 'out'
  _run(map_shear, *catalogue, '--methods=ks,wiener', f'--output_dir={out}')
  before = _snapshot(out)

  def broken(*_, **__):
    raise OSError('disk full')

  monkeypatch.setattr(plotting, 'plot_maps', broken)
  with pytest.raises(OSError, match='disk full'):
    _run(map_shear, *catalogue, '--methods=ks', f'--output_dir={out}')
  assert _snapshot(out) == before
  assert _hidden_beside(out) == []


# A job that writes 60 small products through OutputFolder, 2 ms apart; its
# argv: outputs.py path, target folder.
_SLOW_WRITER = r'''
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location('outputs', sys.argv[1])
outputs = importlib.util.module_from_spec(spec)
spec.loader.exec_module(outputs)
folder = outputs.OutputFolder(sys.argv[2])
with folder:
  for i in range(60):
    with open(folder.path_for(f'product_{i:02d}.txt'), 'w') as f:
      f.write(folder.run_id)
    time.sleep(0.002)
'''


def _writer(target):
  return subprocess.Popen([sys.executable, '-c', _SLOW_WRITER, str(_OUTPUTS),
                           str(target)])


def _writer_set_id(target):
  """Asserts ``target`` holds one complete writer set; returns its run id."""
  manifest = outputs.verify(target)
  assert len(manifest['files']) == 60
  contents = {(target / name).read_text() for name in manifest['files']}
  assert contents == {manifest['run_id']}
  return manifest['run_id']


def _wait_for_staging(target, process, timeout=60):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if any(name.startswith(f'.{target.name}.staging-')
           for name in os.listdir(target.parent)):
      return
    if process.poll() is not None:
      raise AssertionError('the job ended before its staging folder appeared')
    time.sleep(0.001)
  raise AssertionError('no staging folder appeared')


def _kill(process):
  """SIGKILLs a running job; returns its exit status (0 if it just ended)."""
  process.send_signal(signal.SIGKILL)
  code = process.wait()
  assert code in (0, -signal.SIGKILL), code
  return code


def test_sigkill_at_any_moment_leaves_one_complete_set(tmp_path):
  target = tmp_path / 'out'
  began = time.monotonic()
  assert _writer(target).wait() == 0
  duration = time.monotonic() - began
  current = _writer_set_id(target)
  # Killed while writing: the previous set stays, a hidden staging folder is
  # left beside it.
  process = _writer(target)
  _wait_for_staging(target, process)
  time.sleep(0.02)
  assert _kill(process) == -signal.SIGKILL
  assert _writer_set_id(target) == current
  assert [n for n in _hidden_beside(target) if '.staging-' in n]
  # Killed at moments spread over a whole run, commit included.
  outcomes = []
  for fraction in (0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1,
                   1.2):
    process = _writer(target)
    time.sleep(fraction * duration)
    _kill(process)
    run_id = _writer_set_id(target)
    outcomes.append(run_id != current)
    current = run_id
  assert not all(outcomes)  # some kills interrupted the run
  # The next complete run removes every leftover.
  assert _writer(target).wait() == 0
  assert _writer_set_id(target) != current
  assert _hidden_beside(target) == []


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='renameat2(RENAME_EXCHANGE) is Linux only')
def test_commit_swaps_folders_atomically_on_linux(tmp_path, monkeypatch):
  target = tmp_path / 'out'
  swaps = []
  real = outputs._exchange  # pylint: disable=protected-access

  def spy(a, b):
    swaps.append(real(a, b))
    return swaps[-1]

  monkeypatch.setattr(outputs, '_exchange', spy)
  for name in ('a.txt', 'b.txt'):
    with outputs.OutputFolder(target) as folder:
      pathlib.Path(folder.path_for(name)).write_text(folder.run_id)
  assert swaps == [True]  # the second commit exchanged the two folders
  assert sorted(os.listdir(target)) == ['b.txt', outputs.MANIFEST_NAME]
  assert _hidden_beside(target) == []


def test_fallback_without_exchange_recovers_a_set_lost_between_renames(
    tmp_path, monkeypatch):
  target = tmp_path / 'out'

  def commit(names):
    with outputs.OutputFolder(target) as folder:
      for name in names:
        pathlib.Path(folder.path_for(name)).write_text(folder.run_id)
    return folder.run_id

  first = commit(['a.txt', 'b.txt'])
  monkeypatch.setattr(outputs, '_exchange', lambda a, b: False)
  second = commit(['a.txt'])
  assert outputs.verify(target)['run_id'] == second
  assert sorted(os.listdir(target)) == ['a.txt', outputs.MANIFEST_NAME]
  assert _hidden_beside(target) == []
  # A kill between the two renames leaves the previous set under a hidden
  # name and no target: the next run puts it back before anything else.
  previous = tmp_path / f'.out.previous-{second}'
  target.rename(previous)
  folder = outputs.OutputFolder(target)
  with folder:
    assert folder.recovered == [previous.name]
    assert outputs.verify(target)['run_id'] == second
    pathlib.Path(folder.path_for('c.txt')).write_text(folder.run_id)
  assert sorted(os.listdir(target)) == ['c.txt', outputs.MANIFEST_NAME]
  assert first != second


def test_outputs_checks_names_and_refuses_a_live_run_s_staging(tmp_path):
  target = tmp_path / 'out'
  folder = outputs.OutputFolder(target, run_id='run-1')
  with pytest.raises(ValueError, match='enter the OutputFolder'):
    folder.path_for('a.txt')
  with pytest.raises(ValueError, match='plain file name'):
    with folder:
      folder.path_for('../escape.txt')
  assert not target.exists() and _hidden_beside(target) == []
  # A staging folder another live run holds is not cleaned up by this one.
  other = outputs.OutputFolder(target, run_id='run-2')
  other.open()
  with outputs.OutputFolder(target, run_id='run-3') as folder:
    pathlib.Path(folder.path_for('x.txt')).write_text('x')
  assert (tmp_path / '.out.staging-run-2').is_dir()
  other.abort()
  assert _hidden_beside(target) == []
  with pytest.raises(ValueError, match='run_id must be'):
    outputs.OutputFolder(target, run_id='a/b')


def test_write_file_atomic_replaces_whole_or_leaves_the_old_file(tmp_path):
  path = tmp_path / 'table.json'
  outputs.write_file_atomic(path, lambda f: f.write(b'{"a": 1}'))
  assert json.loads(path.read_text()) == {'a': 1}

  def fail_half_way(f):
    f.write(b'{"a": ')
    raise RuntimeError('disk full')
  with pytest.raises(RuntimeError, match='disk full'):
    outputs.write_file_atomic(path, fail_half_way)
  assert json.loads(path.read_text()) == {'a': 1}
  assert os.listdir(tmp_path) == ['table.json']


def test_write_json_atomic_refuses_nan_without_touching_the_file(tmp_path):
  path = tmp_path / 'record.json'
  outputs.write_json_atomic(path, {'b': 2, 'a': [1.5]}, sort_keys=True)
  assert path.read_text() == '{"a": [1.5], "b": 2}\n'
  with pytest.raises(ValueError, match='JSON compliant'):
    outputs.write_json_atomic(path, {'a': float('nan')}, allow_nan=False)
  assert json.loads(path.read_text()) == {'a': [1.5], 'b': 2}
  assert os.listdir(tmp_path) == ['record.json']


def _job(catalogue, out):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.Popen(
      [sys.executable, str(_SCRIPT), *catalogue, '--methods=ks',
       f'--output_dir={out}'], cwd=_ROOT, env=env, stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE)


def _staging_files(out):
  for name in os.listdir(out.parent):
    if name.startswith(f'.{out.name}.staging-'):
      return os.listdir(out.parent / name)
  return []


def test_sigkill_of_map_shear_while_writing_keeps_the_previous_set(
    map_shear, catalogue, tmp_path):
  out = tmp_path / 'out'
  _run(map_shear, *catalogue, '--methods=ks,wiener', f'--output_dir={out}')
  previous = _run_id_of_set(out, KS_PRODUCTS | {'kappa_wiener.fits'})
  process = _job(catalogue, out)
  deadline = time.monotonic() + 120
  while not any(f.endswith('.fits') for f in _staging_files(out)):
    assert process.poll() is None, process.stderr.read().decode()
    assert time.monotonic() < deadline
    time.sleep(0.001)
  assert _kill(process) == -signal.SIGKILL
  assert _run_id_of_set(out, KS_PRODUCTS | {'kappa_wiener.fits'}) == previous
  assert [n for n in _hidden_beside(out) if '.staging-' in n]
  _run(map_shear, *catalogue, '--methods=ks', f'--output_dir={out}')
  _run_id_of_set(out, KS_PRODUCTS)
  assert _hidden_beside(out) == []


@pytest.mark.slow
@pytest.mark.parametrize('delay_s', [0.0, 0.05, 0.2, 0.5, 1.0])
def test_sigkill_of_map_shear_after_delays(map_shear, catalogue, tmp_path,
                                           delay_s):
  out = tmp_path / 'out'
  _run(map_shear, *catalogue, '--methods=ks,wiener', f'--output_dir={out}')
  previous = _run_id_of_set(out)
  process = _job(catalogue, out)
  deadline = time.monotonic() + 120
  while not _staging_files(out) and process.poll() is None:
    assert time.monotonic() < deadline
    time.sleep(0.001)
  time.sleep(delay_s)
  _kill(process)
  run_id = _run_id_of_set(out)
  expected = (KS_PRODUCTS | {'kappa_wiener.fits'} if run_id == previous
              else KS_PRODUCTS)
  assert set(os.listdir(out)) == expected


def test_command_line_exit_code_for_a_bad_output_folder(catalogue, tmp_path):
  target = tmp_path / 'out'
  target.write_text('x')
  result = subprocess.run(
      [sys.executable, str(_SCRIPT), *catalogue, '--methods=ks',
       f'--output_dir={target}'], cwd=_ROOT, capture_output=True, text=True,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'), check=False)
  assert result.returncode == 2
  assert 'map_shear.py: error: --output_dir=' in result.stderr
  assert 'Traceback' not in result.stderr
  assert target.read_text() == 'x'
  # A malformed flag: exit code 2 as well, before TensorFlow is imported.
  result = subprocess.run(
      [sys.executable, str(_SCRIPT), '--npix=many'], cwd=_ROOT,
      capture_output=True, text=True, check=False)
  assert result.returncode == 2
  assert "map_shear.py: error: flag --npix=many" in result.stderr
