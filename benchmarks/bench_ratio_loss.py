r"""Held-out cross-entropy of ratio networks, by noise level (issue 15).

A ratio network (`tfp_massmap.priors.ratio.RatioNetwork`) is a classifier of
(map, θ) pairs; its training log reports the cross-entropy of training
batches, whose σ are drawn at random from the run's own range. This script
compares networks on the same held-out maps, the same noise and the same
shuffled θ, at fixed noise levels σ: for each σ and network, the mean over
maps of ``ratio.classification_loss`` (nats; ln 2 = 0.693 is an untrained
classifier, lower is better) and, against the first network, the mean of the
per-map differences with its standard error (a paired comparison: the
networks see identical pairs). A second table gives, per σ and network,
the scale α of the logits that minimises the mean cross-entropy of α ℓ on
these pairs (`best_temperature`) and the loss there: α near 1 says the
logits have the right overall scale, α > 1 that they are too small (the
network under-confident, its posteriors too wide, if the error is a scale).
A third gives the balance b = mean d(joint) + mean d(shuffled) − 1 of the
classifier d = sigmoid(ℓ) (`balance`), 0 for a balanced classifier, whose
posteriors are conservative in expectation (balanced NRE, Delaunoy et al.
2022).

With ``--posterior_points=P`` a fourth table scores the θ posteriors the
logits imply: p_α(θ | x) ∝ exp(α ℓ(x, θ)) over a grid of P × P cells of
the prior box (`grid_logits`), and per map the log density of that
posterior at the true θ (`posterior_log_density`, nats: a proper scoring
rule, higher is better; its mean over maps is maximal at α = 1 for the
exact posterior), at α = 1 and at the α that maximises the mean
(`best_posterior_temperature`). Unlike the cross-entropy it does not see a
term of ℓ in the map alone, so it ranks contrastively trained networks
(`ratio.contrastive_loss`) and the power-spectrum posterior alike.

Maps: ``lognormal.cosmo_maps`` of seeds ``--first_seed`` onwards (the
``lognormal_kappa`` cosmo generator, θ = (Ωm, σ8) uniform over
`cosmology.COSMO_PARAMETER_BOUNDS`; 1 000 000 onwards are held out of every
training set). The shuffled pair of map i takes the θ of map i − 1, as in
training. Noise of level σ is σ · u with u white of unit variance, one u
per map fixed by ``--seed`` (the same u at every σ). With
``--remove_map_mean`` each noisy map minus its mean is classified, as shear
data give it (the Kaiser-Squires E-mode map has mean 0). The entry
``power_spectrum`` of ``--ratio_networks`` is the Gaussian power-spectrum
classifier (`power_spectrum_likelihood`): what the spectrum alone gives.

  python benchmarks/bench_ratio_loss.py --map_size=128 --num_maps=256 \
      --ratio_networks=ratio128_ft2/ratio_network.keras,ratio128_ft3/ratio_network.keras
"""

import math
import os
import time

from absl import app
from absl import flags
import numpy as np
import scipy.optimize
import scipy.special
import tensorflow as tf

from tfp_massmap import cosmology
from tfp_massmap import lognormal
from tfp_massmap import outputs
from tfp_massmap import power_spectrum_likelihood
from tfp_massmap.priors import ratio

FLAGS = flags.FLAGS

# The name in --ratio_networks of the Gaussian power-spectrum classifier.
POWER_SPECTRUM = 'power_spectrum'


def _define_flags():
  """The flags (defined only when run as a script, so tests can import it)."""
  flags.DEFINE_list('ratio_networks', None, 'RatioNetwork .keras files, or '
                    f'{POWER_SPECTRUM!r} for the Gaussian power-spectrum '
                    'classifier; the first is the reference of the paired '
                    'differences. Required.')
  flags.DEFINE_integer('map_size', 128, 'Pixels per side N of the cosmo maps '
                       '(0.8-arcmin pixels, `cosmology.cosmo_kappa_setting`).')
  flags.DEFINE_integer('num_maps', 256, 'Held-out maps (>= 2).')
  flags.DEFINE_integer('first_seed', 1_000_000, 'Seed of the first map.')
  flags.DEFINE_list('sigmas', ['0.002', '0.005', '0.0117', '0.02', '0.0469',
                               '0.08'],
                    'Noise levels σ (dimensionless convergence, per pixel).')
  flags.DEFINE_integer('batch_size', 16, 'Maps per network call.')
  flags.DEFINE_integer('seed', 0, 'Seed of the unit noise maps.')
  flags.DEFINE_bool('remove_map_mean', False, 'Classify each noisy map minus '
                    'its mean, as the data give it (the Kaiser-Squires E-mode '
                    'map has mean 0), instead of the map as drawn.')
  flags.DEFINE_integer('posterior_points', 0, 'Cells per θ axis of the grid '
                       'posterior scored at the truth (the fourth table); 0 '
                       'skips it. Costs num_maps × points² network calls per '
                       'σ and network.')
  flags.DEFINE_string('output', None, 'Optional JSON file for the table.')


def _checked_flags():
  """(network paths, σ values); raises app.UsageError on bad flags."""
  paths = FLAGS.ratio_networks
  if not paths:
    raise app.UsageError('--ratio_networks is required: one or more '
                         'RatioNetwork .keras files.')
  missing = [p for p in paths if p != POWER_SPECTRUM and not os.path.exists(p)]
  if missing:
    raise app.UsageError(f'--ratio_networks: no file at {missing}.')
  try:
    sigmas = [float(s) for s in FLAGS.sigmas]
  except ValueError as e:
    raise app.UsageError(f'--sigmas must be numbers, got {FLAGS.sigmas}: '
                         f'{e}') from e
  if not sigmas or not all(math.isfinite(s) and s > 0 for s in sigmas):
    raise app.UsageError(f'--sigmas must be finite numbers > 0, got '
                         f'{FLAGS.sigmas}.')
  if FLAGS.num_maps < 2 or FLAGS.batch_size < 1 or FLAGS.first_seed < 0:
    raise app.UsageError(
        f'--num_maps must be >= 2, --batch_size >= 1 and --first_seed >= 0, '
        f'got {FLAGS.num_maps}, {FLAGS.batch_size} and {FLAGS.first_seed}.')
  if FLAGS.posterior_points < 0:
    raise app.UsageError(f'--posterior_points must be >= 0 (0: no posterior '
                         f'table), got {FLAGS.posterior_points}.')
  return paths, sigmas


def classifier(name, map_size, pixel_scale_arcmin):
  """The classifier ``(x, σ, θ) → ℓ [B]`` of a --ratio_networks entry.

  A `RatioNetwork` file, or `POWER_SPECTRUM`: the logit log p_G(x | θ) −
  log p_G(x) of `power_spectrum_likelihood.PowerSpectrumLikelihood` (the
  Bayes-optimal classifier if the maps were Gaussian fields), in float32.
  """
  if name != POWER_SPECTRUM:
    return ratio.load_ratio_network(name)
  likelihood = power_spectrum_likelihood.PowerSpectrumLikelihood(
      map_size, pixel_scale_arcmin)
  return lambda x, sigma, theta: tf.cast(
      likelihood.log_ratio(x, theta, sigma), tf.float32)


def per_map_logits(network, kappa, theta, unit_noise, sigma, batch_size,
                   remove_map_mean=False):
  """Logits of each held-out map's joint and shuffled pair at noise ``sigma``.

  Args:
    network: a `RatioNetwork` (or any callable ``(x, σ, θ) → [B]`` logits).
    kappa: ``[M, N, N]`` maps (dimensionless convergence).
    theta: ``[M, D]`` their parameters; map i's shuffled pair takes θ_{i−1}.
    unit_noise: ``[M, N, N]`` unit-variance noise.
    sigma: noise level (dimensionless).
    batch_size: maps per network call.
    remove_map_mean: if True, each noisy map minus its mean is classified
      (as shear data give it: the Kaiser-Squires E-mode map has mean 0).

  Returns:
    Two numpy ``[M]`` arrays (nats): ℓ(κ_i + σu_i, θ_i), ℓ(κ_i + σu_i, θ_{i−1}).
  """
  shuffled = np.roll(theta, 1, axis=0)
  joint, other = [], []
  for start in range(0, len(kappa), batch_size):
    part = slice(start, start + batch_size)
    noisy = tf.constant(_noisy_maps(kappa[part], unit_noise[part], sigma,
                                    remove_map_mean), tf.float32)
    level = tf.fill([noisy.shape[0]], tf.constant(sigma, tf.float32))
    joint.append(network(noisy, level, tf.constant(theta[part], tf.float32)))
    other.append(network(noisy, level,
                         tf.constant(shuffled[part], tf.float32)))
  return (np.concatenate([np.asarray(x) for x in joint]),
          np.concatenate([np.asarray(x) for x in other]))


def pair_loss(joint, shuffled, temperature=1.):
  """``[M]`` cross-entropy of the pairs with the logits scaled by α.

  ``ratio.classification_loss`` of α ℓ (nats); α = 1 is the network as it
  is.
  """
  return ratio.classification_loss(
      tf.constant(temperature * joint, tf.float64),
      tf.constant(temperature * shuffled, tf.float64)).numpy()


def best_temperature(joint, shuffled, bounds=(0.05, 20.)):
  """The scale α of the logits that minimises the mean cross-entropy.

  α > 1: the network's logits are too small on these pairs (its posteriors
  too wide, if the error is a scale); α < 1: too large. The mean
  cross-entropy is convex in α, so the bounded 1-D search finds the
  minimum.

  Args:
    joint, shuffled: ``[M]`` logits (`per_map_logits`).
    bounds: the search interval of α.

  Returns:
    α (float).
  """
  return float(scipy.optimize.minimize_scalar(
      lambda t: float(np.mean(pair_loss(joint, shuffled, t))),
      bounds=bounds, method='bounded', options={'xatol': 1e-4}).x)


def _noisy_maps(kappa, unit_noise, sigma, remove_map_mean):
  noisy = kappa + sigma * unit_noise
  if remove_map_mean:
    noisy = noisy - noisy.mean(axis=(-2, -1), keepdims=True)
  return noisy


def grid_logits(network, kappa, unit_noise, sigma, points, batch_size,
                remove_map_mean=False):
  """Each noisy map's logits at the cell centres of a grid over the θ box.

  Args:
    network: a `RatioNetwork` or `classifier` (any callable ``(x, σ, θ) →
      [B]`` logits whose leading axes broadcast): each call gets one map
      ``[1, N, N]`` and one σ ``[1]`` against B θ, so the map-only work
      (the power spectrum's evidence) is done once per call.
    kappa, unit_noise, sigma, remove_map_mean: as `per_map_logits`'s.
    points: cells per θ axis P (`cosmology.COSMO_PARAMETER_BOUNDS`).
    batch_size: θ per network call.

  Returns:
    (logits ``[M, P²]`` numpy nats, cell area in θ units²); cells in the
    row-major order of (Ωm, σ8).
  """
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS, np.float64)
  widths = (bounds[:, 1] - bounds[:, 0]) / points
  centres = [low + (np.arange(points) + 0.5) * w
             for (low, _), w in zip(bounds, widths)]
  grid = np.stack(np.meshgrid(*centres, indexing='ij'), -1).reshape(-1, 2)
  grid = tf.constant(grid, tf.float32)
  level = tf.constant([sigma], tf.float32)
  out = []
  for x in _noisy_maps(kappa, unit_noise, sigma, remove_map_mean):
    x = tf.constant(x[np.newaxis], tf.float32)
    values = [np.asarray(network(x, level, grid[start:start + batch_size]))
              for start in range(0, len(grid), batch_size)]
    out.append(np.concatenate(values))
  return np.stack(out).astype(np.float64), float(np.prod(widths))


def posterior_log_density(at_truth, on_grid, cell_area, temperature=1.):
  """``[M]`` log p_α(θ_true | x) of the grid posterior ∝ exp(α ℓ) (nats).

  Args:
    at_truth: ``[M]`` logits at the true θ (`per_map_logits`' first).
    on_grid: ``[M, G]`` logits at the cell centres (`grid_logits`).
    cell_area: the area of a cell (θ units²).
    temperature: α.
  """
  return (temperature * at_truth -
          scipy.special.logsumexp(temperature * on_grid, axis=1) -
          math.log(cell_area))


def best_posterior_temperature(at_truth, on_grid, cell_area,
                               bounds=(0.05, 20.)):
  """The α that maximises the mean `posterior_log_density` (concave in α)."""
  return float(scipy.optimize.minimize_scalar(
      lambda t: -float(np.mean(posterior_log_density(
          at_truth, on_grid, cell_area, t))),
      bounds=bounds, method='bounded', options={'xatol': 1e-4}).x)


def balance(joint, shuffled):
  """The balance b of a classifier on these pairs, with its standard error.

  b = mean sigmoid(ℓ_joint) + mean sigmoid(ℓ_shuffled) − 1: 0 for a
  balanced classifier (the Bayes-optimal one is); b > 0 says the network
  calls too many pairs joint, b < 0 too few (``ratio.balance_penalty``).

  Returns:
    (b, its standard error over the maps), floats.
  """
  a = scipy.special.expit(joint) + scipy.special.expit(shuffled) - 1.
  return float(a.mean()), float(a.std(ddof=1) / math.sqrt(len(a)))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  paths, sigmas = _checked_flags()
  start = time.time()
  pixel_scale = cosmology.cosmo_kappa_setting(FLAGS.map_size).pixel_scale_arcmin
  maps = lognormal.cosmo_maps(
      range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.num_maps),
      FLAGS.map_size, pixel_scale)
  theta = np.stack([maps['omega_m'], maps['sigma8']], axis=-1)
  unit_noise = np.random.default_rng(FLAGS.seed).standard_normal(
      maps['kappa'].shape).astype(np.float32)
  print(f'{FLAGS.num_maps} held-out cosmo_{FLAGS.map_size} maps from seed '
        f'{FLAGS.first_seed} ({time.time() - start:.0f} s)')
  losses, temperatures, tempered, balances = {}, {}, {}, {}
  scores = {}  # path -> per σ (log densities at α = 1 [M], α̂, mean at α̂).
  for path in paths:
    network = classifier(path, FLAGS.map_size, pixel_scale)
    logits = [per_map_logits(network, maps['kappa'], theta, unit_noise, s,
                             FLAGS.batch_size, FLAGS.remove_map_mean)
              for s in sigmas]
    losses[path] = [pair_loss(*pair) for pair in logits]
    temperatures[path] = [best_temperature(*pair) for pair in logits]
    tempered[path] = [float(np.mean(pair_loss(*pair, alpha))) for pair, alpha
                      in zip(logits, temperatures[path])]
    balances[path] = [balance(*pair) for pair in logits]
    if FLAGS.posterior_points:
      scores[path] = []
      for s, (joint, _) in zip(sigmas, logits):
        on_grid, area = grid_logits(network, maps['kappa'], unit_noise, s,
                                    FLAGS.posterior_points,
                                    FLAGS.batch_size * 16,
                                    FLAGS.remove_map_mean)
        alpha = best_posterior_temperature(joint, on_grid, area)
        scores[path].append((
            posterior_log_density(joint, on_grid, area), alpha,
            float(np.mean(posterior_log_density(joint, on_grid, area,
                                                alpha)))))
  n = FLAGS.num_maps
  rows = []
  columns = ' | '.join(f'σ {s:g}' for s in sigmas)
  print(f'| network | {columns} |')
  print('|---' * (len(sigmas) + 1) + '|')
  reference = losses[paths[0]]
  for path in paths:
    cells, row = [], {'network': path, 'sigma': sigmas, 'loss': [],
                      'difference': [], 'difference_error': [],
                      'best_temperature': temperatures[path],
                      'loss_at_best_temperature': tempered[path],
                      'balance': [b for b, _ in balances[path]],
                      'balance_error': [e for _, e in balances[path]]}
    for j, values in enumerate(losses[path]):
      diff = values - reference[j]
      row['loss'].append(float(values.mean()))
      row['difference'].append(float(diff.mean()))
      row['difference_error'].append(float(diff.std(ddof=1) / math.sqrt(n)))
      cells.append(f'{values.mean():.3f}' if path == paths[0] else
                   f'{values.mean():.3f} ({diff.mean():+.3f} ± '
                   f'{diff.std(ddof=1) / math.sqrt(n):.3f})')
    rows.append(row)
    print(f'| {path} | ' + ' | '.join(cells) + ' |')
  print(f'(nats; in brackets the paired difference to the first network ± '
        f'its standard error over {n} maps)')
  print()
  print(f'| network: best logit scale α (loss at α) | {columns} |')
  print('|---' * (len(sigmas) + 1) + '|')
  for path in paths:
    print(f'| {path} | ' + ' | '.join(
        f'{alpha:.2f} ({loss:.3f})' for alpha, loss in
        zip(temperatures[path], tempered[path])) + ' |')
  print('(α minimises the mean cross-entropy of α ℓ over these pairs)')
  print()
  print(f'| network: balance b ± s.e. | {columns} |')
  print('|---' * (len(sigmas) + 1) + '|')
  for path in paths:
    print(f'| {path} | ' + ' | '.join(
        f'{b:+.3f} ± {e:.3f}' for b, e in balances[path]) + ' |')
  print('(b = mean d(joint) + mean d(shuffled) − 1, d = sigmoid(ℓ); 0 when '
        'balanced)')
  if scores:
    print()
    print(f'| network: log p(θ_true \\| x) at α = 1 [best α: value] | '
          f'{columns} |')
    print('|---' * (len(sigmas) + 1) + '|')
    for path, row in zip(paths, rows):
      cells = []
      row['posterior_log_density'], row['posterior_log_density_error'] = [], []
      row['posterior_difference'], row['posterior_difference_error'] = [], []
      row['best_posterior_temperature'] = [a for _, a, _ in scores[path]]
      row['posterior_log_density_at_best'] = [v for _, _, v in scores[path]]
      for j, (values, alpha, at_best) in enumerate(scores[path]):
        diff = values - scores[paths[0]][j][0]
        error = float(values.std(ddof=1) / math.sqrt(n))
        row['posterior_log_density'].append(float(values.mean()))
        row['posterior_log_density_error'].append(error)
        row['posterior_difference'].append(float(diff.mean()))
        row['posterior_difference_error'].append(
            float(diff.std(ddof=1) / math.sqrt(n)))
        paired = '' if path == paths[0] else (
            f' ({diff.mean():+.3f} ± {diff.std(ddof=1) / math.sqrt(n):.3f})')
        cells.append(f'{values.mean():.3f}{paired} [{alpha:.2f}: '
                     f'{at_best:.3f}]')
      print(f'| {path} | ' + ' | '.join(cells) + ' |')
    print(f'(nats, mean over maps; grid of {FLAGS.posterior_points}² cells; '
          'in brackets the paired difference to the first network ± its '
          's.e.; α maximises the mean of the posterior ∝ exp(α ℓ))')
  print(f'{time.time() - start:.0f} s')
  if FLAGS.output:
    table = {'flags': {'map_size': FLAGS.map_size, 'num_maps': n,
                       'first_seed': FLAGS.first_seed, 'seed': FLAGS.seed,
                       'remove_map_mean': FLAGS.remove_map_mean,
                       'posterior_points': FLAGS.posterior_points},
             'rows': rows}
    outputs.write_json_atomic(FLAGS.output, table, indent=1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
