"""Tests of the κTNG builder on the stand-in files in dummy_data/."""

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfp_massmap.datasets.kappatng import kappatng_dataset_builder as ktng

DUMMY = ktng.Builder.code_path.parent / 'dummy_data'


class KappatngTest(tfds.testing.DatasetBuilderTestCase):
  """Builds a single-plane config and a custom n(z) one (the default n(z)
  config is built by test_nz_map_is_the_weighted_sum_of_the_planes)."""
  DATASET_CLASS = ktng.Builder
  BUILDER_CONFIG_NAMES_TO_TEST = [
      'dmonly_z2.568',
      ktng.nz_config('flat', [0.5, 1.5], [1.0, 1.0], physics='fullphys'),
  ]
  SPLITS = {'train': 2, 'validation': 1, 'test': 1}  # LP001 (2 runs) | 8 | 9


def _prepare(tmp_path, config, manual_dir=DUMMY):
  builder = ktng.Builder(data_dir=tmp_path / 'data', config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=manual_dir))
  return builder


def _planes(physics, lp, run):
  path = (DUMMY / 'kappaTNG' / physics / 'maps' / f'LP{lp:03d}' /
          f'LP{lp:03d}_run{run:03d}_maps.hdf5')
  with h5py.File(path, 'r') as f:
    return np.stack([f[f'z{i:02d}/kappa'][()] for i in range(1, 41)])


def test_nz_map_is_the_weighted_sum_of_the_planes(tmp_path):
  builder = _prepare(tmp_path, 'fullphys_cosmos')
  (example,) = tfds.as_numpy(builder.as_dataset(split='test'))
  weights = np.array(builder.builder_config.weights)
  expected = np.tensordot(weights, _planes('fullphys', 9, 1).astype(np.float64), 1)
  np.testing.assert_allclose(example['kappa'], expected, rtol=1e-6, atol=1e-9)
  assert (example['lens_plane_set'], example['run']) == (9, 1)
  assert example['realization'] == 801
  assert example['pixel_scale_arcmin'] == np.float32(300.0 / 8)
  assert example['z_source'] == np.float32(builder.builder_config.z_source)


def test_plane_config_reads_that_plane():
  config = ktng.plane_config(23, 'dmonly')
  assert config.name == 'dmonly_z1.034' and config.plane == 23
  assert ktng.Builder.DEFAULT_BUILDER_CONFIG_NAME == 'fullphys_cosmos'
  assert len(ktng.Builder.BUILDER_CONFIGS) == 2 * (40 + 1)


def test_plane_weights_of_a_narrow_nz_pick_the_bracketing_planes():
  z_a, z_b = ktng.SOURCE_REDSHIFTS[22], ktng.SOURCE_REDSHIFTS[23]
  z_mid = 0.75 * z_a + 0.25 * z_b
  z = z_mid + np.array([-1e-4, 0.0, 1e-4])
  weights = ktng.plane_weights(z, [0.0, 1.0, 0.0])
  expected = np.zeros(40)
  expected[22], expected[23] = 0.75, 0.25
  np.testing.assert_allclose(weights, expected, atol=2e-3)


def test_plane_weights_sum_to_the_share_above_the_first_plane():
  z = np.linspace(0.0, 4.0, 401)
  weights = ktng.plane_weights(z, ktng.cosmos_like_nz(z))
  assert np.all(weights >= 0)
  # Between z = 0 and the first plane κ rises linearly from 0, so the sum
  # misses half of the small share of n(z) below the first plane.
  below = np.trapezoid(np.where(z < 0.0345, ktng.cosmos_like_nz(z), 0), z)
  share = below / np.trapezoid(ktng.cosmos_like_nz(z), z)
  assert 1 - share < weights.sum() < 1
  # A flat n(z) beyond the last plane puts all its weight on that plane.
  np.testing.assert_allclose(ktng.plane_weights([3.0, 4.0], [1, 1])[-1], 1.0)


@pytest.mark.parametrize('z, n, match', [
    ([1.0, 0.5], [1, 1], 'strictly increasing'),
    ([0.5, 1.0], [1, -1], 'finite and >= 0'),
    ([0.5, 1.0], [0, 0], 'zero everywhere'),
    ([0.5], [1], 'same length >= 2'),
])
def test_plane_weights_reject_bad_tables(z, n, match):
  with pytest.raises(ValueError, match=match):
    ktng.plane_weights(z, n)


def test_configs_reject_bad_input():
  with pytest.raises(ValueError, match='physics must be one of'):
    ktng.plane_config(3, 'hydro')
  with pytest.raises(ValueError, match=r'integer in \[1, 40\]'):
    ktng.plane_config(41)
  with pytest.raises(ValueError, match='name must be'):
    ktng.nz_config('my n(z)', [0.5, 1.5], [1, 1])


def test_splits_by_lens_plane_set_are_80_10_10():
  splits = [ktng.split_of_lens_plane_set(lp) for lp in range(1, 101)]
  assert (splits.count('train'), splits.count('validation'),
          splits.count('test')) == (80, 10, 10)


def test_missing_manual_dir_says_what_to_download_and_where(tmp_path):
  with pytest.raises(AssertionError) as error:
    _prepare(tmp_path, 'fullphys_z0.506', tmp_path / 'nothing_here')
  message = str(error.value)
  assert str(tmp_path / 'nothing_here') in message
  assert 'https://idark.ipmu.jp/~jia.liu/data/kappaTNG/' in message
  assert 'kappaTNG/fullphys/maps/LP001/LP001_run001_maps.hdf5' in message


def test_missing_physics_folder_names_a_file_and_its_path(tmp_path):
  manual = tmp_path / 'manual'
  (manual / 'kappaTNG' / 'fullphys').mkdir(parents=True)
  with pytest.raises(FileNotFoundError) as error:
    _prepare(tmp_path, 'dmonly_cosmos', manual)
  message = str(error.value)
  assert ktng.file_url('dmonly', 1, 1) in message
  assert str(manual / 'kappaTNG' / 'dmonly' / 'maps' / 'LP001' /
             'LP001_run001_maps.hdf5') in message


if __name__ == '__main__':
  tfds.testing.test_main()
