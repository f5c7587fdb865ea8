r"""A learned θ posterior against the exact one, on the same maps (issue 15).

For each held-out ``cosmo_<N>`` map (seeds ``--first_seed`` onwards, θ
uniform over `cosmology.COSMO_PARAMETER_BOUNDS`), observed on every pixel
with white shape noise σ_pix = σ_e / √(n̄ Δ²) per component
(`testing.cosmo_problem`, noise seed ``(--seed, i)``: the data of
``bench_joint_posterior.py --prior=learned --theta_only`` for the same
flags), θ is drawn twice:

* exact: `lognormal_cosmology.exact_theta_posterior`, HMC over the white
  map and θ under the generating lognormal model itself (no network);
* learned: `theta_posterior.sample_theta_posterior` with the shipped joint
  prior ``--prior`` (its ratio network; grid quadrature, ``--grid_points``
  cells per axis, ``--num_draws`` draws).

Per parameter it reports, for each, the coverage of the central 68 / 95 %
intervals and z = (mean − truth) / std (mean, and RMS: 1 for a calibrated
posterior), and the paired comparison: the learned std over the exact std
and (learned mean − exact mean) / exact std, mean ± standard error over
maps. The exact chains' split R̂ and effective sample sizes are in each
record; ``--start=truth`` starts every chain at the map's true white noise
and θ, a draw from the posterior, so that a width that differs from the
``--start=prior`` run's would show chains that have not converged.
``--output`` keeps every map's record (written after each map); a rerun
with the same file and flags skips the maps already there.

  python benchmarks/bench_exact_theta.py --map_size=128 --galaxy_density=64 \
      --num_maps=20 --output=/tmp/exact_theta_128.json
"""

import json
import os
import time
import types

from absl import app
from absl import flags
import numpy as np
import scipy.stats

from tfp_massmap import cosmology
from tfp_massmap import joint_posterior
from tfp_massmap import lognormal
from tfp_massmap import lognormal_cosmology
from tfp_massmap import outputs
from tfp_massmap import priors
from tfp_massmap import survey
from tfp_massmap import testing
from tfp_massmap import theta_posterior

FLAGS = flags.FLAGS
_NAMES = cosmology.COSMO_PARAMETER_NAMES
_SETTINGS = ('map_size', 'galaxy_density', 'sigma_e', 'first_seed', 'seed',
             'prior', 'grid_points', 'num_draws', 'num_chains',
             'num_burnin_steps', 'num_results', 'num_leapfrog_steps', 'start')


def _define_flags():
  """The flags (defined only when run as a script, so tests can import it)."""
  flags.DEFINE_integer('map_size', 128, 'Pixels per side N of the cosmo maps '
                       '(0.8-arcmin pixels, `cosmology.cosmo_kappa_setting`).')
  flags.DEFINE_float('galaxy_density', survey.COSMOS_GALAXY_DENSITY,
                     'Galaxies per arcmin² (sets σ_pix).')
  flags.DEFINE_float('sigma_e', survey.COSMOS_SIGMA_E,
                     'Per-component shape noise per galaxy.')
  flags.DEFINE_integer('num_maps', 20, 'Held-out maps.')
  flags.DEFINE_integer('first_seed', 1_000_000, 'Seed of the first map.')
  flags.DEFINE_integer('seed', 0, 'Seed of the shear noise and the samplers.')
  flags.DEFINE_string('prior', 'cosmo_joint_128', 'Shipped joint prior '
                      '(`priors.load_prior`) whose θ posterior is compared.')
  flags.DEFINE_integer('grid_points', 24, 'Learned: grid cells per axis.')
  flags.DEFINE_integer('num_draws', 399, 'Learned: θ draws per map.')
  flags.DEFINE_integer('num_chains', 8, 'Exact: HMC chains per map.')
  flags.DEFINE_integer('num_burnin_steps', 300, 'Exact: adaptation '
                       'transitions per chain.')
  flags.DEFINE_integer('num_results', 100, 'Exact: kept transitions per '
                       'chain (every second transition).')
  flags.DEFINE_integer('num_leapfrog_steps', 16, 'Exact: leapfrog steps per '
                       'transition.')
  flags.DEFINE_enum('start', 'prior', ['prior', 'truth'], 'Exact: chains '
                    'start at independent prior draws, or all at the map\'s '
                    'true (z, θ) (a posterior draw: a convergence check).')
  flags.DEFINE_string('output', None, 'JSON file of the per-map records '
                      '(resumable).')


def summary_of(draws, truth):
  """Mean, std, 68/95 % intervals, coverage, z and PIT of θ draws per name.

  ``draws`` ``[S, D]``. Mean, std and the central intervals are
  `joint_posterior.parameter_summary`'s (a 68 % interval narrower than
  ±std shows long tails); the PIT is the fraction of draws below the truth
  (uniform over maps for a calibrated posterior of any shape, where z is
  N(0, 1) only for a normal one).
  """
  summary = joint_posterior.parameter_summary(types.SimpleNamespace(
      parameters={name: draws[:, d] for d, name in enumerate(_NAMES)}))
  out = {}
  for d, name in enumerate(_NAMES):
    part = summary[name]
    out[name] = dict(
        mean=part['mean'], std=part['std'],
        z=(part['mean'] - truth[d]) / part['std'],
        pit=float(np.mean(draws[:, d] < truth[d])),
        interval_68=[float(v) for v in part['interval_68']],
        interval_95=[float(v) for v in part['interval_95']],
        **{f'covered_{level}': bool(low <= truth[d] <= high)
           for level, (low, high) in ((68, part['interval_68']),
                                      (95, part['interval_95']))})
  return out


def _mean_error(values):
  values = np.asarray(values, np.float64)
  error = (values.std(ddof=1) / np.sqrt(values.size) if values.size > 1
           else float('nan'))
  return float(values.mean()), float(error)


def _uniformity_p(pits):
  """Kolmogorov-Smirnov p of PITs against U(0, 1); None if any is missing."""
  if any(p is None for p in pits):
    return None
  return float(scipy.stats.kstest(pits, 'uniform').pvalue)


def summarise(records):
  """Per method and name: coverage, z; paired std ratio and mean shift."""
  rows = []
  for name in _NAMES:
    for method in ('exact', 'learned'):
      part = [r[method][name] for r in records]
      rows.append(dict(
          name=name, method=method,
          coverage_68=_mean_error([p['covered_68'] for p in part]),
          coverage_95=_mean_error([p['covered_95'] for p in part]),
          z=_mean_error([p['z'] for p in part]),
          rms_z=float(np.sqrt(np.mean([p['z']**2 for p in part]))),
          pit_ks_p=_uniformity_p([p.get('pit') for p in part]),
          std=float(np.mean([p['std'] for p in part]))))
    rows[-1]['std_ratio'] = _mean_error(
        [r['learned'][name]['std'] / r['exact'][name]['std'] for r in records])
    rows[-1]['mean_shift'] = _mean_error(
        [(r['learned'][name]['mean'] - r['exact'][name]['mean']) /
         r['exact'][name]['std'] for r in records])
  return rows


def markdown(rows, num_maps):
  """The table of `summarise`'s rows."""
  pm = lambda v: f'{v[0]:.2f} ± {v[1]:.2f}'
  lines = [f'| {num_maps} maps | method | 68 % | 95 % | z mean | RMS z | '
           'PIT KS p | mean std | std / exact | (mean − exact) / exact std |',
           '|---|---|---|---|---|---|---|---|---|---|']
  for row in rows:
    paired = ((pm(row['std_ratio']), pm(row['mean_shift']))
              if 'std_ratio' in row else ('', ''))
    ks = '' if row['pit_ks_p'] is None else f'{row["pit_ks_p"]:.2f}'
    lines.append(
        f'| {row["name"]} | {row["method"]} | {pm(row["coverage_68"])} | '
        f'{pm(row["coverage_95"])} | {pm(row["z"])} | {row["rms_z"]:.2f} | '
        f'{ks} | {row["std"]:.4f} | {paired[0]} | {paired[1]} |')
  return '\n'.join(lines)


def _load_records(path, settings):
  """The records of an earlier run with the same settings, else []."""
  if not path or not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    saved = json.load(f)
  if saved.get('settings') != settings:
    raise ValueError(f'{path} holds a run with other settings '
                     f'{saved.get("settings")}; give another --output.')
  return saved['maps']


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  settings = {name: FLAGS[name].value for name in _SETTINGS}
  records = _load_records(FLAGS.output, settings)
  n, pixel_scale = cosmology.cosmo_kappa_setting(FLAGS.map_size)[:2]
  noise = FLAGS.sigma_e / np.sqrt(FLAGS.galaxy_density * pixel_scale**2)
  field = lognormal_cosmology.CosmoLognormalField(n, pixel_scale)
  joint = priors.load_prior(FLAGS.prior)
  print(f'cosmo_{n} maps from seed {FLAGS.first_seed}, σ_pix = {noise:.4f}, '
        f'full mask; exact HMC against {FLAGS.prior}')
  for i in range(len(records), FLAGS.num_maps):
    seed = FLAGS.first_seed + i
    theta, _, data = testing.cosmo_problem(seed, n, pixel_scale, noise,
                                           (FLAGS.seed, i))
    began = time.perf_counter()
    learned, _ = theta_posterior.sample_theta_posterior(
        data, joint, num_samples=FLAGS.num_draws, seed=(FLAGS.seed + 1, i),
        num_points=FLAGS.grid_points)
    learned_seconds = time.perf_counter() - began
    initial_state = (None if FLAGS.start == 'prior' else
                     (lognormal.white_from_seeds([seed], n)[0], theta))
    exact, diagnostics = lognormal_cosmology.exact_theta_posterior(
        data, field, initial_state=initial_state, num_chains=FLAGS.num_chains,
        num_burnin_steps=FLAGS.num_burnin_steps,
        num_results=FLAGS.num_results,
        num_leapfrog_steps=FLAGS.num_leapfrog_steps,
        seed=(FLAGS.seed + 2, i))
    record = dict(seed=seed, theta=theta.tolist(),
                  exact=summary_of(exact, theta),
                  learned=summary_of(np.asarray(learned), theta),
                  exact_diagnostics=diagnostics,
                  learned_seconds=learned_seconds)
    records.append(record)
    if FLAGS.output:
      outputs.write_json_atomic(FLAGS.output,
                                dict(settings=settings, maps=records),
                                indent=1)
    print(f'map {i} (seed {seed}): ' + '; '.join(
        f'{name} {theta[d]:.3f}: exact {record["exact"][name]["mean"]:.3f} ± '
        f'{record["exact"][name]["std"]:.3f}, learned '
        f'{record["learned"][name]["mean"]:.3f} ± '
        f'{record["learned"][name]["std"]:.3f}'
        for d, name in enumerate(_NAMES)) +
        f'; R̂ {max(diagnostics["r_hat"]):.3f}, ESS '
        f'{min(diagnostics["ess"]):.0f}, '
        f'{diagnostics["wall_time_s"]:.0f} s', flush=True)
  print(markdown(summarise(records), len(records)))


if __name__ == '__main__':
  _define_flags()
  app.run(main)
