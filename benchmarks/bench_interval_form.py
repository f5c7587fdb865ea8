r"""Per-pixel coverage of sample-quantile and mean ± z · std intervals.

The same posterior samples, two interval forms: the central 68/95 %
credible intervals of the single-patch benchmark (`credible_interval`:
sample quantiles at the (S + 1) plotting positions) and the Gaussian
mean ± 1 (1.96) std (1/S) that the survey job's stitched products give. Reads the
per-map ``.npz`` files of ``bench_posterior.py --samples_dir`` (``truth``,
``mask``, ``samples_posterior``) and prints the mean coverage over maps.

Example:
  python benchmarks/bench_interval_form.py --samples_dir=out/stat_samples
"""

import glob
import os

from absl import app
from absl import flags
import numpy as np

from tfp_massmap.mcmc import results

flags.DEFINE_string('samples_dir', None,
                    'Folder of map_*.npz files from bench_posterior.py '
                    '--samples_dir.')
flags.mark_flag_as_required('samples_dir')
FLAGS = flags.FLAGS


def main(argv):
  del argv
  files = sorted(glob.glob(os.path.join(FLAGS.samples_dir, 'map_*.npz')))
  if not files:
    raise app.UsageError(f'no map_*.npz in {FLAGS.samples_dir}.')
  rows = []
  for path in files:
    with np.load(path) as data:
      samples = data['samples_posterior'].astype(np.float64)
      truth, on = data['truth'], data['mask'] > 0
    mean, std = samples.mean(0), samples.std(0)
    row = []
    for level, z in ((0.68, 1.0), (0.95, 1.959964)):
      lower, upper = results.credible_interval(samples, level).numpy()
      row += [np.mean((truth[on] >= lower[on]) & (truth[on] <= upper[on])),
              np.mean(np.abs(truth[on] - mean[on]) <= z * std[on])]
    rows.append(row)
  q68, g68, q95, g95 = np.mean(rows, axis=0)
  print(f'{len(files)} maps: 68 % credible interval {q68:.3f}, mean ± std '
        f'{g68:.3f}; 95 % credible interval {q95:.3f}, mean ± 1.96 std '
        f'{g95:.3f}')


if __name__ == '__main__':
  app.run(main)
