"""Tests of tfp_massmap.preprocessing: crops, area resampling, flips, pipeline."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import power_spectrum
from tfp_massmap import preprocessing as pp


def _random_map(n=6, seed=0):
  return np.random.default_rng(seed).standard_normal((n, n))


def _block_average(x, factor):
  n = x.shape[-1] // factor
  return x.reshape(x.shape[:-2] + (n, factor, n, factor)).mean(axis=(-3, -1))


# ----------------------------------------------------------------- random_crop


def test_random_crop_is_a_window_of_the_map_shared_by_the_batch():
  x = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
  crop = pp.random_crop(x, 5, seed=(4, 2)).numpy()
  assert crop.shape == (3, 5, 5)
  row, col = divmod(int(crop[0, 0, 0]), 8)
  np.testing.assert_array_equal(crop, x[:, row:row + 5, col:col + 5])


def test_random_crop_reaches_every_offset_and_is_reproducible():
  x = np.arange(16, dtype=np.float32).reshape(4, 4)
  corners = {float(pp.random_crop(x, 3, seed=(0, s))[0, 0]) for s in range(64)}
  assert corners == {0.0, 1.0, 4.0, 5.0}  # The four possible offsets.
  np.testing.assert_array_equal(pp.random_crop(x, 2, seed=(7, 7)),
                                pp.random_crop(x, 2, seed=(7, 7)))


def test_random_crop_of_a_map_of_unknown_size_has_a_static_shape():
  crop = tf.function(lambda x: pp.random_crop(x, 3, seed=(1, 1)),
                     input_signature=[tf.TensorSpec([None, None], tf.float32)])
  assert crop.get_concrete_function().output_shapes == [3, 3]
  assert crop(tf.zeros([7, 7])).shape == (3, 3)


@pytest.mark.parametrize('size, match', [(9, r'\[1, N = 8\]'), (0, r'\[1, N'),
                                         (2.5, 'Python int')])
def test_random_crop_rejects_bad_sizes(size, match):
  with pytest.raises(ValueError, match=match):
    pp.random_crop(np.zeros((8, 8)), size, seed=(0, 0))


# ---------------------------------------------------------------- dihedral


def test_dihedral_transforms_are_the_eight_symmetries_of_the_square():
  x = _random_map()
  outputs = [pp.dihedral_transform(x, k).numpy() for k in range(8)]
  expected = [np.rot90(y, k) for y in (x, x.T) for k in range(4)]
  as_bytes = lambda maps: {m.tobytes() for m in maps}
  assert len(as_bytes(outputs)) == 8
  assert as_bytes(outputs) == as_bytes(expected)
  for y in outputs:  # The pixel histogram is unchanged.
    np.testing.assert_array_equal(np.sort(y, axis=None), np.sort(x, axis=None))


def test_random_dihedral_draws_all_eight_and_acts_on_the_whole_batch():
  x = _random_map()
  drawn = {pp.random_dihedral(x, seed=(3, s)).numpy().tobytes()
           for s in range(64)}
  assert len(drawn) == 8
  batch = np.stack([x, 2 * x])
  y = pp.random_dihedral(batch, seed=(5, 1)).numpy()
  np.testing.assert_allclose(y[1], 2 * y[0])
  assert any(np.array_equal(y[0], pp.dihedral_transform(x, k)) for k in range(8))


def test_dihedral_transform_rejects_bad_input():
  with pytest.raises(ValueError, match=r'index must be in \[0, 8\)'):
    pp.dihedral_transform(_random_map(), 8)
  with pytest.raises(ValueError, match='square map'):
    pp.dihedral_transform(np.zeros((4, 5)), 1)


# ------------------------------------------------------------- resampling


@pytest.mark.parametrize('n, from_arcmin, to_arcmin, m', [
    (16, 0.41, 0.29, 22), (16, 1.0, 0.8, 20), (17, 1.0, 1.7, 10),
    (512, 0.41, 0.29, 723), (512, 0.41, 0.8, 262)])
def test_resampling_keeps_a_constant_map_constant(n, from_arcmin, to_arcmin, m):
  y = pp.resample_to_pixel_scale(np.full((n, n), 0.03, np.float32),
                                 from_arcmin, to_arcmin)
  assert y.shape == (m, m)
  np.testing.assert_allclose(y, 0.03, rtol=1e-6)


@pytest.mark.parametrize('factor', [2, 4])
def test_integer_downsampling_is_block_averaging(factor):
  x = np.random.default_rng(1).standard_normal((2, 16, 16))
  y = pp.resample_to_pixel_scale(x, 0.5, 0.5 * factor)
  np.testing.assert_allclose(y, _block_average(x, factor), rtol=1e-12, atol=1e-14)


def test_integer_upsampling_repeats_the_pixels():
  x = _random_map(5)
  y = pp.resample_to_pixel_scale(x, 1.5, 0.5)
  np.testing.assert_allclose(y, np.kron(x, np.ones((3, 3))), rtol=1e-12)


def test_resampling_that_covers_the_field_conserves_the_mean():
  x = np.random.default_rng(2).standard_normal((12, 12)) + 0.5
  y = pp.resample_to_pixel_scale(x, 1.0, 1.5).numpy()  # 12 px → 8 px exactly.
  assert y.shape == (8, 8)
  np.testing.assert_allclose(y.mean(), x.mean(), rtol=1e-12)


def test_resampling_with_run_time_sizes_and_scales_matches_eager():
  x = _random_map(16).astype(np.float32)
  resample = tf.function(pp.resample_to_pixel_scale, input_signature=[
      tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([], tf.float32),
      tf.TensorSpec([], tf.float32)])
  np.testing.assert_allclose(resample(x, 0.41, 0.29),
                             pp.resample_to_pixel_scale(x, 0.41, 0.29),
                             atol=2e-6)  # 0.41 and 0.29 in float32 here.


@pytest.mark.parametrize('from_arcmin, to_arcmin, match', [
    (0.0, 1.0, 'from_arcmin must be a positive number in arcmin'),
    (1.0, -2.0, 'to_arcmin must be a positive number in arcmin'),
    (1.0, 20.0, 'larger than the whole map')])
def test_resampling_rejects_bad_pixel_scales(from_arcmin, to_arcmin, match):
  with pytest.raises(ValueError, match=match):
    pp.resample_to_pixel_scale(np.zeros((8, 8)), from_arcmin, to_arcmin)


@pytest.mark.parametrize('to_arcmin', [2.0, 1.6, 0.8])
def test_resampling_keeps_the_power_spectrum_well_above_the_new_pixel(to_arcmin):
  """Gaussian fields with C_ℓ ∝ ℓ⁻², 128² at 1 arcmin, resampled so that the
  new map covers the same field (the same Fourier modes): the measured power
  at ℓ below a quarter of the coarser Nyquist multipole changes by the pixel
  window only, ≤ 7 %."""
  n, pix = 128, 1.0
  ell = np.geomspace(10.0, 1e5, 200)
  grid = power_spectrum.power_spectrum_grid(
      ell, 1e-9 * (ell / 1e3)**-2, n, pix, tf.float64).numpy()
  white = np.random.default_rng(3).standard_normal((8, n, n))
  x = np.real(np.fft.ifft2(np.sqrt(grid) * np.fft.fft2(white)))
  y = pp.resample_to_pixel_scale(x, pix, to_arcmin)
  ell_nyquist = np.pi / (max(pix, to_arcmin) * lensing.ARCMIN_TO_RAD)
  ell_fundamental = 2 * np.pi / (n * pix * lensing.ARCMIN_TO_RAD)
  edges = np.geomspace(1.01 * ell_fundamental, ell_nyquist / 4, 6)
  _, before = power_spectrum.measure_power_spectrum(x, pix, ell_edges=edges)
  _, after = power_spectrum.measure_power_spectrum(y, to_arcmin, ell_edges=edges)
  ratio = after.numpy().mean(axis=0) / before.numpy().mean(axis=0)
  assert np.all(ratio > 0.93) and np.all(ratio < 1.01), ratio


# ---------------------------------------------------------------- pipeline


def _massivenus_like(n_maps=2, value=None):
  rng = np.random.default_rng(4)
  kappa = (rng.standard_normal((n_maps, 512, 512)) if value is None
           else np.full((n_maps, 512, 512), value))
  return tf.data.Dataset.from_tensor_slices({
      'kappa': kappa.astype(np.float32),
      'pixel_scale_arcmin': np.full(n_maps, 3.5 * 60 / 512, np.float32)})


@pytest.mark.parametrize('map_size, pixel_scale', [(360, 0.29), (128, 0.8)])
def test_pipeline_serves_the_cosmos_and_demo_settings(map_size, pixel_scale):
  dataset = pp.training_pipeline(_massivenus_like(3), map_size, pixel_scale,
                                 seed=(1, 2), batch_size=2)
  assert dataset.element_spec.shape == (2, map_size, map_size)
  batches = list(dataset.as_numpy_iterator())  # The third map is dropped.
  assert len(batches) == 1 and batches[0].shape == (2, map_size, map_size)


def test_pipeline_is_reproducible_and_seed_dependent():
  run = lambda seed: list(pp.training_pipeline(
      _massivenus_like(), 32, 0.5, seed=seed).as_numpy_iterator())
  first, again, other = run((1, 2)), run((1, 2)), run((1, 3))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first[0], other[0])
  assert not np.array_equal(first[0], first[1])


def test_pipeline_keeps_constants_and_removes_means_on_request():
  (kappa,) = list(pp.training_pipeline(_massivenus_like(1, 0.02), 32, 0.5,
                                       seed=(0, 1)).as_numpy_iterator())
  np.testing.assert_allclose(kappa, 0.02, rtol=1e-5)
  (kappa,) = list(pp.training_pipeline(_massivenus_like(1), 32, 0.5, seed=(0, 1),
                                       remove_mean=True).as_numpy_iterator())
  assert abs(kappa.mean()) < 1e-6 and kappa.std() > 0.1


def test_pipeline_on_plain_maps_needs_their_pixel_scale():
  maps = tf.data.Dataset.from_tensor_slices(np.zeros((2, 32, 32), np.float32))
  with pytest.raises(ValueError, match='source_pixel_scale_arcmin is required'):
    pp.training_pipeline(maps, 16, 1.0, seed=(0, 0))
  dataset = pp.training_pipeline(maps, 16, 1.0, seed=(0, 0),
                                 source_pixel_scale_arcmin=0.5)
  assert [m.shape for m in dataset.as_numpy_iterator()] == [(16, 16)] * 2


def test_pipeline_fails_when_the_maps_are_too_small():
  maps = tf.data.Dataset.from_tensor_slices(np.zeros((1, 32, 32), np.float32))
  dataset = pp.training_pipeline(maps, 64, 1.0, seed=(0, 0),
                                 source_pixel_scale_arcmin=1.0)
  with pytest.raises(tf.errors.InvalidArgumentError, match='smaller than 64'):
    list(dataset.as_numpy_iterator())
