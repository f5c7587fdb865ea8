r"""Throughput of the synthetic convergence maps: generation and input pipeline.

Measures, in one run on the current machine:

1. ``LognormalField.sample`` in a ``tf.function`` (float32, batches of maps),
   lognormal and Gaussian, at the demo setting (128², 0.8 arcmin) and at
   360² (0.29 arcmin): maps per second.
2. The ``lognormal_kappa`` builder's generator (numpy white noise per seed,
   float64 transform, float32 maps): maps per second.
3. ``download_and_prepare`` of a reduced ``lognormal_kappa`` config (same
   generator, ``--num_maps`` training maps) into a temporary data_dir, then
   reading it back through ``as_dataset`` + ``tf.data`` (shuffle, batch,
   prefetch), as ``tfds.load`` does: maps per second, second epoch.

Usage:

  python benchmarks/bench_synthetic.py --num_maps=1024 --num_maps=256
"""

import dataclasses
import tempfile
import time

from absl import app
from absl import flags
import tensorflow as tf
import tensorflow_datasets as tfds

from tfp_massmap import cosmology
from tfp_massmap import lognormal
from tfp_massmap.datasets.lognormal_kappa import lognormal_kappa_dataset_builder as lkb

FLAGS = flags.FLAGS
flags.DEFINE_multi_integer('num_maps', [1024, 256], 'Training maps written for the '
                           'input-pipeline benchmark, at 128² then at 360².')
flags.DEFINE_integer('batch_size', 32, 'Maps per batch for sampling and reading.')
flags.DEFINE_integer('repeats', 10, 'Timed batches (sampling) after one warm-up batch.')

# (pixels per side, arcmin per pixel): the demo and the benchmark settings.
SETTINGS = tuple((s.map_size, s.pixel_scale_arcmin)
                 for s in cosmology.LOGNORMAL_KAPPA_SETTINGS[:2])


def _rate(num, seconds):
  return num / seconds


def bench_sample(n, pix, shift):
  field = lognormal.LognormalField(shift, n, pix)
  sample = tf.function(lambda seed: field.sample(FLAGS.batch_size, seed=seed))
  sample(tf.constant([0, 0])).numpy()  # Trace and warm up.
  start = time.perf_counter()
  for i in range(FLAGS.repeats):
    sample(tf.constant([i + 1, 0])).numpy()
  return _rate(FLAGS.repeats * FLAGS.batch_size, time.perf_counter() - start)


def _reduced_config(n, num_maps):
  base = next(c for c in lkb.Builder.BUILDER_CONFIGS if c.name == f'lognormal_{n}')
  return dataclasses.replace(base, name=f'bench_{n}', split_sizes=(num_maps, 16, 16))


def bench_generator(n):
  builder = lkb.Builder(config=_reduced_config(n, 16),
                        data_dir=tempfile.mkdtemp())
  num = 4 * FLAGS.batch_size
  start = time.perf_counter()
  for _ in builder._generate_examples(0, num):  # pylint: disable=protected-access
    pass
  return _rate(num, time.perf_counter() - start)


def bench_pipeline(n, num_maps, data_dir):
  builder = lkb.Builder(config=_reduced_config(n, num_maps), data_dir=data_dir)
  start = time.perf_counter()
  builder.download_and_prepare()
  prepare = _rate(num_maps + 32, time.perf_counter() - start)
  ds = (builder.as_dataset(split='train')
        .map(lambda ex: ex['kappa'], num_parallel_calls=tf.data.AUTOTUNE)
        .shuffle(256, seed=0)
        .batch(FLAGS.batch_size, drop_remainder=True)
        .prefetch(tf.data.AUTOTUNE))
  rates = []
  for _ in range(2):
    count = 0
    start = time.perf_counter()
    for batch in ds:
      count += int(batch.shape[0])
    rates.append(_rate(count, time.perf_counter() - start))
  return prepare, rates[-1]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if len(FLAGS.num_maps) != len(SETTINGS):
    raise app.UsageError(f'--num_maps needs {len(SETTINGS)} values, got {FLAGS.num_maps}.')
  tfds.disable_progress_bar()
  print('| map | sample, lognormal (maps/s) | sample, Gaussian (maps/s) '
        '| builder generator (maps/s) | download_and_prepare (maps/s) '
        '| tf.data read, epoch 2 (maps/s) |')
  print('| --- | --- | --- | --- | --- | --- |')
  with tempfile.TemporaryDirectory() as data_dir:
    for (n, pix), num_maps in zip(SETTINGS, FLAGS.num_maps):
      ln = bench_sample(n, pix, cosmology.COSMOS_SHIFT)
      ga = bench_sample(n, pix, None)
      gen = bench_generator(n)
      prepare, read = bench_pipeline(n, num_maps, data_dir)
      print(f'| {n}² × {pix} arcmin | {ln:.0f} | {ga:.0f} | {gen:.0f} '
            f'| {prepare:.0f} ({num_maps + 32} maps) | {read:.0f} |', flush=True)


if __name__ == '__main__':
  app.run(main)
