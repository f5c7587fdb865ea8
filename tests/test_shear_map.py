"""ShearMap and as_shear_map: the one data type and its checks."""

import collections

import numpy as np
import pytest
import tensorflow as tf

import tfp_massmap as tm
from tfp_massmap import catalog
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap.shear_map import ShearMap
from tfp_massmap.shear_map import as_shear_map

N = 8


def _arrays(dtype=np.float32):
  rng = np.random.default_rng(0)
  shear = rng.normal(0., 0.05, [N, N, 2]).astype(dtype)
  noise_std = np.full([N, N], 0.1, dtype)
  mask = np.ones([N, N], dtype)
  mask[:2, :3] = 0.
  return shear, noise_std, mask


def test_shear_map_is_one_type_with_optional_fields():
  assert tm.ShearMap is ShearMap and catalog.ShearMap is ShearMap
  shear, noise_std, _ = _arrays()
  bare = ShearMap(shear, noise_std)
  assert bare.mask is None and bare.counts is None and bare.wcs is None
  assert bare.pixel_scale_arcmin is None
  assert ShearMap._fields == ('shear', 'noise_std', 'mask', 'counts', 'wcs',
                              'pixel_scale_arcmin')


def test_arrays_and_shear_map_give_the_same_checked_map():
  shear, noise_std, mask = _arrays()
  shear[0, 0] = np.nan       # off the mask: ignored
  noise = noise_std.copy()
  noise[0, 1] = 0.           # off the mask: ignored
  got = as_shear_map(shear, noise, mask, pixel_scale_arcmin=2.)
  assert isinstance(got, ShearMap)
  assert got.shear.dtype == tf.float32 and got.mask.dtype == tf.float32
  np.testing.assert_array_equal(got.shear[:2, :3], 0.)
  np.testing.assert_array_equal(got.shear[2:], shear[2:])
  np.testing.assert_array_equal(got.noise_std[:2, :3], 1.)
  assert got.noise_std.shape == (N, N, 2)
  np.testing.assert_array_equal(got.noise_std[2:, :, 0], noise_std[2:])
  np.testing.assert_array_equal(got.noise_std[2:, :, 1], noise_std[2:])
  expected = np.where(mask > 0, 1. / noise_std**2, 0.)[..., None] * [1, 1]
  np.testing.assert_allclose(shear_map_lib.inverse_variance(got), expected,
                             rtol=1e-6)
  np.testing.assert_array_equal(got.mask, mask)
  assert got.pixel_scale_arcmin == 2. and got.counts is None
  again = as_shear_map(ShearMap(shear, noise, mask, counts=mask.astype(int),
                                pixel_scale_arcmin=2.))
  for a, b in zip(got[:3], again[:3]):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(again.counts, mask.astype(int))
  # No mask: every pixel observed; a bool mask is the same as 0/1.
  np.testing.assert_array_equal(as_shear_map(shear[2:, 2:][:4, :4],
                                             noise_std[:4, :4]).mask, 1.)
  np.testing.assert_array_equal(
      as_shear_map(shear, noise, mask.astype(bool)).shear, got.shear)


def test_dtype_policy():
  shear, noise_std, mask = _arrays()
  # A ShearMap is cast to the requested dtype (its storage is no choice).
  cast = as_shear_map(ShearMap(shear, noise_std, mask), dtype=tf.float64)
  assert cast.shear.dtype == cast.noise_std.dtype == tf.float64
  assert cast.mask.dtype == tf.float64
  # Separate arrays must declare it, or agree with each other.
  with pytest.raises(ValueError, match=(
      r'shear has dtype float32 but the requested dtype= has dtype float64; '
      r'cast shear to float64')):
    as_shear_map(shear, noise_std, mask, dtype=tf.float64)
  with pytest.raises(ValueError, match=(
      r'noise_std has dtype float64 but shear has dtype float32; cast '
      r'noise_std to float32')):
    as_shear_map(shear, noise_std.astype(np.float64), mask)
  # Python lists declare nothing: float32 by default, or the requested one.
  assert as_shear_map(shear.tolist(),
                      noise_std.tolist()).shear.dtype == tf.float32
  assert as_shear_map(shear.astype(np.float64),
                      noise_std.tolist()).noise_std.dtype == tf.float64
  with pytest.raises(ValueError, match=r'dtype must be float32 or float64'):
    as_shear_map(shear, noise_std, dtype=tf.int32)


@pytest.mark.parametrize('value', [0.5, 2., -1., np.nan])
def test_mask_is_a_zero_one_indicator(value):
  shear, noise_std, mask = _arrays()
  mask[4, 5] = value
  with pytest.raises(ValueError, match=(
      r'mask holds 1 value\(s\) other than 0 and 1; the first, .*, at index '
      r'\(4, 5\).*not a weight.*larger noise_std')):
    as_shear_map(shear, noise_std, mask)


def test_empty_mask():
  shear, noise_std, mask = _arrays()
  with pytest.raises(ValueError, match=(
      r'mask has no pixel with data \(no observed pixel, mask = 1\) in 1 of '
      r'its 2 map\(s\)')):
    as_shear_map(shear, noise_std, np.stack([mask, np.zeros([N, N])]))
  empty = as_shear_map(shear, noise_std, np.zeros([N, N]),
                       allow_empty_mask=True)
  np.testing.assert_array_equal(empty.shear, 0.)


@pytest.mark.parametrize('bad', [np.nan, np.inf])
def test_non_finite_shear_on_the_mask(bad):
  shear, noise_std, mask = _arrays()
  shear[5, 6, 1] = bad
  with pytest.raises(ValueError, match=(
      r'shear on observed pixels \(mask = 1\) holds 1 non-finite value\(s\).*'
      r'at index \(5, 6, 1\)')):
    as_shear_map(shear, noise_std, mask)


@pytest.mark.parametrize('bad, kind', [(0., r'1 zero, 0 negative, 0 NaN'),
                                       (-0.1, r'0 zero, 1 negative, 0 NaN'),
                                       (np.nan, r'0 zero, 0 negative, 1 NaN'),
                                       (np.inf, r'0 zero, 0 negative, 1 NaN')])
def test_bad_noise_on_the_mask(bad, kind):
  shear, noise_std, mask = _arrays()
  noise = np.stack([noise_std, noise_std], axis=-1)
  noise[6, 2, 1] = bad
  with pytest.raises(ValueError, match=(
      r'noise_std holds 1 value\(s\) that are not finite and > 0 on observed '
      r'pixels \(mask = 1\) \(' + kind + r' or inf\).*at index \(6, 2, 1\)')):
    as_shear_map(shear, noise, mask)
  noise_std[6, 2] = bad
  with pytest.raises(ValueError, match=r'at index \(6, 2\) \(\[\.\.\., row, '
                     r'column\]\)'):
    as_shear_map(shear, noise_std, mask)


def test_shapes_and_arguments():
  shear, noise_std, mask = _arrays()
  with pytest.raises(ValueError, match=r'shear must have 2 channels'):
    as_shear_map(shear[..., :1], noise_std, mask)
  assert as_shear_map(shear[..., :1], noise_std, mask,
                      channels=1).shear.shape == (N, N, 1)
  with pytest.raises(ValueError, match=r'shear must be a square map'):
    as_shear_map(shear[:4], noise_std[:4], mask[:4])
  with pytest.raises(ValueError, match=(
      r'noise_std must have shape \[\.\.\., N, N\] or \[\.\.\., N, N, 2\] '
      r'with N = 8')):
    as_shear_map(shear, noise_std[:4, :4], mask)
  with pytest.raises(ValueError, match=(
      r'mask must have shape \[\.\.\., N, N\] = \[\.\.\., 8, 8\] \(the map '
      r'shape of the shear\), got shape \(4, 4\)')):
    as_shear_map(shear, noise_std, mask[:4, :4])
  with pytest.raises(ValueError, match=r'batch\) axes.*must broadcast'):
    as_shear_map(np.stack([shear] * 2), noise_std, np.stack([mask] * 3))
  with pytest.raises(ValueError, match=r'noise_std is required'):
    as_shear_map(shear)
  shear_map = ShearMap(shear, noise_std, mask, pixel_scale_arcmin=0.8)
  with pytest.raises(ValueError, match=r'carries its own noise_std and mask'):
    as_shear_map(shear_map, noise_std)
  with pytest.raises(ValueError, match=(
      r'pixel_scale_arcmin=0\.5 contradicts the pixel scale the shear map '
      r'carries, 0\.8 arcmin')):
    as_shear_map(shear_map, pixel_scale_arcmin=0.5)
  with pytest.raises(ValueError, match=r'pixel_scale_arcmin must be a positive'):
    as_shear_map(shear, noise_std, pixel_scale_arcmin=-1.)
  with pytest.raises(ValueError, match=r'shear must be real, got dtype complex'):
    as_shear_map(shear.astype(np.complex64), noise_std, dtype=tf.float32)
  # Any object with the three attributes is a ShearMap.
  like = collections.namedtuple('Like', 'shear noise_std mask')
  assert as_shear_map(like(shear, noise_std, mask)).pixel_scale_arcmin is None


def test_batches_and_tf_function():
  shear, noise_std, mask = _arrays()
  batch = as_shear_map(np.stack([shear, shear]), noise_std, mask)
  assert batch.shear.shape == (2, N, N, 2) and batch.mask.shape == (N, N)
  assert batch.noise_std.shape == (N, N, 2)
  noise_batch = as_shear_map(shear, np.stack([noise_std] * 3), mask)
  assert noise_batch.noise_std.shape == (3, N, N, 2)

  @tf.function
  def observed_sum(shear, mask):
    # Symbolic values are not checked; shapes are, and a pixel is observed
    # where mask > 0.
    return tf.reduce_sum(as_shear_map(shear, noise_std, mask).mask)

  assert float(observed_sum(tf.constant(shear), tf.constant(mask * 3.))) == (
      mask.sum())
  with pytest.raises(ValueError, match=r'mask must have shape'):
    observed_sum(tf.constant(shear), tf.ones([4, 4]))

