r"""The exact lognormal posterior beside Kaiser-Squires and the Wiener filter.

For each shift λ, the truths are held-out test maps of the synthetic dataset
(`LognormalField` at 128² pixels of 0.8 arcmin, white noise of the
``lognormal_128`` test-split seeds, so every λ sees the same latent
structures), observed on a COSMOS mask with uniform shape noise
σ_e / √(n̄ Δ²) per component (n̄ = 64 galaxies/arcmin², σ_e = 0.30 per
component unless ``--sigma_e``; the shape noise has its own random stream).
With ``--mask=cosmos`` (default when the file is there) the real mask (360²
pixels of 0.29 arcmin = 104.4 arcmin) is area-resampled onto the central
102.4 arcmin: each 0.8-arcmin pixel gets the exact overlap-weighted fraction
of observed 0.29-arcmin pixels and is observed where that fraction is >= 0.5
(the 1-arcmin border lost on each side holds no galaxy).
``--mask=procedural`` uses `survey.cosmos_like_survey` instead (the demo
survey, Poisson galaxy counts).

Estimators, each compared with the truth on the observed pixels (means
removed: RMSE and Pearson r of `metrics`):
  KS: `kaiser_squires` E mode with Gaussian smoothing.
  Wiener: `wiener_filter` with the Gaussian prior of the same κ spectrum
    (``field.power_grid``); its 68/95 % intervals are mean ± 1/1.96 σ of the
    Gaussian posterior, σ from `gaussian_posterior_samples`.
  Exact: `lognormal_posterior` (HMC), all maps of a λ in one batch.
Prints one markdown row per λ with means ± standard errors over maps, then
the sampler's cost.

  python benchmarks/bench_lognormal_posterior.py --num_maps=6
"""

import os
import pathlib
import platform
import time

from absl import app
from absl import flags
from astropy.io import fits
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfp_massmap import gaussian_prior
from tfp_massmap import lensing
from tfp_massmap import lognormal
from tfp_massmap import metrics
from tfp_massmap import survey
from tfp_massmap import wiener
from tfp_massmap.datasets import lognormal_kappa
from tfp_massmap.lognormal_posterior import lognormal_posterior

N = 128
PIXEL_ARCMIN = 0.8
COSMOS_PIXEL_ARCMIN = 0.29
GALAXY_DENSITY = 64.  # per arcmin²

_DEFAULT_MASK = pathlib.Path(
    os.environ.get('TFP_MASSMAP_SHARED_DATA',
                   pathlib.Path(__file__).resolve().parents[2] / 'shared' /
                   'data')) / 'cosmos' / 'cosmos_full_mask_0.29arcmin360.fits'

_SHIFTS = flags.DEFINE_list(
    'shifts', [str(lognormal.COSMOS_SHIFT), '0.02', '0.05'],
    'Lognormal shifts λ (dimensionless); the first is the dataset\'s.')
_NUM_MAPS = flags.DEFINE_integer('num_maps', 6, 'Test maps per shift.')
_MASK = flags.DEFINE_enum('mask', 'cosmos', ['cosmos', 'procedural'],
                          'Survey mask (cosmos falls back to procedural when '
                          'the file is absent).')
_MASK_FILE = flags.DEFINE_string('mask_file', str(_DEFAULT_MASK),
                                 'The 360² COSMOS mask at 0.29 arcmin.')
_NUM_CHAINS = flags.DEFINE_integer('num_chains', 2, 'HMC chains per map.')
_NUM_BURNIN = flags.DEFINE_integer(
    'num_burnin_steps', 250, 'Warm-up transitions (step-size adaptation).')
_NUM_RESULTS = flags.DEFINE_integer('num_results', 100,
                                    'Kept samples per chain.')
_THINNING = flags.DEFINE_integer('num_steps_between_results', 1,
                                 'Transitions between kept samples.')
_LEAPFROG = flags.DEFINE_integer('num_leapfrog_steps', 12,
                                 'Leapfrog steps per transition.')
_PRECONDITIONER = flags.DEFINE_bool('preconditioner', False,
                                    'Fourier-diagonal mass matrix.')
_SIGMA_E = flags.DEFINE_float(
    'sigma_e', 0.30, 'Intrinsic ellipticity dispersion per shear component '
    '(dimensionless), for --mask=cosmos.')
_KS_SMOOTHING = flags.DEFINE_float('ks_smoothing_arcmin', 1.0,
                                   'Gaussian smoothing σ of KS, arcmin.')
_WIENER_SAMPLES = flags.DEFINE_integer(
    'wiener_samples', 64, 'Gaussian-posterior samples per map for the Wiener '
    'intervals.')


def _overlap(n_in, d_in, n_out, d_out, offset):
  """Overlap lengths [n_out, n_in] of two 1-D pixel grids (arcmin)."""
  edges_in = np.arange(n_in + 1) * d_in
  edges_out = offset + np.arange(n_out + 1) * d_out
  lo = np.maximum(edges_out[:-1, None], edges_in[None, :-1])
  hi = np.minimum(edges_out[1:, None], edges_in[None, 1:])
  return np.clip(hi - lo, 0., None)


def cosmos_mask(path):
  """The COSMOS mask area-resampled to N² pixels of 0.8 arcmin (centred)."""
  fine = fits.getdata(path).astype(np.float64)
  n_in = fine.shape[0]
  offset = (n_in * COSMOS_PIXEL_ARCMIN - N * PIXEL_ARCMIN) / 2.
  w = _overlap(n_in, COSMOS_PIXEL_ARCMIN, N, PIXEL_ARCMIN, offset)
  fraction = w @ fine @ w.T / PIXEL_ARCMIN**2
  return (fraction >= 0.5).astype(np.float64)


def survey_setting():
  """(mask [N, N], noise_std [N, N], description)."""
  if _MASK.value == 'cosmos' and pathlib.Path(_MASK_FILE.value).exists():
    mask = cosmos_mask(_MASK_FILE.value)
    std = _SIGMA_E.value / np.sqrt(GALAXY_DENSITY * PIXEL_ARCMIN**2)
    return mask, np.full([N, N], std), (
        f'real COSMOS mask area-resampled, uniform noise {std:.4f}')
  obs = survey.cosmos_like_survey(N, PIXEL_ARCMIN, seed=0)
  return (obs['mask'].astype(np.float64), obs['noise_std'][..., 0].astype(
      np.float64), 'procedural COSMOS-like survey (Poisson counts)')


def _mean_se(values):
  values = np.asarray(values, np.float64)
  return values.mean(), values.std(ddof=1) / np.sqrt(len(values))


def _fmt(values, digits=3):
  mean, se = _mean_se(values)
  return f'{mean:.{digits}f} ± {se:.{digits}f}'


def run_shift(shift, seeds, mask, noise_std):
  """Metrics per map for one λ; returns (rows dict, cost dict)."""
  field = lognormal.LognormalField(shift, N, PIXEL_ARCMIN)
  truth = field.maps_from_seeds(seeds).astype(np.float64)
  clean = lensing.shear_from_convergence(truth).numpy()
  # Shape noise from its own stream (the map's white noise uses seed s).
  noise = np.stack([np.random.default_rng([1, s]).standard_normal((N, N, 2))
                    for s in seeds])
  shear = (clean + noise_std[..., None] * noise) * mask[..., None]
  shear = shear.astype(np.float32)
  out = {'skewness': field.skewness}

  ks, _ = lensing.kaiser_squires(shear, smoothing_arcmin=_KS_SMOOTHING.value,
                                 pixel_scale_arcmin=PIXEL_ARCMIN)
  out['ks'] = ks.numpy()

  prior = gaussian_prior.GaussianPrior(field.power_grid)
  began = time.perf_counter()
  wf, info = wiener.wiener_filter(shear, noise_std.astype(np.float32),
                                  mask.astype(np.float32), prior)
  samples, _ = wiener.gaussian_posterior_samples(
      shear, noise_std.astype(np.float32), mask.astype(np.float32), prior,
      _WIENER_SAMPLES.value, seed=(7, 7))
  out['wiener_time'] = time.perf_counter() - began
  out['wiener'] = wf.numpy()
  assert bool(np.all(info.converged.numpy())), info
  wstd = np.std(samples.numpy(), axis=0)
  out['wiener_68'] = (out['wiener'] - wstd, out['wiener'] + wstd)
  out['wiener_95'] = (out['wiener'] - 1.96 * wstd, out['wiener'] + 1.96 * wstd)

  result = lognormal_posterior(
      shear, noise_std.astype(np.float32), mask.astype(np.float32),
      field=field, num_chains=_NUM_CHAINS.value,
      num_results=_NUM_RESULTS.value, num_burnin_steps=_NUM_BURNIN.value,
      num_leapfrog_steps=_LEAPFROG.value,
      num_steps_between_results=_THINNING.value,
      preconditioner=_PRECONDITIONER.value, seed=(11, 12), progress=False)
  out['exact'] = result.mean.numpy()
  out['exact_std'] = result.std.numpy()
  out['exact_68'] = result.interval_68.numpy()
  out['exact_95'] = result.interval_95.numpy()
  out['diagnostics'] = result.diagnostics

  # Slow directions: the κ map mean and the lowest Fourier mode, and the
  # per-pixel ESS (for the Monte-Carlo error of the posterior mean).
  chains = _NUM_CHAINS.value
  kept = result.samples.numpy().reshape(-1, chains, len(seeds), N, N)
  ess = lambda x: tfp.mcmc.effective_sample_size(
      tf.constant(x), cross_chain_dims=1 if chains > 1 else None,
      filter_beyond_positive_pairs=True).numpy()
  out['pixel_ess'] = ess(kept)
  out['mean_ess'] = ess(kept.mean(axis=(-2, -1)))
  out['mode_ess'] = ess(np.fft.fft2(kept)[..., 0, 1].real)
  out['truth'] = truth
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  tf.get_logger().setLevel('ERROR')  # TFP's ESS casts complex FFT output.
  shifts = [float(s) for s in _SHIFTS.value]
  config = lognormal_kappa.Builder.builder_configs[
      f'lognormal_{N}']
  n_train, n_val, _ = config.split_sizes
  seeds = [n_train + n_val + i for i in range(_NUM_MAPS.value)]
  mask, noise_std, description = survey_setting()
  inside = mask > 0
  print(f'# {platform.node()}, {os.cpu_count()} CPU(s), TF {tf.__version__}, '
        f'TFP {tfp.__version__}, load average at start '
        f'{os.getloadavg()[0]:.1f}')
  print(f'# {N}² × {PIXEL_ARCMIN} arcmin, {description}, observed fraction '
        f'{inside.mean():.3f}; test-split seeds {seeds[0]}..{seeds[-1]}; HMC '
        f'{_NUM_CHAINS.value} chains × ({_NUM_BURNIN.value} warm-up + '
        f'{_NUM_RESULTS.value * (_THINNING.value + 1)}) transitions × '
        f'{_LEAPFROG.value} leapfrog, preconditioner={_PRECONDITIONER.value}')
  print('| λ | skewness | KS RMSE | Wiener RMSE | exact RMSE | exact / Wiener '
        '| KS r | Wiener r | exact r | Wiener 68/95 % | exact 68/95 % | '
        'exact / Wiener (all pixels) |')
  print('| --- ' * 12 + '|')
  costs = []
  for shift in shifts:
    began = time.perf_counter()
    out = run_shift(shift, seeds, mask, noise_std)
    elapsed = time.perf_counter() - began
    truth = out['truth']
    r = {k: metrics.rmse(truth, out[k], mask)
         for k in ('ks', 'wiener', 'exact')}
    p = {k: metrics.pearson_r(truth, out[k], mask)
         for k in ('ks', 'wiener', 'exact')}
    ratio_all = (metrics.rmse(truth, out['exact']) /
                 metrics.rmse(truth, out['wiener']))
    cov68 = {
        'wiener': [metrics.coverage(truth[i], out['wiener_68'][0][i],
                                    out['wiener_68'][1][i], mask)
                   for i in range(len(seeds))],
        'exact': [metrics.coverage(truth[i], out['exact_68'][0][i],
                                   out['exact_68'][1][i], mask)
                  for i in range(len(seeds))]}
    cov95 = {
        'wiener': [metrics.coverage(truth[i], out['wiener_95'][0][i],
                                    out['wiener_95'][1][i], mask)
                   for i in range(len(seeds))],
        'exact': [metrics.coverage(truth[i], out['exact_95'][0][i],
                                   out['exact_95'][1][i], mask)
                  for i in range(len(seeds))]}
    print(f'| {shift:g} | {out["skewness"]:.2f} | {_fmt(r["ks"], 4)} | '
          f'{_fmt(r["wiener"], 4)} | {_fmt(r["exact"], 4)} | '
          f'{_fmt(r["exact"] / r["wiener"])} | {_fmt(p["ks"], 2)} | '
          f'{_fmt(p["wiener"], 2)} | {_fmt(p["exact"], 2)} | '
          f'{np.mean(cov68["wiener"]):.3f} / {np.mean(cov95["wiener"]):.3f} | '
          f'{np.mean(cov68["exact"]):.3f} / {np.mean(cov95["exact"]):.3f} | '
          f'{_fmt(ratio_all)} |', flush=True)
    d = out['diagnostics']
    # Monte-Carlo part of the exact posterior mean's squared error.
    mc_mse = np.array([np.mean((out['exact_std'][i]**2 /
                                out['pixel_ess'][i])[inside])
                       for i in range(len(seeds))])
    costs.append(dict(
        shift=shift, elapsed=elapsed, d=d, out=out, mc_mse=mc_mse,
        rmse=r['exact']))
  print()
  print('| λ | acceptance | step size | split R-hat median / max | pixel ESS '
        'median / 1 % | ESS map mean | ESS lowest mode | gradients per chain | '
        'gradients per ESS (median pixel) | s per ESS per map (median pixel) | '
        'wall time (s) | MC share of exact MSE |')
  print('| --- ' * 12 + '|')
  for c in costs:
    d, out = c['d'], c['out']
    num_maps = len(seeds)
    sampling_grads = _NUM_CHAINS.value * (
        1 + _NUM_RESULTS.value * (_THINNING.value + 1) * _LEAPFROG.value)
    ess_median = np.median(out['pixel_ess'].reshape(num_maps, -1), axis=-1)
    ess_1pc = np.quantile(out['pixel_ess'].reshape(num_maps, -1), 0.01, axis=-1)
    print(f'| {c["shift"]:g} | {np.mean(d["acceptance_rate"]):.3f} | '
          f'{np.mean(d["step_size"]):.4f} | '
          f'{np.mean(d["r_hat_median"]):.3f} / {np.max(d["r_hat_max"]):.2f} | '
          f'{np.mean(ess_median):.0f} / {np.mean(ess_1pc):.0f} | '
          f'{np.mean(out["mean_ess"]):.0f} | {np.mean(out["mode_ess"]):.0f} | '
          f'{d["gradient_evaluations_per_chain"]} | '
          f'{np.mean(sampling_grads / ess_median):.0f} | '
          f'{np.mean(d["sampling_wall_time_s"] / num_maps / ess_median):.2f} | '
          f'{c["elapsed"]:.0f} (HMC {d["wall_time_s"]:.0f}, Wiener+samples '
          f'{out["wiener_time"]:.0f}) | '
          f'{np.mean(c["mc_mse"] / c["rmse"]**2):.3f} |', flush=True)
  print(f'# load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  app.run(main)
