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
Prints one markdown row per λ, then the sampler's cost per λ, then one line
per map (its seed, the standard deviation of its true κ over the observed
pixels and its exact/Wiener RMSE ratio). Every ± is the standard error of the
mean from the map-to-map scatter: the sample standard deviation (ddof = 1) of
the per-map values over √(number of maps); ratios are computed per map, then
averaged.

Maps run ``--maps_per_batch`` at a time (one HMC batch, seeded by its first
map's seed). With ``--output=FILE`` each map's numbers are appended to FILE
(JSON lines) as soon as its batch finishes; a rerun with the same FILE and
settings skips the maps already there, so a stopped run resumes, and the
tables are computed from the records of every requested map.

  python benchmarks/bench_lognormal_posterior.py --shifts=0.02,0.05 \
      --num_maps=20 --maps_per_batch=2 --output=/tmp/lognormal_posterior.jsonl
"""

import json
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

from tfp_massmap import cosmology
from tfp_massmap import lensing
from tfp_massmap import lognormal
from tfp_massmap import metrics
from tfp_massmap import priors
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
    'shifts', [str(cosmology.COSMOS_SHIFT), '0.02', '0.05'],
    'Lognormal shifts λ (dimensionless); the first is the dataset\'s.')
_NUM_MAPS = flags.DEFINE_integer('num_maps', 6, 'Test maps per shift.')
_MAPS_PER_BATCH = flags.DEFINE_integer(
    'maps_per_batch', None, 'Maps per HMC batch (default: all maps of a shift '
    'in one batch).')
_OUTPUT = flags.DEFINE_string(
    'output', None, 'JSON-lines file of per-map records: appended after each '
    'batch, read back to skip maps already done (resume).')
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


def run_batch(shift, seeds, mask, noise_std):
  """Estimates and sampler diagnostics for the maps of ``seeds`` at one λ."""
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

  prior = priors.GaussianPrior(field.power_grid)
  began = time.perf_counter()
  wf, info = wiener.wiener_filter(shear, noise_std.astype(np.float32),
                                  mask.astype(np.float32), prior)
  samples = wiener.gaussian_posterior_samples(
      shear, noise_std.astype(np.float32), mask.astype(np.float32), prior,
      _WIENER_SAMPLES.value, seed=(7, seeds[0])).samples
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
      preconditioner=_PRECONDITIONER.value, seed=(11, seeds[0]), progress=False)
  out['exact'] = result.mean.numpy()
  out['exact_std'] = result.std.numpy()
  out['exact_68'] = result.interval_68.numpy()
  out['exact_95'] = result.interval_95.numpy()
  out['diagnostics'] = result.diagnostics

  # Slow directions: the κ map mean and the lowest Fourier mode, and the
  # per-pixel ESS (for the Monte-Carlo error of the posterior mean).
  chains = _NUM_CHAINS.value
  kept = result.trace.states.numpy()  # [results, chains, maps, N, N]
  ess = lambda x: tfp.mcmc.effective_sample_size(
      tf.constant(x), cross_chain_dims=1 if chains > 1 else None,
      filter_beyond_positive_pairs=True).numpy()
  out['pixel_ess'] = ess(kept)
  out['mean_ess'] = ess(kept.mean(axis=(-2, -1)))
  out['mode_ess'] = ess(np.fft.fft2(kept)[..., 0, 1].real)
  out['truth'] = truth
  return out


def batch_records(shift, seeds, out, mask, elapsed):
  """One JSON-ready dict of per-map numbers for each map of a batch."""
  truth = out['truth']
  inside = mask > 0
  num_maps = len(seeds)
  d = out['diagnostics']
  per_map = lambda x: np.broadcast_to(np.asarray(x, np.float64), [num_maps])
  rmse = {k: metrics.rmse(truth, out[k], mask)
          for k in ('ks', 'wiener', 'exact')}
  corr = {k: metrics.pearson_r(truth, out[k], mask)
          for k in ('ks', 'wiener', 'exact')}
  rmse_all = {k: metrics.rmse(truth, out[k]) for k in ('wiener', 'exact')}
  ess_pixels = out['pixel_ess'].reshape(num_maps, -1)
  ess_median = np.median(ess_pixels, axis=-1)
  sampling_grads = _NUM_CHAINS.value * (
      1 + _NUM_RESULTS.value * (_THINNING.value + 1) * _LEAPFROG.value)
  records = []
  for i, seed in enumerate(seeds):
    coverage = lambda k, level, i=i: metrics.coverage(
        truth[i], out[f'{k}_{level}'][0][i], out[f'{k}_{level}'][1][i], mask)
    # Monte-Carlo part of the exact posterior mean's squared error.
    mc_mse = np.mean((out['exact_std'][i]**2 / out['pixel_ess'][i])[inside])
    records.append(dict(
        shift=shift, seed=seed, settings=_settings(),
        skewness=out['skewness'],
        truth_std_observed=float(truth[i][inside].std()),
        **{f'rmse_{k}': float(v[i]) for k, v in rmse.items()},
        **{f'r_{k}': float(v[i]) for k, v in corr.items()},
        ratio=float(rmse['exact'][i] / rmse['wiener'][i]),
        ratio_all_pixels=float(rmse_all['exact'][i] / rmse_all['wiener'][i]),
        **{f'coverage_{level}_{k}': coverage(k, level)
           for k in ('wiener', 'exact') for level in ('68', '95')},
        acceptance_rate=float(per_map(d['acceptance_rate'])[i]),
        step_size=float(per_map(d['step_size'])[i]),
        r_hat_median=float(per_map(d['r_hat_median'])[i]),
        r_hat_max=float(per_map(d['r_hat_max'])[i]),
        ess_median=float(ess_median[i]),
        ess_1pc=float(np.quantile(ess_pixels[i], 0.01)),
        ess_map_mean=float(out['mean_ess'][i]),
        ess_lowest_mode=float(out['mode_ess'][i]),
        mc_share=float(mc_mse / rmse['exact'][i]**2),
        gradients_per_chain=int(d['gradient_evaluations_per_chain']),
        gradients_per_ess=float(sampling_grads / ess_median[i]),
        seconds_per_ess=float(
            d['sampling_wall_time_s'] / num_maps / ess_median[i]),
        hmc_seconds=d['wall_time_s'] / num_maps,
        wiener_seconds=out['wiener_time'] / num_maps,
        seconds=elapsed / num_maps,
        maps_in_batch=num_maps))
  return records


def _settings():
  """The flags a per-map record depends on (checked when resuming)."""
  return dict(
      num_chains=_NUM_CHAINS.value, num_burnin_steps=_NUM_BURNIN.value,
      num_results=_NUM_RESULTS.value, num_steps_between_results=_THINNING.value,
      num_leapfrog_steps=_LEAPFROG.value, preconditioner=_PRECONDITIONER.value,
      sigma_e=_SIGMA_E.value, mask=_MASK.value,
      ks_smoothing_arcmin=_KS_SMOOTHING.value,
      wiener_samples=_WIENER_SAMPLES.value)


def load_records(path):
  """Records of a previous run keyed by (λ, seed); must match the settings."""
  records = {}
  if not path or not pathlib.Path(path).exists():
    return records
  with open(path, encoding='utf-8') as f:
    for line in f:
      if not line.strip():
        continue
      record = json.loads(line)
      if record['settings'] != _settings():
        raise ValueError(
            f'{path} holds a record made with settings {record["settings"]}, '
            f'expected the current ones {_settings()}; use another --output.')
      records[(record['shift'], record['seed'])] = record
  return records


def _fmt(values, digits=3):
  """Mean ± standard error of the mean from the scatter of the values."""
  values = np.asarray(values, np.float64)
  se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
  return f'{values.mean():.{digits}f} ± {se:.{digits}f}'


def print_tables(shifts, rows):
  """The metric, cost and per-map tables from per-map records."""
  print('| λ | skewness | maps | KS RMSE | Wiener RMSE | exact RMSE | exact / '
        'Wiener | KS r | Wiener r | exact r | Wiener 68/95 % | exact 68/95 % | '
        'exact / Wiener (all pixels) |')
  print('| --- ' * 13 + '|')
  for shift in shifts:
    get = lambda key, shift=shift: [r[key] for r in rows[shift]]
    print(f'| {shift:g} | {rows[shift][0]["skewness"]:.2f} | {len(rows[shift])} '
          f'| {_fmt(get("rmse_ks"), 4)} | {_fmt(get("rmse_wiener"), 4)} | '
          f'{_fmt(get("rmse_exact"), 4)} | {_fmt(get("ratio"))} | '
          f'{_fmt(get("r_ks"), 2)} | {_fmt(get("r_wiener"), 2)} | '
          f'{_fmt(get("r_exact"), 2)} | '
          f'{np.mean(get("coverage_68_wiener")):.3f} / '
          f'{np.mean(get("coverage_95_wiener")):.3f} | '
          f'{np.mean(get("coverage_68_exact")):.3f} / '
          f'{np.mean(get("coverage_95_exact")):.3f} | '
          f'{_fmt(get("ratio_all_pixels"))} |')
  print()
  print('| λ | acceptance | step size | split R-hat median / max | pixel ESS '
        'median / 1 % | ESS map mean | ESS lowest mode | gradients per chain | '
        'gradients per ESS (median pixel) | s per ESS per map (median pixel) | '
        'wall time per map (s) | MC share of exact MSE |')
  print('| --- ' * 12 + '|')
  for shift in shifts:
    get = lambda key, shift=shift: np.mean([r[key] for r in rows[shift]])
    print(f'| {shift:g} | {get("acceptance_rate"):.3f} | {get("step_size"):.4f} '
          f'| {get("r_hat_median"):.3f} / '
          f'{max(r["r_hat_max"] for r in rows[shift]):.2f} | '
          f'{get("ess_median"):.0f} / {get("ess_1pc"):.0f} | '
          f'{get("ess_map_mean"):.0f} | {get("ess_lowest_mode"):.0f} | '
          f'{rows[shift][0]["gradients_per_chain"]} | '
          f'{get("gradients_per_ess"):.0f} | {get("seconds_per_ess"):.2f} | '
          f'{get("seconds"):.0f} (HMC {get("hmc_seconds"):.0f}, Wiener+samples '
          f'{get("wiener_seconds"):.0f}) | {get("mc_share"):.3f} |')
  print()
  for shift in shifts:
    std = np.array([r['truth_std_observed'] for r in rows[shift]])
    ratio = np.array([r['ratio'] for r in rows[shift]])
    slope = (np.polyfit(std, ratio, 1)[0] if len(std) > 1 else np.nan)
    corr = (np.corrcoef(std, ratio)[0, 1] if len(std) > 1 else np.nan)
    print(f'# λ = {shift:g}: std of true κ on the observed pixels '
          f'{_fmt(std, 4)}; exact/Wiener against it: slope {slope:.2f}, '
          f'Pearson r {corr:.2f}')
    print('#   seed, std of true κ observed, exact/Wiener: ' + '; '.join(
        f'{r["seed"]} {r["truth_std_observed"]:.4f} {r["ratio"]:.3f}'
        for r in rows[shift]))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  tf.get_logger().setLevel('ERROR')  # TFP's ESS casts complex FFT output.
  shifts = [float(s) for s in _SHIFTS.value]
  config = lognormal_kappa.Builder.builder_configs[
      f'lognormal_{N}']
  n_train, n_val, _ = config.split_sizes
  seeds = [n_train + n_val + i for i in range(_NUM_MAPS.value)]
  per_batch = _MAPS_PER_BATCH.value or len(seeds)
  if per_batch < 1:
    raise app.UsageError(f'--maps_per_batch must be >= 1, got {per_batch}.')
  mask, noise_std, description = survey_setting()
  inside = mask > 0
  print(f'# {platform.node()}, {os.cpu_count()} CPU(s), TF {tf.__version__}, '
        f'TFP {tfp.__version__}, load average at start '
        f'{os.getloadavg()[0]:.1f}')
  print(f'# {N}² × {PIXEL_ARCMIN} arcmin, {description}, observed fraction '
        f'{inside.mean():.3f}; test-split seeds {seeds[0]}..{seeds[-1]}; HMC '
        f'{_NUM_CHAINS.value} chains × ({_NUM_BURNIN.value} warm-up + '
        f'{_NUM_RESULTS.value * (_THINNING.value + 1)}) transitions × '
        f'{_LEAPFROG.value} leapfrog, preconditioner={_PRECONDITIONER.value}',
        flush=True)
  done = load_records(_OUTPUT.value)
  for shift in shifts:
    todo = [s for s in seeds if (shift, s) not in done]
    for start in range(0, len(todo), per_batch):
      batch = todo[start:start + per_batch]
      began = time.perf_counter()
      out = run_batch(shift, batch, mask, noise_std)
      for record in batch_records(shift, batch, out, mask,
                                  time.perf_counter() - began):
        done[(shift, record['seed'])] = record
        print(f'# λ = {shift:g}, map {record["seed"]}: exact/Wiener '
              f'{record["ratio"]:.4f}, {record["seconds"]:.0f} s', flush=True)
        if _OUTPUT.value:
          with open(_OUTPUT.value, 'a', encoding='utf-8') as f:
            f.write(json.dumps(record) + '\n')
  print_tables(shifts, {shift: [done[(shift, s)] for s in seeds]
                        for shift in shifts})
  print(f'# load average at end {os.getloadavg()[0]:.1f}')


if __name__ == '__main__':
  app.run(main)
