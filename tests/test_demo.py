"""The embedded default problem is a held-out dataset map seen by the survey."""

import ast
import os
import subprocess
import sys

import numpy as np
import pytest

import tfp_massmap
from tfp_massmap import cosmology
from tfp_massmap import demo
from tfp_massmap import lensing
from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder as lkb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_truth_is_the_first_test_split_map(tmp_path):
  builder = lkb.Builder(config='lognormal_128', data_dir=str(tmp_path))
  key, example = next(iter(builder._split_generators(None)['test']))  # pylint: disable=protected-access
  _, truth = demo.demo_problem(index=0)
  n_train, n_val, _ = builder.builder_config.split_sizes
  assert key == n_train + n_val
  np.testing.assert_array_equal(truth, example['kappa'])


def test_shear_is_lensed_truth_plus_noise_on_the_mask():
  shear_map, truth = demo.demo_problem(index=1, noise_seed=5)
  mask = shear_map.mask > 0
  assert np.all(shear_map.shear[~mask] == 0)
  clean = lensing.shear_from_convergence(truth.astype(np.float64)).numpy()
  pulls = (shear_map.shear - clean)[mask] / shear_map.noise_std[mask]
  assert abs(pulls.std() - 1.0) < 0.02 and abs(pulls.mean()) < 0.02
  assert shear_map.wcs.pixel_shape == (128, 128)
  # The noise seed is the seed of the draw: same seed, same shear.
  again, _ = demo.demo_problem(index=1, noise_seed=5)
  np.testing.assert_array_equal(again.shear, shear_map.shear)
  other, _ = demo.demo_problem(index=1, noise_seed=6)
  assert not np.array_equal(other.shear, shear_map.shear)


def test_negative_index_raises():
  with pytest.raises(ValueError, match='index'):
    demo.demo_problem(index=-1)


def test_builder_configs_come_from_the_cosmology_module():
  configs = {c.name: c for c in lkb.Builder.BUILDER_CONFIGS}
  assert len(configs) == (2 * len(cosmology.LOGNORMAL_KAPPA_SETTINGS)
                          + len(cosmology.COSMO_KAPPA_SETTINGS))
  for setting in cosmology.COSMO_KAPPA_SETTINGS:
    config = configs[f'cosmo_{setting.map_size}']
    assert (config.map_size, config.pixel_scale_arcmin,
            tuple(config.split_sizes)) == tuple(setting)
  for setting in cosmology.LOGNORMAL_KAPPA_SETTINGS:
    for kind in ('lognormal', 'gaussian'):
      config = configs[f'{kind}_{setting.map_size}']
      assert (config.map_size, config.pixel_scale_arcmin,
              tuple(config.split_sizes)) == tuple(setting)
  assert cosmology.lognormal_kappa_setting(128).split_sizes == (4096, 512, 512)
  with pytest.raises(ValueError, match=r'no 64-pixel maps; its map sizes are '
                     r'\[128, 360, 32\]'):
    cosmology.lognormal_kappa_setting(64)


def test_the_core_never_imports_a_builder():
  package = os.path.dirname(tfp_massmap.__file__)
  for folder, _, files in os.walk(package):
    for name in files:
      if not name.endswith('.py'):
        continue
      path = os.path.join(folder, name)
      with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
      for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
          modules = [node.module or ''] + [
              f'{node.module}.{a.name}' for a in node.names]
        elif isinstance(node, ast.Import):
          modules = [a.name for a in node.names]
        else:
          continue
        assert not any(m.startswith('tfp_massmap.datasets') or
                       m.startswith('datasets') for m in modules), (
                           f'{path} imports {modules}')


_BARE_IMPORT = '''
import sys
# As tools/bazel_pytest.py does: drop the finder of the editable install.
sys.meta_path[:] = [
    f for f in sys.meta_path
    if not getattr(f, '__module__', '').startswith('__editable___tfp_massmap')]
sys.path.insert(0, {root!r})
import tensorflow_datasets as tfds
import tfp_massmap
print(tfp_massmap.__file__)
print(tfp_massmap.datasets.__file__)
print('lognormal_kappa' in tfds.list_builders())
'''


def test_import_from_a_bare_checkout(tmp_path):
  result = subprocess.run(
      [sys.executable, '-c', _BARE_IMPORT.format(root=ROOT)],
      capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  lines = result.stdout.split()
  assert lines[-3] == os.path.join(ROOT, 'tfp_massmap', '__init__.py')
  assert lines[-2] == os.path.join(ROOT, 'datasets', '__init__.py')
  assert lines[-1] == 'True'


def test_bare_package_without_its_datasets_folder_says_how_to_install(
    tmp_path):
  # A copy of the package alone, no datasets/ next to it, not installed.
  subprocess.run(['cp', '-r', os.path.join(ROOT, 'tfp_massmap'),
                  str(tmp_path)], check=True)
  result = subprocess.run(
      [sys.executable, '-c', _BARE_IMPORT.format(root=str(tmp_path))],
      capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('ImportError: tfp_massmap.datasets is not installed')
  assert 'pip install -e .' in last
