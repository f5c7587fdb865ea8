r"""Validates a trained score-network prior on held-out synthetic maps.

For each noise level σ it reports, on maps of the validation split of
``lognormal_kappa/lognormal_128`` (regenerated from their seeds):

* the denoising MSE of the learned denoiser r(x + σu, σ) and of the linear
  Wiener denoiser with the same κ power spectrum (GaussianPrior.denoise);
  the learned one must be lower at every σ;
* optionally (``--mmse_maps`` > 0) the MSE of the exact lognormal MMSE
  denoiser, the posterior mean of `lognormal_posterior` with the identity
  operator, on the first few maps: the gap is what the prior can still gain;
* the per-pixel posterior variance that each denoiser implies, σ² ∇·D(y) / N²
  (Tweedie's second-moment identity: for the denoiser of a prior p,
  Cov[x | y] = σ² ∂D/∂y, so its trace is the posterior variance of x given
  y = x + σu under p; a Hutchinson estimate with ``--variance_probes``
  Rademacher probes and forward-mode derivatives), over its own MSE: a
  prior whose posterior is calibrated at noise σ has a ratio near 1 (in
  expectation it is 1 for the exact prior, where both equal the MMSE), one
  that is too broad a ratio above 1, and its intervals over-cover;
* on maps of ``gaussian_128``, the relative L2 error of a network's score
  against the analytic Gaussian score: of ``--gaussian_prior_path``, a
  network trained on the Gaussian config (the check of score matching
  itself), else of the evaluated network (then it measures how far its prior
  is from the Gaussian one). The error is given on whole maps and without a
  border of ``--border`` pixels: the test maps are periodic, which the
  analytic score knows and a zero-padded network cannot.

For a network conditioned on the cosmology θ = (Ωm, σ8) (``--prior_path``
of a conditional network, e.g. ``tfp_massmap/data/prior_cosmo_conditional_32.keras``;
issue 15) the maps are held-out ``cosmo`` maps instead (`lognormal.cosmo_maps`
of seeds 1 000 000 onwards, ``--map_size`` pixels of the network's pixel
scale, 0.8 arcmin for the shipped one), the network
denoises each at its own θ, the Wiener denoiser and the exact MMSE denoiser
are those of each map's own field (`lognormal.cosmo_field`), and the
Gaussian score check is left out (there is no Gaussian cosmo config). The
per-map MSEs of the MMSE maps are recorded, so that two networks run with
the same flags compare map by map.

Example:
  python benchmarks/bench_prior_validation.py --sigmas=0.005,0.02,0.08 \
      --num_maps=32 --mmse_maps=2 \
      --gaussian_prior_path=/work/runs/prior_gaussian_128/score_network.keras
"""

import json
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import lognormal_posterior
from tfp_massmap import outputs
from tfp_massmap import priors
from tfp_massmap.priors import gaussian as gaussian_prior
from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder as lkb

FLAGS = flags.FLAGS


def _define_flags():
  """The flags (defined only when run as a script, so tests can import it)."""
  flags.DEFINE_string('prior_path', None, '.keras score network (default: the shipped prior).')
  flags.DEFINE_list('sigmas', ['0.005', '0.02', '0.08'],
                    'Noise std levels (dimensionless convergence).')
  flags.DEFINE_integer('num_maps', 32, 'Held-out maps per σ.')
  flags.DEFINE_integer('mmse_maps', 0,
                       'Maps on which to run the exact lognormal MMSE denoiser (HMC).')
  flags.DEFINE_integer('mmse_chains', 4, 'HMC chains per map for the MMSE denoiser.')
  flags.DEFINE_integer('mmse_results', 200, 'HMC results per chain after burn-in.')
  flags.DEFINE_integer('mmse_burnin', 200, 'HMC burn-in steps.')
  flags.DEFINE_string('gaussian_prior_path', None,
                      '.keras network trained on gaussian_128 for the score check '
                      '(default: the evaluated network).')
  flags.DEFINE_integer('variance_probes', 4, 'Rademacher probes of the '
                       'implied posterior variance (0: leave it out).')
  flags.DEFINE_integer('map_size', 32, 'Pixels per side of the cosmo maps (a '
                       'conditional network only).')
  flags.DEFINE_integer('border', 4, 'Pixels left out at each edge for the interior score error.')
  flags.DEFINE_integer('seed', 0, 'Seed of the denoising noise.')
  flags.DEFINE_string('output', None, 'Optional JSON file for the results.')


def _held_out(kind, num_maps):
  """First ``num_maps`` validation-split maps of ``{kind}_128`` and the field."""
  config = lkb.Builder.builder_configs[f'{kind}_128']
  field = lognormal.LognormalField(config.shift, config.map_size,
                                   config.pixel_scale_arcmin, dtype=tf.float64)
  first = config.split_sizes[0]
  return field.maps_from_seeds(range(first, first + num_maps)), field


_COSMO_FIRST_SEED = 1_000_000
# The cosmo configs' pixel side [arcmin], for a network that records none.
_COSMO_PIXEL_SCALE_ARCMIN = 0.8


def _held_out_cosmo(num_maps, map_size, pixel_scale_arcmin):
  """Held-out cosmo maps ``[M, N, N]`` float64, θ ``[M, 2]``, their fields."""
  maps = lognormal.cosmo_maps(
      range(_COSMO_FIRST_SEED, _COSMO_FIRST_SEED + num_maps), map_size,
      pixel_scale_arcmin)
  theta = np.stack([maps['omega_m'], maps['sigma8']], axis=-1)
  fields = [lognormal.cosmo_field(*t, map_size, pixel_scale_arcmin)
            for t in theta]
  return maps['kappa'].astype(np.float64), theta, fields


def _wiener(field):
  return gaussian_prior.GaussianPrior(tf.cast(field.power_grid, tf.float32))


def tweedie_variance(denoise, noisy, sigma, num_probes, seed=0):
  """Per-map posterior variance per pixel implied by a denoiser, ``[M]``.

  σ² tr(∂D/∂y) / N² for maps y ``[M, N, N]`` (float32, dimensionless
  convergence) at noise std σ, the trace estimated with ``num_probes``
  Rademacher probes z as the mean of z · (∂D/∂y) z (forward-mode
  derivatives, one per probe). For the MMSE denoiser of a prior this is the
  mean per-pixel variance of x given y under that prior.

  Args:
    denoise: callable (y, σ) -> D(y) ``[M, N, N]``.
    noisy: numpy ``[M, N, N]`` float32.
    sigma: noise std σ (dimensionless).
    num_probes: positive int.
    seed: seed of the probes.
  """
  y = tf.constant(noisy)
  rng = np.random.default_rng(seed)
  total = np.zeros(noisy.shape[0])
  for _ in range(num_probes):
    z = tf.constant(rng.choice(np.array([-1., 1.], noisy.dtype), noisy.shape))
    with tf.autodiff.ForwardAccumulator(y, z) as accumulator:
      denoised = denoise(y, sigma)
    total += tf.reduce_sum(z * accumulator.jvp(denoised), axis=[1, 2]).numpy()
  return sigma**2 * total / (num_probes * noisy.shape[1] * noisy.shape[2])


def _exact_mmse(noisy, sigma, field, seed):
  """Posterior mean of κ given κ + σ u under the map's lognormal field."""
  n = field.map_size
  result = lognormal_posterior.lognormal_posterior(
      noisy[..., None].astype(np.float64), np.full((n, n), sigma),
      np.ones((n, n)), field, operator=likelihood.identity_operator,
      num_chains=FLAGS.mmse_chains, num_results=FLAGS.mmse_results,
      num_burnin_steps=FLAGS.mmse_burnin, seed=seed, progress=False)
  return np.asarray(result.mean)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  net = priors.load_prior(FLAGS.prior_path or 'lognormal_128')
  conditioned = bool(getattr(net, 'num_parameters', 0))
  sigmas = [float(s) for s in FLAGS.sigmas]
  rng = np.random.default_rng(FLAGS.seed)
  if conditioned:
    joint = priors.LearnedJointPrior(net)
    maps, theta, fields = _held_out_cosmo(
        FLAGS.num_maps, FLAGS.map_size,
        net.pixel_scale_arcmin or _COSMO_PIXEL_SCALE_ARCMIN)
    denoise = lambda x, sigma: joint.denoise(x, theta.astype(np.float32), sigma)
    wieners = [_wiener(f) for f in fields]
    linear_denoise = lambda x, sigma: tf.concat(
        [w.denoise(x[i:i + 1], sigma) for i, w in enumerate(wieners)], 0)
  else:
    maps, field = _held_out('lognormal', FLAGS.num_maps)
    fields = [field] * len(maps)
    denoise = net.denoise
    linear_denoise = _wiener(field).denoise
  n, pix = maps.shape[-1], fields[0].pixel_scale_arcmin
  rows = []
  for sigma in sigmas:
    noisy = (maps + sigma * rng.standard_normal(maps.shape)).astype(np.float32)
    start = time.perf_counter()
    learned = denoise(noisy, sigma).numpy()
    seconds = time.perf_counter() - start
    linear = linear_denoise(noisy, sigma).numpy()
    row = {'sigma': sigma,
           'mse_learned': float(np.mean((learned - maps)**2)),
           'mse_wiener': float(np.mean((linear - maps)**2)),
           'mse_noisy': float(np.mean((noisy - maps)**2)),
           'denoise_seconds_per_map': seconds / len(maps)}
    row['learned_over_wiener'] = row['mse_learned'] / row['mse_wiener']
    variances = {}
    if FLAGS.variance_probes:
      for key, fn in (('learned', denoise), ('wiener', linear_denoise)):
        variances[key] = tweedie_variance(fn, noisy, sigma, FLAGS.variance_probes,
                                          seed=FLAGS.seed)
        row[f'implied_variance_{key}'] = float(np.mean(variances[key]))
        row[f'implied_variance_over_mse_{key}'] = (
            row[f'implied_variance_{key}'] / row[f'mse_{key}'])
    if FLAGS.mmse_maps:
      k = FLAGS.mmse_maps
      means = np.stack([_exact_mmse(noisy[i], sigma, fields[i], (FLAGS.seed, i))
                        for i in range(k)])

      def per_map(x, truth=maps[:k]):
        return np.mean((x[:len(truth)] - truth)**2, axis=(1, 2))
      row['mmse_maps'] = k
      row['mse_exact_mmse'] = float(np.mean(per_map(means)))
      row['mse_learned_same_maps'] = float(np.mean(per_map(learned)))
      row['mse_wiener_same_maps'] = float(np.mean(per_map(linear)))
      row['learned_over_exact'] = row['mse_learned_same_maps'] / row['mse_exact_mmse']
      row['per_map_mse_learned'] = per_map(learned).tolist()
      row['per_map_mse_exact_mmse'] = per_map(means).tolist()
      if variances:
        # In expectation over y the exact posterior variance is the MMSE.
        row['implied_variance_learned_over_exact_mmse'] = float(
            np.mean(variances['learned'][:k]) / row['mse_exact_mmse'])
        row['per_map_implied_variance_learned'] = variances['learned'][:k].tolist()
    rows.append(row)
    print(json.dumps({key: value for key, value in row.items()
                      if not key.startswith('per_map')}))
  result = {'map_size': n, 'pixel_scale_arcmin': pix, 'num_maps': FLAGS.num_maps,
            'prior_path': FLAGS.prior_path, 'seed': FLAGS.seed,
            'denoising': rows}
  if conditioned:
    result['theta'] = theta.tolist()
    if FLAGS.output:
      outputs.write_json_atomic(FLAGS.output, result, indent=2)
    return

  gaussian_maps, gfield = _held_out('gaussian', FLAGS.num_maps)
  analytic = gaussian_prior.GaussianPrior(tf.cast(gfield.power_grid, tf.float32))
  gnet = (priors.load_prior(FLAGS.gaussian_prior_path)
          if FLAGS.gaussian_prior_path else net)
  inner = slice(FLAGS.border, n - FLAGS.border)
  score_rows = []
  for sigma in sigmas:
    noisy = (gaussian_maps + sigma * rng.standard_normal(gaussian_maps.shape)).astype(np.float32)
    s_net = gnet.score(noisy, sigma).numpy()
    s_true = analytic.score(noisy, sigma).numpy()
    err = float(np.linalg.norm(s_net - s_true) / np.linalg.norm(s_true))
    diff, ref = (s_net - s_true)[:, inner, inner], s_true[:, inner, inner]
    score_rows.append({'sigma': sigma, 'relative_l2_score_error_gaussian': err,
                       'relative_l2_score_error_gaussian_interior':
                           float(np.linalg.norm(diff) / np.linalg.norm(ref))})
    print(json.dumps(score_rows[-1]))
  result.update(gaussian_score=score_rows, border=FLAGS.border,
                gaussian_prior_path=FLAGS.gaussian_prior_path)
  if FLAGS.output:
    outputs.write_json_atomic(FLAGS.output, result, indent=2)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
