"""Sparse (starlet ℓ1), TV and MCALens-like MAP maps: known answers."""

import numpy as np
import pytest
import tensorflow as tf
from astropy import constants
from astropy import cosmology
from astropy import units

from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import sparse
from tfp_massmap import starlet
from tfp_massmap import wiener
from tfp_massmap.priors import gaussian as gaussian_prior


def _gaussian_field(n, seed, std=0.02):
  rng = np.random.default_rng(seed)
  k = np.fft.fftfreq(n)
  kk = np.sqrt(k[:, None]**2 + k[None, :]**2)
  filt = np.where(kk > 0, kk, np.inf)**-1.0
  field = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal([n, n])) * filt))
  return field * std / field.std()


def _nfw_convergence(n, pixel_scale_arcmin, centre, m200=1e15, concentration=4.0,
                     z_lens=0.3, z_source=1.0, subsample=8):
  """Pixel-averaged convergence of an NFW halo (Wright & Brainerd 2000).

  m200 in solar masses (mass inside the radius where the mean density is
  200 times critical), flat ΛCDM with H0 = 70 km/s/Mpc, Ωm = 0.3; centre
  (row, column) in pixels.
  """
  cosmo = cosmology.FlatLambdaCDM(H0=70, Om0=0.3)
  rho_crit = cosmo.critical_density(z_lens).to(units.Msun / units.Mpc**3).value
  r200 = (3 * m200 / (4 * np.pi * 200 * rho_crit))**(1 / 3)
  r_s = r200 / concentration
  c = concentration
  delta_c = 200 / 3 * c**3 / (np.log(1 + c) - c / (1 + c))
  d_l = cosmo.angular_diameter_distance(z_lens)
  d_s = cosmo.angular_diameter_distance(z_source)
  d_ls = cosmo.angular_diameter_distance(z_lens, z_source)
  sigma_crit = (constants.c**2 / (4 * np.pi * constants.G) * d_s / (d_l * d_ls))
  sigma_crit = sigma_crit.to(units.Msun / units.Mpc**2).value
  offsets = (np.arange(subsample) + 0.5) / subsample - 0.5
  grid = (np.arange(n)[:, None] + offsets).ravel()
  y, x = np.meshgrid(grid - centre[0], grid - centre[1], indexing='ij')
  arcmin = np.pi / (180 * 60)
  r = np.maximum(np.hypot(x, y) * pixel_scale_arcmin * arcmin *
                 d_l.to(units.Mpc).value / r_s, 1e-6)
  f = np.full_like(r, 1 / 3)
  inner, outer = r < 1, r > 1
  f[inner] = (1 - 2 / np.sqrt(1 - r[inner]**2) * np.arctanh(
      np.sqrt((1 - r[inner]) / (1 + r[inner])))) / (r[inner]**2 - 1)
  f[outer] = (1 - 2 / np.sqrt(r[outer]**2 - 1) * np.arctan(
      np.sqrt((r[outer] - 1) / (1 + r[outer])))) / (r[outer]**2 - 1)
  kappa = 2 * r_s * delta_c * rho_crit * f / sigma_crit
  return kappa.reshape(n, subsample, n, subsample).mean(axis=(1, 3))


def _survey(n, pixel_scale_arcmin, seed, holes=((12, 44, 5),), density=64.0,
            sigma_e=0.3):
  """Poisson galaxy counts, circular holes; returns (mask, noise_std [N,N])."""
  rng = np.random.default_rng(seed)
  counts = rng.poisson(density * pixel_scale_arcmin**2, size=(n, n))
  y, x = np.mgrid[:n, :n]
  for row, col, radius in holes:
    counts[(y - row)**2 + (x - col)**2 < radius**2] = 0
  mask = (counts > 0).astype(np.float64)
  std = np.where(counts > 0, sigma_e / np.sqrt(np.maximum(counts, 1)), 0.0)
  return mask, std


def _observe(kappa, mask, std, seed):
  return likelihood.ShearLikelihood(
      tf.constant(kappa, tf.float64), std, mask).sample(seed=(seed, 0)).numpy()


def _chi2(kappa, shear, std, mask):
  inverse = np.where(mask > 0, 1 / np.where(mask > 0, std, 1.0)**2, 0.0)[..., None]
  residual = lensing.shear_from_convergence(tf.constant(kappa)).numpy() - shear
  return 0.5 * np.sum(inverse * residual**2), inverse.max()


def _sparse_objective(kappa, shear, std, mask, num_scales, threshold_sigma):
  """F of `sparse_map`, rebuilt from the public pieces."""
  chi2, lipschitz = _chi2(kappa, shear, std, mask)
  thresholds = sparse.sparse_thresholds(std, mask, num_scales,
                                        threshold_sigma).numpy()
  planes = starlet.starlet_transform(tf.constant(kappa), num_scales).numpy()
  return chi2 + lipschitz * np.sum(thresholds * np.abs(planes[:num_scales]))


def _peak(kappa):
  return np.array(np.unravel_index(np.argmax(kappa), kappa.shape))


def test_thresholds_for_uniform_noise_are_the_starlet_levels():
  n, sigma = 64, 0.04
  std = np.full([n, n], sigma)
  expected = 3.0 * sigma * starlet.starlet_noise_levels(4, n)[:4]
  full = sparse.sparse_thresholds(std, np.ones([n, n]), num_scales=4).numpy()
  assert full.shape == (4, n, n)
  np.testing.assert_allclose(full, expected[:, None, None] * np.ones([4, n, n]),
                             rtol=1e-10)
  # A hole changes nothing: gaps take the mean observed inverse variance.
  mask, _ = _survey(n, 1.0, seed=0)
  holed = sparse.sparse_thresholds(np.where(mask > 0, sigma, 0.0), mask, 4).numpy()
  np.testing.assert_allclose(holed, full, rtol=1e-10)


def test_thresholds_scale_linearly_with_noise_level_and_k():
  mask, std = _survey(64, 1.0, seed=1)
  std2 = np.stack([std, 1.5 * std], axis=-1)  # Per-component noise.
  base = sparse.sparse_thresholds(std2, mask, num_scales=4).numpy()
  np.testing.assert_allclose(
      sparse.sparse_thresholds(2.0 * std2, mask, num_scales=4).numpy(),
      2.0 * base, rtol=1e-10)
  np.testing.assert_allclose(
      sparse.sparse_thresholds(std2, mask, 4, threshold_sigma=6.0).numpy(),
      2.0 * base, rtol=1e-10)
  per_scale = sparse.sparse_thresholds(std2, mask, 4, [1.0, 2.0, 3.0, 4.0]).numpy()
  np.testing.assert_allclose(per_scale[3], 4.0 / 3.0 * base[3], rtol=1e-10)


def test_thresholds_match_monte_carlo_noise_propagation():
  # Strongly varying noise, different per component: the propagated std
  # must follow it pixel by pixel.
  n, num_scales, draws = 32, 3, 2000
  x = np.arange(n) / n
  std = np.stack(np.broadcast_arrays(0.02 * (1 + 2 * x)[None, :],
                                     0.03 * (1 + 2 * x)[:, None]), axis=-1)
  mask = np.ones([n, n])
  thresholds = sparse.sparse_thresholds(std, mask, num_scales, 1.0).numpy()
  rng = np.random.default_rng(2)
  inverse = 1 / std**2
  step = 1 / inverse.max()
  noise = std * rng.standard_normal([draws, n, n, 2])
  gradient_noise = step * lensing.kaiser_squires(inverse * noise)[0]
  planes = starlet.starlet_transform(gradient_noise, num_scales).numpy()
  measured = planes[:, :num_scales].std(axis=0)
  ratio = measured / thresholds
  assert abs(ratio.mean() - 1) < 0.01
  assert np.all(np.abs(ratio - 1) < 0.1)


def test_zero_regularisation_gives_kaiser_squires():
  n, sigma = 32, 0.05
  kappa = _gaussian_field(n, seed=3)
  mask, std = np.ones([n, n]), np.full([n, n], sigma)
  shear = _observe(kappa, mask, std, seed=4)
  expected = lensing.kaiser_squires(shear)[0].numpy()
  for solve in (lambda: sparse.sparse_map(shear, std, mask, 3, threshold_sigma=0.0),
                lambda: sparse.tv_map(shear, std, mask, regularisation=0.0)):
    estimate, info = solve()
    assert bool(info.converged)
    np.testing.assert_allclose(estimate, expected, atol=1e-10)


def _masked_problem(n=32, seed=5):
  mask, std = _survey(n, 1.0, seed=seed, holes=((8, 20, 4),))
  kappa = _gaussian_field(n, seed=seed + 1)
  kappa[20, 10] += 0.3
  return kappa, mask, std, _observe(kappa, mask, std, seed=seed + 2)


def _sparse_case():
  """A masked problem solved by `sparse_map`, and its objective F."""
  truth, mask, std, shear = _masked_problem()
  solution = sparse.sparse_map(shear, std, mask, num_scales=3,
                               max_iterations=400, tol=1e-6)

  def objective(kappa):
    return _sparse_objective(kappa, shear, std, mask, 3, 3.0)

  return truth, shear, solution, objective


def _tv_case():
  """A masked problem with uniform noise solved by `tv_map`, and its F."""
  n, sigma, regularisation = 32, 0.04, 1.5
  truth = _gaussian_field(n, seed=7)
  truth[10:16, 18:26] += 0.1
  mask, _ = _survey(n, 1.0, seed=8, holes=((24, 8, 4),))
  std = np.where(mask > 0, sigma, 0.0)
  shear = _observe(truth, mask, std, seed=9)
  solution = sparse.tv_map(shear, std, mask, regularisation,
                           max_iterations=400, tol=1e-6)

  def objective(kappa):
    # Uniform noise: the weight is regularisation × σ √(1 − 1/N²) (the
    # propagated pixel noise without the map mean) times L = 1/σ².
    chi2, lipschitz = _chi2(kappa, shear, std, mask)
    dx = np.roll(kappa, -1, axis=1) - kappa
    dy = np.roll(kappa, -1, axis=0) - kappa
    weight = lipschitz * regularisation * sigma * np.sqrt(1 - 1 / n**2)
    return chi2 + weight * np.sum(np.hypot(dx, dy))

  return truth, shear, solution, objective


@pytest.mark.parametrize('case, seed', [(_sparse_case, 6), (_tv_case, 10)],
                         ids=['sparse', 'tv'])
def test_objective_is_monotone_and_minimal(case, seed):
  truth, shear, (estimate, info), objective = case()
  estimate = estimate.numpy()
  history = info.objective.numpy()
  assert history.shape == (int(info.iterations),)
  assert np.all(np.diff(history) <= 0)
  assert info.relative_change.shape == history.shape

  best = objective(estimate)
  np.testing.assert_allclose(history[-1], best, rtol=1e-9)
  others = [truth, np.zeros_like(truth), lensing.kaiser_squires(shear)[0].numpy()]
  rng = np.random.default_rng(seed)
  scale = 0.01 * np.linalg.norm(estimate)
  for _ in range(4):
    step = rng.standard_normal(truth.shape)
    step *= scale / np.linalg.norm(step)
    others += [estimate + step, estimate - step]
  assert all(best < objective(other) for other in others)


def test_tv_proximal_step_matches_one_dimensional_closed_form():
  # A periodic plateau of height a over m of N columns, constant along rows:
  # TV denoising with weight λ lowers it by 2λ/m and raises the rest by
  # 2λ/(N − m) (each of the two jumps shrinks by λ per unit length).
  n, m, height, weight = 32, 12, 1.0, 0.05
  v = np.zeros([n, n])
  v[:, :m] = height
  v = tf.constant(v)
  bound = tf.fill([1, n, n], tf.constant(weight, tf.float64))
  dual = tf.zeros([2, n, n], tf.float64)
  # pylint: disable=protected-access
  prox_fn = tf.function(lambda v, bound, dual: sparse._dual_prox(
      sparse._TV_PENALTY, v, bound, dual, positivity=False,
      inner_iterations=2000))
  # pylint: enable=protected-access
  prox, _ = prox_fn(v, bound, dual)
  expected = np.where(np.arange(n) < m, height - 2 * weight / m,
                      2 * weight / (n - m)) * np.ones([n, 1])
  np.testing.assert_allclose(prox, expected, atol=1e-6)


def test_positivity_constraint():
  _, mask, std, shear = _masked_problem(seed=11)
  estimate, info = sparse.sparse_map(shear, std, mask, 3, positivity=True,
                                     max_iterations=100)
  assert np.min(estimate) >= 0
  assert np.all(np.diff(info.objective.numpy()) <= 0)
  tv, _ = sparse.tv_map(shear, std, mask, positivity=True, max_iterations=100)
  assert np.min(tv) >= 0


def test_recovers_nfw_halo_peak():
  # A 1e15 Msun NFW halo (c = 4) at z = 0.3, sources at z = 1, 64² pixels
  # of 1 arcmin, COSMOS-like shape noise (σ_e = 0.3, 64 galaxies/arcmin²).
  n, pix, centre = 64, 1.0, (40, 25)
  truth = _nfw_convergence(n, pix, centre)
  assert 0.3 < truth.max() < 0.6
  mask, std = _survey(n, pix, seed=12)
  shear = _observe(truth, mask, std, seed=13).astype(np.float32)
  std, mask = std.astype(np.float32), mask.astype(np.float32)

  estimate, info = sparse.sparse_map(shear, std, mask)
  assert bool(info.converged)
  assert np.max(np.abs(_peak(estimate.numpy()) - centre)) <= 1

  tv, info = sparse.tv_map(shear, std, mask)
  assert bool(info.converged)
  assert np.max(np.abs(_peak(tv.numpy()) - centre)) <= 1
  misfit = _chi2(tv.numpy().astype(np.float64), shear, std, mask)[0]
  assert misfit < 0.97 * _chi2(np.zeros([n, n]), shear, std, mask)[0]


def test_batch_matches_single_maps():
  problems = [_masked_problem(seed=s) for s in (14, 15)]
  shear = np.stack([p[3] for p in problems])
  std = np.stack([p[2] for p in problems])
  mask = np.stack([p[1] for p in problems])
  batch, info = sparse.sparse_map(shear, std, mask, 3, max_iterations=20, tol=1e-12)
  assert batch.shape == (2, 32, 32)
  assert info.objective.shape == (20, 2)
  assert info.converged.shape == (2,)
  for i in range(2):
    single, _ = sparse.sparse_map(shear[i], std[i], mask[i], 3, max_iterations=20,
                                  tol=1e-12)
    np.testing.assert_allclose(batch[i], single, atol=1e-12)


def test_float32_in_tf_function_matches_float64():
  _, mask, std, shear = _masked_problem(seed=16)
  args = [tf.constant(a, tf.float32) for a in (shear, std, mask)]
  traced, _ = tf.function(lambda *a: sparse.tv_map(*a, max_iterations=10),
                          autograph=False)(*args)
  assert traced.dtype == tf.float32
  eager, _ = sparse.tv_map(shear, std, mask, max_iterations=10)
  assert eager.dtype == tf.float64
  np.testing.assert_allclose(traced, eager, atol=1e-5)


def test_bad_inputs_raise():
  _, mask, std, shear = _masked_problem(seed=17)
  bad = shear.copy()
  bad[mask == 0] = np.nan  # NaN where there is no data is fine...
  sparse.tv_map(bad, std, mask, max_iterations=2)
  bad[np.argwhere(mask > 0)[0][0], np.argwhere(mask > 0)[0][1], 0] = np.nan
  with pytest.raises(ValueError, match='shear on observed pixels'):
    sparse.sparse_map(bad, std, mask)  # ...but not where there is.
  with pytest.raises(ValueError, match=r'\(0 zero, \d+ negative'):
    sparse.sparse_map(shear, -std, mask)
  two_pixels = np.zeros_like(mask)
  two_pixels[3, 4:6] = 1.0
  with pytest.raises(ValueError, match=(
      r'noise_std holds 2 value\(s\) that are not finite and > 0 on observed '
      r'pixels \(mask = 1\) \(2 zero')):
    sparse.tv_map(shear, np.where(two_pixels > 0, 0.0, std), two_pixels)
  with pytest.raises(ValueError, match='no observed pixel'):
    sparse.sparse_map(shear, std, np.zeros_like(mask))
  with pytest.raises(ValueError, match='map shape'):
    sparse.sparse_map(shear, std, mask[:16, :16])
  with pytest.raises(ValueError, match='2 channels'):
    sparse.tv_map(shear[..., :1], std, mask)
  with pytest.raises(ValueError, match='threshold_sigma'):
    sparse.sparse_map(shear, std, mask, 3, threshold_sigma=[1.0, 2.0])
  with pytest.raises(ValueError, match='num_scales'):
    sparse.sparse_map(shear, std, mask, num_scales=6)
  with pytest.raises(ValueError, match='regularisation'):
    sparse.tv_map(shear, std, mask, regularisation=-1.0)
  with pytest.raises(ValueError, match='max_iterations'):
    sparse.tv_map(shear, std, mask, max_iterations=0)
  with pytest.raises(ValueError, match='prior'):
    sparse.mcalens_map(shear, std, mask, prior=None)


def _gaussian_prior(n, pix, std=0.02):
  ell = np.geomspace(10.0, 1e5, 64)
  cl = ell**-1.2
  grid = gaussian_prior.GaussianPrior.from_power_spectrum(ell, cl, n, pix,
                                                          tf.float64)
  scale = std**2 / np.mean(grid.spectrum.numpy())
  return gaussian_prior.GaussianPrior(grid.spectrum * scale)


def test_mcalens_without_sparse_component_is_the_wiener_filter():
  truth, mask, std, shear = _masked_problem(seed=18)
  prior = _gaussian_prior(32, 1.0)
  estimate, info = sparse.mcalens_map(shear, std, mask, prior, num_scales=3,
                                      threshold_sigma=1e8, wiener_tol=1e-10)
  np.testing.assert_allclose(info.sparse_component, 0.0, atol=1e-12)
  expected, _ = wiener.wiener_filter(shear, std, mask, prior, tol=1e-10)
  np.testing.assert_allclose(estimate, expected, atol=1e-6)
  assert np.linalg.norm(estimate) > 0.1 * np.linalg.norm(truth)


@pytest.mark.slow
def test_mcalens_objective_decreases_and_sparse_part_holds_the_halo():
  n, pix, centre = 64, 1.0, (40, 25)
  prior = _gaussian_prior(n, pix)
  background = prior.sample(seed=(1, 2)).numpy()
  truth = background + _nfw_convergence(n, pix, centre)
  mask, std = _survey(n, pix, seed=19)
  shear = _observe(truth, mask, std, seed=20)
  estimate, info = sparse.mcalens_map(shear, std, mask, prior, max_iterations=8)
  history = info.objective.numpy()
  assert np.all(np.diff(history) <= 1e-7 * np.abs(history[1:]))
  np.testing.assert_allclose(estimate, info.gaussian_component +
                             info.sparse_component, atol=1e-12)
  assert np.max(np.abs(_peak(info.sparse_component.numpy()) - centre)) <= 1
  wiener_map, _ = wiener.wiener_filter(shear, std, mask, prior, tol=1e-8)
  # The halo's peak is better recovered than by the Wiener filter alone.
  assert estimate[centre] > 1.5 * wiener_map[centre]
