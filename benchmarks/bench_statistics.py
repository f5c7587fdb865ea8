r"""Calibration of summary statistics under the posterior, against the truth.

For each held-out map written by ``bench_posterior.py --samples_dir`` (the
truth, the data's mask, the Wiener map and 40 samples each of the
learned-prior posterior and of the exact Gaussian posterior, whose mean is
the Wiener filter), the statistics of `tfp_massmap.statistics` are measured
on the truth, on every sample and on the Wiener map, on the mask, after
removing each map's mean on the mask (shear leaves it free):

* ``power``: the pseudo power spectrum over f_sky (`masked_power_spectrum`,
  10 log ℓ bins from the fundamental mode to Nyquist), unsmoothed maps;
* ``pdf``: the one-point PDF (`one_point_pdf`);
* ``peaks``: peak counts by height (`peak_counts`);
* ``V0``, ``V1``, ``V2``: Minkowski functionals (`minkowski_functionals`);

the last four on maps smoothed with a Gaussian of ``--smoothing_arcmin``,
with bins in units of σ0, the rms of the smoothed truths on the mask over
all maps (the same bins for truths, samples and Wiener maps). Reported: the
coverage of the central 68 % and 95 % bands of each posterior (per bin and
averaged over bins; nominal 0.68 and 0.95), and the Wiener map's statistic
over the truth's (mean over maps): a single Wiener map is smoother than the
truth, so it falls low in power and in peak counts. With ``--timing``, the
seconds per statistic for one 128² map and for a 40-sample batch.

Example:
  python benchmarks/bench_posterior.py --num_maps=20 --num_samples=40 \
      --samples_dir=/tmp/runs/stat_samples
  python benchmarks/bench_statistics.py --samples_dir=/tmp/runs/stat_samples \
      --output=/tmp/runs/bench_statistics.json --figure=/tmp/runs/statistics.png
"""

import glob
import json
import os
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from tfp_massmap import lensing
from tfp_massmap import pipeline
from tfp_massmap import power_spectrum
from tfp_massmap import statistics

flags.DEFINE_string('samples_dir', None, 'Folder of map_*.npz files from '
                    'bench_posterior.py --samples_dir.')
flags.DEFINE_float('smoothing_arcmin', 1.6, 'Gaussian smoothing std [arcmin] '
                   'before the PDF, peaks and Minkowski functionals.')
flags.DEFINE_bool('timing', True, 'Also time each statistic.')
flags.DEFINE_string('output', None, 'Optional JSON file for the results.')
flags.DEFINE_string('figure', None, 'Optional PNG: bands of the first map.')
flags.mark_flag_as_required('samples_dir')

FLAGS = flags.FLAGS

STATISTICS = ('power', 'pdf', 'peaks', 'V0', 'V1', 'V2')
# Their keys in `pipeline.map_statistics`.
_STATISTIC_KEYS = {'power': 'power_spectrum', 'pdf': 'pdf',
                   'peaks': 'peak_counts', 'V0': 'v0', 'V1': 'v1', 'V2': 'v2'}


class Bins:
  """The bins of every statistic, fixed for truths, samples and Wiener maps."""

  def __init__(self, n, pixel_scale_arcmin, sigma0):
    self.pixel_scale_arcmin = pixel_scale_arcmin
    self.sigma0 = sigma0
    self.ell_edges = power_spectrum.default_ell_edges(n, pixel_scale_arcmin, 10)
    self.pdf_edges = sigma0 * np.linspace(-3.0, 5.0, 17)
    self.peak_edges = sigma0 * np.array([-1.0, 0.0, 1.0, 2.0, 3.0, 4.0, 6.0])
    self.thresholds = sigma0 * np.linspace(-2.0, 4.0, 13)

  def as_dict(self):
    return {'ell_edges': self.ell_edges, 'pdf_edges': self.pdf_edges,
            'peak_edges': self.peak_edges, 'thresholds': self.thresholds}


def measure(maps, mask, bins):
  """Each statistic of maps ``[B, N, N]`` (`pipeline.map_statistics`)."""
  values = pipeline.map_statistics(maps, mask, bins.pixel_scale_arcmin,
                                   FLAGS.smoothing_arcmin, bins.as_dict())
  return {name: values[key] for name, key in _STATISTIC_KEYS.items()}


def _load(path):
  with np.load(path) as data:
    return {k: data[k] for k in data.files}


def _sigma0(paths):
  """Rms of the smoothed truths on their masks, over all maps."""
  squares, count = 0.0, 0
  for path in paths:
    d = _load(path)
    pix = float(d['pixel_scale_arcmin'])
    smooth = lensing.gaussian_smooth(tf.constant(d['truth'], tf.float64),
                                     FLAGS.smoothing_arcmin, pix)
    variance = statistics.moments(smooth, mask=d['mask']).variance
    count_on = np.sum(d['mask'] > 0)
    squares += float(variance) * count_on
    count += count_on
  return float(np.sqrt(squares / count))


def _time(fn, repeats=3):
  fn()  # Warm-up (first-call costs are not the statistic's).
  began = time.perf_counter()
  for _ in range(repeats):
    fn()
  return (time.perf_counter() - began) / repeats


def _timings(d, bins):
  pix = bins.pixel_scale_arcmin
  mask = tf.constant(d['mask'], tf.float32)
  out = {}
  for label, maps in (('one_map', d['truth'][None]),
                      ('batch_40', d['samples_posterior'][:40])):
    maps = tf.constant(maps, tf.float32)
    smooth = lensing.gaussian_smooth(maps, FLAGS.smoothing_arcmin, pix)
    calls = {
        'power': lambda m=maps: statistics.masked_power_spectrum(
            m, pix, mask=mask, ell_edges=bins.ell_edges),
        'pdf': lambda s=smooth: statistics.one_point_pdf(
            s, bins.pdf_edges, mask=mask),
        'peaks': lambda s=smooth: statistics.peak_counts(
            s, bins.peak_edges, mask=mask),
        'minkowski (13 thresholds)': lambda s=smooth: (
            statistics.minkowski_functionals(s, bins.thresholds, pix, mask=mask)),
        'aperture_mass (R = 5 arcmin)': lambda m=maps: statistics.aperture_mass_map(
            m, 5.0, pix, mask=mask),
        'smoothing': lambda m=maps: lensing.gaussian_smooth(
            m, FLAGS.smoothing_arcmin, pix),
    }
    out[label] = {name: _time(fn) for name, fn in calls.items()}
  return out


def _figure(path, d, bins, truth, learned, gaussian, wiener):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ell = np.sqrt(bins.ell_edges[1:] * bins.ell_edges[:-1])
  axes_x = {'power': ell, 'pdf': 0.5 * (bins.pdf_edges[1:] + bins.pdf_edges[:-1]),
            'peaks': 0.5 * (bins.peak_edges[1:] + bins.peak_edges[:-1]),
            'V0': bins.thresholds, 'V1': bins.thresholds, 'V2': bins.thresholds}
  labels = {'power': 'ℓ', 'pdf': 'κ (smoothed)', 'peaks': 'peak height κ',
            'V0': 'threshold κ', 'V1': 'threshold κ', 'V2': 'threshold κ'}
  fig, axes = plt.subplots(2, 3, figsize=(14, 8))
  for ax, name in zip(axes.flat, STATISTICS):
    x = axes_x[name]
    scale = x * (x + 1) / (2 * np.pi) if name == 'power' else 1.0
    for samples, colour, label in ((learned, 'C0', 'learned posterior 95 %'),
                                   (gaussian, 'C2', 'Gaussian posterior 95 %')):
      lo, hi = np.percentile(samples[name], [2.5, 97.5], axis=0)
      ax.fill_between(x, lo * scale, hi * scale, color=colour, alpha=0.35,
                      label=label)
    ax.plot(x, truth[name][0] * scale, 'k-', lw=2, label='truth')
    ax.plot(x, wiener[name][0] * scale, 'C3--', label='Wiener map')
    if name == 'power':
      ax.set_xscale('log')
      ax.set_yscale('log')
      ax.set_ylabel('ℓ(ℓ+1)C_ℓ / 2π')
    else:
      ax.set_ylabel(name)
    ax.set_xlabel(labels[name])
  axes.flat[0].legend(fontsize=8)
  fig.suptitle(f'Statistics of held-out map 0 and their posterior bands '
               f'(mask of {d["mask"].mean():.0%} of the map; '
               f'{FLAGS.smoothing_arcmin} arcmin smoothing except the spectrum)')
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  paths = sorted(glob.glob(os.path.join(FLAGS.samples_dir, 'map_*.npz')))
  if not paths:
    raise app.UsageError(f'no map_*.npz in --samples_dir={FLAGS.samples_dir!r}; '
                         'run bench_posterior.py --samples_dir first.')
  first = _load(paths[0])
  bins = Bins(first['truth'].shape[-1], float(first['pixel_scale_arcmin']),
              _sigma0(paths))
  hits = {kind: {level: {s: [] for s in STATISTICS} for level in ('68', '95')}
          for kind in ('learned', 'gaussian')}
  wiener_ratio = {s: [] for s in ('power', 'peaks')}
  for i, path in enumerate(paths):
    d = _load(path)
    truth = measure(d['truth'][None], d['mask'], bins)
    learned = measure(d['samples_posterior'], d['mask'], bins)
    gaussian = measure(d['samples_wiener'], d['mask'], bins)
    wiener = measure(d['kappa_wiener'][None], d['mask'], bins)
    for kind, samples in (('learned', learned), ('gaussian', gaussian)):
      for level in ('68', '95'):
        for name in STATISTICS:
          b = statistics.band(samples[name], level=int(level) / 100)
          lower, upper = b.lower.numpy(), b.upper.numpy()
          hit = (truth[name][0] >= lower) & (truth[name][0] <= upper)
          hit = np.where(np.isfinite(lower), hit.astype(float), np.nan)
          hits[kind][level][name].append(hit)
    wiener_ratio['power'].append(wiener['power'][0] / truth['power'][0])
    wiener_ratio['peaks'].append(wiener['peaks'][0].sum() / truth['peaks'][0].sum())
    if i == 0 and FLAGS.figure:
      _figure(FLAGS.figure, d, bins, truth, learned, gaussian, wiener)
    print(f'{os.path.basename(path)} done', flush=True)

  result = {'num_maps': len(paths), 'sigma0': bins.sigma0,
            'smoothing_arcmin': FLAGS.smoothing_arcmin, 'coverage': {},
            'wiener_over_truth': {
                'power_per_bin': np.nanmean(wiener_ratio['power'], 0).tolist(),
                'total_peaks': float(np.mean(wiener_ratio['peaks']))}}
  print(f'\n{len(paths)} maps, σ0 = {bins.sigma0:.4f}, smoothing '
        f'{FLAGS.smoothing_arcmin} arcmin')
  print('| statistic | bins | learned 68 % | learned 95 % | Gaussian 68 % | '
        'Gaussian 95 % |')
  print('|---|---|---|---|---|---|')
  for name in STATISTICS:
    row = [name, str(len(hits['learned']['68'][name][0]))]
    result['coverage'][name] = {}
    for kind in ('learned', 'gaussian'):
      for level in ('68', '95'):
        per_bin = np.nanmean(np.array(hits[kind][level][name]), axis=0)
        result['coverage'][name][f'{kind}_{level}'] = per_bin.tolist()
        row.append(f'{np.nanmean(per_bin):.2f} ({np.nanmin(per_bin):.2f}–'
                   f'{np.nanmax(per_bin):.2f})')
    print('| ' + ' | '.join(row) + ' |')
  print('Wiener map / truth: power per ℓ bin '
        + ', '.join(f'{r:.2f}' for r in result['wiener_over_truth']['power_per_bin'])
        + f'; total peak count {result["wiener_over_truth"]["total_peaks"]:.2f}')
  if FLAGS.timing:
    result['seconds'] = _timings(first, bins)
    print('| statistic | one 128² map (s) | 40-sample batch (s) |')
    print('|---|---|---|')
    for name, one in result['seconds']['one_map'].items():
      print(f'| {name} | {one:.4f} | {result["seconds"]["batch_40"][name]:.4f} |')
  if FLAGS.output:
    with open(FLAGS.output, 'w', encoding='utf-8') as f:
      json.dump(result, f, indent=2)


if __name__ == '__main__':
  app.run(main)
