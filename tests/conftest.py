"""Shared test fixtures: paths to the optional real data in ../shared/data."""

import os
import pathlib

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
