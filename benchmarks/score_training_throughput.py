r"""Training throughput (maps/s) of candidate ScoreNetwork sizes.

Runs ``train_score_network`` for a few steps per configuration on synthetic
Gaussian maps (in memory, so the input pipeline is not the bottleneck) and
times every step after the first ``--interval`` ones (tracing). It reports
wall-clock maps/s and CPU seconds per map (process time, all threads): on a
shared machine the wall rate depends on the other jobs, the CPU cost much
less; ``cores / cpu_s_per_map`` bounds the rate on an idle machine. All
configurations run in one process, one after the other, so their ratios are
comparable.

  python benchmarks/score_training_throughput.py --map_size=128 --batch_size=8
"""

import itertools
import json
import os
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

from tfp_massmap import training

_MAP_SIZE = flags.DEFINE_integer('map_size', 128, 'Training map size in pixels.')
_CROP_SIZES = flags.DEFINE_list(
    'crop_sizes', ['128'], 'Crop sizes (pixels) to benchmark for each network.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 8, 'Global batch size (maps per step).')
_INTERVAL = flags.DEFINE_integer('interval', 5, 'Untimed warm-up steps (tracing).')
_TIMED_STEPS = flags.DEFINE_integer('timed_steps', 10, 'Timed steps per configuration.')
_JIT = flags.DEFINE_list(
    'jit_compile', ['off'], 'XLA settings to benchmark for each network (off, on).')
_NETWORKS = flags.DEFINE_string(
    'networks',
    json.dumps({
        'small (8-16-32-64 ch)': dict(depth=3, base_channels=8,
                                      channel_multipliers=[1, 2, 4, 8]),
        'medium (16-32-64-128 ch)': dict(depth=3, base_channels=16,
                                         channel_multipliers=[1, 2, 4, 8]),
        'large (32-64-128-128 ch)': dict(depth=3, base_channels=32,
                                         channel_multipliers=[1, 2, 4, 4]),
    }),
    'JSON dict: label -> ScoreNetwork arguments.')


def _timed_make_train_step(stamps):
  """Wraps training._make_train_step to stamp (wall, CPU) time after each step."""
  make = training._make_train_step  # pylint: disable=protected-access

  def timed(*args, **kwargs):
    step = make(*args, **kwargs)

    def run(inputs):
      out = step(inputs)
      for o in out:
        o.numpy()
      stamps.append((time.perf_counter(), time.process_time()))
      return out
    return run
  return timed


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  n = _MAP_SIZE.value
  batch = _BATCH_SIZE.value
  maps = 0.02 * np.random.default_rng(0).standard_normal((64, n, n)).astype(np.float32)
  print(f'{"network":26s} {"params":>8s} {"crop":>4s} {"XLA":>3s} {"maps/s":>7s} '
        f'{"CPU s/map":>9s} {"idle bound maps/s":>17s}  load avg')
  for label, config in json.loads(_NETWORKS.value).items():
    for crop, jit in itertools.product((int(c) for c in _CROP_SIZES.value), _JIT.value):
      stamps = []
      training._make_train_step = _timed_make_train_step(stamps)  # pylint: disable=protected-access
      with tempfile.TemporaryDirectory() as output_dir:
        result = training.train_score_network(
            maps, output_dir, network=config, batch_size=batch,
            steps=_INTERVAL.value + _TIMED_STEPS.value, log_every=10**9,
            checkpoint_every=10**9, crop_size=None if crop == n else crop,
            jit_compile=jit == 'on', progress=False)
      (w0, c0), (w1, c1) = stamps[_INTERVAL.value - 1], stamps[-1]
      count = batch * (len(stamps) - _INTERVAL.value)
      cpu_per_map = (c1 - c0) / count
      print(f'{label:26s} {result.model.count_params():8d} {crop:4d} {jit:>3s} '
            f'{count / (w1 - w0):7.2f} {cpu_per_map:9.3f} '
            f'{os.cpu_count() / cpu_per_map:17.2f}  {os.getloadavg()[0]:.1f}', flush=True)


if __name__ == '__main__':
  app.run(main)
