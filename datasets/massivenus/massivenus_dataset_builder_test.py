"""Tests of the MassiveNuS builder on the stand-in files in dummy_data/."""

import os
import shutil
import subprocess
import sys

from astropy.io import fits
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfp_massmap.datasets.massivenus import massivenus_dataset_builder as mnv

DUMMY = mnv.Builder.code_path.parent / 'dummy_data'
OTHER = 'convergence_gal_mnv0.10000_om0.28000_As1.9000'


class MassivenusTest(tfds.testing.DatasetBuilderTestCase):
  """Builds a registered config, and another cosmology by the download path."""
  DATASET_CLASS = mnv.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = [
      'z2.5',
      # download_and_extract is mocked to return dummy_data/.
      mnv.make_config(1.0, m_nu=0.1, omega_m=0.28, a_s=1.9e-9, download=True),
  ]
  SPLITS = {'train': 2, 'validation': 1, 'test': 1}  # realisations 1, 2 | 8 | 9
  # The archives' checksums cannot be recorded offline; checksums.tsv is empty.
  SKIP_CHECKSUMS = True


def _prepare(tmp_path, config, manual_dir):
  builder = mnv.Builder(data_dir=tmp_path / 'data', config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir))
  return builder


def test_examples_match_the_fits_files(tmp_path):
  builder = _prepare(tmp_path, mnv.make_config(1.5), DUMMY)
  (example,) = tfds.as_numpy(builder.as_dataset(split='validation'))
  path = (DUMMY / mnv.FIDUCIAL_COSMOLOGY / 'Maps15' / 'WLconv_z1.50_0008r.fits')
  np.testing.assert_array_equal(example['kappa'], fits.getdata(path))
  assert example['realization'] == 8
  assert example['z_source'] == np.float32(1.5)
  assert example['pixel_scale_arcmin'] == np.float32(3.5 * 60 / 16)
  assert (example['m_nu'], example['omega_m']) == (0.0, np.float32(0.3))
  assert example['a_s'] == np.float32(2.1e-9)


def test_examples_carry_the_cosmology_of_their_folder(tmp_path):
  builder = _prepare(tmp_path, mnv.make_config(1.0, cosmology=OTHER), DUMMY)
  examples = list(tfds.as_numpy(builder.as_dataset(split='train')))
  assert len(examples) == 2
  for example in examples:
    assert example['m_nu'] == np.float32(0.1)
    assert example['omega_m'] == np.float32(0.28)
    assert example['a_s'] == np.float32(1.9e-9)
  # sigma8 is not in the release's names (module docstring).
  assert 'sigma8' not in builder.info.features
  docs = {name: feature.doc.desc
          for name, feature in builder.info.features.items()}
  for name in ('m_nu', 'omega_m', 'a_s'):
    assert 'folder name' in docs[name]


def test_make_config_by_name_or_parameters():
  by_params = mnv.make_config(1.0, m_nu=0.1, omega_m=0.28, a_s=1.9e-9)
  by_name = mnv.make_config(1.0, cosmology=OTHER)
  assert by_params.name == by_name.name == 'z1.0_mnv0.10000_om0.28000_As1.9000'
  assert by_params.cosmology == OTHER
  assert mnv.make_config(2.0) is mnv.Builder.builder_configs['z2.0']
  assert mnv.parse_cosmology(OTHER) == (0.1, 0.28, pytest.approx(1.9e-9))


@pytest.mark.parametrize('kwargs, match', [
    (dict(z_source=0.7), 'z_source must be one of'),
    (dict(cosmology='mnv0.1_om0.3'), 'MassiveNuS directory name'),
    (dict(m_nu=0.1, omega_m=0.3), 'must all be given'),
    (dict(m_nu=0.1, omega_m=0.3, a_s=2.1), 'about 2.1e-9'),
    (dict(cosmology=OTHER, m_nu=0.1), 'not both'),
])
def test_make_config_rejects_bad_input(kwargs, match):
  with pytest.raises(ValueError, match=match):
    mnv.make_config(**kwargs)


def test_splits_by_realization_are_80_10_10():
  splits = [mnv.split_of_realization(r) for r in range(1, 10001)]
  assert (splits.count('train'), splits.count('validation'),
          splits.count('test')) == (8000, 1000, 1000)


def test_missing_manual_dir_says_what_to_download_and_where(tmp_path):
  with pytest.raises(AssertionError) as error:
    _prepare(tmp_path, 'z1.0', tmp_path / 'nothing_here')
  message = str(error.value)
  assert str(tmp_path / 'nothing_here') in message
  assert mnv.tarball_url(mnv.FIDUCIAL_COSMOLOGY) in message
  assert f'{mnv.FIDUCIAL_COSMOLOGY}/Maps10/WLconv_z1.00_0001r.fits' in message


def test_missing_cosmology_names_the_archive_and_the_path(tmp_path):
  manual = tmp_path / 'manual'
  (manual / 'unrelated').mkdir(parents=True)
  config = mnv.make_config(2.0, cosmology=OTHER)
  with pytest.raises(FileNotFoundError) as error:
    _prepare(tmp_path, config, manual)
  message = str(error.value)
  assert mnv.tarball_url(OTHER) in message
  assert str(manual / OTHER / 'Maps20' / 'WLconv_z2.00_0001r.fits') in message



def test_manual_dir_under_tfds_data_dir(tmp_path):
  # As MANUAL_DOWNLOAD_INSTRUCTIONS says: with TFDS_DATA_DIR set and no
  # data_dir, the files are read below $TFDS_DATA_DIR/downloads/manual. TFDS
  # reads the variable when it is imported, hence a fresh process.
  manual = tmp_path / 'downloads' / 'manual'
  shutil.copytree(DUMMY / mnv.FIDUCIAL_COSMOLOGY / 'Maps10',
                  manual / mnv.FIDUCIAL_COSMOLOGY / 'Maps10')
  script = ('import tensorflow_datasets as tfds\n'
            'import tfp_massmap.datasets\n'
            "builder = tfds.builder('massivenus/z1.0')\n"
            'builder.download_and_prepare()\n'
            'print(builder.data_dir)\n'
            "print(builder.info.splits['train'].num_examples)\n")
  out = subprocess.run(
      [sys.executable, '-c', script], capture_output=True, text=True,
      check=False, env=dict(os.environ, TFDS_DATA_DIR=str(tmp_path)))
  assert out.returncode == 0, out.stderr[-2000:]
  data_dir, num_train = out.stdout.split()[-2:]
  assert data_dir == str(tmp_path / 'massivenus' / 'z1.0' / '1.0.0')
  assert int(num_train) == 2  # Realisations 1 and 2.

if __name__ == '__main__':
  tfds.testing.test_main()
