"""The embedded default problem is a held-out dataset map seen by the survey."""

import numpy as np
import pytest

from tfp_massmap import demo
from tfp_massmap import lensing
from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder as lkb


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


def test_negative_index_raises():
  with pytest.raises(ValueError, match='index'):
    demo.demo_problem(index=-1)
