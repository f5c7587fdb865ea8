"""Tests of the Wiener filter and the exact Gaussian-posterior sampler."""

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import power_spectrum
from tfp_massmap import testing
from tfp_massmap.likelihood import ShearLikelihood
from tfp_massmap.likelihood import data_fit
from tfp_massmap.mcmc import PosteriorSamples
from tfp_massmap.mcmc import credible_interval
from tfp_massmap.priors import GaussianPrior
from tfp_massmap.shear_map import ShearMap
from tfp_massmap.wiener import gaussian_posterior_samples
from tfp_massmap.wiener import wiener_filter

PIXEL_ARCMIN = 0.29
ELL = np.geomspace(10., 1e6, 200)
CL = ELL**-1.2


def _prior(n, pixel_std, dtype=tf.float64):
  """Power-law prior C_ℓ ∝ ℓ^-1.2 scaled to the given pixel std."""
  spectrum = power_spectrum.power_spectrum_grid(ELL, CL, n, PIXEL_ARCMIN,
                                                tf.float64).numpy()
  spectrum *= pixel_std**2 / spectrum.mean()
  return GaussianPrior(tf.constant(spectrum, dtype))


def _numpy_fourier_wiener(shear, spectrum, std1, std2):
  """Closed form for uniform noise (std1, std2 per component), no mask.

  γ1 + iγ2 = F⁻¹[D F κ] gives γ_i = F⁻¹[w_i F κ] with w1 = (D(k) + D*(−k))/2,
  w2 = (D(k) − D*(−k))/2i (D(−k) ≠ D(k) on the Nyquist lines of an even grid).
  """
  n = spectrum.shape[-1]
  freq = 2. * np.pi * np.fft.fftfreq(n)
  k2, k1 = np.meshgrid(freq, freq, indexing='ij')
  ksq = np.where(k1**2 + k2**2 > 0, k1**2 + k2**2, 1.)
  d = (k1**2 - k2**2 + 2j * k1 * k2) / ksq
  d_minus = np.roll(d[::-1, ::-1], 1, axis=(0, 1))
  w1, w2 = (d + d_minus.conj()) / 2., (d - d_minus.conj()) / 2j
  e1, e2 = np.fft.fft2(shear[..., 0]), np.fft.fft2(shear[..., 1])
  inv_s = np.where(spectrum > 0, 1. / np.where(spectrum > 0, spectrum, 1.), 0.)
  precision = inv_s + abs(w1)**2 / std1**2 + abs(w2)**2 / std2**2
  rhs = w1.conj() * e1 / std1**2 + w2.conj() * e2 / std2**2
  safe = np.where(spectrum > 0, precision, 1.)
  return np.fft.ifft2(np.where(spectrum > 0, rhs / safe, 0.)).real


def _problem(n, pixel_std, seed):
  """A masked, non-uniform-noise shear map made from a prior draw."""
  rng = np.random.default_rng(seed)
  prior = _prior(n, pixel_std)
  kappa = prior.sample(seed=(seed, 0))
  mask = np.ones((n, n))
  mask[n // 4:n // 2, n // 3:2 * n // 3] = 0.  # A hole,
  mask[rng.random((n, n)) < 0.15] = 0.  # and scattered empty pixels.
  noise_std = np.where(mask[..., None] > 0,
                       rng.uniform(0.05, 0.3, (n, n, 2)), 0.)
  shear = ShearLikelihood(kappa, noise_std, mask).sample(
      seed=(seed, 1)).numpy()
  return shear, noise_std, mask, prior


def _dense_posterior(shear, noise_std, mask, prior):
  """Posterior mean and covariance from dense matrices (numpy)."""
  return testing.exact_gaussian_posterior(ShearMap(shear, noise_std, mask),
                                          prior)


def test_uniform_noise_no_mask_matches_fourier_closed_form():
  n = 64
  prior = _prior(n, 0.02)
  kappa = prior.sample(seed=(1, 2))
  sigma_n = 0.03
  shear = ShearLikelihood(kappa, np.full((n, n), sigma_n)).sample(
      seed=(0, 1)).numpy()
  kappa_wf, info = wiener_filter(shear, np.full((n, n), sigma_n), np.ones((n, n)),
                                 prior)
  kappa_e = lensing.kaiser_squires(shear)[0].numpy()
  expected = np.fft.ifft2(prior.spectrum.numpy() /
                          (prior.spectrum.numpy() + sigma_n**2) *
                          np.fft.fft2(kappa_e)).real
  assert bool(info.converged) and int(info.iterations) <= 2
  np.testing.assert_allclose(kappa_wf.numpy(), expected,
                             atol=1e-4 * np.abs(expected).max())
  np.testing.assert_allclose(kappa_wf.numpy(),
                             prior.denoise(kappa_e, sigma_n).numpy(),
                             atol=1e-4 * np.abs(expected).max())


def test_per_component_uniform_noise_matches_closed_form():
  n = 32
  prior = _prior(n, 0.05)
  shear = np.random.default_rng(1).normal(0., 0.1, (2, n, n, 2))
  noise = np.broadcast_to([0.05, 0.2], (n, n, 2))
  kappa_wf, info = wiener_filter(shear, noise, np.ones((n, n)), prior, tol=1e-10)
  expected = _numpy_fourier_wiener(shear, prior.spectrum.numpy(), 0.05, 0.2)
  assert info.iterations.shape == (2,)
  assert np.all(info.converged.numpy()) and np.all(info.iterations.numpy() <= 2)
  np.testing.assert_allclose(kappa_wf.numpy(), expected,
                             atol=1e-8 * np.abs(expected).max())


def test_masked_non_uniform_noise_matches_dense_solution():
  shear, noise_std, mask, prior = _problem(16, 0.05, seed=2)
  mean, _ = _dense_posterior(shear, noise_std, mask, prior)
  shear = shear.copy()
  shear[mask == 0] = np.nan  # Ignored on masked pixels.
  kappa_wf, info = wiener_filter(shear, noise_std, mask, prior, tol=1e-11)
  assert bool(info.converged) and float(info.relative_residual) <= 1e-11
  np.testing.assert_allclose(kappa_wf.numpy(), mean,
                             atol=1e-9 * np.abs(mean).max())
  # Started from the answer, it stops at once.
  _, info0 = wiener_filter(shear, noise_std, mask, prior, tol=1e-9,
                           initial=kappa_wf)
  assert int(info0.iterations) == 0 and bool(info0.converged)
  # Too few iterations is reported, not hidden.
  with pytest.warns(RuntimeWarning, match=r'did not converge.*1 iteration'):
    _, info1 = wiener_filter(shear, noise_std, mask, prior, tol=1e-11,
                             max_iterations=1)
  assert not bool(info1.converged) and int(info1.iterations) == 1


def test_tf_function_float32_matches_eager():
  shear, noise_std, mask, prior64 = _problem(32, 0.05, seed=3)
  prior = GaussianPrior(tf.cast(prior64.spectrum, tf.float32))
  args = [tf.constant(a, tf.float32) for a in (shear, noise_std, mask)]
  graph = tf.function(lambda e, s, m: wiener_filter(e, s, m, prior, tol=1e-5))
  kappa_graph, info = graph(*args)
  kappa_eager, _ = wiener_filter(*args, prior, tol=1e-5)
  assert kappa_graph.dtype == tf.float32 and bool(info.converged)
  np.testing.assert_allclose(kappa_graph.numpy(), kappa_eager.numpy(),
                             atol=1e-5 * np.abs(kappa_eager.numpy()).max())


def test_cosmos_mask_and_noise_converge(cosmos_dir):
  from astropy.io import fits  # pylint: disable=g-import-not-at-top
  std = np.stack([fits.getdata(cosmos_dir / 'std1.fits'),
                  fits.getdata(cosmos_dir / 'std2.fits')], axis=-1)
  std = std.astype(np.float64)
  mask = (std[..., 0] > 0).astype(np.float64)
  prior = _prior(360, 0.02)
  kappa = prior.sample(seed=(4, 5))
  shear = ShearLikelihood(kappa, std, mask).sample(seed=(4, 6)).numpy()
  kappa_wf, info = wiener_filter(shear, std, mask, prior, tol=1e-6)
  assert bool(info.converged), info
  assert float(info.relative_residual) <= 1e-6
  assert int(info.iterations) < 100
  # Sanity: the Wiener map correlates with the truth on the observed region
  # (pixel-scale S/N is low: prior std 0.02 against noise std ~0.12).
  inside = mask > 0
  r = np.corrcoef(kappa_wf.numpy()[inside], kappa.numpy()[inside])[0, 1]
  assert r > 0.2, r


def test_posterior_samples_match_dense_posterior():
  n, num = 16, 4000
  shear, noise_std, mask, prior = _problem(n, 0.05, seed=5)
  mean, cov = _dense_posterior(shear, noise_std, mask, prior)
  result = gaussian_posterior_samples(shear, noise_std, mask, prior, num,
                                      seed=(6, 7), tol=1e-10)
  samples, info = result.samples, result.diagnostics['solver_info']
  assert samples.shape == (num, n, n) and np.all(info.converged.numpy())
  x = samples.numpy().reshape(num, n * n)
  np.testing.assert_allclose(x.mean(axis=1), 0., atol=1e-12)  # Map means.

  # Whiten on the support of Σ (rank n² − 1: the map mean is pinned).
  eigval, eigvec = np.linalg.eigh(cov)
  keep = eigval > 1e-10 * eigval.max()
  assert keep.sum() == n * n - 1
  whiten = eigvec[:, keep] / np.sqrt(eigval[keep])
  d = keep.sum()
  u = (x - mean.ravel()) @ whiten  # ~ N(0, I_d) if the sampler is exact.
  # Mean: num ‖ū‖² ~ χ²_d.
  chi2 = num * np.sum(u.mean(axis=0)**2)
  assert chi2 < d + 6. * np.sqrt(2. * d), chi2
  # Covariance (about the known mean): E‖Ĉ − I‖_F² = d (d + 1) / num, and the
  # statistic's relative spread is ~ sqrt(2 / d²) ≈ 0.6%.
  frob = np.sum((u.T @ u / num - np.eye(d))**2)
  expected = d * (d + 1) / num
  assert abs(frob / expected - 1.) < 0.1, frob / expected
  # Per entry: Var(u_i u_j) = 1 + δ_ij; 5.5σ over the d(d+1)/2 entries.
  z = (u.T @ u / num - np.eye(d)) / np.sqrt((1. + np.eye(d)) / num)
  assert np.abs(z).max() < 5.5, np.abs(z).max()
  # Posterior pixel variances, directly in κ units.
  np.testing.assert_allclose(x.var(axis=0), np.diag(cov),
                             rtol=6. * np.sqrt(2. / num))


def test_posterior_sample_mean_is_wiener_filter_batched():
  shear, noise_std, mask, prior = _problem(16, 0.05, seed=8)
  shears = np.stack([shear, -shear])
  result = gaussian_posterior_samples(shears, noise_std, mask, prior, 3,
                                      seed=(1, 2))
  samples, info = result.samples, result.diagnostics['solver_info']
  assert samples.shape == (3, 2, 16, 16) and info.converged.shape == (3, 2)
  again = gaussian_posterior_samples(shears, noise_std, mask, prior, 3,
                                     seed=(1, 2)).samples
  np.testing.assert_array_equal(samples.numpy(), again.numpy())
  # The summaries of every sampler: sample mean and std, credible_interval.
  assert isinstance(result, PosteriorSamples) and result.trace is None
  assert result.diagnostics['num_samples'] == 3
  np.testing.assert_allclose(result.mean, samples.numpy().mean(axis=0),
                             rtol=1e-12)
  np.testing.assert_allclose(result.std, samples.numpy().std(axis=0),
                             rtol=1e-12)
  np.testing.assert_array_equal(result.interval_68,
                                credible_interval(samples, 0.68))
  one = gaussian_posterior_samples(shears, noise_std, mask, prior, 1,
                                   seed=(1, 2))
  assert one.std is None and one.interval_68 is None


def test_invalid_inputs_raise():
  shear, noise_std, mask, prior = _problem(16, 0.05, seed=9)
  bad = shear.copy()
  bad[0, 0, 0] = np.nan
  m = mask.copy()
  m[0, 0] = 1.
  with pytest.raises(ValueError, match='non-finite'):
    wiener_filter(bad, np.where(m > 0, 0.1, 0.), m, prior)
  observed = 2 * int(mask.sum())
  with pytest.raises(ValueError, match=(
      rf'noise_std holds {observed} value.* \(0 zero, {observed} negative')):
    wiener_filter(shear, -noise_std, mask, prior)
  with pytest.raises(ValueError, match=(
      rf'noise_std holds {observed} value.* \({observed} zero, 0 negative')):
    wiener_filter(shear, np.zeros_like(noise_std), mask, prior)
  with pytest.raises(ValueError, match='no observed pixel'):
    wiener_filter(shear, noise_std, np.zeros_like(mask), prior)
  with pytest.raises(ValueError, match='map shape'):
    wiener_filter(shear, noise_std, np.ones((8, 8)), prior)
  with pytest.raises(ValueError, match=(
      r'the prior is defined on 32x32 maps but the shear map is 16x16')):
    wiener_filter(shear, noise_std, mask, _prior(32, 0.05))
  with pytest.raises(ValueError, match='broadcast'):
    wiener_filter(np.stack([shear] * 3), noise_std, np.stack([mask] * 2), prior)
  with pytest.raises(ValueError, match='GaussianPrior'):
    wiener_filter(shear, noise_std, mask, prior.spectrum)
  with pytest.raises(ValueError, match='max_iterations'):
    wiener_filter(shear, noise_std, mask, prior, max_iterations=0)
  with pytest.raises(ValueError, match='num_samples'):
    gaussian_posterior_samples(shear, noise_std, mask, prior, 0, seed=(1, 2))


def test_data_fit_of_exact_posterior_draws_is_chi_squared_distributed():
  # Draws from the exact posterior of the model that made the data are
  # distributed with the data as the truth is: each draw's χ² is χ²_d.
  # A prior 10× too narrow in variance pulls the draws off the data.
  n, num_maps = 16, 200
  prior = _prior(n, 0.05)
  noise_std = np.full((n, n), 0.1)
  mask = np.ones((n, n))
  truths = prior.sample(num_maps, seed=(9, 0))
  shears = ShearLikelihood(truths, noise_std, mask).sample(seed=(9, 1))
  data = ShearMap(shears.numpy(), noise_std, mask)
  for spectrum_scale, expect_calibrated in ((1., True), (0.1, False)):
    draws = gaussian_posterior_samples(
        shears, noise_std, mask,
        GaussianPrior(prior.spectrum * spectrum_scale), 2, seed=(9, 2),
        tol=1e-8).samples
    z = data_fit(draws, data)['z']
    assert z.shape == (num_maps,)
    if expect_calibrated:  # The mean of 2 draws scatters at most as one.
      assert abs(z.mean()) < 4. / np.sqrt(num_maps), z.mean()
    else:  # About 1.7 per map here: 25 standard errors over the maps.
      assert z.mean() > 10. / np.sqrt(num_maps), z.mean()
