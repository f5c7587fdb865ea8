"""Known answers for the starlet transform, its inverse and its adjoint."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import starlet


def _a_trous_reference(x, num_scales):
  """The textbook à trous cascade with periodic np.roll, in float64 numpy."""
  taps = {0: 6 / 16, 1: 4 / 16, 2: 1 / 16}

  def smooth(a, spacing):
    for axis in (-1, -2):
      a = sum(w * (np.roll(a, d * spacing, axis) + np.roll(a, -d * spacing, axis))
              if d else w * a for d, w in taps.items())
    return a

  planes, c = [], np.asarray(x, np.float64)
  for j in range(num_scales):
    smoother = smooth(c, 2**j)
    planes.append(c - smoother)
    c = smoother
  return np.stack(planes + [c], axis=-3)


def test_matches_the_a_trous_algorithm():
  x = np.random.default_rng(0).standard_normal([2, 32, 32])
  # J = 5 on 32 pixels: the largest dilated filter wraps around the map.
  for num_scales in (1, 3, 5):
    out = starlet.starlet_transform(x, num_scales)
    assert out.shape == (2, num_scales + 1, 32, 32)
    np.testing.assert_allclose(out, _a_trous_reference(x, num_scales), atol=1e-13)


@pytest.mark.parametrize('dtype,atol', [(np.float32, 1e-5), (np.float64, 1e-13)])
def test_reconstruction_is_exact(dtype, atol):
  x = np.random.default_rng(1).standard_normal([3, 2, 64, 64]).astype(dtype)
  coefficients = starlet.starlet_transform(x, 4)
  assert coefficients.dtype == dtype
  back = starlet.starlet_reconstruct(coefficients)
  assert back.shape == x.shape
  assert np.max(np.abs(back.numpy() - x)) < atol * np.max(np.abs(x))


@pytest.mark.parametrize('dtype,rtol', [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_adjoint_identity(dtype, rtol):
  rng = np.random.default_rng(2)
  x = rng.standard_normal([2, 32, 32]).astype(dtype)
  c = rng.standard_normal([2, 5, 32, 32]).astype(dtype)
  lhs = np.sum(starlet.starlet_transform(x, 4).numpy().astype(np.float64) * c)
  rhs = np.sum(x * starlet.starlet_adjoint(c).numpy().astype(np.float64))
  np.testing.assert_allclose(lhs, rhs, rtol=rtol)
  # The adjoint is not the reconstruction (W is not orthogonal).
  assert not np.allclose(starlet.starlet_adjoint(c), starlet.starlet_reconstruct(c))


def test_operator_norm_is_one():
  rng = np.random.default_rng(3)
  x = rng.standard_normal([8, 32, 32])
  coefficients = starlet.starlet_transform(x, 4).numpy()
  ratio = np.sqrt(np.sum(coefficients**2, axis=(-3, -2, -1)) /
                  np.sum(x**2, axis=(-2, -1)))
  assert np.all(ratio < 1.0)
  constant = np.full([32, 32], 2.5)
  np.testing.assert_allclose(
      np.linalg.norm(starlet.starlet_transform(constant, 4)),
      np.linalg.norm(constant), rtol=1e-12)


def test_noise_levels_match_the_classical_table_and_white_noise():
  levels = starlet.starlet_noise_levels(5, 512)
  # Starck & Murtagh's B3-spline starlet table for Gaussian white noise.
  np.testing.assert_allclose(levels[:5], [0.890, 0.201, 0.086, 0.041, 0.020],
                             atol=1.5e-3)
  noise = np.random.default_rng(4).standard_normal([16, 128, 128])
  measured = starlet.starlet_transform(noise, 4).numpy().std(axis=(0, 2, 3))
  # The coarse plane of a 128-pixel map has few independent samples.
  np.testing.assert_allclose(measured[:3], starlet.starlet_noise_levels(4, 128)[:3],
                             rtol=0.03)


def test_works_in_tf_function():
  x = tf.constant(np.random.default_rng(5).standard_normal([2, 32, 32]), tf.float32)

  @tf.function
  def round_trip(image):
    c = starlet.starlet_transform(image, 3)
    return starlet.starlet_reconstruct(c), starlet.starlet_adjoint(c)

  back, adjoint = round_trip(x)
  np.testing.assert_allclose(back, x, atol=1e-5)
  np.testing.assert_allclose(
      adjoint, starlet.starlet_adjoint(starlet.starlet_transform(x, 3)), atol=1e-5)


def test_bad_inputs_raise():
  with pytest.raises(ValueError, match='num_scales'):
    starlet.starlet_transform(np.zeros([16, 16], np.float32), 5)
  with pytest.raises(ValueError, match='num_scales'):
    starlet.starlet_transform(np.zeros([16, 16], np.float32), 0)
  with pytest.raises(ValueError, match='square'):
    starlet.starlet_transform(np.zeros([16, 8], np.float32), 2)
  with pytest.raises(ValueError, match='float32 or float64'):
    starlet.starlet_transform(np.zeros([16, 16], np.int32), 2)
  with pytest.raises(ValueError, match=r'\[..., J \+ 1, N, N\]'):
    starlet.starlet_adjoint(np.zeros([16, 16], np.float32))
  with pytest.raises(ValueError, match='n must be'):
    starlet.starlet_noise_levels(3, 0)


def test_starlet_agrees_with_lenspack_away_from_the_edges():
  transforms = pytest.importorskip('lenspack.image.transforms')
  x = np.random.default_rng(0).normal(size=(64, 64))
  theirs = transforms.starlet2d(x, 3)  # Mirror-like ('nearest') edges.
  ours = starlet.starlet_transform(x, 3).numpy()  # Periodic edges.
  # Three scales reach 2 + 4 + 8 = 14 pixels: beyond, the edges do not matter.
  np.testing.assert_allclose(ours[:, 16:-16, 16:-16], theirs[:, 16:-16, 16:-16],
                             atol=1e-12)
