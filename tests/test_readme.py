"""Every ```python block of README.md runs, as a user would run it.

The blocks run in order in one shared namespace (a later block may use what
an earlier one made), from a scratch working directory that holds a link to
the real COSMOS catalogue under the file name the README uses, with TFDS
writing into a scratch data directory. After the blocks, every array or
tensor they left behind must be finite, and none of them may have emitted a
`RuntimeWarning` (e.g. an unconverged Wiener filter).

The default test shrinks the two expensive calls by textual substitutions
(`_FAST`), each of which must match exactly one place in the README, so the
snippet's code path still runs: 2 posterior samples of 2 noise levels
instead of 40 samples of the default schedule, and the tiny
``lognormal_kappa/lognormal_32`` config instead of generating the 5,120 maps
of ``lognormal_128``. The ``slow`` test runs the README unchanged.
"""

import os
import pathlib
import re
import warnings

import numpy as np
import pytest
import tensorflow as tf

from tensorflow_datasets.core import constants as tfds_constants

README = pathlib.Path(__file__).resolve().parents[1] / 'README.md'
COSMOS_FILE = 'cosmos_shear_cat.fits'

_FAST = {
    'num_samples=40)': ('num_samples=2, '
                        'schedule=tm.mcmc.GeometricSchedule(0.1, 1e-3, 2))'),
    "'lognormal_kappa/lognormal_128'": "'lognormal_kappa/lognormal_32'",
}


def _python_blocks(text):
  return re.findall(r'^```python\n(.*?)^```', text, flags=re.M | re.S)


def _fast(blocks):
  """``blocks`` with each `_FAST` substitution applied at its one place."""
  for old, new in _FAST.items():
    count = sum(block.count(old) for block in blocks)
    assert count == 1, (
        f'the README python blocks hold {old!r} {count} times; update _FAST in '
        'tests/test_readme.py so that each substitution matches exactly once.')
    blocks = [block.replace(old, new) for block in blocks]
  return blocks


def _run_blocks(blocks, workdir, request, monkeypatch):
  """Executes the blocks in one namespace from ``workdir``; returns it."""
  if any(COSMOS_FILE in block for block in blocks):
    # Skips, with the reason, when the real COSMOS data are absent.
    cosmos_dir = request.getfixturevalue('cosmos_dir')
    os.symlink(cosmos_dir / COSMOS_FILE, workdir / COSMOS_FILE)
  monkeypatch.chdir(workdir)
  monkeypatch.setattr(tfds_constants, 'DATA_DIR', str(workdir / 'tfds'))
  namespace = {'__name__': '__readme__'}
  with warnings.catch_warnings():
    warnings.simplefilter('error', RuntimeWarning)
    for i, block in enumerate(blocks):
      exec(compile(block, f'README.md python block {i + 1}', 'exec'), namespace)  # pylint: disable=exec-used
  return namespace


def _assert_all_finite(namespace):
  checked = 0
  for name, value in namespace.items():
    if isinstance(value, (tf.Tensor, np.ndarray)) and (
        value.dtype.is_floating if isinstance(value, tf.Tensor)
        else np.issubdtype(value.dtype, np.floating)):
      assert np.all(np.isfinite(np.asarray(value))), f'{name} holds NaN or inf'
      checked += 1
  return checked


def test_readme_has_python_blocks_and_fast_substitutions_match():
  blocks = _python_blocks(README.read_text())
  assert blocks, 'README.md has no ```python block'
  _fast(blocks)


def test_readme_python_blocks_run(tmp_path, request, monkeypatch):
  blocks = _fast(_python_blocks(README.read_text()))
  namespace = _run_blocks(blocks, tmp_path, request, monkeypatch)
  assert _assert_all_finite(namespace) >= 3
  # What the "Using it" snippet makes (skipped if it is rewritten).
  if 'kappa_wf' in namespace:
    assert namespace['kappa_wf'].shape == (360, 360)
    assert bool(np.all(namespace['info'].converged))
  if 'result' in namespace:
    assert namespace['result'].samples.shape == (2, 128, 128)


@pytest.mark.slow
def test_readme_python_blocks_run_unchanged(tmp_path, request, monkeypatch):
  namespace = _run_blocks(_python_blocks(README.read_text()), tmp_path,
                          request, monkeypatch)
  assert _assert_all_finite(namespace) >= 3
