r"""Where a learned posterior's κ error sits on a map: at its highest peak?

For held-out ``cosmo_32`` maps (map ``--first_seed`` + i, noise seed
``(--seed, i)`` for each i of ``--indices``: the maps and noise of
``bench_joint_posterior.py --prior=learned`` with the same flags), at the
COSMOS noise on every pixel, it samples the κ posterior

* under the conditional network at the map's true θ (the oracle arm of
  ``bench_joint_posterior.py``, seed ``(--seed + 2, i)``, 39 samples) for
  each schedule of ``--schedules`` (``LxS`` = L geometric levels from 0.1
  to 10⁻³, S leapfrog steps of step ``--step_size_factor`` σ; a suffix
  ``mh`` adds Metropolis correction, ``f<x>`` sets the step factor);
* exactly, under the map's own lognormal field at the true θ
  (`lognormal_posterior`, 8 chains, seed ``(--seed + 3, i)``);

and reports, per map and arm: the posterior-mean RMSE (map means
removed), the share of its squared error on the pixels within 2 of the
truth's highest pixel, the mean of the posterior mean over the 3 × 3
pixels around that pixel and at it, the 5 / 50 / 95 % quantiles of the
draws at it, and the mean shear log-likelihood of the draws (and of the
truth) and their data-fit z (`likelihood.data_fit`): draws that fit the
data worse than the exact posterior's are pulled there by the prior.
With ``--trace_levels``, the learned arms' chains are traced and their
mean at the peak and on its 8 neighbours is read at the end of about that
many noise levels: where in the annealing a peak or a halo forms.

Sampler-free (``--denoise_sigmas``): white noise of each σ is added to the
truth, to the truth with its 3 × 3 peak patch scaled so that the peak is
each of ``--raise_peak_to``, and to the first draw of each arm; the
learned denoiser (at the true θ) and the exact MMSE denoiser of the map's
field (`lognormal_posterior` with the identity operator) are read at the
peak, on the 3 × 3 box and on the peak's 8 neighbours, 4 noise draws
each; with the learned denoiser's Jacobian along those neighbours, the
shift of the sampler's mean their bias predicts (`predicted_shift`).

  python benchmarks/bench_peak_error.py --first_seed=1000020 --seed=1 \
      --indices=5 --schedules=30x3,90x3,90x3mh,90x3f0.25 \
      --raise_peak_to=0.635 --output=/tmp/peak_1000025.json
"""

import json
import re
import time

from absl import app
from absl import flags
import numpy as np

from tfp_massmap import cosmology
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import lognormal_posterior
from tfp_massmap import outputs
from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap import survey
from tfp_massmap import testing
from tfp_massmap.mcmc import GeometricSchedule

FLAGS = flags.FLAGS
_NUM_SAMPLES = 39


def _define_flags():
  """The flags (defined only when run as a script, so tests can import it)."""
  flags.DEFINE_string('prior', 'tfp_massmap/data/prior_cosmo_conditional_32'
                      '.keras', 'The θ-conditioned score network (.keras).')
  flags.DEFINE_integer('first_seed', 1_000_000, 'Seed of map index 0.')
  flags.DEFINE_integer('seed', 0, 'Noise seed (seed, i); the samplers use '
                       'seed + 2 and seed + 3.')
  flags.DEFINE_list('indices', ['0'], 'Map indices i (map seed first_seed + '
                    'i).')
  flags.DEFINE_list('schedules', ['30x3', '90x3'], 'Oracle schedules, '
                    'LxS[mh][f<factor>] (levels x leapfrog steps).')
  flags.DEFINE_float('step_size_factor', 0.5, 'Leapfrog step / σ, unless a '
                     'schedule sets it.')
  flags.DEFINE_float('galaxy_density', 64., 'Galaxies per arcmin² '
                     '(σ_pix = σ_e / √(n Δ²) at the 0.8-arcmin pixels).')
  flags.DEFINE_list('denoise_sigmas', ['0.005', '0.01', '0.02'], 'σ of the '
                    'sampler-free denoiser checks (empty: none).')
  flags.DEFINE_list('raise_peak_to', [], 'Peak values [κ] of the raised '
                    'truths for the denoiser checks.')
  flags.DEFINE_integer('trace_levels', 0, 'If > 0: trace the learned arms '
                       'and report, at about this many of their noise levels, '
                       'the chains\' mean at the peak and on its 8 '
                       'neighbours [κ].')
  flags.DEFINE_string('output', None, 'Optional JSON file of the results.')


def parse_schedule(text, default_factor):
  """``'90x3mhf0.25'`` -> (levels, leapfrog steps, Metropolis?, factor)."""
  match = re.fullmatch(r'(\d+)x(\d+)(mh)?(?:f([0-9.]+))?', text)
  if not match:
    raise ValueError(f'--schedules entry {text!r} must read LxS[mh][f<x>], '
                     'e.g. 90x3 or 90x3mhf0.25.')
  levels, steps, mh, factor = match.groups()
  return (int(levels), int(steps), bool(mh),
          float(factor) if factor else default_factor)


def peak_box(truth):
  """The truth's highest pixel and the 3 × 3 box around it (periodic)."""
  n = truth.shape[0]
  peak = np.unravel_index(np.argmax(truth), truth.shape)
  rows = (np.arange(peak[0] - 1, peak[0] + 2) % n)[:, None]
  cols = (np.arange(peak[1] - 1, peak[1] + 2) % n)[None, :]
  return peak, (rows, cols)


def near_peak_share(error, peak, radius=2):
  """The share of Σ error² on pixels within ``radius`` of ``peak``."""
  n = error.shape[0]
  yy, xx = np.indices(error.shape)
  dy = np.minimum(abs(yy - peak[0]), n - abs(yy - peak[0]))
  dx = np.minimum(abs(xx - peak[1]), n - abs(xx - peak[1]))
  near = dy**2 + dx**2 <= radius**2
  return float(np.sum(error[near]**2) / np.sum(error**2))


def _neighbours(maps, peak, box):
  """Mean over a batch of ``maps`` of the 8 pixels around ``peak``."""
  maps = np.asarray(maps, np.float64)
  return float(np.mean((maps[(slice(None),) + box].sum(axis=(-2, -1))
                        - maps[(slice(None),) + peak]) / 8))


def level_readings(states, sigma, peak, box, num_levels):
  """Chain means at the peak and on its 8 neighbours, level by level.

  Args:
    states: ``[T, C, N, N]`` traced maps of C chains (a `ChainTrace`).
    sigma: ``[T]`` the noise level of each transition.
    peak, box: the truth's highest pixel and its 3 × 3 box (`peak_box`).
    num_levels: read about this many levels, evenly spaced, the last
      always included.

  Returns:
    A list of dicts (``sigma``, ``peak``, ``neighbours``), highest σ
    first, each read at the last transition of its level.
  """
  sigma = np.asarray(sigma)
  last = np.flatnonzero(np.append(sigma[1:] != sigma[:-1], True))
  keep = last[::-1][::max(1, -(-len(last) // num_levels))][::-1]
  readings = []
  for t in keep:
    maps = np.asarray(states[t], np.float64)
    readings.append(dict(sigma=float(sigma[t]),
                         peak=float(maps[(slice(None),) + peak].mean()),
                         neighbours=_neighbours(maps, peak, box)))
  return readings


def _data_scores(draws, data, noise):
  """The draws' mean log-likelihood and data-fit z, from one χ² pass.

  The log-likelihood is the mean over up to ``_NUM_SAMPLES`` of
  ``draws``, z (`likelihood.data_fit`) is over all of them. Every pixel
  is observed with noise ``noise``, so log p = −χ² / 2 − (d / 2)
  log(2π noise²).
  """
  fit = likelihood.data_fit(draws, data)
  chi2 = np.asarray(fit['chi2_per_sample'])[::max(
      1, len(draws) // _NUM_SAMPLES)]
  log_norm = -0.5 * fit['dof'] * np.log(2. * np.pi * noise**2)
  return float(np.mean(-0.5 * chi2) + log_norm), fit['z']


def _arm_scores(truth, draws, mean, data, noise):
  """The per-arm numbers of the module docstring."""
  peak, box = peak_box(truth)
  error = (mean - mean.mean()) - (truth - truth.mean())
  at_peak = draws[:, peak[0], peak[1]]
  log_likelihood, data_fit_z = _data_scores(draws, data, noise)
  return dict(
      rmse=float(np.sqrt(np.mean(error**2))),
      near_peak_share=near_peak_share(error, peak),
      box_mean=float(mean[box].mean()), peak_mean=float(mean[peak]),
      peak_quantiles=np.quantile(at_peak, [0.05, 0.5, 0.95]).tolist(),
      log_likelihood=log_likelihood, data_fit_z=data_fit_z)


def predicted_shift(bias, jacobian, sigma, noise_std):
  """The shift of a sampler's stationary mean caused by a denoiser's bias.

  At noise level σ the annealed sampler follows the score
  (r(x) − x) / σ² plus the shear likelihood's. A bias δ of the denoiser r
  along a direction u (here: the 8 pixels around a peak) biases the score
  by δ / σ²; the restoring curvature along u is (1 − J) / σ² from the
  prior, J = uᵀ ∂r/∂x u the denoiser's Jacobian along u, plus 1 / σ_n²
  from the likelihood (the Kaiser-Squires operator is unitary). So, to
  first order, the mean moves by δ / ((1 − J) + σ² / σ_n²). For a
  Gaussian prior of variance τ² (J = τ² / (τ² + σ²)) this is exactly the
  shift of the Gaussian posterior's mean.

  Args:
    bias: δ, learned minus exact MMSE denoiser along u [κ].
    jacobian: J, the learned denoiser's Jacobian along u (dimensionless).
    sigma: σ, the noise level [κ].
    noise_std: σ_n, the per-pixel shear noise std.

  Returns:
    The predicted shift of the mean along u [κ].
  """
  return bias / ((1. - jacobian) + sigma**2 / noise_std**2)


def _denoise_checks(states, theta, field, sigmas, net, seed, noise_std):
  """Learned and exact MMSE denoisers near the peak (module docstring).

  Read at the peak, on its 3 × 3 box and on its 8 neighbours, with the
  learned Jacobian along the neighbours and the shift their bias predicts
  (`predicted_shift`).
  """
  n = field.map_size
  rows = []
  for name, (state, peak, box) in states.items():
    ring = np.zeros((n, n))
    ring[box] = 1.
    ring[peak] = 0.
    for k, sigma in enumerate(sigmas):
      rng = np.random.default_rng([seed, k])
      noisy = state + sigma * rng.standard_normal((4, n, n))
      denoise = lambda x, s=sigma: net.denoise(
          x.astype(np.float32),
          np.broadcast_to(theta, (4, 2)).astype(np.float32), s).numpy()
      learned = denoise(noisy)
      step = 0.1 * sigma
      jacobian = (_neighbours(denoise(noisy + step * ring), peak, box)
                  - _neighbours(denoise(noisy - step * ring), peak, box)) / (
                      2 * step)
      exact = np.asarray(lognormal_posterior.lognormal_posterior(
          noisy[..., None], np.full((n, n), sigma), np.ones((n, n)), field,
          operator=likelihood.identity_operator, num_chains=4,
          num_results=300, num_burnin_steps=300, seed=(seed, k),
          progress=False).mean)
      read = lambda x, where: float(np.mean(x[(slice(None),) + where]))
      around = [_neighbours(x, peak, box) for x in (learned, exact)]
      rows.append(dict(
          state=name, sigma=sigma, peak_state=float(state[peak]),
          peak_learned=read(learned, peak), peak_exact=read(exact, peak),
          box_state=float(state[box].mean()),
          box_learned=read(learned, box), box_exact=read(exact, box),
          neighbours_state=_neighbours(state[None], peak, box),
          neighbours_learned=around[0], neighbours_exact=around[1],
          neighbours_jacobian=jacobian,
          predicted_shift=predicted_shift(around[0] - around[1], jacobian,
                                          sigma, noise_std)))
  return rows


def run(indices, schedules, sigmas, raises, log=print):
  """Per-map records (module docstring)."""
  net = priors.LearnedJointPrior(priors.load_prior(FLAGS.prior))
  n, pix = cosmology.cosmo_kappa_setting(32)[:2]
  # σ_pix = σ_e / √(n_gal · pixel area), per shear component.
  noise = survey.COSMOS_SIGMA_E / np.sqrt(FLAGS.galaxy_density * pix**2)
  records = []
  for i in indices:
    began = time.perf_counter()
    theta, truth, data = testing.cosmo_problem(
        FLAGS.first_seed + i, n, pix, noise, (FLAGS.seed, i))
    field = lognormal.cosmo_field(*theta, n, pix)
    record = dict(seed=FLAGS.first_seed + i, theta=theta.tolist(),
                  peak_truth=float(truth.max()), arms={})
    exact = lognormal_posterior.lognormal_posterior(
        data, field=field, num_chains=8, seed=(FLAGS.seed + 3, i),
        progress=False)
    draws = {'exact': (exact.samples.numpy(), exact.mean.numpy())}
    peak, box = peak_box(truth)
    for text in schedules:
      levels, steps, mh, factor = parse_schedule(text, FLAGS.step_size_factor)
      sampler = posterior.PosteriorSampler(
          net.given(theta), schedule=GeometricSchedule(0.1, 1e-3,
                                                       num_levels=levels),
          num_leapfrog_steps=steps, step_size_factor=factor,
          metropolis_correction=mh or None)
      num_trace = sampler.schedule.num_steps if FLAGS.trace_levels else 0
      result = sampler.sample(data, num_samples=_NUM_SAMPLES,
                              seed=(FLAGS.seed + 2, i),
                              num_trace_steps=num_trace)
      draws[text] = (result.samples.numpy(), result.mean.numpy())
      if num_trace:
        record.setdefault('levels', {})[text] = level_readings(
            np.asarray(result.trace.states), np.asarray(result.trace.sigma),
            peak, box, FLAGS.trace_levels)
    (record['truth_log_likelihood'],
     record['truth_data_fit_z']) = _data_scores(truth[None], data, noise)
    for name, (samples, mean) in draws.items():
      record['arms'][name] = _arm_scores(truth, samples.astype(np.float64),
                                         mean.astype(np.float64), data, noise)
      log(f'map {FLAGS.first_seed + i} {name}: ' + json.dumps(
          record['arms'][name]))
    states = {'truth': (truth, peak, box)}
    for value in raises:
      raised = truth.copy()
      scale = (value - truth.mean()) / (truth[peak] - truth.mean())
      raised[box] = truth.mean() + (truth[box] - truth.mean()) * scale
      states[f'truth, peak raised to {value}'] = (raised, peak, box)
    for name, (samples, _) in draws.items():
      states[f'first draw, {name}'] = (samples[0].astype(np.float64), peak,
                                       box)
    record['denoise'] = _denoise_checks(states, theta, field, sigmas, net,
                                        FLAGS.first_seed + i, noise)
    for row in record['denoise']:
      log(json.dumps(row))
    record['seconds'] = time.perf_counter() - began
    records.append(record)
  return records


def markdown(records):
  """The tables of the records."""
  lines = []
  for r in records:
    lines += [f'Map {r["seed"]} (Ωm {r["theta"][0]:.3f}, σ8 '
              f'{r["theta"][1]:.3f}); truth peak {r["peak_truth"]:.3f}, '
              f'truth log-likelihood {r["truth_log_likelihood"]:.1f}, data '
              f'fit z {r.get("truth_data_fit_z", float("nan")):+.2f}:', '',
              '| arm | RMSE | error² within 2 px of peak | 3×3 mean | peak '
              'mean | peak draws 5/50/95 % | draws log-likelihood | data '
              'fit z |', '|---|---|---|---|---|---|---|---|']
    for name, a in r['arms'].items():
      q = ' / '.join(f'{v:.3f}' for v in a['peak_quantiles'])
      lines.append(f'| {name} | {a["rmse"]:.4f} | {a["near_peak_share"]:.3f} '
                   f'| {a["box_mean"]:.3f} | {a["peak_mean"]:.3f} | {q} | '
                   f'{a["log_likelihood"]:.1f} | '
                   f'{a.get("data_fit_z", float("nan")):+.2f} |')
    for name, readings in r.get('levels', {}).items():
      lines += ['', f'{name}, chain means by noise level (peak / 8 '
                'neighbours):', '',
                '| σ | ' + ' | '.join(f'{x["sigma"]:.4f}' for x in readings)
                + ' |', '|---' * (len(readings) + 1) + '|',
                '| κ | ' + ' | '.join(f'{x["peak"]:.3f} / '
                                      f'{x["neighbours"]:.3f}'
                                      for x in readings) + ' |']
    if r['denoise']:
      triple = lambda d, key: ' / '.join(
          f'{d[f"{key}_{part}"]:.3f}' for part in ('state', 'learned',
                                                   'exact'))
      lines += ['', '| state | σ | peak: state / learned / exact | 3×3 | 8 '
                'neighbours | learned Jacobian J (neighbours) | predicted '
                'shift |', '|---|---|---|---|---|---|---|']
      lines += [f'| {d["state"]} | {d["sigma"]} | {triple(d, "peak")} | '
                f'{triple(d, "box")} | {triple(d, "neighbours")} | '
                f'{d["neighbours_jacobian"]:.3f} | '
                f'{d["predicted_shift"]:+.3f} |' for d in r['denoise']]
    lines.append('')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  for text in FLAGS.schedules:  # Fails before any sampling.
    parse_schedule(text, FLAGS.step_size_factor)
  began = time.perf_counter()
  records = run([int(i) for i in FLAGS.indices], FLAGS.schedules,
                [float(s) for s in FLAGS.denoise_sigmas],
                [float(v) for v in FLAGS.raise_peak_to])
  print(markdown(records))
  print(f'wall time {time.perf_counter() - began:.0f} s')
  if FLAGS.output:
    outputs.write_json_atomic(FLAGS.output, dict(
        flags={f: FLAGS[f].value for f in (
            'prior', 'first_seed', 'seed', 'indices', 'schedules',
            'step_size_factor', 'galaxy_density', 'denoise_sigmas',
            'raise_peak_to', 'trace_levels')}, maps=records), indent=1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
