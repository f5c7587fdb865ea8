r"""Trains the score network (a noise-conditional denoiser) on convergence maps.

Denoising score matching on a TFDS dataset of maps, for example the synthetic
lognormal convergence maps:

  python examples/train_score.py --dataset=lognormal_kappa/lognormal_128 \
      --output_dir=runs/prior

The conditional prior p(κ | θ) over the cosmology θ = (Ωm, σ8) trains on the
labelled ``cosmo_<N>`` configs:

  python examples/train_score.py --dataset=lognormal_kappa/cosmo_64 \
      --condition_on_cosmology --pixel_scale_arcmin=0.8 --output_dir=runs/joint

and loads as a joint prior with
``tfp_massmap.priors.learned_joint.LearnedJointPrior(path)``. Its θ score
(for the joint posterior p(κ, θ | γ)) comes from a ratio network trained on
the same pairs (``training.train_ratio_network``):

  python examples/train_score.py --dataset=lognormal_kappa/cosmo_64 \
      --objective=ratio --pixel_scale_arcmin=0.8 --output_dir=runs/ratio

written to ``<output_dir>/ratio_network.keras``;
``LearnedJointPrior(network_path, ratio=ratio_path)`` pairs the two. The
unconditioned network trained on a ``cosmo_<N>`` config (no
``--condition_on_cosmology``) is the marginal prior p(κ) over the θ range.

``--init_network`` continues the training of a saved network (its
architecture and weights) on other data, e.g. the 32²-trained ratio network
on whole 128² maps (docs/joint_prior.md):

  python examples/train_score.py --objective=ratio \
      --dataset=cosmo128_train.npz --init_network=prior_cosmo_ratio_32.keras \
      --learning_rate=2e-4 --output_dir=runs/ratio128

Rerunning the same command resumes from the latest checkpoint. The trained
network (EMA weights) is written to ``<output_dir>/score_network.keras`` and
loads with ``tfp_massmap.score_network.load_score_network``; TensorBoard logs
are in ``<output_dir>/logs``.
"""

import functools

from absl import app
from absl import flags
import numpy as np

import tfp_massmap  # noqa: F401  # pylint: disable=unused-import  # registers the TFDS builders
from tfp_massmap import cosmology
from tfp_massmap import score_network
from tfp_massmap import training
from tfp_massmap.priors import ratio as ratio_lib

_DATASET = flags.DEFINE_string(
    'dataset', 'lognormal_kappa/lognormal_128',
    'TFDS name/config of the training maps (feature --feature, [N, N] float32, '
    'dimensionless convergence), or the path of a .npz file holding the maps '
    '[M, N, N] under --feature and, for a conditioned network, one [M] array '
    'per parameter (omega_m, sigma8).')
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data directory (default: TFDS default).')
_SPLIT = flags.DEFINE_string('split', 'train', 'TFDS split to train on.')
_FEATURE = flags.DEFINE_string('feature', 'kappa', 'Name of the map feature in the dataset.')
_MAP_SIZE = flags.DEFINE_integer(
    'map_size', None,
    'Train on random crops of map_size x map_size pixels (divisible by 2**depth); '
    'default: whole maps.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 16, 'Global batch size (maps per step).')
_STEPS = flags.DEFINE_integer(
    'steps', 1500,
    'Number of optimisation steps (1500 x 16 maps at 128^2: about 50 min on an idle '
    '2-core CPU; raise it on a GPU).')
_LEARNING_RATE = flags.DEFINE_float(
    'learning_rate', 1e-3, 'Peak learning rate (linear warm-up, then cosine decay to 0).')
_WARMUP_STEPS = flags.DEFINE_integer('warmup_steps', None, 'Warm-up steps (default: steps // 20).')
_SIGMA_MIN = flags.DEFINE_float(
    'sigma_min', 1e-3, 'Smallest training noise std (dimensionless, convergence units).')
_SIGMA_MAX = flags.DEFINE_float(
    'sigma_max', 0.2, 'Largest training noise std (dimensionless, convergence units).')
_EMA_DECAY = flags.DEFINE_float('ema_decay', 0.999, 'Decay of the weight moving average.')
_AUGMENT = flags.DEFINE_bool(
    'augment', True, 'Apply random rotations by 90 degrees and flips to the maps.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, 'Folder for checkpoints, logs and the trained network.', required=True)
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the initial weights, data order and noise.')
_DEPTH = flags.DEFINE_integer('depth', 3, 'U-Net depth: number of 2x downsamplings.')
_BASE_CHANNELS = flags.DEFINE_integer('base_channels', 16, 'Channels at full resolution.')
_CHANNEL_MULTIPLIERS = flags.DEFINE_list(
    'channel_multipliers', None,
    'Channel multiplier per level (depth + 1 integers); default min(2**level, 8).')
_BLOCKS_PER_LEVEL = flags.DEFINE_integer('blocks_per_level', 1, 'Residual blocks per level.')
_EMBEDDING_DIM = flags.DEFINE_integer('embedding_dim', 128, 'Width of the noise-level embedding.')
_HYBRID = flags.DEFINE_float(
    'gaussian_pixel_scale_arcmin', None,
    'Train a hybrid prior: the analytic Gaussian denoiser with the shipped LCDM '
    'spectrum at this pixel scale [arcmin] plus a learned residual. Default: '
    'plain network.')
_PIXEL_SCALE = flags.DEFINE_float(
    'pixel_scale_arcmin', None,
    'Pixel side of the training maps [arcmin], recorded in the saved network so '
    'that the samplers refuse data at another pixel scale. Default: the '
    'hybrid scale when --gaussian_pixel_scale_arcmin is set, else unrecorded.')
_OBJECTIVE = flags.DEFINE_enum(
    'objective', 'score', ['score', 'ratio'],
    'score: a ScoreNetwork by denoising score matching (the prior, or with '
    '--condition_on_cosmology the conditional prior p(kappa | theta)). '
    'ratio: a RatioNetwork by classifying (map, theta) pairs against maps '
    'with shuffled theta, whose theta gradient is the theta score of '
    'p(kappa | theta) (always over the cosmology (omega_m, sigma8) of '
    'cosmology.COSMO_PARAMETER_BOUNDS; --gaussian_pixel_scale_arcmin does '
    'not apply). Written to <output_dir>/ratio_network.keras.')
_RATIO_BALANCE = flags.DEFINE_float(
    'ratio_balance', 0.0,
    'Weight lambda (dimensionless, >= 0) of the balance penalty of balanced '
    'neural ratio estimation (Delaunoy et al. 2022 use 100), added to the '
    'cross-entropy for --objective=ratio: more conservative theta posteriors. '
    '0: the plain cross-entropy.')
_RATIO_CONTRASTIVE = flags.DEFINE_integer(
    'ratio_contrastive', 0,
    '--objective=ratio: K >= 2 for contrastive ratio estimation, each map '
    'against its own theta and K - 1 others at once (K network calls per '
    'map instead of 2; not with --ratio_balance). 0: the binary '
    'cross-entropy.')
_REMOVE_MAP_MEAN = flags.DEFINE_bool(
    'remove_map_mean', False,
    '--objective=ratio: the network reads each map minus its mean '
    '(RatioNetwork remove_map_mean), as shear data give it: the '
    'Kaiser-Squires E-mode map has mean 0, so the map mean of the training '
    'maps is information the data never hold.')
_CONDITION_ON_COSMOLOGY = flags.DEFINE_bool(
    'condition_on_cosmology', False,
    'Condition the network on the cosmology (omega_m, sigma8), normalised over '
    'cosmology.COSMO_PARAMETER_BOUNDS: the prior p(kappa | theta), trained on '
    'the labelled maps of a lognormal_kappa/cosmo_<N> config (or any dataset '
    'whose elements carry omega_m and sigma8).')
_DATA_STD = flags.DEFINE_float(
    'data_std', 0.02, 'Pixel std of the training maps (dimensionless); sets the preconditioning.')
_CHECKPOINT_EVERY = flags.DEFINE_integer('checkpoint_every', 500, 'Steps between checkpoints.')
_LOG_EVERY = flags.DEFINE_integer('log_every', 50, 'Steps between TensorBoard scalars.')
_INIT_NETWORK = flags.DEFINE_string(
    'init_network', None,
    'Start from the config and weights of this saved network (.keras, a '
    'ScoreNetwork for --objective=score, a RatioNetwork for --objective=ratio): '
    'fine-tuning, e.g. a network trained on 32^2 maps continued on whole 128^2 '
    'maps. The architecture flags (--depth, --base_channels, ...) must then be '
    'left unset. Default: fresh weights.')
_JIT_COMPILE = flags.DEFINE_enum(
    'jit_compile', 'auto', ['auto', 'on', 'off'],
    'XLA-compile the training step (auto: on with a GPU, off on CPU).')


def _dataset(name):
  """A TFDS name as is, or the arrays of a .npz file as a dict."""
  if not name.endswith('.npz'):
    return name
  with np.load(name) as arrays:
    return {key: arrays[key] for key in arrays.files}


_ARCHITECTURE_FLAGS = ('depth', 'base_channels', 'channel_multipliers',
                       'blocks_per_level', 'embedding_dim', 'data_std',
                       'pixel_scale_arcmin', 'gaussian_pixel_scale_arcmin',
                       'condition_on_cosmology', 'remove_map_mean')


def _architecture(ratio):
  """Constructor arguments of a fresh network from the architecture flags."""
  network = dict(
      depth=_DEPTH.value,
      base_channels=_BASE_CHANNELS.value,
      blocks_per_level=_BLOCKS_PER_LEVEL.value,
      embedding_dim=_EMBEDDING_DIM.value,
      data_std=_DATA_STD.value,
      pixel_scale_arcmin=_PIXEL_SCALE.value)
  if ratio:
    network['remove_map_mean'] = _REMOVE_MAP_MEAN.value
  else:
    network['gaussian_pixel_scale_arcmin'] = _HYBRID.value
  if _CONDITION_ON_COSMOLOGY.value or ratio:
    network['theta_names'] = list(cosmology.COSMO_PARAMETER_NAMES)
    network['theta_bounds'] = [list(b) for b in cosmology.COSMO_PARAMETER_BOUNDS]
  if _CHANNEL_MULTIPLIERS.value is not None:
    network['channel_multipliers'] = [int(m) for m in _CHANNEL_MULTIPLIERS.value]
  return network


def _initial_network(ratio):
  """The network of --init_network, whose config and weights training continues."""
  given = [name for name in _ARCHITECTURE_FLAGS if flags.FLAGS[name].present]
  if given:
    raise app.UsageError(
        f'--init_network={_INIT_NETWORK.value} fixes the architecture; leave '
        f'{", ".join("--" + name for name in given)} unset.')
  load = ratio_lib.load_ratio_network if ratio else score_network.load_score_network
  try:
    return load(_INIT_NETWORK.value)
  except (OSError, ValueError) as error:
    raise app.UsageError(
        f'--init_network={_INIT_NETWORK.value}: {error}') from error


def main(argv):
  """Trains a score network with the flags' settings and saves it."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected command-line arguments: {argv[1:]}')
  ratio = _OBJECTIVE.value == 'ratio'
  if ratio and _HYBRID.value is not None:
    raise app.UsageError('--gaussian_pixel_scale_arcmin applies to '
                         '--objective=score only (a ratio network has no '
                         'Gaussian part); use --pixel_scale_arcmin.')
  if not ratio and _RATIO_BALANCE.value:
    raise app.UsageError('--ratio_balance applies to --objective=ratio only.')
  if not ratio and _RATIO_CONTRASTIVE.value:
    raise app.UsageError('--ratio_contrastive applies to --objective=ratio '
                         'only.')
  if not ratio and _REMOVE_MAP_MEAN.value:
    raise app.UsageError('--remove_map_mean applies to --objective=ratio only.')
  if _RATIO_CONTRASTIVE.value < 0 or _RATIO_CONTRASTIVE.value == 1:
    raise app.UsageError(f'--ratio_contrastive must be 0 or >= 2, got '
                         f'{_RATIO_CONTRASTIVE.value}.')
  if _RATIO_CONTRASTIVE.value and _RATIO_BALANCE.value:
    raise app.UsageError('--ratio_contrastive and --ratio_balance do not '
                         'combine (the balance is the binary loss\'s).')
  if _RATIO_BALANCE.value < 0:
    raise app.UsageError(
        f'--ratio_balance must be >= 0, got {_RATIO_BALANCE.value}.')
  network = (_initial_network(ratio) if _INIT_NETWORK.value is not None
             else _architecture(ratio))
  if ratio:
    train = functools.partial(training.train_ratio_network,
                              balance=_RATIO_BALANCE.value,
                              contrastive=_RATIO_CONTRASTIVE.value)
  else:
    train = training.train_score_network
  result = train(
      _dataset(_DATASET.value),
      _OUTPUT_DIR.value,
      network=network,
      batch_size=_BATCH_SIZE.value,
      steps=_STEPS.value,
      learning_rate=_LEARNING_RATE.value,
      warmup_steps=_WARMUP_STEPS.value,
      sigma_min=_SIGMA_MIN.value,
      sigma_max=_SIGMA_MAX.value,
      ema_decay=_EMA_DECAY.value,
      crop_size=_MAP_SIZE.value,
      augment=_AUGMENT.value,
      feature=_FEATURE.value,
      split=_SPLIT.value,
      data_dir=_DATA_DIR.value,
      seed=_SEED.value,
      checkpoint_every=_CHECKPOINT_EVERY.value,
      log_every=_LOG_EVERY.value,
      jit_compile={'auto': None, 'on': True, 'off': False}[_JIT_COMPILE.value])
  final = result.history['loss'][-1] if result.history['loss'] else float('nan')
  if ratio:
    print(f'Final classification loss {final:.4f} (ln 2 = 0.693 untrained); '
          f'network saved to {_OUTPUT_DIR.value}/'
          f'{training.RATIO_MODEL_FILENAME}')
  else:
    print(f'Final weighted DSM loss {final:.4f} (1 = untrained); network '
          f'saved to {_OUTPUT_DIR.value}/{training.MODEL_FILENAME}')


if __name__ == '__main__':
  app.run(main)
