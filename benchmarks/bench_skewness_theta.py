r"""θ from the power spectrum, and from it plus the map's skewness (issue 15).

On the 128² ``cosmo`` maps at the COSMOS noise the exact field-level θ
posterior (`lognormal_cosmology.exact_theta_posterior`) is 1.4–1.5× tighter
than the power-spectrum posterior (`power_spectrum_likelihood`), and the
learned one is as wide as the power spectrum's (docs/benchmarks.md). This
script asks whether the difference is the one-point non-Gaussianity: it
adds to the power-spectrum likelihood that of one statistic the spectrum
does not see, the skewness of the map smoothed at a few scales, and
compares both posteriors on the same held-out maps and noise as
``bench_joint_posterior.py --theta_only``.

1. Calibration. For θ on a ``--design_points``² grid over the prior box
   (edges included), ``--sims_per_theta`` maps κ(z, θ) of the generating
   model (`CosmoLognormalField`, fresh white maps z from ``--seed``), plus
   white noise of the data's σ_pix, minus their mean (the E-mode map's
   mean is 0): the skewness t_j = m3 / m2^{3/2} (`statistics.moments`) of
   each map smoothed by a Gaussian of ``--smoothing_arcmin`` (σ, arcmin;
   `lensing.gaussian_smooth`).
2. A Gaussian model of t given θ: the mean μ(θ) a cubic polynomial in θ
   (least squares over all simulations), the log variance of each t_j a
   cubic polynomial fitted to the per-design-point sample variances, the
   correlation pooled over the standardised residuals.
3. Held-out maps (seeds ``--first_seed`` onwards, noise seed (``--seed``,
   i), as in ``bench_joint_posterior.py``): on the same 81² cells over the
   box, the power-spectrum posterior and the posterior of log p_G(κ_E | θ)
   + log N(t(κ_E); μ(θ), Σ(θ)), which takes t and the mode powers as
   independent (at leading order the third moment is uncorrelated with
   the second). Reported: 68/95 % coverage of the central intervals (from
   the marginal CDF at the truth), mean std, and the mean std on the first
   ``--num_exact_maps`` maps, those of the exact posterior's tables.

  python benchmarks/bench_skewness_theta.py --num_maps=100 \
      --output=skewness_theta_128.json
"""

import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf
import tqdm

from tfp_massmap import cosmology
from tfp_massmap import joint_posterior
from tfp_massmap import lensing
from tfp_massmap import lognormal_cosmology
from tfp_massmap import outputs
from tfp_massmap import power_spectrum_likelihood
from tfp_massmap import statistics
from tfp_massmap import survey
from tfp_massmap import testing

FLAGS = flags.FLAGS

NAMES = cosmology.COSMO_PARAMETER_NAMES


def _define_flags():
  """The flags (defined only when run as a script, so tests can import it)."""
  flags.DEFINE_integer('map_size', 128, 'Pixels per side N of the cosmo maps '
                       '(0.8-arcmin pixels, `cosmology.cosmo_kappa_setting`).')
  flags.DEFINE_float('galaxy_density', survey.COSMOS_GALAXY_DENSITY,
                     'Galaxies per arcmin² (sets σ_pix).')
  flags.DEFINE_float('sigma_e', survey.COSMOS_SIGMA_E, 'Shape noise per '
                     'component.')
  flags.DEFINE_list('smoothing_arcmin', ['1.2', '2.4', '4.8'], 'Gaussian '
                    'smoothing σ of each skewness statistic (arcmin).')
  flags.DEFINE_multi_enum('moments', ['skewness'],
                          ['skewness', 'excess_kurtosis'],
                          'One-point moments of each smoothed map '
                          '(`statistics.Moments` fields) that join the '
                          'power spectrum.')
  flags.DEFINE_integer('design_points', 9, 'Calibration θ per axis.')
  flags.DEFINE_integer('sims_per_theta', 40, 'Calibration maps per θ.')
  flags.DEFINE_integer('num_maps', 100, 'Held-out maps.')
  flags.DEFINE_integer('num_exact_maps', 21, 'Leading held-out maps that '
                       'have an exact posterior in docs/benchmarks.md.')
  flags.DEFINE_integer('first_seed', 1_000_000, 'Seed of the first map.')
  flags.DEFINE_integer('seed', 0, 'Seed of the shear noise (as '
                       'bench_joint_posterior.py) and, + 1, of the '
                       'calibration maps.')
  flags.DEFINE_string('output', None, 'Optional JSON file of the records.')


def smoothed_moments(maps, smoothing_arcmin, pixel_scale_arcmin,
                     moments=('skewness',)):
  """One-point moments of maps ``[..., N, N]`` smoothed at each scale.

  Returns ``[..., S × len(moments)]``: for each scale (Gaussian σ in
  arcmin, 0 for none), the named fields of `statistics.moments`.
  """
  maps = tf.convert_to_tensor(maps, tf.float64)
  values = []
  for scale in smoothing_arcmin:
    found = statistics.moments(lensing.gaussian_smooth(
        maps, scale, pixel_scale_arcmin))
    values += [getattr(found, name).numpy() for name in moments]
  return np.stack(values, -1)


def polynomial_features(theta):
  """The 10 monomials of a cubic in (Ωm, σ8), centred on (0.3, 0.8)."""
  a = (theta[..., 0] - 0.3) / 0.1
  b = (theta[..., 1] - 0.8) / 0.2
  return np.stack([np.ones_like(a), a, b, a * a, a * b, b * b, a**3,
                   a * a * b, a * b * b, b**3], -1)


class SkewnessModel:
  """N(t; μ(θ), Σ(θ)) of the skewness statistics t given θ (module step 2).

  Args:
    theta: ``[D, 2]`` design θ.
    values: ``[D, M, S]`` statistics of M simulations at each design θ.
  """

  def __init__(self, theta, values):
    design, sims, _ = values.shape
    features = polynomial_features(theta)
    self._mean, *_ = np.linalg.lstsq(
        np.repeat(features, sims, axis=0), values.reshape(design * sims, -1),
        rcond=None)
    self._log_variance, *_ = np.linalg.lstsq(
        features, np.log(values.var(axis=1, ddof=1)), rcond=None)
    residual = (values - self.mean(theta)[:, None]) / self.std(theta)[:, None]
    self._correlation = np.corrcoef(residual.reshape(design * sims, -1).T)
    self._precision = np.linalg.inv(self._correlation)

  def mean(self, theta):
    return polynomial_features(theta) @ self._mean

  def std(self, theta):
    return np.sqrt(np.exp(polynomial_features(theta) @ self._log_variance))

  def log_likelihood(self, values, theta):
    """The log-density N(values ``[S]``; μ(θ), Σ(θ)) at each θ ``[G, 2]`` → ``[G]``."""
    std = self.std(theta)
    z = (values - self.mean(theta)) / std
    return (-0.5 * np.einsum('gi,ij,gj->g', z, self._precision, z) -
            np.log(std).sum(-1))


def calibrate(field, noise, smoothing, pixel_scale, points, sims, seed,
              moments):
  """(design θ ``[D, 2]``, statistics ``[D, M, S]``) of step 1."""
  bounds = np.asarray(cosmology.COSMO_PARAMETER_BOUNDS)
  axes = [np.linspace(low, high, points) for low, high in bounds]
  theta = np.stack(np.meshgrid(*axes, indexing='ij'), -1).reshape(-1, 2)
  rng = np.random.default_rng(seed)
  n = field.map_size
  values = []
  for t in tqdm.tqdm(theta, desc='calibration maps', unit='θ'):
    kappa = field.convergence_from_white(rng.standard_normal((sims, n, n)),
                                         t).numpy()
    maps = kappa + noise * rng.standard_normal(kappa.shape)
    maps -= maps.mean(axis=(-2, -1), keepdims=True)
    values.append(smoothed_moments(maps, smoothing, pixel_scale, moments))
  return theta, np.stack(values)


def marginal_summary(centres, weights, truth):
  """Each parameter's marginal summary and the truth's coverage.

  `joint_posterior.grid_parameter_summary`, with the 68/95 % central
  intervals' coverage of the truth.
  """
  summary = joint_posterior.grid_parameter_summary(centres, weights, NAMES,
                                                   truth)
  return {name: dict(part, **{
      f'covered_{level}': bool(part[f'interval_{level}'][0] <= truth[d] <=
                               part[f'interval_{level}'][1])
      for level in (68, 95)}) for d, (name, part) in enumerate(summary.items())}


def table(records, num_exact):
  """The markdown table of both posteriors over the records."""
  lines = ['| posterior | parameter | 68 % | 95 % | mean std | mean std, '
           f'first {num_exact} maps |', '|---|---|---|---|---|---|']
  for key, label in (('power_spectrum', 'power spectrum'),
                     ('with_moments', 'power spectrum + moments')):
    for name in NAMES:
      part = [r[key][name] for r in records]
      lines.append(
          f'| {label} | {name} | '
          f'{np.mean([p["covered_68"] for p in part]):.2f} | '
          f'{np.mean([p["covered_95"] for p in part]):.2f} | '
          f'{np.mean([p["std"] for p in part]):.4f} | '
          f'{np.mean([p["std"] for p in part[:num_exact]]):.4f} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  start = time.time()
  n, pixel_scale = cosmology.cosmo_kappa_setting(FLAGS.map_size)[:2]
  noise = FLAGS.sigma_e / np.sqrt(FLAGS.galaxy_density * pixel_scale**2)
  smoothing = [float(s) for s in FLAGS.smoothing_arcmin]
  field = lognormal_cosmology.CosmoLognormalField(n, pixel_scale)
  design, values = calibrate(field, noise, smoothing, pixel_scale,
                             FLAGS.design_points, FLAGS.sims_per_theta,
                             FLAGS.seed + 1, FLAGS.moments)
  model = SkewnessModel(design, values)
  likelihood = power_spectrum_likelihood.PowerSpectrumLikelihood(
      n, pixel_scale)
  records = []
  for i in tqdm.trange(FLAGS.num_maps, desc='held-out maps'):
    theta, _, data = testing.cosmo_problem(FLAGS.first_seed + i, n,
                                           pixel_scale, noise, (FLAGS.seed, i))
    kappa_e, _ = lensing.kaiser_squires(tf.constant(data.shear, tf.float64))
    centres, weights = likelihood.grid_posterior(kappa_e, noise)
    grid = np.stack(np.meshgrid(*centres, indexing='ij'), -1).reshape(-1, 2)
    log_post = np.log(np.maximum(weights.reshape(-1), 1e-300)) + model.log_likelihood(
        smoothed_moments(kappa_e, smoothing, pixel_scale, FLAGS.moments),
        grid)
    joint = np.exp(log_post - log_post.max())
    records.append(dict(
        seed=FLAGS.first_seed + i, theta=theta.tolist(),
        power_spectrum=marginal_summary(centres, weights, theta),
        with_moments=marginal_summary(
            centres, (joint / joint.sum()).reshape(weights.shape), theta)))
  print(f'cosmo_{n} maps from seed {FLAGS.first_seed}, σ_pix = {noise:.4f}; '
        f'{", ".join(FLAGS.moments)} at {smoothing} arcmin, calibrated on '
        f'{values.shape[0]} × {values.shape[1]} simulations')
  print(table(records, FLAGS.num_exact_maps))
  print(f'{time.time() - start:.0f} s')
  if FLAGS.output:
    outputs.write_json_atomic(FLAGS.output, dict(
        flags={name: FLAGS[name].value for name in (
            'map_size', 'galaxy_density', 'sigma_e', 'smoothing_arcmin', 'moments',
            'design_points', 'sims_per_theta', 'num_maps', 'first_seed',
            'seed')},
        maps=records), indent=1)


if __name__ == '__main__':
  _define_flags()
  app.run(main)
