"""The chunked driver shared by the package's samplers, safe under XLA.

A sampler runs `tfp.mcmc.sample_chain` in chunks of at most a few tens of
transitions: each chunk is one call of a compiled function (one progress-bar
update), the loop over chunks is Python. `compile_chain` builds that
function once; its arguments are all tensors (the state, the kernel results,
the seed, the number of transitions, and whatever the kernel is built from,
such as the observed data), so later calls with arrays of the same shapes
reuse the trace, and under XLA the compiled program: a sampler object that
builds its functions in its constructor maps many observations without
retracing. `chunk_lengths` splits a run into chunks of at most two distinct
lengths, and `default_jit_compile` is the one place deciding when XLA is
used.
"""

import concurrent.futures
import math
import time
import warnings

import tensorflow as tf
import tqdm

from tensorflow_probability.python.internal import samplers
from tensorflow_probability.python.mcmc import sample as sample_lib

__all__ = [
    'adapt_then_sample',
    'chunk_lengths',
    'compile_chain',
    'default_jit_compile',
    'run_chunks',
]


def default_jit_compile(jit_compile):
  """``jit_compile`` as a bool; None means XLA exactly when a GPU is visible."""
  if jit_compile is None:
    return bool(tf.config.list_physical_devices('GPU'))
  return bool(jit_compile)


def chunk_lengths(num_steps, max_chunk_steps, unit=1):
  """Splits ``num_steps`` into chunks of at most two distinct lengths.

  Args:
    num_steps: total transitions, a Python int >= 1 and a multiple of
      ``unit``.
    max_chunk_steps: the longest chunk wanted (transitions, int >= 1).
    unit: every chunk is a multiple of it (e.g. the thinning of a chain
      whose every ``unit``-th state is kept), int >= 1.

  Returns:
    A list of Python ints summing to ``num_steps``: equal lengths but for a
    shorter last one, each at most ``max(max_chunk_steps, unit)``.
  """
  units = num_steps // unit
  per_chunk = max(1, max_chunk_steps // unit)
  num_chunks = math.ceil(units / per_chunk)
  size = math.ceil(units / num_chunks)
  sizes = [size] * (num_chunks - 1) + [units - size * (num_chunks - 1)]
  return [s * unit for s in sizes]


def compile_chain(make_kernel, *, jit_compile, trace_fn=None,
                  num_steps_between_results=0):
  """A compiled function running one chunk of `tfp.mcmc.sample_chain`.

  Args:
    make_kernel: Python callable ``(*args) -> TransitionKernel``, called
      inside the compiled function with its trailing tensor arguments (the
      data the target depends on), so that new data reuse the trace.
    jit_compile: Python bool, compile with XLA.
    trace_fn: None to keep only the final state and kernel results; or a
      callable ``(state, kernel_results) -> structure`` traced at each kept
      transition, as in `tfp.mcmc.sample_chain`.
    num_steps_between_results: with ``trace_fn``, transitions between
      traced ones (thinning), a Python int >= 0.

  Returns:
    A `tf.function` ``(state, kernel_results, seed, num_results, *args)``.
    Without ``trace_fn`` it runs ``num_results`` transitions and returns
    ``(state, kernel_results)``; with it, ``num_results`` kept transitions
    (``num_results * (num_steps_between_results + 1)`` in all) and returns
    ``(state, kernel_results, trace)`` with the traces stacked on axis 0.
    ``num_results`` is an int32 tensor (no retrace per chunk length) or a
    Python int.
  """
  @tf.function(jit_compile=jit_compile, autograph=False)
  def run(state, kernel_results, seed, num_results, *args):
    kernel = make_kernel(*args)
    if trace_fn is None:
      out = sample_lib.sample_chain(
          num_results=1, num_burnin_steps=num_results - 1,
          current_state=state, previous_kernel_results=kernel_results,
          kernel=kernel, trace_fn=None, return_final_kernel_results=True,
          seed=seed)
      return _last(out.all_states), out.final_kernel_results
    out = sample_lib.sample_chain(
        num_results=num_results,
        num_steps_between_results=num_steps_between_results,
        current_state=state, previous_kernel_results=kernel_results,
        kernel=kernel, trace_fn=trace_fn, return_final_kernel_results=True,
        seed=seed)
    return _last(out.all_states), out.final_kernel_results, out.trace

  return run


def _last(all_states):
  """Each state part's last kept value (a list state is a list of parts)."""
  return tf.nest.map_structure(lambda part: part[-1], all_states)


def run_chunks(chain, state, kernel_results, chunks, seed, *args, unit=1,
               progress_bar=None):
  """Runs a compiled chain over ``chunks`` transitions, one call each.

  Args:
    chain: a function from `compile_chain`.
    state, kernel_results: where the chain starts.
    chunks: list of Python ints, transitions per call (`chunk_lengths`).
    seed: stateless seed of the whole run, split into one per chunk.
    *args: the tensors ``chain`` builds its kernel from.
    unit: transitions per kept result for a traced chain (its thinning + 1);
      1 otherwise.
    progress_bar: optional tqdm bar, advanced by each chunk's transitions.

  Returns:
    ``(state, kernel_results, traces)``: the final state and results, and
    the list of each call's trace (empty for a chain without ``trace_fn``).
  """
  traces = []
  for steps, chunk_seed in zip(chunks,
                               samplers.split_seed(seed, n=len(chunks))):
    out = chain(state, kernel_results, chunk_seed,
                tf.constant(steps // unit, tf.int32), *args)
    state, kernel_results = out[:2]
    traces.extend(out[2:])
    if progress_bar is not None:
      progress_bar.update(steps)
  return state, kernel_results, traces


def adapt_then_sample(adaptive_kernel, sampling_kernel, start, trace_fn, *,
                      num_burnin_steps, num_results, thinning, seed,
                      jit_compile, max_chunk_steps, desc, progress):
  """Warm-up with step-size adaptation, then kept transitions, in chunks.

  The run of the package's exact HMC samplers: ``num_burnin_steps``
  transitions of ``adaptive_kernel`` (a `tfp.mcmc.DualAveragingStepSizeAdaptation`,
  whose results carry ``new_step_size``), then ``num_results · thinning``
  transitions of ``sampling_kernel(step_size)`` at the adapted step size,
  every ``thinning``-th traced by ``trace_fn``; one progress bar over both.

  Args:
    adaptive_kernel: the warm-up kernel.
    sampling_kernel: callable ``step_size -> TransitionKernel``.
    start: callable ``seed -> (state, adaptive_kernel results)``.
    trace_fn: ``(state, kernel_results) -> structure``, as in
      `tfp.mcmc.sample_chain`.
    num_burnin_steps, num_results, thinning: Python ints >= 1.
    seed: sanitised stateless seed, split into the start's, the warm-up's
      and the sampling's.
    jit_compile: Python bool.
    max_chunk_steps: transitions per compiled call at most.
    desc, progress: the progress bar's label; whether to show it.

  Returns:
    ``(state, kernel_results, traces, step_size, warmup_seconds,
    total_seconds)``: the final state and results, the list of each
    chunk's trace, the adapted step size and the wall times (compilation
    included).
  """
  warm_up = compile_chain(lambda: adaptive_kernel, jit_compile=jit_compile)
  sample = compile_chain(sampling_kernel, jit_compile=jit_compile,
                         trace_fn=trace_fn,
                         num_steps_between_results=thinning - 1)
  begin_sampling = tf.function(
      lambda state, step_size: sampling_kernel(step_size).bootstrap_results(
          state), jit_compile=jit_compile, autograph=False)
  start_seed, warm_seed, sample_seed = samplers.split_seed(seed, n=3)
  began = time.perf_counter()
  with tqdm.tqdm(total=num_burnin_steps + num_results * thinning,
                 disable=not progress, unit='step', desc=desc) as bar:
    state, results = start(start_seed)
    state, results, _ = run_chunks(
        warm_up, state, results,
        chunk_lengths(num_burnin_steps, max_chunk_steps), warm_seed,
        progress_bar=bar)
    # After adaptation the kernel's step size is the dual-averaging average.
    step_size = results.new_step_size
    warmed = time.perf_counter()
    results = begin_sampling(state, step_size)
    state, results, traces = run_chunks(
        sample, state, results,
        chunk_lengths(num_results * thinning, max_chunk_steps, unit=thinning),
        sample_seed, step_size, unit=thinning, progress_bar=bar)
  return (state, results, traces, step_size, warmed - began,
          time.perf_counter() - began)


def run_batches(run_batch, num_samples, batch_size, seed, *, num_steps, desc,
                progress=False, devices=None):
  """Runs the chains of a sampler in batches; the loop every sampler shares.

  Batch i holds chains ``[i · batch_size, (i + 1) · batch_size)`` and gets
  the i-th of ``split_seed(seed, n=num_batches)``; with ``devices`` the
  batches run at once, one thread per device (TensorFlow releases the GIL
  while ops run), batch i on device i mod D, so the samples equal those of
  the same batches on one device. TFP's warning that an uncorrected kernel
  is not calibrated is silenced (documented by the samplers).

  Args:
    run_batch: callable ``(first, batch_seed, progress_bar) -> output`` for
      the batch whose first chain is ``first``.
    num_samples, batch_size: Python ints, chains in all and per batch.
    seed: sanitised stateless seed of the run.
    num_steps: transitions per chain (the progress bar's unit).
    desc: the progress bar's label.
    progress: show a tqdm progress bar.
    devices: optional list of device names (checked by the caller).

  Returns:
    ``(outputs, wall_time)``: the batches' outputs in batch order and the
    seconds they took.
  """
  batch_starts = list(range(0, num_samples, batch_size))
  batches = list(zip(batch_starts,
                     samplers.split_seed(seed, n=len(batch_starts))))
  began = time.perf_counter()
  with warnings.catch_warnings(), tqdm.tqdm(
      total=len(batches) * num_steps, disable=not progress, unit='step',
      desc=desc) as bar:
    warnings.filterwarnings('ignore', message='supplied `TransitionKernel` is '
                            'not calibrated')
    if not devices:
      outputs = [run_batch(first, batch_seed, bar)
                 for first, batch_seed in batches]
    else:
      def run_device(k):
        with tf.device(devices[k]):
          return [(i, run_batch(first, batch_seed, bar))
                  for i, (first, batch_seed) in enumerate(batches)
                  if i % len(devices) == k]
      with concurrent.futures.ThreadPoolExecutor(len(devices)) as pool:
        per_device = list(pool.map(run_device, range(len(devices))))
      outputs = [out for _, out in sorted(
          (item for items in per_device for item in items),
          key=lambda t: t[0])]
  return outputs, time.perf_counter() - began
