"""tfp_massmap: probabilistic dark-matter mass mapping with TensorFlow Probability.

Shear γ = Aκ + n from a galaxy catalogue, an explicit Gaussian likelihood
(`ShearLikelihood`), classical baselines (Kaiser-Squires, Wiener filter) and
posterior sampling under learned or analytic priors. Importing the package
registers its TFDS datasets (`massivenus`, `kappatng`, `lognormal_kappa`).

The builders live in the top-level ``datasets/`` folder, installed as
``tfp_massmap.datasets`` (``pip install -e .``); from a checkout that is not
installed, that folder is loaded under the same name, so ``import
tfp_massmap`` works with the repository root on ``sys.path``.
"""

import importlib
import importlib.util
import os
import sys

from tfp_massmap import catalog
from tfp_massmap import cosmology
from tfp_massmap import demo
from tfp_massmap import joint_posterior
from tfp_massmap import lensing
from tfp_massmap import likelihood
from tfp_massmap import lognormal
from tfp_massmap import lognormal_cosmology
from tfp_massmap import lognormal_posterior
from tfp_massmap import mcmc
from tfp_massmap import metrics
from tfp_massmap import outputs
from tfp_massmap import pipeline
from tfp_massmap import plotting
from tfp_massmap import power_spectrum
from tfp_massmap import power_spectrum_likelihood
from tfp_massmap import preprocessing
from tfp_massmap import priors
from tfp_massmap import score_network
from tfp_massmap import shear_map
from tfp_massmap import sky
from tfp_massmap import sparse
from tfp_massmap import starlet
from tfp_massmap import statistics
from tfp_massmap import survey
from tfp_massmap import theta_posterior
from tfp_massmap import training
from tfp_massmap import wiener
from tfp_massmap.lensing import kaiser_squires
from tfp_massmap.lensing import shear_from_convergence
from tfp_massmap.likelihood import ShearLikelihood
from tfp_massmap.lognormal import LognormalField
from tfp_massmap.mcmc import PosteriorSamples
from tfp_massmap.mcmc import credible_interval
from tfp_massmap.joint_posterior import JointPosteriorSampler
from tfp_massmap.joint_posterior import parameter_summary
from tfp_massmap.joint_posterior import sample_joint_posterior
from tfp_massmap.theta_posterior import sample_theta_posterior
from tfp_massmap.posterior import PosteriorSampler
from tfp_massmap.posterior import map_estimate
from tfp_massmap.priors import GaussianPrior
from tfp_massmap.priors import LognormalPrior
from tfp_massmap.priors import load_prior
from tfp_massmap.priors.ratio import RatioNetwork
from tfp_massmap.priors.ratio import load_ratio_network
from tfp_massmap.score_network import ScoreNetwork
from tfp_massmap.score_network import load_score_network
from tfp_massmap.shear_map import ShearMap
from tfp_massmap.shear_map import as_shear_map
from tfp_massmap.posterior import sample_posterior
from tfp_massmap.sparse import mcalens_map
from tfp_massmap.sparse import sparse_map
from tfp_massmap.sparse import tv_map
from tfp_massmap.training import train_ratio_network
from tfp_massmap.training import train_score_network
from tfp_massmap.wiener import gaussian_posterior_samples
from tfp_massmap.wiener import wiener_filter


def _import_datasets():
  """``tfp_massmap.datasets``, installed or from the checkout's ``datasets/``."""
  try:
    return importlib.import_module('tfp_massmap.datasets')
  except ModuleNotFoundError as exc:
    if exc.name != 'tfp_massmap.datasets':
      raise
  folder = os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'datasets')
  init = os.path.join(folder, '__init__.py')
  if not os.path.isfile(init):
    raise ImportError(
        'tfp_massmap.datasets is not installed and there is no datasets/ '
        f'folder next to {os.path.dirname(os.path.abspath(__file__))}: '
        'install the package with `pip install -e .` (or `pip install .`) '
        'from the repository root.')
  spec = importlib.util.spec_from_file_location(
      'tfp_massmap.datasets', init, submodule_search_locations=[folder])
  module = importlib.util.module_from_spec(spec)
  sys.modules['tfp_massmap.datasets'] = module
  try:
    spec.loader.exec_module(module)
  except BaseException:
    del sys.modules['tfp_massmap.datasets']
    raise
  return module


datasets = _import_datasets()  # Registers the TFDS builders.

__version__ = '0.1.0'
