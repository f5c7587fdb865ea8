r"""Writes maps of the varying-cosmology generator to a ``.npz`` for training.

The TFDS ``lognormal_kappa/cosmo_<N>`` configs hold a few thousand maps at
most; the joint-prior networks train on more. This script writes the maps of
a range of seeds, each with its own θ = (Ωm, σ8) (`tfp_massmap.lognormal.
cosmo_maps`: the dataset's map of that seed for a config's size and pixel
scale), to one ``.npz`` that ``examples/train_score.py --dataset=FILE.npz``
reads:

  python examples/make_cosmo_maps.py --map_size=32 --num_maps=8192 \
      --output=cosmo32_train.npz

Seeds 1,000,000 onwards are the held-out maps of the benchmarks, so training
seeds must stay below that. The file holds ``kappa`` [M, N, N] float32
(dimensionless), ``omega_m``, ``sigma8``, ``shift`` [M] and ``seed`` [M]; it is
written to a temporary name and renamed when complete.
"""

import os
import time

from absl import app
from absl import flags
import numpy as np

from tfp_massmap import lognormal

_MAP_SIZE = flags.DEFINE_integer('map_size', 32, 'Pixels per side N.')
_PIXEL_SCALE = flags.DEFINE_float('pixel_scale_arcmin', 0.8,
                                  'Pixel side [arcmin].')
_FIRST_SEED = flags.DEFINE_integer('first_seed', 0, 'Seed of the first map.')
_NUM_MAPS = flags.DEFINE_integer('num_maps', 8192, 'Number of maps.')
_OUTPUT = flags.DEFINE_string('output', None, 'The .npz file to write.')

HELD_OUT_FIRST_SEED = 1_000_000
_CHUNK = 256


def main(argv):
  """Generates the maps chunk by chunk and writes them atomically."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  if _OUTPUT.value is None or not _OUTPUT.value.endswith('.npz'):
    raise app.UsageError(f'--output must name a .npz file, got '
                         f'{_OUTPUT.value!r}.')
  if _NUM_MAPS.value < 1 or _FIRST_SEED.value < 0:
    raise app.UsageError(
        f'--num_maps must be ≥ 1 and --first_seed ≥ 0, got '
        f'{_NUM_MAPS.value} and {_FIRST_SEED.value}.')
  if _MAP_SIZE.value < 8 or _PIXEL_SCALE.value <= 0:
    raise app.UsageError(
        f'--map_size must be ≥ 8 and --pixel_scale_arcmin > 0, got '
        f'{_MAP_SIZE.value} and {_PIXEL_SCALE.value}.')
  last = _FIRST_SEED.value + _NUM_MAPS.value
  if _FIRST_SEED.value < HELD_OUT_FIRST_SEED < last:
    raise app.UsageError(
        f'seeds {_FIRST_SEED.value}–{last - 1} cross {HELD_OUT_FIRST_SEED:,}, '
        'where the benchmarks\' held-out maps start; keep training seeds '
        'below it.')
  start = time.time()
  parts = []
  for first in range(_FIRST_SEED.value, last, _CHUNK):
    parts.append(lognormal.cosmo_maps(range(first, min(first + _CHUNK, last)),
                                      _MAP_SIZE.value, _PIXEL_SCALE.value))
    done = min(first + _CHUNK, last) - _FIRST_SEED.value
    print(f'\r{done}/{_NUM_MAPS.value} maps, {time.time() - start:.0f} s',
          end='', flush=True)
  print()
  arrays = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
  partial = _OUTPUT.value[:-len('.npz')] + '.partial.npz'
  np.savez(partial, **arrays)
  os.replace(partial, _OUTPUT.value)
  print(f'Wrote {_NUM_MAPS.value} maps of {_MAP_SIZE.value}² to '
        f'{_OUTPUT.value}.')


if __name__ == '__main__':
  app.run(main)
