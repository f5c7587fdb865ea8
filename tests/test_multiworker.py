"""Score-network training under MultiWorkerMirroredStrategy from TF_CONFIG.

Two worker processes on this machine (localhost ports) train the same small
network on different maps; synchronous all-reduce of the gradients must leave
them with the same weights, and
only the chief (worker 0) writes the trained network to the shared output
folder. Slow (two TensorFlow start-ups and a gRPC cluster): run with
``python -m pytest -m slow tests/test_multiworker.py``.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tfp_massmap import score_network
from tfp_massmap import training

pytestmark = pytest.mark.slow

_WORKER = r"""
import sys
import numpy as np
from tfp_massmap import training
strategy = training.default_strategy()  # Before any other TensorFlow work.
# Each worker reads other maps: only the all-reduce can keep them in step.
rng = np.random.default_rng(int(sys.argv[3]))
maps = 0.02 * rng.standard_normal((16, 16, 16)).astype(np.float32)
result = training.train_score_network(
    maps, sys.argv[1], network=dict(depth=1, base_channels=8, embedding_dim=16),
    batch_size=4, steps=3, checkpoint_every=3, log_every=1, seed=5,
    strategy=strategy, progress=False)
assert strategy.num_replicas_in_sync == 2, strategy.num_replicas_in_sync
np.savez(sys.argv[2], *[w.numpy() for w in result.model.weights])
"""


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_two_workers_agree_and_only_the_chief_writes(tmp_path):
  output_dir = tmp_path / 'run'
  cluster = {'worker': [f'localhost:{port}' for port in _free_ports(2)]}
  workers = []
  for index in range(2):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES='',
               TF_CONFIG=json.dumps({'cluster': cluster,
                                     'task': {'type': 'worker', 'index': index}}))
    workers.append(subprocess.Popen(
        [sys.executable, '-c', _WORKER, str(output_dir),
         str(tmp_path / f'weights_{index}.npz'), str(index)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  for worker in workers:
    log, _ = worker.communicate(timeout=600)
    assert worker.returncode == 0, log[-3000:]
  weights = [np.load(tmp_path / f'weights_{index}.npz') for index in range(2)]
  assert len(weights[0].files) == len(weights[1].files) > 0
  for name in weights[0].files:
    np.testing.assert_array_equal(weights[0][name], weights[1][name])
  # The chief saved the network and its run record in the shared folder.
  saved = score_network.load_score_network(output_dir / training.MODEL_FILENAME)
  assert saved.depth == 1
  assert (output_dir / training.SUMMARY_FILENAME).exists()
