r"""Calibration of the joint map-cosmology sampler p(κ, σ8 | γ) (issue 15).

Simulation-based calibration (Talts et al. 2018, arXiv:1804.06788) of the
σ8 posterior of `JointPosteriorSampler` under the exact amplitude prior
`AmplitudeGaussianPrior`: p(κ | σ8) = N(0, A S) with A = (σ8 / σ8_fid)², S
the shipped COSMOS C_ℓ (`cosmology.cosmos_convergence_cl`, the spectrum of
σ8_fid = 0.8159, the Planck 2015 / IllustrisTNG σ8 of that table's header:
`tfp_massmap.cosmology` holds no σ8 constant, so the number is written here)
and σ8 uniform on ``--sigma8_range``. For each of ``--num_maps`` maps:

1. σ8 ~ U(range), κ ~ p(κ | σ8) (float64), γ = `ShearLikelihood.sample` with
   white noise σ_pix = σ_e / √(n_gal · pixel area) (the `survey` module's
   COSMOS galaxy density and σ_e) and a full mask;
2. ``--num_chains`` samples of p(κ, σ8 | γ); the rank of the true σ8 among
   them and whether the 68/95 % intervals (`parameter_summary`) cover it;
3. the exact σ8 posterior on a grid: with a full mask and white noise the
   shear is Fourier diagonal, the orthonormal-DFT E modes of the
   Kaiser-Squires map are κ̂_k + n̂_k with variance A S_k + σ_pix², so

     log p(σ8 | γ) = const − ½ Σ_k [|κ̂_E,k|² / (A S_k + σ_pix²)
                                    + log(A S_k + σ_pix²)]

   (N² modes, k = 0 carries no signal): the sampler's mean and std are
   compared with it map by map (the controlled check of any miscalibration);
4. the κ posterior under three priors, by annealed HMC with the same
   ``--num_chains``: the joint prior (its κ samples), the oracle conditional
   p(κ | σ8_true) and the fixed cosmology p(κ | σ8_fid) (`PosteriorSampler`
   of ``given(σ8)``; the oracle's spectrum is a `tf.Variable` set per map,
   so it is traced once). Per-pixel 68/95 % coverage of the truth and the
   posterior-mean RMSE (`metrics`), reported by thirds of the σ8 range;
   the exact Wiener-mean RMSE of the oracle and the fixed prior beside;
5. the Fisher width of σ8 from the power spectrum alone, same noise and
   mask: each of the N² − 1 modes has power C_k + N with C_k = A S_k and
   N = σ_pix², and Var(|κ̂_E,k|²) = (C_k + N)² for the real field's N²
   real degrees of freedom, so

     F(σ8) = ½ Σ_k (∂C_k/∂σ8)² / (C_k + N)²,  ∂C_k/∂σ8 = 2 C_k / σ8,

   σ_F = F^(-1/2) at the true σ8. For a Gaussian field with a full mask
   and white noise the mode powers are sufficient for σ8, so the
   field-level posterior carries the same information: its std should be
   σ_F (less near the prior bounds, which truncate it).

Learned prior (``--prior=learned``, issue 15 item 2b): the same protocol
on held-out maps of the ``lognormal_kappa/cosmo_32`` generator (32² maps
of 0.8 arcmin; map s has θ = (Ωm, σ8) = `cosmology.cosmo_kappa_parameters(s)`,
uniform over `cosmology.COSMO_PARAMETER_BOUNDS`, and the lognormal field of
`cosmology.convergence_cl(θ)` and `cosmology.lognormal_shift(θ)` from white
noise of seed s; seeds from ``--first_seed``, far above any training
split), with the joint prior `LearnedJointPrior(--conditional_network,
ratio=--ratio_network)`. Per map: the ranks and 68/95 % coverage of Ωm and
σ8; the κ posterior under the joint prior, the oracle ``given(θ_true)``
(the same conditional network at the true θ), the fixed cosmology
``given(θ_fid)``, with ``--marginal_network`` the unconditioned network
trained on the same maps (the marginal prior p(κ) over the θ range), and
with ``--exact_chains`` the exact posterior of the map's own lognormal
field at the true θ (what the oracle arm approximates), and with
``--arms=…,exact_joint`` the exact posterior of κ marginalised over θ
(`lognormal_cosmology.exact_joint_posterior`, what the joint arm
approximates: ``--exact_chains`` chains, 500 adapting and 200 kept of 400
transitions of 16 leapfrog steps, as ``bench_exact_theta.py`` at 32²;
without the joint arm the θ records are its, ranked among ``--num_chains``
draws evenly spaced over the kept ones); and the Fisher
widths of Ωm and σ8 (marginalised over the other) from the power
spectrum alone: the Gaussian-likelihood Fisher matrix
F_ij = ½ Σ_k ∂_i C_k ∂_j C_k / (C_k + N)² of the mode powers C_k(θ) of
`convergence_cl(θ)` on the map's DFT grid (the lognormal maps have that
power spectrum), derivatives by central differences. σ_F ignores the
prior box, which sets the width along the Ωm–σ8 degeneracy; the record
``power_spectrum`` of each parameter is the power spectrum's own posterior
over the box (`power_spectrum_likelihood.PowerSpectrumLikelihood`, 81
cells per axis: mean, std, coverage), the fair reference for "at least as
tight as the spectrum alone". θ coverage is checked against the nominal
levels here; ``bench_exact_theta.py``
compares the θ posterior with the exact one of the same maps.

Prints markdown tables; ``--output`` writes the JSON, ``--figure`` the rank
histogram (PNG); ``--records`` prints the tables of a saved JSON again.

Example (32² maps of 3.2 arcmin, about the COSMOS area of 1.64 deg²):
  python benchmarks/bench_joint_posterior.py --num_maps=100 \
      --output=/tmp/runs/bench_joint.json --figure=/tmp/runs/joint_sbc.png

Learned prior, with networks trained by examples/train_score.py on
cosmo_32 maps (--condition_on_cosmology, and --objective=ratio), at the
σ_pix of the example above (0.0117: 16 × 64 galaxies per arcmin² at the
0.8-arcmin pixels):
  python benchmarks/bench_joint_posterior.py --prior=learned \
      --conditional_network=runs/conditional/score_network.keras \
      --ratio_network=runs/ratio/ratio_network.keras \
      --galaxy_density=1024 --num_maps=100 --output=/tmp/runs/learned.json
"""

import json
import time
import types

from absl import app
from absl import flags
import numpy as np
import scipy.stats
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import joint_posterior
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import lognormal_cosmology
from tfp_massmap import lognormal_posterior
from tfp_massmap import metrics
from tfp_massmap import outputs
from tfp_massmap import posterior
from tfp_massmap import power_spectrum_likelihood
from tfp_massmap import shear_map as shear_map_lib
from tfp_massmap import survey
from tfp_massmap import testing
from tfp_massmap import theta_posterior
from tfp_massmap.mcmc import GeometricSchedule
from tfp_massmap.priors import conditional
from tfp_massmap.priors import gaussian
from tfp_massmap.priors import learned_joint
from tfp_massmap.score_network import load_score_network

# σ8 of the shipped C_ℓ table (its header: Planck 2015 / IllustrisTNG).
SIGMA8_FIDUCIAL = cosmology.FIDUCIAL_SIGMA8

def _define_flags():
  """Defines the script's flags; called only when it runs.

  Tests import its functions beside the example scripts, whose flags share
  names such as sigma_e.
  """
  flags.DEFINE_integer('num_maps', 100, 'Number of simulated maps.')
  flags.DEFINE_integer('num_chains', 63, 'Posterior samples per map (ranks '
                       'take num_chains + 1 values).')
  flags.DEFINE_integer('map_size', 32, 'Pixels per side N.')
  flags.DEFINE_float('pixel_scale_arcmin', 3.2, 'Pixel side [arcmin].')
  flags.DEFINE_list('sigma8_range', ['0.6', '1.0'], 'Uniform σ8 prior range '
                    '(lower, upper) [dimensionless].')
  flags.DEFINE_float('galaxy_density', survey.COSMOS_GALAXY_DENSITY,
                     'Galaxies per arcmin² (sets σ_pix).')
  flags.DEFINE_float('sigma_e', survey.COSMOS_SIGMA_E, 'Per-component '
                     'ellipticity dispersion [dimensionless].')
  flags.DEFINE_float('sigma_max', 0.05, 'First annealing level [convergence].')
  flags.DEFINE_float('sigma_min', 1e-3, 'Last annealing level [convergence].')
  flags.DEFINE_integer('num_levels', 40, 'Geometric annealing levels.')
  flags.DEFINE_integer('num_final_steps', 150, 'Joint transitions at '
                       'sigma_min after the annealing.')
  flags.DEFINE_integer('num_leapfrog_steps', 5, 'Leapfrog steps per '
                       'transition.')
  flags.DEFINE_enum('theta_update', 'annealed',
                    list(joint_posterior.THETA_UPDATES),
                    "The joint sampler's route for θ (JointPosteriorSampler): "
                    'annealed (the recorded runs; θ inside the annealed HMC) '
                    'or marginal (θ from its field-level marginal, then κ '
                    'given θ; pass --num_final_steps=0).')
  flags.DEFINE_enum('theta_method', 'grid', list(theta_posterior.THETA_METHODS),
                    'The marginal route\'s θ draw (and --theta_only\'s): '
                    'grid (quadrature, the default) or hmc (the runs '
                    'recorded before Dec 3 2026).')
  flags.DEFINE_integer('grid_points', None, '--theta_only with the grid: '
                       'cells per axis (default theta_posterior.'
                       'DEFAULT_GRID_POINTS).')
  flags.DEFINE_float('step_size_factor', 1., 'κ leapfrog step over σ '
                     '[dimensionless].')
  flags.DEFINE_bool('metropolis_correction', False, 'κ trajectories with '
                    'the Metropolis test (log-density change integrated from '
                    'the score along each trajectory).')
  flags.DEFINE_float('theta_step_size', 0.025, 'Floor of the u leapfrog step '
                     '[u units]; the 16² default 0.05 over √(modes / 16²).')
  flags.DEFINE_integer('rank_bins', 8, 'Bins of the rank histogram (must '
                       'divide num_chains + 1).')
  flags.DEFINE_integer('seed', 0, 'Seed of the σ8 draws, maps, noise and '
                       'chains.')
  flags.DEFINE_string('output', None, 'Optional JSON file for the results '
                      '(--prior=learned: rewritten after every map).')
  flags.DEFINE_string('figure', None, 'Optional PNG of the rank histogram.')
  flags.DEFINE_string('records', None, 'Optional JSON written by --output: '
                      'print its tables (and --figure) again, no sampling. '
                      '--prior=learned: a comma-separated list of them, '
                      'whose maps are pooled.')
  flags.DEFINE_string('paired_with', None, 'learned, with --records: '
                      'JSON files written by --output (comma-separated, '
                      'pooled) on the same maps and noise (the same '
                      '--first_seed and --seed), e.g. another schedule or '
                      'network; prints each κ arm of --records against the '
                      'same arm and the "exact" arm of these, paired on each '
                      'common map.')
  flags.DEFINE_enum('prior', 'amplitude', ['amplitude', 'learned'],
                    'amplitude: the exact AmplitudeGaussianPrior over σ8. '
                    'learned: LearnedJointPrior over (Ωm, σ8) on cosmo_<N> '
                    'maps, N = --map_size (32, 64 or 128; 0.8 arcmin '
                    'pixels), with --conditional_network and '
                    '--ratio_network (--pixel_scale_arcmin and '
                    '--sigma8_range are then those of the networks).')
  flags.DEFINE_string('conditional_network', None, 'learned: the .keras '
                      'ScoreNetwork conditioned on (omega_m, sigma8).')
  flags.DEFINE_string('ratio_network', None, 'learned: the .keras '
                      'RatioNetwork over (omega_m, sigma8).')
  flags.DEFINE_string('marginal_network', None, 'learned, optional: an '
                      'unconditioned .keras ScoreNetwork trained on the same '
                      'maps (the marginal prior p(κ)), a fourth κ arm.')
  flags.DEFINE_integer('exact_chains', 0, 'learned: > 0 adds the κ arm '
                       '"exact", the exact lognormal posterior at the true θ '
                       '(`lognormal_posterior` with its default schedule, '
                       'this many HMC chains); the chains of both exact '
                       'arms.')
  flags.DEFINE_list('arms', None, 'learned: the κ arms to run, of '
                    f'{", ".join(KAPPA_ARMS)}; default joint, oracle, fixed, '
                    'with marginal when --marginal_network is given and '
                    'exact when --exact_chains > 0. Without joint, '
                    'exact_joint gives the θ records (a reference run to '
                    'pair with a saved one by --paired_with).')
  flags.DEFINE_bool('theta_only', False, 'learned: sample θ only (the '
                    'marginal route\'s θ stage, theta_posterior.'
                    'sample_theta_posterior), no κ arm.')
  flags.DEFINE_integer('first_seed', 1_000_000, 'learned: seed of the first '
                       'held-out cosmo_32 map.')


FLAGS = flags.FLAGS

_GRID_POINTS = 4001
# The κ arms of --prior=learned, in table order.
KAPPA_ARMS = ('joint', 'oracle', 'fixed', 'marginal', 'exact', 'exact_joint')
# exact_joint's HMC (bench_exact_theta.py's settings at 32²; chains
# --exact_chains).
_EXACT_JOINT_SETTINGS = dict(num_burnin_steps=500, num_results=200,
                             num_leapfrog_steps=16)
# A map is away from the prior bounds when its true σ8 is this many σ_F in.
_INTERIOR_FISHER_STDS = 3.


def noise_std_per_pixel(galaxy_density, sigma_e, pixel_scale_arcmin):
  """σ_pix = σ_e / √(n_gal · pixel area), per shear component."""
  return sigma_e / np.sqrt(galaxy_density * pixel_scale_arcmin**2)


def mode_powers(shear):
  """|κ̂_E,k|² ``[N, N]`` of the orthonormal DFT of the Kaiser-Squires E map."""
  kappa_e, _ = lensing.kaiser_squires(tf.constant(shear, tf.float64))
  return np.abs(np.fft.fft2(kappa_e.numpy(), norm='ortho'))**2


def exact_sigma8_posterior(powers, spectrum, noise_var, bounds, fiducial):
  """Grid and normalised weights of p(σ8 | γ), σ8 uniform over ``bounds``."""
  grid = np.linspace(bounds[0], bounds[1], _GRID_POINTS)
  signal = spectrum.reshape(-1)
  on = signal > 0
  variance = (grid[:, None] / fiducial)**2 * signal[on] + noise_var
  log_like = -0.5 * np.sum(powers.reshape(-1)[on] / variance +
                           np.log(variance), axis=1)
  weights = np.exp(log_like - log_like.max())
  return grid, weights / weights.sum()


def grid_summary(grid, weights, truth, name='sigma8'):
  """A 1-d grid posterior's summary, CDF at the truth and coverage.

  `joint_posterior.grid_parameter_summary`, with the 68/95 % central
  intervals' coverage of the truth (`coverage`).
  """
  part = joint_posterior.grid_parameter_summary([grid], weights, [name],
                                                [truth])[name]
  return dict(part, **coverage(part, truth))


def coverage(part, truth):
  """``covered_68``/``covered_95``: the truth in a summary's intervals."""
  return {f'covered_{level}': bool(part[f'interval_{level}'][0] <= truth <=
                                   part[f'interval_{level}'][1])
          for level in (68, 95)}


def fisher_sigma(spectrum, noise_var, sigma8, fiducial):
  """σ_F = F^(-1/2), F = ½ Σ_k (2 C_k / σ8)² / (C_k + N)², C_k = A S_k."""
  signal = (sigma8 / fiducial)**2 * spectrum.reshape(-1)
  signal = signal[signal > 0]  # k = 0 carries no signal.
  fisher = 0.5 * np.sum((2. * signal / sigma8)**2 / (signal + noise_var)**2)
  return float(1. / np.sqrt(fisher))


def wiener_mean(kappa_e, spectrum, noise_var):
  """Exact posterior mean A S / (A S + N) κ_E of a full-mask white-noise map.

  Args:
    kappa_e: the Kaiser-Squires E map ``[N, N]``.
    spectrum: A S ``[N, N]`` (orthonormal-DFT eigenvalues).
    noise_var: σ_pix².
  """
  modes = np.fft.fft2(kappa_e, norm='ortho')
  return np.real(np.fft.ifft2(spectrum / (spectrum + noise_var) * modes,
                              norm='ortho'))


def wiener_std(spectrum, noise_var):
  """Per-pixel exact posterior std (the same at every pixel)."""
  n2 = spectrum.size
  return float(np.sqrt(np.sum(spectrum * noise_var /
                              (spectrum + noise_var)) / n2))


def kappa_scores(truth, result_mean, interval_68, interval_95):
  """RMSE of the posterior mean and per-pixel 68/95 % coverage."""
  return dict(
      rmse=float(metrics.rmse(truth, result_mean)),
      coverage_68=float(metrics.coverage(truth, *interval_68)),
      coverage_95=float(metrics.coverage(truth, *interval_95)))


def rank_histogram(ranks, num_chains, num_bins):
  """Counts of ``ranks`` (0..num_chains) in ``num_bins`` equal bins, χ² p."""
  if (num_chains + 1) % num_bins:
    raise ValueError(f'rank_bins={num_bins} must divide num_chains + 1 = '
                     f'{num_chains + 1} (equal-width rank bins).')
  counts = np.bincount(np.asarray(ranks) * num_bins // (num_chains + 1),
                       minlength=num_bins)
  return counts, float(scipy.stats.chisquare(counts).pvalue)


def _third(sigma8, bounds):
  """0, 1, 2: the low, middle or high third of the σ8 range."""
  return min(2, int(3 * (sigma8 - bounds[0]) / (bounds[1] - bounds[0])))


def _map_settings(settings):
  """The joint sampler's settings that a κ-only `PosteriorSampler` takes."""
  return {k: v for k, v in settings.items()
          if k not in ('num_final_steps', 'theta_update', 'theta_method')}


def run(num_maps, num_chains, n, pixel_scale, bounds, noise, settings,
        theta_step_size, seed, log=print):
  """Simulates and samples ``num_maps`` maps; returns the per-map records."""
  ell, cl = cosmology.cosmos_convergence_cl()
  fiducial = gaussian.GaussianPrior.from_power_spectrum(ell, cl, n,
                                                        pixel_scale)
  spectrum = gaussian.GaussianPrior.from_power_spectrum(
      ell, cl, n, pixel_scale, dtype=tf.float64).spectrum.numpy()
  joint = conditional.AmplitudeGaussianPrior(
      fiducial, bounds, sigma8_fiducial=SIGMA8_FIDUCIAL)
  sampler = joint_posterior.JointPosteriorSampler(
      joint, theta_step_size=theta_step_size, **settings)
  map_settings = _map_settings(settings)
  fixed_sampler = posterior.PosteriorSampler(
      joint.given([SIGMA8_FIDUCIAL]), **map_settings)
  oracle_spectrum = tf.Variable(fiducial.spectrum)
  oracle_sampler = posterior.PosteriorSampler(
      gaussian.GaussianPrior(oracle_spectrum,
                             pixel_scale_arcmin=pixel_scale), **map_settings)
  noise_var = noise**2
  rng = np.random.default_rng(seed)
  ones = np.ones([n, n])
  records = []
  for i in range(num_maps):
    began = time.perf_counter()
    sigma8 = float(rng.uniform(*bounds))
    amplitude = (sigma8 / SIGMA8_FIDUCIAL)**2
    truth = gaussian.GaussianPrior(amplitude * spectrum).sample(
        seed=(seed, 2 * i)).numpy()
    shear = likelihood.ShearLikelihood(truth, noise * ones, ones).sample(
        seed=(seed, 2 * i + 1)).numpy()
    data = shear_map_lib.ShearMap(
        shear=shear.astype(np.float32),
        noise_std=np.full([n, n], noise, np.float32),
        mask=np.ones([n, n], np.float32), pixel_scale_arcmin=pixel_scale)
    result = sampler.sample(data, num_samples=num_chains, seed=(seed + 1, i))
    samples = result.parameters['sigma8'].numpy().astype(np.float64)
    summary = joint_posterior.parameter_summary(result)['sigma8']
    grid, weights = exact_sigma8_posterior(mode_powers(shear), spectrum,
                                           noise_var, bounds, SIGMA8_FIDUCIAL)
    record = dict(
        sigma8=sigma8, rank=int(np.sum(samples < sigma8)),
        mean=summary['mean'], std=summary['std'],
        **coverage(summary, sigma8),
        exact=grid_summary(grid, weights, sigma8),
        fisher_std=fisher_sigma(spectrum, noise_var, sigma8, SIGMA8_FIDUCIAL),
        num_diverged=result.diagnostics['num_diverged_chains'],
        would_be_acceptance=result.diagnostics.get(
            'mean_would_be_acceptance'))
    record['joint'] = kappa_scores(truth, result.mean.numpy(),
                                   result.interval_68.numpy(),
                                   result.interval_95.numpy())
    kappa_e, _ = lensing.kaiser_squires(tf.constant(shear, tf.float64))
    for name, sigma8_prior, chosen in (
        ('oracle', sigma8, oracle_sampler),
        ('fixed', SIGMA8_FIDUCIAL, fixed_sampler)):
      signal = (sigma8_prior / SIGMA8_FIDUCIAL)**2 * spectrum
      if name == 'oracle':
        oracle_spectrum.assign(signal.astype(np.float32))
      maps = chosen.sample(data, num_samples=num_chains,
                           seed=(seed + 2, i))
      record[name] = kappa_scores(truth, maps.mean.numpy(),
                                  maps.interval_68.numpy(),
                                  maps.interval_95.numpy())
      record[name]['exact_rmse'] = float(metrics.rmse(
          truth, wiener_mean(kappa_e.numpy(), signal, noise_var)))
      record[name]['exact_std'] = wiener_std(signal, noise_var)
    record['seconds'] = time.perf_counter() - began
    records.append(record)
    log(f'map {i}: sigma8 {sigma8:.3f} rank {record["rank"]} mean '
        f'{record["mean"]:.3f} std {record["std"]:.3f} (exact '
        f'{record["exact"]["mean"]:.3f} ± {record["exact"]["std"]:.3f}, '
        f'Fisher {record["fisher_std"]:.3f}) {record["seconds"]:.1f} s')
  return records


def _mean(values):
  return float(np.mean(values)) if len(values) else float('nan')


def _error(values):
  """Standard error of the mean over maps."""
  if len(values) < 2:
    return float('nan')
  return float(np.std(values, ddof=1) / np.sqrt(len(values)))


def summarise(records, num_chains, num_bins, bounds):
  """The tables' numbers from the per-map records."""
  ranks = [r['rank'] for r in records]
  counts, p_value = rank_histogram(ranks, num_chains, num_bins)
  exact_pit = [r['exact']['cdf_at_truth'] for r in records]
  exact_counts = np.histogram(exact_pit, bins=num_bins, range=(0, 1))[0]
  z = [(r['mean'] - r['exact']['mean']) / r['exact']['std'] for r in records]
  # Away from the prior bounds, where they do not truncate the posterior.
  interior = [r for r in records
              if min(r['sigma8'] - bounds[0], bounds[1] - r['sigma8']) >
              _INTERIOR_FISHER_STDS * r['fisher_std']]
  out = dict(
      num_maps=len(records), rank_counts=counts.tolist(),
      rank_p_value=p_value,
      coverage_68=_mean([r['covered_68'] for r in records]),
      coverage_95=_mean([r['covered_95'] for r in records]),
      exact_coverage_68=_mean([r['exact']['covered_68'] for r in records]),
      exact_coverage_95=_mean([r['exact']['covered_95'] for r in records]),
      coverage_68_error=_error([r['covered_68'] for r in records]),
      coverage_95_error=_error([r['covered_95'] for r in records]),
      disagreements_68=int(sum(r['covered_68'] != r['exact']['covered_68']
                               for r in records)),
      disagreements_95=int(sum(r['covered_95'] != r['exact']['covered_95']
                               for r in records)),
      exact_pit_counts=exact_counts.tolist(),
      exact_pit_p_value=float(scipy.stats.chisquare(exact_counts).pvalue),
      mean_bias_in_exact_std=_mean(z),
      mean_bias_spread=float(np.std(z)),
      std_over_exact=_mean([r['std'] / r['exact']['std'] for r in records]),
      std_over_fisher=_mean([r['std'] / r['fisher_std'] for r in records]),
      exact_std_over_fisher=_mean([r['exact']['std'] / r['fisher_std']
                                   for r in records]),
      num_interior=len(interior),
      interior_std_over_fisher=_mean([r['std'] / r['fisher_std']
                                      for r in interior]),
      interior_exact_std_over_fisher=_mean([
          r['exact']['std'] / r['fisher_std'] for r in interior]),
      num_diverged=int(sum(r['num_diverged'] for r in records)),
      seconds_per_map=_mean([r['seconds'] for r in records]))
  thirds = []
  edges = np.linspace(bounds[0], bounds[1], 4)
  for b in range(3):
    chosen = [r for r in records if _third(r['sigma8'], bounds) == b]
    row = dict(range=[float(edges[b]), float(edges[b + 1])],
               num_maps=len(chosen),
               std=_mean([r['std'] for r in chosen]),
               exact_std=_mean([r['exact']['std'] for r in chosen]),
               fisher_std=_mean([r['fisher_std'] for r in chosen]),
               bias_in_exact_std=_mean([
                   (r['mean'] - r['exact']['mean']) / r['exact']['std']
                   for r in chosen]))
    for prior in ('joint', 'oracle', 'fixed'):
      for key in ('coverage_68', 'coverage_95', 'rmse'):
        row[f'{prior}_{key}'] = _mean([r[prior][key] for r in chosen])
      for key in ('coverage_68', 'coverage_95'):
        row[f'{prior}_{key}_error'] = _error([r[prior][key] for r in chosen])
    for prior in ('oracle', 'fixed'):
      row[f'{prior}_exact_rmse'] = _mean([r[prior]['exact_rmse']
                                          for r in chosen])
    row['joint_over_oracle_rmse'] = _mean([
        r['joint']['rmse'] / r['oracle']['rmse'] for r in chosen])
    thirds.append(row)
  out['thirds'] = thirds
  ratio = np.array([r['joint']['rmse'] / r['oracle']['rmse']
                    for r in records])
  out['joint_over_oracle_rmse'] = float(ratio.mean())
  out['joint_over_oracle_rmse_error'] = float(ratio.std() /
                                              np.sqrt(len(ratio)))
  away = [r for r in records if abs(r['sigma8'] - SIGMA8_FIDUCIAL) > 0.1]
  out['num_away'] = len(away)
  out['joint_over_fixed_rmse_away'] = _mean([
      r['joint']['rmse'] / r['fixed']['rmse'] for r in away])
  return out


def _rmse_sentence(s):
  """The κ RMSE ratios over all maps, one sentence (both table printers)."""
  return (f'RMSE joint / oracle over all maps: '
          f'{s["joint_over_oracle_rmse"]:.4f} '
          f'± {s["joint_over_oracle_rmse_error"]:.4f}; joint / fixed on the '
          f'{s["num_away"]} maps with |σ8 − σ8_fid| > 0.1: '
          f'{s["joint_over_fixed_rmse_away"]:.4f}.')


def markdown(summary, num_chains):
  """The markdown tables of a summary."""
  s = summary
  lines = [
      f'σ8 over {s["num_maps"]} maps ({num_chains} joint samples each):',
      '',
      '| | 68 % coverage | 95 % coverage | rank / PIT χ² p |',
      '|---|---|---|---|',
      f'| joint sampler | {s["coverage_68"]:.2f} ± '
      f'{s["coverage_68_error"]:.2f} | {s["coverage_95"]:.2f} ± '
      f'{s["coverage_95_error"]:.2f} | {s["rank_p_value"]:.3f} |',
      f'| exact p(σ8 \\| γ) (grid) | {s["exact_coverage_68"]:.2f} | '
      f'{s["exact_coverage_95"]:.2f} | {s["exact_pit_p_value"]:.3f} |',
      '',
      f'Rank counts ({len(s["rank_counts"])} bins): {s["rank_counts"]}; '
      f'exact PIT counts: {s["exact_pit_counts"]}. Maps where the sampler\'s '
      f'and the exact interval disagree on covering the truth: '
      f'{s["disagreements_68"]} (68 %), {s["disagreements_95"]} (95 %).',
      f'Sampler mean − exact mean: {s["mean_bias_in_exact_std"]:+.2f} ± '
      f'{s["mean_bias_spread"]:.2f} (spread) exact std; sampler std / exact '
      f'std {s["std_over_exact"]:.2f}; sampler std / σ_F '
      f'{s["std_over_fisher"]:.2f}; exact std / σ_F '
      f'{s["exact_std_over_fisher"]:.2f} (on the {s["num_interior"]} maps '
      f'with σ8 more than {_INTERIOR_FISHER_STDS:g} σ_F from both bounds: '
      f'{s["interior_std_over_fisher"]:.2f} and '
      f'{s["interior_exact_std_over_fisher"]:.2f}); diverged chains '
      f'{s["num_diverged"]}; {s["seconds_per_map"]:.1f} s per map.',
      '',
      '| σ8 third | maps | σ8 std: joint / exact / Fisher | joint − exact '
      'mean [exact std] |',
      '|---|---|---|---|']
  for row in s['thirds']:
    lines.append(
        f'| {row["range"][0]:.3f}–{row["range"][1]:.3f} | {row["num_maps"]} '
        f'| {row["std"]:.4f} / {row["exact_std"]:.4f} / '
        f'{row["fisher_std"]:.4f} | {row["bias_in_exact_std"]:+.2f} |')
  lines += [
      '',
      '| σ8 third | κ 68 %: joint / oracle / fixed | κ 95 %: joint / oracle '
      '/ fixed |',
      '|---|---|---|']
  for row in s['thirds']:
    cells = []
    for level in ('68', '95'):
      cells.append(' / '.join(
          f'{row[f"{p}_coverage_{level}"]:.3f} ± '
          f'{row[f"{p}_coverage_{level}_error"]:.3f}'
          for p in ('joint', 'oracle', 'fixed')))
    lines.append(f'| {row["range"][0]:.3f}–{row["range"][1]:.3f} | '
                 f'{cells[0]} | {cells[1]} |')
  lines += [
      '',
      '| σ8 third | RMSE ×10³: joint / oracle / fixed (sampled) | exact '
      'Wiener oracle / fixed | joint / oracle |',
      '|---|---|---|---|']
  for row in s['thirds']:
    lines.append(
        f'| {row["range"][0]:.3f}–{row["range"][1]:.3f} | '
        f'{1e3 * row["joint_rmse"]:.3f} / {1e3 * row["oracle_rmse"]:.3f} / '
        f'{1e3 * row["fixed_rmse"]:.3f} | '
        f'{1e3 * row["oracle_exact_rmse"]:.3f} / '
        f'{1e3 * row["fixed_exact_rmse"]:.3f} | '
        f'{row["joint_over_oracle_rmse"]:.4f} |')
  lines += ['', _rmse_sentence(s)]
  return '\n'.join(lines)


def mode_power(theta, n, pixel_scale):
  """C_k(θ) ``[N, N]``, the orthonormal-DFT power of convergence_cl(θ)."""
  ell, cl = cosmology.convergence_cl(*theta)
  return gaussian.GaussianPrior.from_power_spectrum(
      ell, cl, n, pixel_scale, dtype=tf.float64).spectrum.numpy()


def fisher_stds(theta, n, pixel_scale, noise_var, steps=(0.004, 0.004)):
  """Fisher widths of θ from the mode powers alone: marginal, conditional.

  F_ij = ½ Σ_k ∂_i C_k ∂_j C_k / (C_k + N)² over the N² − 1 modes with
  signal, ∂_i by central differences of ``steps`` (one-sided at a bound of
  `cosmology.COSMO_PARAMETER_BOUNDS`). Returns two ``[D]`` arrays: the
  marginal σ_i = √(F⁻¹)_ii (the other parameters unknown) and the
  conditional 1/√F_ii (the others fixed at their true values). Ωm and σ8
  are nearly degenerate in C_ℓ, so the marginal widths are much the larger.
  """
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS)
  power = mode_power(theta, n, pixel_scale).reshape(-1)
  on = power > 0
  derivatives = []
  for i, step in enumerate(steps):
    up, down = np.array(theta, float), np.array(theta, float)
    up[i] = min(theta[i] + step, bounds[i, 1])
    down[i] = max(theta[i] - step, bounds[i, 0])
    derivatives.append(
        (mode_power(up, n, pixel_scale) - mode_power(down, n, pixel_scale)
         ).reshape(-1)[on] / (up[i] - down[i]))
  derivatives = np.array(derivatives)
  fisher = 0.5 * np.einsum('ik,jk->ij', derivatives / (power[on] + noise_var),
                           derivatives / (power[on] + noise_var))
  return (np.sqrt(np.diag(np.linalg.inv(fisher))),
          1. / np.sqrt(np.diag(fisher)))


class _OracleNetwork(learned_joint.ConditionedScoreNetwork):
  """``given(θ)`` whose θ is a `tf.Variable`, set per map: traced once."""

  def __init__(self, network, theta):
    super().__init__(network, theta)
    self.variable = tf.Variable(self._theta, dtype=network.compute_dtype)

  def _theta_tensor(self):
    return self.variable


def power_spectrum_summary(likelihood, data, noise, theta):
  """The power-spectrum posterior's summary per θ name, for one map.

  `joint_posterior.grid_parameter_summary` of ``likelihood.grid_posterior``
  (81 cells per axis) given the data's Kaiser-Squires E-mode map, with the
  coverage of the true ``theta``: what the map's power spectrum alone says
  about θ (`power_spectrum_likelihood`).
  """
  kappa_e, _ = lensing.kaiser_squires(tf.constant(data.shear, tf.float64))
  centres, weights = likelihood.grid_posterior(kappa_e, noise)
  names = cosmology.COSMO_PARAMETER_NAMES
  summary = joint_posterior.grid_parameter_summary(centres, weights, names,
                                                   theta)
  return {name: dict(summary[name], **coverage(summary[name], theta[d]))
          for d, name in enumerate(names)}


def _theta_record(first_seed, i, theta, parameters, summary, names, n,
                  pixel_scale, noise, power_spectrum):
  """A map's θ record: rank, mean, std, coverage and Fisher width per name.

  The rank is among ``parameters``' draws; the rest is ``summary``'s, with
  the power-spectrum posterior's summary (`power_spectrum_summary`) beside.
  """
  fisher, fisher_conditional = fisher_stds(theta, n, pixel_scale, noise**2)
  record = dict(seed=first_seed + i, theta=theta.tolist())
  for d, name in enumerate(names):
    samples = np.asarray(parameters[name], np.float64)
    part = summary[name]
    record[name] = dict(
        truth=float(theta[d]), rank=int(np.sum(samples < theta[d])),
        mean=part['mean'], std=part['std'], fisher_std=float(fisher[d]),
        fisher_std_conditional=float(fisher_conditional[d]),
        **coverage(part, theta[d]),
        power_spectrum=power_spectrum[name])
  return record


def learned_arms(arms, marginal, exact_chains):
  """The κ arms of a learned run, checked (``--arms``; see its help).

  Args:
    arms: None (the default set) or names from `KAPPA_ARMS`.
    marginal: whether a marginal network is given.
    exact_chains: the chains of the exact arms.

  Returns:
    tuple of arm names in `KAPPA_ARMS` order.

  Raises:
    ValueError: for an unknown arm, an arm whose network or chains are
      missing, or neither joint nor exact_joint (nothing gives θ).
  """
  if arms is None:
    arms = ['joint', 'oracle', 'fixed'] + (['marginal'] if marginal else []) + (
        ['exact'] if exact_chains > 0 else [])
  unknown = sorted(set(arms) - set(KAPPA_ARMS))
  if unknown:
    raise ValueError(f'--arms {unknown} unknown; expected names from '
                     f'{", ".join(KAPPA_ARMS)}.')
  if 'marginal' in arms and not marginal:
    raise ValueError('--arms=marginal needs --marginal_network.')
  exact = sorted({'exact', 'exact_joint'} & set(arms))
  if exact and exact_chains < 2:
    raise ValueError(f'--arms {exact} need --exact_chains >= 2, got '
                     f'{exact_chains}.')
  if not {'joint', 'exact_joint'} & set(arms):
    raise ValueError(f'--arms {list(arms)} must hold joint or exact_joint '
                     '(the θ posterior of the records).')
  return tuple(a for a in KAPPA_ARMS if a in arms)


def run_learned(num_maps, num_chains, paths, noise, settings,
                theta_step_size, seed, first_seed, map_size=32,
                theta_only=False, grid_points=None, exact_chains=0,
                arms=None, log=print, on_record=None):
  """SBC of the learned joint prior on held-out cosmo maps; per-map records.

  Args:
    paths: dict with the ``conditional``, ``ratio`` and optional
      ``marginal`` network files.
    map_size: N of the cosmo_<N> maps (0.8 arcmin pixels).
    theta_only: sample θ only, by `theta_posterior.sample_theta_posterior`
      (the θ stage of the marginal route, the same draws' distribution as
      `JointPosteriorSampler(theta_update='marginal')`), and no κ arm.
    grid_points: with ``theta_only``, the grid's cells per axis.
    exact_chains: the chains of the exact arms: ``exact``, the exact
      posterior of the map's own lognormal field at the true θ
      (`lognormal_posterior`), the reference the oracle arm approximates,
      and ``exact_joint``, the exact posterior marginalised over θ
      (`lognormal_cosmology.exact_joint_posterior`), the joint arm's.
    arms: the κ arms, as `learned_arms` (None: joint, oracle, fixed, with
      marginal and exact when their network or chains are given). Without
      joint, the θ records are exact_joint's, ranked among ``num_chains``
      of its draws evenly spaced over the kept ones.
    on_record: None, or called with the list of records after each map.
    Others as in `run`; maps are those of seeds first_seed + i.
  """
  arms = learned_arms(arms, bool(paths.get('marginal')), exact_chains)
  network = load_score_network(paths['conditional'])
  joint = learned_joint.LearnedJointPrior(network, ratio=paths['ratio'])
  n, pixel_scale = cosmology.cosmo_kappa_setting(map_size)[:2]
  names = joint.theta_names
  sampler = joint_posterior.JointPosteriorSampler(
      joint, theta_step_size=theta_step_size, **settings)
  map_settings = _map_settings(settings)
  fiducial = np.array([cosmology.FIDUCIAL_OMEGA_M, SIGMA8_FIDUCIAL])
  oracle = _OracleNetwork(network, fiducial)
  prior_of = {'oracle': lambda: oracle,
              'fixed': lambda: joint.given(fiducial),
              'marginal': lambda: load_score_network(paths['marginal'])}
  annealed = {a: posterior.PosteriorSampler(prior_of[a](), **map_settings)
              for a in arms if a in prior_of}
  cosmo_field = lognormal_cosmology.CosmoLognormalField(n, pixel_scale)
  ps_likelihood = power_spectrum_likelihood.PowerSpectrumLikelihood(
      n, pixel_scale)
  records = []
  for i in range(num_maps):
    began = time.perf_counter()
    theta, truth, data = testing.cosmo_problem(first_seed + i, n,
                                               pixel_scale, noise, (seed, i))
    if theta_only:
      draws, diagnostics = theta_posterior.sample_theta_posterior(
          data, joint, num_samples=num_chains, seed=(seed + 1, i),
          method=settings['theta_method'], num_points=grid_points)
      parameters = {name: draws[:, d].numpy() for d, name in enumerate(names)}
      record = _theta_record(
          first_seed, i, theta, parameters, joint_posterior.parameter_summary(
              types.SimpleNamespace(parameters=parameters)),
          names, n, pixel_scale, noise,
          power_spectrum_summary(ps_likelihood, data, noise, theta))
      record.update(num_diverged=0, would_be_acceptance=None,
                    theta_diagnostics=diagnostics)
    else:
      results = {}
      if 'joint' in arms:
        results['joint'] = sampler.sample(data, num_samples=num_chains,
                                          seed=(seed + 1, i))
      oracle.variable.assign(theta)
      for name, chosen in annealed.items():
        results[name] = chosen.sample(data, num_samples=num_chains,
                                      seed=(seed + 2, i))
      if 'exact' in arms:
        results['exact'] = lognormal_posterior.lognormal_posterior(
            data, field=lognormal.cosmo_field(*theta, n, pixel_scale),
            num_chains=exact_chains, seed=(seed + 3, i), progress=False)
      if 'exact_joint' in arms:
        results['exact_joint'] = lognormal_cosmology.exact_joint_posterior(
            data, cosmo_field, num_chains=exact_chains, seed=(seed + 4, i),
            **_EXACT_JOINT_SETTINGS)
      source = results.get('joint', results.get('exact_joint'))
      draws = {k: np.asarray(v) for k, v in source.parameters.items()}
      if 'joint' not in arms:  # Ranks among num_chains of the draws.
        every = np.linspace(0, len(draws[names[0]]) - 1,
                            num_chains).round().astype(int)
        draws = {k: v[every] for k, v in draws.items()}
      record = _theta_record(
          first_seed, i, theta, draws,
          joint_posterior.parameter_summary(source), names, n, pixel_scale,
          noise, power_spectrum_summary(ps_likelihood, data, noise, theta))
      record.update(
          theta_from='joint' if 'joint' in arms else 'exact_joint',
          num_diverged=source.diagnostics.get('num_diverged_chains', 0),
          would_be_acceptance=source.diagnostics.get(
              'mean_would_be_acceptance'))
      for name in arms:
        record[name] = kappa_scores(truth, results[name].mean.numpy(),
                                    results[name].interval_68.numpy(),
                                    results[name].interval_95.numpy())
    record['seconds'] = time.perf_counter() - began
    records.append(record)
    if on_record is not None:
      on_record(records)
    kappa = '' if theta_only else '; κ RMSE ×10³ ' + ', '.join(
        f'{a} {1e3 * record[a]["rmse"]:.2f}' for a in arms)
    log(f'map {i} (seed {first_seed + i}): ' + ', '.join(
        f'{name} {record[name]["truth"]:.3f} rank {record[name]["rank"]} '
        f'mean {record[name]["mean"]:.3f} ± {record[name]["std"]:.3f} '
        f'(Fisher {record[name]["fisher_std"]:.3f})' for name in names) +
        f'{kappa} {record["seconds"]:.1f} s')
  return records


def summarise_learned(records, num_chains, num_bins):
  """The learned-prior tables' numbers from the per-map records."""
  names = cosmology.COSMO_PARAMETER_NAMES
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS)
  arms = [a for a in KAPPA_ARMS if a in records[0]]
  out = dict(num_maps=len(records), arms=arms, parameters={})
  for d, name in enumerate(names):
    part = [r[name] for r in records]
    counts, p_value = rank_histogram([p['rank'] for p in part], num_chains,
                                     num_bins)
    out['parameters'][name] = dict(
        rank_counts=counts.tolist(), rank_p_value=p_value,
        coverage_68=_mean([p['covered_68'] for p in part]),
        coverage_95=_mean([p['covered_95'] for p in part]),
        coverage_68_error=_error([p['covered_68'] for p in part]),
        coverage_95_error=_error([p['covered_95'] for p in part]),
        bias_in_std=_mean([(p['mean'] - p['truth']) / p['std']
                           for p in part]),
        bias_in_std_error=_error([(p['mean'] - p['truth']) / p['std']
                                  for p in part]),
        std=_mean([p['std'] for p in part]),
        fisher_std=_mean([p['fisher_std'] for p in part]),
        fisher_std_conditional=_mean([p['fisher_std_conditional']
                                      for p in part]),
        prior_std=float((bounds[d, 1] - bounds[d, 0]) / np.sqrt(12.)))
    if all('power_spectrum' in p for p in part):  # Records since it exists.
      spectrum = [p['power_spectrum'] for p in part]
      ratios = [p['std'] / q['std'] for p, q in zip(part, spectrum)]
      out['parameters'][name]['power_spectrum'] = dict(
          coverage_68=_mean([q['covered_68'] for q in spectrum]),
          coverage_95=_mean([q['covered_95'] for q in spectrum]),
          coverage_68_error=_error([q['covered_68'] for q in spectrum]),
          coverage_95_error=_error([q['covered_95'] for q in spectrum]),
          std=_mean([q['std'] for q in spectrum]),
          std_ratio=_mean(ratios), std_ratio_error=_error(ratios),
          std_ratio_median=float(np.median(ratios)))
  thirds = []
  edges = np.linspace(bounds[1, 0], bounds[1, 1], 4)
  for b in range(3):
    chosen = [r for r in records
              if _third(r['sigma8']['truth'], bounds[1]) == b]
    row = dict(range=[float(edges[b]), float(edges[b + 1])],
               num_maps=len(chosen),
               sigma8_std=_mean([r['sigma8']['std'] for r in chosen]),
               sigma8_fisher_std=_mean([r['sigma8']['fisher_std']
                                        for r in chosen]))
    for arm in arms:
      for key in ('coverage_68', 'coverage_95', 'rmse'):
        row[f'{arm}_{key}'] = _mean([r[arm][key] for r in chosen])
      for key in ('coverage_68', 'coverage_95'):
        row[f'{arm}_{key}_error'] = _error([r[arm][key] for r in chosen])
    if {'joint', 'oracle'} <= set(arms):
      row['joint_over_oracle_rmse'] = _mean([
          r['joint']['rmse'] / r['oracle']['rmse'] for r in chosen])
    thirds.append(row)
  out['thirds'] = thirds
  out['seconds_per_map'] = _mean([r['seconds'] for r in records])
  if not arms:  # --theta_only
    return out
  out['theta_from'] = records[0].get('theta_from', 'joint')
  if {'joint', 'oracle', 'fixed'} <= set(arms):
    ratio = [r['joint']['rmse'] / r['oracle']['rmse'] for r in records]
    out['joint_over_oracle_rmse'] = _mean(ratio)
    out['joint_over_oracle_rmse_error'] = _error(ratio)
    away = [r for r in records
            if abs(r['sigma8']['truth'] - SIGMA8_FIDUCIAL) > 0.1]
    out['num_away'] = len(away)
    out['joint_over_fixed_rmse_away'] = _mean([
        r['joint']['rmse'] / r['fixed']['rmse'] for r in away])
  out['num_diverged'] = int(sum(r['num_diverged'] for r in records))
  out['would_be_acceptance'] = _mean([r['would_be_acceptance']
                                      for r in records
                                      if r['would_be_acceptance'] is not None])
  return out


def paired_kappa(records, reference):
  """κ arms of ``records`` against those of ``reference``, map by map.

  For each arm a of ``records`` and each arm b in {a, 'exact',
  'exact_joint'} of ``reference``, over the maps (by seed) where
  ``records`` holds a and ``reference`` holds b (runs with and without the
  exact arms pool): the mean ± standard error of the differences of
  per-pixel 68/95 % coverage (a − b) and of the RMSE ratios a / b, and
  their median. Pairing removes the map and noise scatter when both runs
  saw the same maps and noise.

  Args:
    records, reference: lists of per-map records (``--output``'s ``maps``).

  Returns:
    list of dicts: ``arm``, ``reference_arm``, ``num_maps``,
    ``coverage_68_difference`` (and ``_error``), the same for 95 %,
    ``rmse_ratio``, ``rmse_ratio_error``, ``rmse_ratio_median``, and
    ``thirds``: per third of the σ8 range (by the records' true σ8, when
    they hold it), ``num_maps`` and the 68 % difference and its error.
  """
  by_seed = {r['seed']: r for r in reference}
  common = [(r, by_seed[r['seed']]) for r in records if r['seed'] in by_seed]
  if not common:
    raise ValueError('the two record sets share no map (seed); pair runs '
                     'with the same --first_seed.')
  rows = []
  for arm in KAPPA_ARMS:
    for reference_arm in dict.fromkeys([arm, 'exact', 'exact_joint']):
      pairs = [(a, b) for a, b in common if arm in a and reference_arm in b]
      if not pairs:
        continue
      row = dict(arm=arm, reference_arm=reference_arm, num_maps=len(pairs))
      for level in ('68', '95'):
        key = f'coverage_{level}'
        differences = [a[arm][key] - b[reference_arm][key] for a, b in pairs]
        row[f'{key}_difference'] = _mean(differences)
        row[f'{key}_difference_error'] = _error(differences)
      ratios = [a[arm]['rmse'] / b[reference_arm]['rmse'] for a, b in pairs]
      row.update(rmse_ratio=_mean(ratios), rmse_ratio_error=_error(ratios),
                 rmse_ratio_median=float(np.median(ratios)), thirds=[])
      if all('sigma8' in a for a, _ in pairs):
        bounds = cosmology.COSMO_PARAMETER_BOUNDS[1]
        for third in range(3):
          differences = [
              a[arm]['coverage_68'] - b[reference_arm]['coverage_68']
              for a, b in pairs
              if _third(a['sigma8']['truth'], bounds) == third]
          row['thirds'].append(dict(
              num_maps=len(differences),
              coverage_68_difference=_mean(differences),
              coverage_68_difference_error=_error(differences)))
      rows.append(row)
  return rows


def markdown_paired(rows):
  """The markdown tables of `paired_kappa`."""
  lines = ['| arm − reference arm | maps | κ 68 % difference | κ 95 % '
           'difference | RMSE ratio (median) |', '|---|---|---|---|---|']
  for r in rows:
    lines.append(
        f'| {r["arm"]} − {r["reference_arm"]} | {r["num_maps"]} | '
        f'{r["coverage_68_difference"]:+.4f} ± '
        f'{r["coverage_68_difference_error"]:.4f} | '
        f'{r["coverage_95_difference"]:+.4f} ± '
        f'{r["coverage_95_difference_error"]:.4f} | '
        f'{r["rmse_ratio"]:.4f} ± {r["rmse_ratio_error"]:.4f} '
        f'({r["rmse_ratio_median"]:.4f}) |')
  with_thirds = [r for r in rows if r['thirds']]
  if with_thirds:
    lines += ['', '| arm − reference arm | κ 68 % difference by σ8 third '
              '(maps): low / middle / high |', '|---|---|']
    lines += [f'| {r["arm"]} − {r["reference_arm"]} | ' + ' / '.join(
        f'{t["coverage_68_difference"]:+.4f} ± '
        f'{t["coverage_68_difference_error"]:.4f} ({t["num_maps"]})'
        for t in r['thirds']) + ' |' for r in with_thirds]
  return '\n'.join(lines)


def markdown_learned(summary, num_chains):
  """The markdown tables of a learned-prior summary."""
  s = summary
  source = ('joint samples' if s.get('theta_from', 'joint') == 'joint' else
            'draws of the exact joint posterior')
  lines = [
      f'θ over {s["num_maps"]} held-out cosmo maps (ranks among '
      f'{num_chains} {source} each):',
      '',
      '| parameter | 68 % coverage | 95 % coverage | rank χ² p | (mean − '
      'truth) / std | posterior std / σ_F marginal / σ_F other fixed / '
      'prior std |',
      '|---|---|---|---|---|---|']
  for name, p in s['parameters'].items():
    lines.append(
        f'| {name} | {p["coverage_68"]:.2f} ± {p["coverage_68_error"]:.2f} '
        f'| {p["coverage_95"]:.2f} ± {p["coverage_95_error"]:.2f} | '
        f'{p["rank_p_value"]:.3f} | {p["bias_in_std"]:+.2f} ± '
        f'{p["bias_in_std_error"]:.2f} | {p["std"]:.4f} / '
        f'{p["fisher_std"]:.4f} / {p["fisher_std_conditional"]:.4f} / '
        f'{p["prior_std"]:.4f} |')
  lines += [''] + [f'{name}: rank counts {p["rank_counts"]}.'
                   for name, p in s['parameters'].items()]
  spectrum = {name: p['power_spectrum'] for name, p in s['parameters'].items()
              if 'power_spectrum' in p}
  if spectrum:
    lines += ['', 'The power-spectrum posterior on the same maps '
              '(power_spectrum_likelihood; std ratio: this posterior\'s std '
              'over it, per map):', '',
              '| parameter | 68 % coverage | 95 % coverage | mean std | '
              'std ratio mean (median) |', '|---|---|---|---|---|']
    lines += [
        f'| {name} | {q["coverage_68"]:.2f} ± {q["coverage_68_error"]:.2f} | '
        f'{q["coverage_95"]:.2f} ± {q["coverage_95_error"]:.2f} | '
        f'{q["std"]:.4f} | {q["std_ratio"]:.3f} ± {q["std_ratio_error"]:.3f} '
        f'({q["std_ratio_median"]:.3f}) |' for name, q in spectrum.items()]
  if not s['arms']:  # --theta_only
    lines += ['', '| σ8 third | maps | σ8 std / σ_F marginal |', '|---|---|---|']
    lines += [f'| {row["range"][0]:.3f}–{row["range"][1]:.3f} | '
              f'{row["num_maps"]} | {row["sigma8_std"]:.4f} / '
              f'{row["sigma8_fisher_std"]:.4f} |' for row in s['thirds']]
    lines += ['', f'{s["seconds_per_map"]:.1f} s per map (θ only).']
    return '\n'.join(lines)
  lines += [
      f'Diverged chains {s["num_diverged"]}; mean would-be acceptance '
      f'{s["would_be_acceptance"]:.2f}; {s["seconds_per_map"]:.1f} s per map '
      f'(all arms).',
      '']
  arms = s['arms']
  lines += [
      f'| σ8 third | maps | σ8 std / σ_F marginal | κ 68 %: '
      f'{" / ".join(arms)} | '
      f'κ 95 %: {" / ".join(arms)} |',
      '|---|---|---|---|---|']
  for row in s['thirds']:
    cells = [' / '.join(f'{row[f"{a}_coverage_{level}"]:.3f} ± '
                        f'{row[f"{a}_coverage_{level}_error"]:.3f}'
                        for a in arms) for level in ('68', '95')]
    lines.append(
        f'| {row["range"][0]:.3f}–{row["range"][1]:.3f} | {row["num_maps"]} '
        f'| {row["sigma8_std"]:.4f} / {row["sigma8_fisher_std"]:.4f} | '
        f'{cells[0]} | {cells[1]} |')
  ratio = 'joint_over_oracle_rmse' in s
  lines += [
      '',
      f'| σ8 third | κ RMSE ×10³: {" / ".join(arms)} |' +
      (' joint / oracle |' if ratio else ''),
      '|---|---|' + ('---|' if ratio else '')]
  for row in s['thirds']:
    lines.append(
        f'| {row["range"][0]:.3f}–{row["range"][1]:.3f} | ' +
        ' / '.join(f'{1e3 * row[f"{a}_rmse"]:.3f}' for a in arms) + ' |' +
        (f' {row["joint_over_oracle_rmse"]:.4f} |' if ratio else ''))
  if ratio:
    lines += ['', _rmse_sentence(s)]
  return '\n'.join(lines)


def _saved_runs(paths):
  """The JSON files written by --output, from a comma-separated list."""
  runs = []
  for path in paths.split(','):
    with open(path, encoding='utf-8') as f:
      runs.append(json.load(f))
  return runs


def _main_learned(noise, settings):
  """--prior=learned: samples (or reprints --records) and prints the tables."""
  if FLAGS.records:
    # Runs over consecutive seed ranges (--first_seed) pool their maps.
    runs = _saved_runs(FLAGS.records)
    maps = [record for run in runs for record in run['maps']]
    num_chains = {run['summary']['flags']['num_chains'] for run in runs}
    if len(num_chains) != 1:
      raise ValueError(f'--records files have different num_chains '
                       f'{sorted(num_chains)}; their ranks do not pool.')
    num_chains = num_chains.pop()
    print(markdown_learned(summarise_learned(maps, num_chains,
                                             FLAGS.rank_bins), num_chains))
    if FLAGS.paired_with:
      reference = [record for run in _saved_runs(FLAGS.paired_with)
                   for record in run['maps']]
      print(f'\nPaired with {FLAGS.paired_with}:\n')
      print(markdown_paired(paired_kappa(maps, reference)))
    return
  if not (FLAGS.conditional_network and FLAGS.ratio_network):
    raise ValueError('--prior=learned needs --conditional_network and '
                     '--ratio_network (.keras files).')
  print(f'cosmo_{FLAGS.map_size} maps from seed {FLAGS.first_seed}, '
        f'σ_pix = {noise:.4f}, '
        f'full mask, θ ~ U{cosmology.COSMO_PARAMETER_BOUNDS}')
  began = time.perf_counter()

  def summary_of(records):
    summary = summarise_learned(records, FLAGS.num_chains, FLAGS.rank_bins)
    summary.update(wall_time_s=time.perf_counter() - began, noise_std=noise,
                   flags={f: FLAGS[f].value for f in (
                       'num_maps', 'num_chains', 'sigma_max', 'sigma_min',
                       'num_levels', 'num_final_steps', 'num_leapfrog_steps',
                       'step_size_factor', 'metropolis_correction',
                       'theta_step_size', 'seed',
                       'theta_update', 'theta_method', 'first_seed',
                       'galaxy_density', 'sigma_e',
                       'conditional_network', 'ratio_network',
                       'marginal_network', 'map_size', 'theta_only',
                       'grid_points', 'exact_chains', 'arms')})
    return summary

  def save(records):
    # After every map: a run stopped early keeps the maps it finished.
    if FLAGS.output:
      outputs.write_json_atomic(
          FLAGS.output, dict(summary=summary_of(records), maps=records),
          indent=1)

  records = run_learned(
      FLAGS.num_maps, FLAGS.num_chains,
      dict(conditional=FLAGS.conditional_network, ratio=FLAGS.ratio_network,
           marginal=FLAGS.marginal_network),
      noise, settings, FLAGS.theta_step_size, FLAGS.seed, FLAGS.first_seed,
      map_size=FLAGS.map_size, theta_only=FLAGS.theta_only,
      grid_points=FLAGS.grid_points, exact_chains=FLAGS.exact_chains,
      arms=FLAGS.arms, on_record=save)
  print(markdown_learned(summary_of(records), FLAGS.num_chains))
  print(f'wall time {time.perf_counter() - began:.0f} s')


def _figure(path, summary, num_chains):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  counts = np.array(summary['rank_counts'])
  exact = np.array(summary['exact_pit_counts'])
  bins = len(counts)
  expected = summary['num_maps'] / bins
  band = scipy.stats.binom.ppf([0.005, 0.995], summary['num_maps'],
                               1. / bins)
  fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
  for ax, values, title in (
      (axes[0], counts, f'joint sampler: rank of true σ8 among {num_chains}'),
      (axes[1], exact, 'exact p(σ8 | γ): CDF at true σ8')):
    ax.bar(np.arange(bins), values, width=0.9, color='C0')
    ax.axhline(expected, color='k', lw=1, label='uniform')
    ax.axhspan(*band, color='0.85', zorder=0, label='99 % binomial range')
    ax.set_title(title, fontsize=9)
    ax.set_xlabel('bin')
  axes[0].set_ylabel('maps')
  axes[0].legend(fontsize=8, loc='lower right')
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  bounds = tuple(float(b) for b in FLAGS.sigma8_range)
  if len(bounds) != 2 or not 0 < bounds[0] < bounds[1]:
    raise ValueError('--sigma8_range must be two numbers 0 < lower < upper, '
                     f'got {FLAGS.sigma8_range}.')
  # Fails before any sampling when the bins do not divide the ranks.
  rank_histogram([0], FLAGS.num_chains, FLAGS.rank_bins)
  settings = dict(
      schedule=GeometricSchedule(FLAGS.sigma_max, FLAGS.sigma_min,
                                 num_levels=FLAGS.num_levels),
      num_final_steps=FLAGS.num_final_steps,
      theta_update=FLAGS.theta_update,
      theta_method=FLAGS.theta_method,
      num_leapfrog_steps=FLAGS.num_leapfrog_steps,
      step_size_factor=FLAGS.step_size_factor,
      metropolis_correction=FLAGS.metropolis_correction)
  if FLAGS.prior == 'learned':
    _main_learned(noise_std_per_pixel(
        FLAGS.galaxy_density, FLAGS.sigma_e,
        cosmology.cosmo_kappa_setting(FLAGS.map_size).pixel_scale_arcmin),
        settings)
    return
  noise = noise_std_per_pixel(FLAGS.galaxy_density, FLAGS.sigma_e,
                              FLAGS.pixel_scale_arcmin)
  if FLAGS.records:
    with open(FLAGS.records, encoding='utf-8') as f:
      saved = json.load(f)
    flag_values = saved['summary']['flags']
    summary = summarise(saved['maps'], flag_values['num_chains'],
                        FLAGS.rank_bins, tuple(saved['summary']['bounds']))
    print(markdown(summary, flag_values['num_chains']))
    if FLAGS.figure:
      _figure(FLAGS.figure, summary, flag_values['num_chains'])
    return
  print(f'{FLAGS.map_size}² maps of {FLAGS.pixel_scale_arcmin} arcmin, '
        f'σ_pix = {noise:.4f}, full mask, σ8 ~ U{bounds}, σ8_fid = '
        f'{SIGMA8_FIDUCIAL}')
  began = time.perf_counter()
  records = run(FLAGS.num_maps, FLAGS.num_chains, FLAGS.map_size,
                FLAGS.pixel_scale_arcmin, bounds, noise, settings,
                FLAGS.theta_step_size, FLAGS.seed)
  wall = time.perf_counter() - began
  summary = summarise(records, FLAGS.num_chains, FLAGS.rank_bins, bounds)
  summary.update(wall_time_s=wall, noise_std=noise, bounds=list(bounds),
                 sigma8_fiducial=SIGMA8_FIDUCIAL,
                 flags={f: FLAGS[f].value for f in (
                     'num_maps', 'num_chains', 'map_size',
                     'pixel_scale_arcmin', 'sigma_max', 'sigma_min',
                     'num_levels', 'num_final_steps', 'num_leapfrog_steps',
                     'step_size_factor', 'metropolis_correction',
                     'theta_step_size', 'seed',
                     'theta_update', 'theta_method')})
  print(markdown(summary, FLAGS.num_chains))
  print(f'wall time {wall:.0f} s')
  if FLAGS.output:
    outputs.write_json_atomic(FLAGS.output,
                              dict(summary=summary, maps=records), indent=1)
  if FLAGS.figure:
    _figure(FLAGS.figure, summary, FLAGS.num_chains)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
