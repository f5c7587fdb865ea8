"""Shared test fixtures: paths to the optional real data in ../shared/data."""

import importlib.util
import os
import pathlib
import subprocess
import sys

import astropy.table
import numpy as np
import pytest

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

SHARED_DATA = pathlib.Path(
    os.environ.get('TFP_MASSMAP_SHARED_DATA',
                   pathlib.Path(__file__).resolve().parents[2] / 'shared' / 'data'))
COSMOS_DIR = SHARED_DATA / 'cosmos'


@pytest.fixture
def cosmos_dir():
  """The real COSMOS data folder; skips the test when it is absent."""
  if not (COSMOS_DIR / 'cosmos_shear_cat.fits').exists():
    pytest.skip(f'real COSMOS data not found in {COSMOS_DIR} '
                '(set TFP_MASSMAP_SHARED_DATA to the shared data folder)')
  return COSMOS_DIR


_ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative_path, module_name):
  """A script of the repository (examples/, benchmarks/) as a module.

  Loaded once per test session under ``module_name``; scripts define their
  absl flags only when run, so importing them defines none.
  """
  if module_name not in sys.modules:
    spec = importlib.util.spec_from_file_location(module_name,
                                                  _ROOT / relative_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[module_name] = module
  return sys.modules[module_name]


def run_script(relative_path, *args, timeout=300):
  """Runs a repository script with ``args`` in a fresh interpreter.

  Returns the `subprocess.CompletedProcess` (text stdout and stderr; a
  failure is its return code, not an exception). TensorFlow's C++ logging
  is silenced, so stderr holds the script's own messages.
  """
  env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  return subprocess.run([sys.executable, str(_ROOT / relative_path), *args],
                        capture_output=True, text=True, env=env,
                        timeout=timeout, check=False)


@pytest.fixture(scope='module')
def map_shear():
  """examples/map_shear.py as a module (one instance for every test file)."""
  return load_script('examples/map_shear.py', 'map_shear_example')


def write_catalogue(path, seed, upper_case=False, n_gal=20000):
  """Writes a FITS catalogue of n_gal galaxies in 0.4° x 0.4° about (150, 2).

  Shapes are pure noise (σ_e = 0.2 per component). Column names are ra, dec,
  e1, e2, or RA, DEC, E1, E2 with ``upper_case``. Returns ``path``.
  """
  rng = np.random.default_rng(seed)
  names = ('RA', 'DEC', 'E1', 'E2') if upper_case else ('ra', 'dec', 'e1', 'e2')
  table = astropy.table.Table(dict(zip(names, (
      150.0 + rng.uniform(-0.2, 0.2, n_gal),
      2.0 + rng.uniform(-0.2, 0.2, n_gal),
      0.2 * rng.standard_normal(n_gal),
      0.2 * rng.standard_normal(n_gal)))))
  table.write(path)
  return path
