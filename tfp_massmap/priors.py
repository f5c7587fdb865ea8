"""The shipped learned prior: a score network trained on the synthetic dataset.

``load_prior()`` returns the `ScoreNetwork` trained by denoising score
matching on ``lognormal_kappa/lognormal_128`` (128² maps of 0.8 arcmin with
the shipped COSMOS-like ΛCDM spectrum, lognormal shift 0.035); the training
command, data, steps, wall time and final loss are in
``docs/shipped_prior.md``. The network is fully convolutional, so it serves
any map size divisible by 2**depth, but it has only seen 0.8 arcmin pixels.
"""

import importlib.resources

from tfp_massmap import score_network

__all__ = ['SHIPPED_PRIORS', 'load_prior']

# name → (file in tfp_massmap/data, pixel scale in arcmin it was trained at)
SHIPPED_PRIORS = {
    'lognormal_128': ('prior_lognormal_128.keras', 0.8),
}


def load_prior(name='lognormal_128'):
  """Loads a shipped score-network prior.

  Args:
    name: one of ``SHIPPED_PRIORS`` (default: the demo-setting prior,
      trained on 0.8 arcmin pixels).

  Returns:
    The `ScoreNetwork`; its ``score(x, sigma)`` is ∇ log p_σ(x) for maps
    ``[batch, N, N]`` of dimensionless convergence, and its
    ``pixel_scale_arcmin`` the pixel scale it was trained at (from
    ``SHIPPED_PRIORS``), which `sample_posterior` checks the data against.
  """
  if name not in SHIPPED_PRIORS:
    raise ValueError(f'unknown prior {name!r}; expected one of {sorted(SHIPPED_PRIORS)}.')
  filename, pixel_scale_arcmin = SHIPPED_PRIORS[name]
  resource = importlib.resources.files('tfp_massmap').joinpath('data', filename)
  if not resource.is_file():
    raise ValueError(f'the shipped prior file {filename} is missing from '
                     'tfp_massmap/data; reinstall the package, or train one with '
                     'examples/train_score.py and pass its path instead.')
  with importlib.resources.as_file(resource) as path:
    network = score_network.load_score_network(str(path))
  network.pixel_scale_arcmin = pixel_scale_arcmin
  return network
