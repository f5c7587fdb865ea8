"""Tests of tfp_massmap.lognormal: spectra, one-point moments, transforms."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import lognormal
from tfp_massmap import power_spectrum
from tfp_massmap import priors

N = 128
PIX = 0.8  # arcmin, the demo setting
NUM_MAPS = 64


@pytest.fixture(scope='module')
def field():
  return lognormal.LognormalField(cosmology.COSMOS_SHIFT, N, PIX, dtype=tf.float64)


@pytest.fixture(scope='module')
def maps(field):
  return field.sample(NUM_MAPS, seed=[20, 24]).numpy()


def _pooled_skewness(kappa):
  """⟨κ³⟩/⟨κ²⟩^{3/2} over all pixels, about the known mean 0."""
  return np.mean(kappa**3) / np.mean(kappa**2)**1.5


def test_shipped_table_has_provenance_and_cosmos_amplitude():
  ell, cl = cosmology.cosmos_convergence_cl()
  assert ell.shape == cl.shape == (200,)
  np.testing.assert_allclose([ell[0], ell[-1]], [10.0, 1e5], rtol=1e-6)
  assert np.all(np.diff(ell) > 0) and np.all(cl > 0)
  header = (cosmology.importlib.resources.files('tfp_massmap') / 'data' /
            'cl_kappa_cosmos.txt').read_text(encoding='utf-8')
  for word in ('pyccl', 'Cosmology', 'n(z)', 'Date', 'Command'):
    assert word in header
  # κTNG maps weighted to the COSMOS n(z) have a pixel std of about 0.023 at
  # 0.8 arcmin; the table must give the same amplitude on the FFT grid.
  grid = power_spectrum.power_spectrum_grid(ell, cl, N, PIX, tf.float64).numpy()
  assert 0.021 < np.sqrt(grid.mean()) < 0.026


def test_gaussian_limit_is_the_target_spectrum():
  gauss = lognormal.LognormalField(None, 32, PIX, dtype=tf.float64)
  target = gauss.target_power_grid.numpy()
  np.testing.assert_array_equal(gauss.power_grid.numpy(), target)
  np.testing.assert_array_equal(gauss.latent_power_grid.numpy(), target)
  assert gauss.variance == pytest.approx(target.mean(), rel=1e-12)
  assert gauss.skewness == 0.0 and gauss.clipped_fraction == 0.0
  z = tf.random.stateless_normal([2, 32, 32], seed=[1, 1], dtype=tf.float64)
  np.testing.assert_array_equal(gauss.convergence_from_white(z).numpy(),
                                gauss.latent_from_white(z).numpy())


def test_large_shift_tends_to_gaussian():
  # log(1 + ξ/λ²) = ξ/λ² + O(ξ²/λ⁴): P_g → S/λ² and skewness → 3σ/λ.
  shift = 10.0
  f = lognormal.LognormalField(shift, 32, PIX, dtype=tf.float64)
  target = f.target_power_grid.numpy()
  np.testing.assert_allclose(f.latent_power_grid.numpy() * shift**2, target,
                             atol=1e-4 * target.max())
  sigma = np.sqrt(f.variance)
  assert f.skewness == pytest.approx(3 * sigma / shift, rel=1e-4)


def test_sampled_field_spectrum_equals_target(field):
  # The clipping of P_g is the only approximation; it must be negligible.
  target = field.target_power_grid.numpy()
  got = field.power_grid.numpy()
  assert field.clipped_fraction < 1e-3
  np.testing.assert_allclose(got.ravel()[1:], target.ravel()[1:],
                             atol=1e-3 * target.max())


def test_whitening_operator_is_square_root_of_latent_covariance(field):
  # h = S_g^{1/2} δ; its circular autocorrelation is S_g δ = ifft2(P_g).
  delta = np.zeros((N, N))
  delta[0, 0] = 1.0
  h = field.latent_from_white(delta).numpy()
  autocorr = np.fft.ifft2(np.abs(np.fft.fft2(h))**2).real
  xi_g = np.fft.ifft2(field.latent_power_grid.numpy()).real
  np.testing.assert_allclose(autocorr, xi_g, atol=1e-12 * xi_g[0, 0])
  assert xi_g[0, 0] == pytest.approx(field.latent_variance, rel=1e-12)


def test_measured_power_spectrum_matches_input(field, maps):
  # Bins of whole rings of modes (edges at half-integer |k|), each with >= 480
  # modes so that the Monte-Carlo scatter of the 64-map mean is <= 1.6% per
  # bin (measured over 30 seeds), well inside the 5% tolerance.
  ell_f = 2 * np.pi / (N * PIX * lensing.ARCMIN_TO_RAD)
  edges = np.array([0.5, 12.5, 24.5, 32.5, 45.5, 64.5, 91.0]) * ell_f
  _, measured = power_spectrum.measure_power_spectrum(maps, PIX, ell_edges=edges)
  measured = measured.numpy().mean(axis=0)
  # Expectation on this grid: the mean over the modes of each bin of the input
  # spectrum S_k Δ² = C(ℓ_k), not the table at the bin centre.
  ell_k = lensing.multipoles(N, PIX, tf.float64).numpy().ravel()
  delta = PIX * lensing.ARCMIN_TO_RAD
  s_k = field.target_power_grid.numpy().ravel() * delta**2
  idx = np.digitize(ell_k, edges) - 1
  expected = np.array([s_k[idx == b].mean() for b in range(edges.size - 1)])
  np.testing.assert_allclose(measured, expected, rtol=0.05)


def test_one_point_moments_match_lognormal_formula(field, maps):
  assert field.skewness == pytest.approx(
      3 * np.sqrt(field.variance) / field.shift
      + (np.sqrt(field.variance) / field.shift)**3, rel=1e-12)
  assert np.mean(maps**2) == pytest.approx(field.variance, rel=0.05)
  assert _pooled_skewness(maps) == pytest.approx(field.skewness, rel=0.10)
  assert maps.min() > -field.shift
  assert abs(maps.mean()) < 0.05 * np.sqrt(field.variance)


def test_gaussian_field_has_zero_skewness():
  gauss = lognormal.LognormalField(None, N, PIX, dtype=tf.float64)
  maps = gauss.sample(NUM_MAPS, seed=[3, 4]).numpy()
  per_map = np.mean(maps**3, axis=(1, 2)) / np.mean(maps**2)**1.5
  error = per_map.std(ddof=1) / np.sqrt(NUM_MAPS)
  assert error < 0.05
  assert abs(_pooled_skewness(maps)) < 4 * error


def test_stateless_seed_and_tf_function():
  f32 = lognormal.LognormalField(0.035, 32, PIX)
  f64 = lognormal.LognormalField(0.035, 32, PIX, dtype=tf.float64)
  a = f32.sample([2, 3], seed=[5, 6])
  assert a.shape == (2, 3, 32, 32) and a.dtype == tf.float32
  np.testing.assert_array_equal(a.numpy(), f32.sample([2, 3], seed=[5, 6]).numpy())
  assert not np.allclose(a.numpy(), f32.sample([2, 3], seed=[5, 7]).numpy())

  @tf.function
  def from_white(z):
    return f32.convergence_from_white(z)

  z = tf.random.stateless_normal([4, 32, 32], seed=[8, 9], dtype=tf.float64)
  got32 = from_white(tf.cast(z, tf.float32)).numpy()
  got64 = f64.convergence_from_white(z).numpy()
  np.testing.assert_allclose(got32, got64, atol=1e-6)
  assert tf.function(lambda: f32.sample(2, seed=[1, 2]))().shape == (2, 32, 32)


def test_invalid_arguments_raise():
  with pytest.raises(ValueError, match='shift'):
    lognormal.LognormalField(0.0, 32, PIX)
  with pytest.raises(ValueError, match='too small'):
    lognormal.LognormalField(1e-3, 32, PIX)
  with pytest.raises(ValueError, match='map_size'):
    lognormal.LognormalField(0.035, 32.5, PIX)
  with pytest.raises(ValueError, match='together'):
    lognormal.LognormalField(0.035, 32, PIX, ell=[10.0, 100.0])
  with pytest.raises(ValueError, match='not both'):
    lognormal.LognormalField(0.035, 32, PIX, ell=[10.0, 100.0], cl=[1.0, 1.0],
                             power_grid=np.ones((32, 32)))
  with pytest.raises(ValueError, match='shape'):
    lognormal.LognormalField(0.035, 32, PIX, power_grid=np.ones((16, 16)))
  asym = np.ones((32, 32))
  asym[1, 2] = 2.0
  with pytest.raises(ValueError, match='symmetric'):
    lognormal.LognormalField(0.035, 32, PIX, power_grid=asym)
  f = lognormal.LognormalField(0.035, 32, PIX)
  with pytest.raises(ValueError, match='map_size'):
    f.latent_from_white(tf.zeros([16, 16]))
  with pytest.raises(ValueError, match='dtype'):
    f.latent_from_white(tf.zeros([32, 32], tf.float64))


# --- the field's prior (tfp_massmap.priors.LognormalPrior) ---------------------


def _small_field(shift=cosmology.COSMOS_SHIFT, n=6, dtype=tf.float64):
  return lognormal.LognormalField(shift, n, 4.0, dtype=dtype)


def _dense_log_prob(field, kappa):
  """log p(κ) from the dense latent covariance C_g[i, j] = ξ_g(r_i − r_j)."""
  n = field.map_size
  latent_grid = field.latent_power_grid.numpy()
  xi = np.fft.ifft2(latent_grid).real
  rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing='ij')
  rows, cols = rows.ravel(), cols.ravel()
  cov = xi[(rows[:, None] - rows[None, :]) % n, (cols[:, None] - cols[None, :]) % n]
  values, vectors = np.linalg.eigh(cov)
  rank = int(np.sum(latent_grid > 0))  # C_g's eigenvalues are P_g.
  values, vectors = values[-rank:], vectors[:, -rank:]
  g = np.log1p(kappa.ravel() / field.shift) + 0.5 * field.latent_variance
  projected = vectors.T @ g
  return (-0.5 * (np.sum(projected**2 / values) + np.sum(np.log(values)) +
                  rank * np.log(2 * np.pi)) -
          np.sum(np.log(kappa + field.shift)))


def test_lognormal_prior_density_is_the_change_of_variables():
  field = _small_field()
  prior = priors.LognormalPrior(field)
  kappa = prior.sample(3, seed=(4, 5)).numpy()
  assert np.all(kappa > -field.shift)
  expected = [_dense_log_prob(field, k) for k in kappa]
  np.testing.assert_allclose(prior.log_prob(kappa), expected, rtol=1e-10)
  # Outside the support (a pixel at or below -shift): -inf.
  kappa[1, 2, 3] = -field.shift
  log_prob = prior.log_prob(kappa).numpy()
  assert log_prob[1] == -np.inf and np.all(np.isfinite(log_prob[[0, 2]]))


def test_lognormal_prior_score_is_the_gradient_of_log_prob():
  prior = priors.LognormalPrior(_small_field(n=8))
  kappa = prior.sample(2, seed=(6, 7))
  with tf.GradientTape() as tape:
    tape.watch(kappa)
    log_prob = prior.log_prob(kappa)
  np.testing.assert_allclose(prior.score(kappa), tape.gradient(log_prob, kappa),
                             rtol=1e-9, atol=1e-9 * np.abs(
                                 prior.score(kappa).numpy()).max())
  assert prior.score(kappa, sigma=0.).dtype == tf.float64


def test_gaussian_field_prior_is_the_gaussian_prior_at_every_sigma():
  field = _small_field(shift=None, n=8)
  prior = priors.LognormalPrior(field)
  gaussian = priors.GaussianPrior(field.power_grid)
  x = field.sample(2, seed=(8, 9))
  np.testing.assert_allclose(prior.log_prob(x), gaussian.log_prob(x),
                             rtol=1e-12)
  np.testing.assert_allclose(prior.score(x, 0.05), gaussian.score(x, 0.05),
                             rtol=1e-12)
  assert prior.smoothed_score
  assert priors.check_prior(prior, 8).num_pixels_per_side == 8


def test_lognormal_prior_members_and_refusals():
  field = _small_field(n=8, dtype=tf.float32)
  prior = priors.LognormalPrior(field)
  assert priors.prior_properties(prior) == priors.PriorProperties(
      dtype=tf.float32, pixel_scale_arcmin=4.0, num_pixels_per_side=8,
      size_divisor=1, smoothed_score=False)
  np.testing.assert_array_equal(prior.sample(2, seed=(1, 2)),
                                field.sample(2, seed=(1, 2)))
  with pytest.raises(ValueError, match='sigma must be 0 for a lognormal prior'):
    prior.score(tf.zeros([8, 8]), 0.1)
  with pytest.raises(ValueError, match='score at sigma = 0 only'):
    priors.check_prior(prior, 8)
  with pytest.raises(ValueError, match='defined on 8x8 maps'):
    priors.check_prior(prior, 16, smoothed_score=False)
  with pytest.raises(ValueError, match='x has dtype float64.*cast x to float32'):
    prior.log_prob(tf.zeros([8, 8], tf.float64))
  with pytest.raises(ValueError, match=r'x must have shape \[\.\.\., 8, 8\]'):
    prior.score(tf.zeros([16, 16]))
  with pytest.raises(ValueError, match='field must be a tfp_massmap.'
                     'LognormalField, got GaussianPrior'):
    priors.LognormalPrior(priors.GaussianPrior(tf.ones([8, 8])))
