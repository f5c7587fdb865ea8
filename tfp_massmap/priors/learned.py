"""Learned priors: the shipped score networks, and `load_prior`.

``load_prior()`` returns the `ScoreNetwork` trained by denoising score
matching on ``lognormal_kappa/lognormal_128`` (128² maps of 0.8 arcmin with
the shipped COSMOS-like ΛCDM spectrum, lognormal shift 0.035); the training
command, data, steps, wall time and final loss are in
``docs/shipped_prior.md``. The network is fully convolutional, so it serves
any map size divisible by 2**depth, but it has only seen 0.8 arcmin pixels.

The cosmology-aware priors, trained on maps whose (Ωm, σ8) vary over
`tfp_massmap.cosmology.COSMO_PARAMETER_BOUNDS` (``docs/joint_prior.md``):

* ``load_prior('cosmo_joint_32')``: the joint prior p(κ, Ωm, σ8), a
  `LearnedJointPrior` of a θ-conditioned `ScoreNetwork` and a `RatioNetwork`
  (the θ score), for `tfp_massmap.JointPosteriorSampler`; its
  ``given(theta)`` is the conditional prior p(κ | θ); its θ likelihood is
  calibrated on 32² maps;
* ``load_prior('cosmo_joint_128')``: the same conditional network with the
  ratio network fine-tuned on whole 128² maps (the demo's size), where its
  θ posterior is unbiased, calibrated and narrower than the power
  spectrum's (docs/benchmarks.md, "Contrastive training");
* ``load_prior('cosmo_marginal_32')``: the map-only prior p(κ) over that
  range, a `ScoreNetwork`.

``load_prior(path)`` loads a network of one's own (``examples/train_score.py``
writes one) from its ``.keras`` file.
"""

import collections
import importlib.resources
import os

from tfp_massmap import score_network
from tfp_massmap.priors import learned_joint
from tfp_massmap.priors import ratio

__all__ = ['SHIPPED_PRIORS', 'ShippedPrior', 'load_prior']


class ShippedPrior(collections.namedtuple(
    'ShippedPrior', ['filenames', 'pixel_scale_arcmin', 'theta_map_size'])):
  """A prior shipped in tfp_massmap/data, as `SHIPPED_PRIORS` lists it.

  Fields:
    filenames: one score network, or a conditioned score network and a
      ratio network (a `LearnedJointPrior`).
    pixel_scale_arcmin: the pixel side they were trained at (arcmin).
    theta_map_size: for a joint prior, the map side N (pixels) its θ
      likelihood is trained and checked on; None for a map-only prior.
  """


SHIPPED_PRIORS = {
    'lognormal_128': ShippedPrior(('prior_lognormal_128.keras',), 0.8, None),
    'cosmo_joint_32': ShippedPrior(('prior_cosmo_conditional_32.keras',
                                    'prior_cosmo_ratio_32.keras'), 0.8, 32),
    'cosmo_joint_128': ShippedPrior(('prior_cosmo_conditional_32.keras',
                                     'prior_cosmo_ratio_128.keras'), 0.8, 128),
    'cosmo_marginal_32': ShippedPrior(('prior_cosmo_marginal_32.keras',),
                                      0.8, None),
}


def _is_path(name):
  """Whether a string that is no shipped name is meant as a file path."""
  return (any(sep and sep in name for sep in (os.sep, os.altsep)) or
          name.endswith('.keras') or os.path.exists(name))


def load_prior(name_or_path='lognormal_128'):
  """Loads a shipped score-network prior, or one from its ``.keras`` file.

  Args:
    name_or_path: one of ``SHIPPED_PRIORS`` (default: the demo-setting prior,
      trained on 0.8 arcmin pixels), or the path (str or ``os.PathLike``) of
      a ``.keras`` file written by ``ScoreNetwork.save`` (e.g. the
      ``score_network.keras`` of ``examples/train_score.py``). A string is a
      path when it is not a shipped name and holds a path separator, ends in
      ``.keras`` or names an existing file.

  Returns:
    The `ScoreNetwork`, a `tfp_massmap.priors.Prior`: its ``score(x,
    sigma)`` is ∇ log p_σ(x) for maps ``[batch, N, N]`` of dimensionless
    convergence, and its ``pixel_scale_arcmin`` the pixel scale it was
    trained at (from ``SHIPPED_PRIORS`` for a shipped prior, from the file
    otherwise; None when the file does not record one), which the samplers
    check the data against. For ``'cosmo_joint_<N>'`` a `LearnedJointPrior`
    (a `tfp_massmap.priors.JointPrior` over κ and θ = (Ωm, σ8), with its
    ratio network and ``theta_map_size`` N, the map side its θ likelihood is
    calibrated on) instead.

  Raises:
    ValueError: for a string that is neither a shipped name nor a path, a
      missing shipped file, or a file that is not a ``ScoreNetwork``
      ``.keras`` archive (the message names the file and what it is).
    FileNotFoundError: for a path where nothing exists.
  """
  if isinstance(name_or_path, os.PathLike):
    name_or_path = os.fspath(name_or_path)
  if not isinstance(name_or_path, str):
    raise ValueError('name_or_path must be the name of a shipped prior '
                     f'({sorted(SHIPPED_PRIORS)}) or the path of a .keras '
                     f'file, got {name_or_path!r}.')
  if name_or_path not in SHIPPED_PRIORS:
    if _is_path(name_or_path):
      return score_network.load_score_network(name_or_path)
    raise ValueError(f'unknown prior {name_or_path!r}; expected one of '
                     f'{sorted(SHIPPED_PRIORS)} or the path of a .keras file '
                     '(e.g. runs/prior/score_network.keras).')
  shipped = SHIPPED_PRIORS[name_or_path]
  network = _load_shipped(shipped.filenames[0], shipped.pixel_scale_arcmin,
                          score_network.load_score_network)
  if len(shipped.filenames) == 1:
    return network
  return learned_joint.LearnedJointPrior(
      network, ratio=_load_shipped(shipped.filenames[1],
                                   shipped.pixel_scale_arcmin,
                                   ratio.load_ratio_network),
      theta_map_size=shipped.theta_map_size)


def _load_shipped(filename, pixel_scale_arcmin, load):
  """The network of a file in tfp_massmap/data, its pixel scale set."""
  resource = importlib.resources.files('tfp_massmap').joinpath('data', filename)
  if not resource.is_file():
    raise ValueError(f'the shipped prior file {filename} is missing from '
                     'tfp_massmap/data; reinstall the package, or train one with '
                     'examples/train_score.py and pass its path instead.')
  with importlib.resources.as_file(resource) as path:
    network = load(str(path))
  network.pixel_scale_arcmin = pixel_scale_arcmin
  return network
