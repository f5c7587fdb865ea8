r"""Coverage and RMSE of a survey run's posterior in tile interiors and overlaps.

Reads a finished ``examples/map_survey.py`` output folder (its
``tiles.json``, the partial-sky FITS products and ``mask.fits``) and the
truth HEALPix map, removes each map's mean on the footprint, and splits the
footprint pixels by how many tiles cover them (`tiling` weights > 0):
single-tile pixels at full weight (interiors) and pixels of two or more
tiles (overlaps, where tile posteriors are blended as a mixture). For each
set: 68/95 % coverage of mean ± z · std and the posterior/Wiener RMSE ratio.

Example:
  python benchmarks/bench_survey_regions.py --run=/tmp/runs/survey4096_post \
      --truth=/tmp/s4096/box16/kappa.fits
"""

import json
import os

from absl import app
from absl import flags
from astropy.io import fits
import healpy as hp
import numpy as np

from tfp_massmap import tiling

flags.DEFINE_string('run', None, 'Output folder of examples/map_survey.py '
                    '(with the posterior and Wiener products).')
flags.DEFINE_string('truth', None, 'Truth HEALPix map (RING) at the run\'s NSIDE.')
flags.mark_flags_as_required(['run', 'truth'])
FLAGS = flags.FLAGS


def _partial(name):
  data = fits.getdata(os.path.join(FLAGS.run, f'{name}.fits'), 1)
  return np.asarray(data['PIXEL']), np.asarray(data['SIGNAL'], np.float64)


def main(argv):
  del argv
  with open(os.path.join(FLAGS.run, 'tiles.json'), encoding='utf-8') as f:
    tiles = [tiling.Tile(*(t[k] for k in tiling.Tile._fields))
             for t in json.load(f)['tiles']]
  with open(os.path.join(FLAGS.run, 'summary.json'), encoding='utf-8') as f:
    nside = json.load(f)['nside']
  pixels, mean = _partial('kappa_posterior')
  std, wiener, mask = (_partial(n)[1] for n in (
      'kappa_posterior_std', 'kappa_wiener', 'mask'))
  truth = hp.read_map(FLAGS.truth)[pixels]
  tapered, covering = tiling._tapered_and_covering(tiles, nside)  # pylint: disable=protected-access
  tapered, covering = tapered[pixels], covering[pixels]
  on = mask == 1
  truth, mean, wiener = (m - m[on].mean() for m in (truth, mean, wiener))
  for label, where in (('footprint', on),
                       ('interiors (one tile, full weight)',
                        on & ~tapered & (covering == 1)),
                       ('overlaps (two or more tiles)', on & (covering >= 2))):
    z = np.abs(truth[where] - mean[where]) / std[where]
    ratio = np.sqrt(np.mean((truth[where] - mean[where])**2) /
                    np.mean((truth[where] - wiener[where])**2))
    print(f'{label:36s} pixels {where.sum():8d}  coverage 68 % '
          f'{np.mean(z <= 1):.3f}  95 % {np.mean(z <= 1.959964):.3f}  '
          f'RMSE posterior / Wiener {ratio:.4f}')


if __name__ == '__main__':
  app.run(main)
