"""plotting.plot_parameters: the corner plot of parameter samples."""

import matplotlib.image
import numpy as np
import pytest

from tfp_massmap import plotting


def _samples(num=200, seed=0):
  rng = np.random.default_rng(seed)
  return {'omega_m': 0.3 + 0.02 * rng.standard_normal(num),
          'sigma8': 0.8 + 0.03 * rng.standard_normal(num)}


@pytest.mark.parametrize('names', [('sigma8',), ('omega_m', 'sigma8')])
def test_writes_a_png_for_one_and_two_parameters(tmp_path, names):
  samples = {k: v for k, v in _samples().items() if k in names}
  bounds = [[0.2, 0.4], [0.6, 1.0]][-len(names):]
  path = plotting.plot_parameters(
      samples, tmp_path / 'corner.png', bounds=bounds,
      truth={'sigma8': 0.8159}, title='test', metadata={'RunID': 'abc'})
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
  # A grid of D x D panels is wider for two parameters than for one.
  assert image.shape[1] > (400 if len(names) == 2 else 200)
  assert [p.name for p in tmp_path.iterdir()] == ['corner.png']  # No temp file.


@pytest.mark.parametrize('samples, kwargs, match', [
    ({}, {}, 'samples is empty'),
    ({'sigma8': [0.8]}, {}, "'sigma8' needs at least 2 finite samples, got 1"),
    ({'sigma8': [0.8, np.nan, 0.7]}, {}, r'got 3 \(1 not finite\)'),
    ({'a': [1., 2.], 'b': [1., 2., 3.]}, {}, 'same number of samples'),
    ({'a': [1., 2.]}, {'bounds': [[0, 1], [0, 1]]}, r'bounds must be \[D, 2\]'),
])
def test_bad_input_names_the_problem(tmp_path, samples, kwargs, match):
  with pytest.raises(ValueError, match=match):
    plotting.plot_parameters(samples, tmp_path / 'x.png', **kwargs)
  assert not list(tmp_path.iterdir())
