"""load_prior: the shipped priors by name (each beats the linear denoiser;
the joint prior's θ conditioning and θ posterior work on held-out maps), a
network of one's own by path, clear errors for anything else."""

import warnings

import numpy as np
import pytest
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lognormal
from tfp_massmap import priors
from tfp_massmap import testing
from tfp_massmap import theta_posterior
from tfp_massmap.score_network import ScoreNetwork
from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder as lkb

import conftest

# The held-out cross-entropy and logit scale of benchmarks/bench_ratio_loss.py.
_RATIO_BENCH = conftest.load_script('benchmarks/bench_ratio_loss.py',
                                    'bench_ratio_loss')


def test_shipped_prior_beats_wiener_denoiser_on_held_out_maps():
  net = priors.load_prior()
  assert net.gaussian_pixel_scale_arcmin == 0.8 and net.depth == 3
  assert net.pixel_scale_arcmin == 0.8  # SHIPPED_PRIORS, checked by sampling
  config = lkb.Builder.builder_configs['lognormal_128']
  field = lognormal.LognormalField(config.shift, 128, 0.8, dtype=tf.float64)
  first_validation = config.split_sizes[0]
  maps = field.maps_from_seeds(range(first_validation, first_validation + 6))
  sigma = 0.02
  noisy = (maps + sigma * np.random.default_rng(0).standard_normal(maps.shape)).astype(np.float32)
  wiener = priors.GaussianPrior(tf.cast(field.power_grid, tf.float32))
  mse_learned = np.mean((net.denoise(noisy, sigma).numpy() - maps)**2)
  mse_wiener = np.mean((wiener.denoise(noisy, sigma).numpy() - maps)**2)
  # Measured on 32 maps: 0.79; a broken or missing network gives >= 1.
  assert mse_learned < 0.9 * mse_wiener


def _cosmo_maps(num_maps, sigma):
  """Held-out cosmo_32 maps (seeds from 2,000,000), noisy copies, θ."""
  maps = lognormal.cosmo_maps(range(2_000_000, 2_000_000 + num_maps), 32, 0.8)
  noisy = maps['kappa'] + sigma * np.random.default_rng(0).standard_normal(
      maps['kappa'].shape).astype(np.float32)
  return maps, noisy, np.stack([maps['omega_m'], maps['sigma8']], axis=-1)


def test_shipped_joint_prior_knows_the_cosmology():
  """The conditional network denoises held-out maps of varying θ better at
  their own θ than the Wiener filter of their own spectrum, and better than
  at the far corner of the θ box; the marginal network beats the Wiener
  filter of the fiducial spectrum."""
  joint = priors.load_prior('cosmo_joint_32')
  assert isinstance(joint, priors.LearnedJointPrior)
  assert joint.theta_names == ('omega_m', 'sigma8')
  assert joint.ratio is not None and joint.pixel_scale_arcmin == 0.8
  sigma = 0.02
  maps, noisy, theta = _cosmo_maps(24, sigma)
  clean = maps['kappa'].astype(np.float64)
  own = joint.denoise(noisy, theta.astype(np.float32), sigma).numpy()
  corner = np.where(theta > np.mean(joint.theta_bounds, axis=1),
                    joint.theta_bounds[:, 0], joint.theta_bounds[:, 1])
  far = joint.denoise(noisy, corner.astype(np.float32), sigma).numpy()
  wiener = []
  for omega_m, sigma8, x in zip(maps['omega_m'], maps['sigma8'], noisy):
    ell, cl = cosmology.convergence_cl(omega_m, sigma8)
    wiener.append(priors.GaussianPrior.from_power_spectrum(
        ell, cl, 32, 0.8).denoise(x[np.newaxis], sigma).numpy()[0])

  def mse(x):
    return np.mean((np.asarray(x, np.float64) - clean)**2)
  # Measured: 0.81 of the own-spectrum Wiener MSE and 0.79 of the far
  # corner's (which is 1.02 of the Wiener MSE).
  assert mse(own) < 0.9 * mse(wiener)
  assert mse(own) < 0.9 * mse(far)
  marginal = priors.load_prior('cosmo_marginal_32')
  assert marginal.num_parameters == 0
  ell, cl = cosmology.cosmos_convergence_cl()
  fiducial = priors.GaussianPrior.from_power_spectrum(ell, cl, 32, 0.8)
  # Measured: 0.78.
  assert mse(marginal.denoise(noisy, sigma)) < 0.9 * mse(
      fiducial.denoise(noisy, sigma))


def test_shipped_ratio_network_implies_theta_posteriors_of_the_right_width():
  """The θ posterior the shipped 32² ratio network implies, p(θ | x) ∝
  exp ℓ(x, θ) on a 12² grid of the prior box, scored by its log density at
  the true θ (a proper scoring rule) on 128 held-out mean-free maps through
  σ = 0.0117: the temperature α that maximises the mean score of ∝ exp(α ℓ)
  is near 1 (the logits have the right scale: a posterior too narrow or
  too wide by a factor 2 gives α near 0.5 or 2), and the posterior is far
  more informative than the prior box. (Measured: α 0.94, 1.54 nats above
  the box's −log(area); the binary-trained file shipped before Dec 5 2026:
  0.99 and 1.42 nats; the power spectrum's posterior, 0.19 and −0.28:
  overconfident on these skewed maps.) A contrastively trained network
  learns ℓ up to a term in the map alone, which the score does not see and
  the pairs' binary cross-entropy would (bench_ratio_loss.py)."""
  network = priors.load_prior('cosmo_joint_32').ratio
  assert network.remove_map_mean
  maps = lognormal.cosmo_maps(range(2_000_000, 2_000_128), 32, 0.8)
  theta = np.stack([maps['omega_m'], maps['sigma8']], axis=-1)
  unit_noise = np.random.default_rng(0).standard_normal(
      maps['kappa'].shape).astype(np.float32)
  at_truth, _ = _RATIO_BENCH.per_map_logits(
      network, maps['kappa'], theta, unit_noise, 0.0117, batch_size=64,
      remove_map_mean=True)
  on_grid, area = _RATIO_BENCH.grid_logits(
      network, maps['kappa'], unit_noise, 0.0117, 12, batch_size=256,
      remove_map_mean=True)
  alpha = _RATIO_BENCH.best_posterior_temperature(at_truth, on_grid, area)
  assert 0.7 < alpha < 1.4, alpha
  box = np.prod(np.diff(cosmology.COSMO_PARAMETER_BOUNDS, axis=1))
  gain = np.mean(_RATIO_BENCH.posterior_log_density(at_truth, on_grid,
                                                    area)) + np.log(box)
  assert gain > 1.2, gain


def _theta_posteriors(joint, map_size, num_maps, seed, **kwargs):
  """θ posteriors of held-out cosmo maps (seeds from 2,000,000) seen through
  white noise σ_pix = 0.0117: (truths, means, stds) ``[num_maps, 2]``, the
  number of (map, parameter) pairs whose 95 % interval covers, and the last
  map's data."""
  truths, means, stds, covered = [], [], [], 0
  for i in range(num_maps):
    theta, _, data = testing.cosmo_problem(2_000_000 + i, map_size, 0.8,
                                           0.0117, (seed, i))
    samples, _ = theta_posterior.sample_theta_posterior(
        data, joint, num_samples=400, seed=(seed, i), **kwargs)
    samples = samples.numpy().astype(np.float64)
    low, high = np.quantile(samples, [0.025, 0.975], axis=0)
    covered += np.sum((low <= theta) & (theta <= high))
    truths.append(theta)
    means.append(samples.mean(axis=0))
    stds.append(samples.std(axis=0))
  return np.array(truths), np.array(means), np.array(stds), covered, data


def test_shipped_joint_prior_infers_the_cosmology_of_held_out_shear():
  """p(θ | γ) with the shipped ratio network (the field-level likelihood)
  on 10 held-out 32² maps seen through white noise σ_pix = 0.0117: the
  posteriors are narrower than the prior box's spread, their means track
  the truth (the prior's mean misses by 1 prior std RMS), the errors are
  of the size the stds claim, and the 95 % intervals cover. (Measured:
  std 0.44 / 0.50 prior std, RMS error 0.39 / 0.65, RMS z 0.75 / 1.34,
  19 of 20 covered; the binary-trained file shipped before Dec 5 2026:
  0.52 / 0.58, 0.35 / 0.58, 0.64 / 0.98, 20.)"""
  joint = priors.load_prior('cosmo_joint_32')
  truths, means, stds, covered, data = _theta_posteriors(joint, 32, 10, 9)
  assert joint.theta_map_size == 32
  # On maps of another size the θ likelihood is not calibrated: a warning.
  big = data._replace(shear=np.tile(data.shear, (2, 2, 1)),
                      noise_std=np.tile(data.noise_std, (2, 2)),
                      mask=np.tile(data.mask, (2, 2)))
  with pytest.warns(UserWarning, match=r'calibrated on 32x32 maps, not '
                    r'64x64'):
    theta_posterior.sample_theta_posterior(big, joint, num_samples=2,
                                           num_points=8)
  prior_std = np.diff(joint.theta_bounds, axis=1)[:, 0] / np.sqrt(12.)
  assert np.all(stds.mean(axis=0) < 0.6 * prior_std), stds / prior_std
  rms = np.sqrt(np.mean(np.square(means - truths), axis=0))
  assert np.all(rms < 0.8 * prior_std), rms / prior_std
  # Calibrated errors: Σ z² over 10 maps is χ²₁₀, below 25.2 (RMS z 1.59)
  # with probability 0.995.
  z = (means - truths) / stds
  assert np.all(np.sqrt(np.mean(z**2, axis=0)) < 1.59), z
  assert covered >= 17  # Of 20 (two parameters × 10 maps).


@pytest.mark.filterwarnings('ignore:the theta grid is coarse')  # 8 points
def test_shipped_128_joint_prior_infers_the_cosmology_at_the_demo_size():
  """cosmo_joint_128 (the ratio network fine-tuned on whole 128² maps) on 4
  held-out 128² maps seen through white noise σ_pix = 0.0117: no size
  warning, every posterior mean within 3 std of the truth, and the 95 %
  intervals cover. (Measured: |z| ≤ 2.3, 7 of 8 covered; the file
  shipped before Dec 5 2026 (binary-trained) |z| ≤ 2.2; the 32²-trained
  ratio of cosmo_joint_32 on the same data was off by 5.5–8.3 std on
  three of them, and warns.)"""
  joint = priors.load_prior('cosmo_joint_128')
  assert joint.theta_map_size == 128
  # It reads each map minus its mean, as shear data give it (the file
  # shipped before Dec 5 2026 read the mean).
  assert joint.ratio.remove_map_mean
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    truths, means, stds, covered, data = _theta_posteriors(
        joint, 128, 4, 11, num_points=16)
  z = (means - truths) / stds
  assert np.all(np.abs(z) < 3.), z
  assert covered >= 6  # Of 8 (two parameters × 4 maps).
  with pytest.warns(UserWarning, match='calibrated on 32x32 maps, not '
                    '128x128'):
    theta_posterior.sample_theta_posterior(
        data, priors.load_prior('cosmo_joint_32'), num_samples=2,
        num_points=8)


def test_unknown_prior_name_raises():
  with pytest.raises(ValueError, match="unknown prior 'massivenus_512'; "
                     r"expected one of \['cosmo_joint_128', 'cosmo_joint_32', "
                     r"'cosmo_marginal_32', 'lognormal_128'\] or the path of "
                     r'a \.keras file'):
    priors.load_prior('massivenus_512')
  with pytest.raises(ValueError, match='name_or_path must be the name of a '
                     'shipped prior.*got 3'):
    priors.load_prior(3)


def test_a_path_loads_that_network(tmp_path, monkeypatch):
  network = ScoreNetwork(depth=1, base_channels=4, embedding_dim=8, seed=0,
                         pixel_scale_arcmin=0.29)
  network.save(tmp_path / 'score_network.keras')
  x = tf.random.stateless_normal([2, 8, 8], seed=[3, 4]) * 0.02
  expected = network.denoise(x, 0.05)
  monkeypatch.chdir(tmp_path)
  for path in (tmp_path / 'score_network.keras',  # os.PathLike
               str(tmp_path / 'score_network.keras'),  # with a separator
               'score_network.keras'):  # the extension
    loaded = priors.load_prior(path)
    assert isinstance(loaded, ScoreNetwork)
    assert loaded.pixel_scale_arcmin == 0.29  # from the file
    np.testing.assert_array_equal(loaded.denoise(x, 0.05), expected)


def test_bad_paths_say_what_is_wrong(tmp_path, monkeypatch):
  with pytest.raises(FileNotFoundError, match='runs/missing.keras does not '
                     'exist'):
    priors.load_prior('runs/missing.keras')
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'prior.fits').write_bytes(b'SIMPLE  =' + b' ' * 71)
  # An existing file: a path even without a separator or .keras.
  with pytest.raises(ValueError, match='prior.fits is not a Keras archive.*'
                     'a FITS file'):
    priors.load_prior('prior.fits')
