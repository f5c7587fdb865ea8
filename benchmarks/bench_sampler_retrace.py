r"""First versus later `sample_posterior` calls on maps of one shape.

`sample_posterior` keeps its compiled `PosteriorSampler` (per prior,
schedule and kernel settings) and passes the data as tensors, so only the
first call on a map shape traces (and under XLA compiles) the sampler; the
later calls, each on a new observation (`testing.gaussian_problem` with
another seed: new truth, survey and noise), take the sampling time alone.
For comparison, "fresh sampler" builds a new `PosteriorSampler` for each call,
which is what every call cost before the sampler was kept (trace + compile
+ sampling). For each configuration it prints the wall time of the first
call, the median of the later calls, the median of fresh-sampler calls, and
the sampler's trace count after the first and after the last call.

Configurations (``--configs``, each PRIOR:N:JIT): ``gaussian:64:graph`` and
``gaussian:64:xla`` (the analytic Gaussian prior on 64² maps of 3.2 arcmin,
without and with XLA; XLA on CPU is slow for convolutional networks) and
``learned:128:graph`` (the shipped prior on 128² maps of its 0.8 arcmin
pixels, without XLA; ``learned:128:xla`` on a GPU). Every run draws ``--num_samples`` chains through
``--num_levels`` geometric noise levels (the default 2 and 4: a run where
the trace dominates, as in the issue that asked for this benchmark).

Example:
  python benchmarks/bench_sampler_retrace.py --calls=4 --output=out/retrace.json
"""

import json
import platform
import statistics
import time
import warnings

from absl import app
from absl import flags
import tensorflow as tf

from tfp_massmap import posterior
from tfp_massmap import priors
from tfp_massmap import testing
from tfp_massmap.mcmc import GeometricSchedule

flags.DEFINE_list('configs', ['gaussian:64:graph', 'gaussian:64:xla',
                              'learned:128:graph'],
                  'Configurations PRIOR:N:JIT (PRIOR gaussian or learned, JIT '
                  'graph (tf.function without XLA) or xla).')
flags.DEFINE_integer('num_samples', 2, 'Chains per call.')
flags.DEFINE_integer('num_levels', 4, 'Geometric noise levels (0.1 to 1e-3).')
flags.DEFINE_integer('calls', 4, 'Calls per configuration (>= 2).')
flags.DEFINE_integer('fresh_calls', 2, 'Calls with a fresh sampler each (0: none).')
flags.DEFINE_string('output', None, 'Optional JSON file for the rows.')

FLAGS = flags.FLAGS


def _timed(fn):
  began = time.perf_counter()
  fn()
  return time.perf_counter() - began


def _seconds(value):
  return '-' if value is None else f'{value:.2f}'


def _run(config):
  """One configuration's row (a dict)."""
  kind, n, mode = config.split(':')
  n = int(n)
  jit_compile = {'graph': False, 'xla': True}[mode]
  pixel_scale_arcmin = 0.8 if kind == 'learned' else 3.2
  observations = []
  for seed in range(FLAGS.calls + FLAGS.fresh_calls):
    data, _, gaussian = testing.gaussian_problem(n, pixel_scale_arcmin, seed)
    observations.append(data)
  prior = priors.load_prior() if kind == 'learned' else gaussian
  schedule = GeometricSchedule(0.1, 1e-3, FLAGS.num_levels)
  settings = dict(schedule=schedule, jit_compile=jit_compile)
  kwargs = dict(num_samples=FLAGS.num_samples, progress=False)

  def call(data, seed):
    return posterior.sample_posterior(data, prior, seed=(seed, 1), **settings,
                                      **kwargs)

  first = call(observations[0], 0)
  first_seconds = first.diagnostics['wall_time_s']
  later = [call(observations[i], i).diagnostics for i in
           range(1, FLAGS.calls)]
  fresh = []
  for i in range(FLAGS.calls, FLAGS.calls + FLAGS.fresh_calls):
    sampler = posterior.PosteriorSampler(prior, **settings)
    fresh.append(_timed(lambda s=sampler, d=observations[i], i=i: s.sample(
        d, seed=(i, 1), **kwargs)))
  return {
      'config': config, 'prior': kind, 'npix': n, 'jit_compile': jit_compile,
      'num_samples': FLAGS.num_samples, 'num_levels': FLAGS.num_levels,
      'score_evaluations_per_sample':
          first.diagnostics['score_evaluations_per_sample'],
      'first_call_s': first_seconds,
      'later_call_s': statistics.median(d['wall_time_s'] for d in later),
      'later_calls_s': [d['wall_time_s'] for d in later],
      'fresh_sampler_call_s': statistics.median(fresh) if fresh else None,
      'tracing_count_first': first.diagnostics['tracing_count'],
      'tracing_count_last': later[-1]['tracing_count'],
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if FLAGS.calls < 2:
    raise app.UsageError(f'--calls must be >= 2, got {FLAGS.calls}.')
  warnings.filterwarnings('ignore', message='.*samples cannot resolve')
  tf.get_logger().setLevel('ERROR')  # TF's notes on the fresh samplers' traces.
  device = tf.config.list_physical_devices('GPU')
  machine = (f'{device[0].name}' if device else
             f'CPU ({platform.processor() or platform.machine()})')
  print(f'{machine}; {FLAGS.num_samples} chains, {FLAGS.num_levels} levels; '
        f'{time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}')
  print('| configuration | NFE/sample | first call (s) | later calls, median '
        '(s) | fresh sampler per call (s) | traces after first / last call |')
  print('|---|---|---|---|---|---|')
  rows = []
  for config in FLAGS.configs:
    row = _run(config)
    rows.append(row)
    print(f'| {config} | {row["score_evaluations_per_sample"]} | '
          f'{row["first_call_s"]:.2f} | {row["later_call_s"]:.2f} | '
          f'{_seconds(row["fresh_sampler_call_s"])} | {row["tracing_count_first"]} / '
          f'{row["tracing_count_last"]} |', flush=True)
  if FLAGS.output:
    with open(FLAGS.output, 'w', encoding='utf-8') as f:
      json.dump({'machine': machine, 'rows': rows}, f, indent=2)


if __name__ == '__main__':
  app.run(main)
