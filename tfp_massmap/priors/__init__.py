"""Priors on convergence maps, and the protocol they share.

Every prior implements `Prior` (``protocol.py``): a score ``score(x,
sigma)``, optionally a denoiser, the dtype it computes in, the pixel scale
it is valid at, the map size or size divisor it needs, and whether its score
holds at every noise level. `check_prior` checks a prior against the data
before an estimator starts (the posterior samplers call it), and `denoise`
gives its denoiser.

- `GaussianPrior` (``gaussian.py``): the stationary Gaussian random field of
  a power spectrum, exact score and denoiser at every σ.
- `LognormalPrior` (``lognormal.py``): the shifted lognormal field of a
  `tfp_massmap.LognormalField`, exact density and score at σ = 0 (its
  posterior is sampled by `tfp_massmap.lognormal_posterior`).
- Joint priors over (κ, θ) (``conditional.py``): `JointPrior`, the
  protocol of a prior over a map and cosmological parameters, whose
  ``given(theta)`` is a `Prior`; `AmplitudeGaussianPrior`, a Gaussian field
  whose spectrum scales with an amplitude (or σ8), with exact scores.
- `LearnedJointPrior` (``learned_joint.py``): a `ScoreNetwork` conditioned
  on θ as a prior p(κ | θ) with a uniform θ prior: its ``given(theta)`` is
  a `Prior`; with a `RatioNetwork` it also gives the θ score and samples the
  joint posterior.
- `RatioNetwork` (``ratio.py``): the θ score ∇θ log p_σ(κ | θ) by
  classification (neural ratio estimation), for
  ``LearnedJointPrior(network, ratio=...)``.
- Learned priors (``learned.py``): `tfp_massmap.ScoreNetwork` files, the
  shipped ones by name and one's own by path, through `load_prior`.
"""

from tfp_massmap.priors.conditional import AmplitudeGaussianPrior
from tfp_massmap.priors.conditional import JointPrior
from tfp_massmap.priors.conditional import JointPriorProperties
from tfp_massmap.priors.conditional import check_theta
from tfp_massmap.priors.conditional import denoise_given
from tfp_massmap.priors.conditional import is_joint_prior
from tfp_massmap.priors.conditional import joint_prior_properties
from tfp_massmap.priors.gaussian import GaussianPrior
from tfp_massmap.priors.gaussian import fourier_filter
from tfp_massmap.priors.learned import SHIPPED_PRIORS
from tfp_massmap.priors.learned import load_prior
from tfp_massmap.priors.learned_joint import ConditionedScoreNetwork
from tfp_massmap.priors.learned_joint import LearnedJointPrior
from tfp_massmap.priors.lognormal import LognormalPrior
from tfp_massmap.priors.ratio import RatioNetwork
from tfp_massmap.priors.ratio import classification_loss
from tfp_massmap.priors.ratio import load_ratio_network
from tfp_massmap.priors.protocol import PIXEL_SCALE_TOLERANCE
from tfp_massmap.priors.protocol import Prior
from tfp_massmap.priors.protocol import PriorCheck
from tfp_massmap.priors.protocol import PriorProperties
from tfp_massmap.priors.protocol import check_prior
from tfp_massmap.priors.protocol import denoise
from tfp_massmap.priors.protocol import prior_properties

__all__ = [
    'AmplitudeGaussianPrior',
    'ConditionedScoreNetwork',
    'GaussianPrior',
    'JointPrior',
    'JointPriorProperties',
    'LearnedJointPrior',
    'LognormalPrior',
    'PIXEL_SCALE_TOLERANCE',
    'Prior',
    'PriorCheck',
    'PriorProperties',
    'RatioNetwork',
    'SHIPPED_PRIORS',
    'check_prior',
    'check_theta',
    'classification_loss',
    'denoise',
    'denoise_given',
    'is_joint_prior',
    'fourier_filter',
    'joint_prior_properties',
    'load_prior',
    'load_ratio_network',
    'prior_properties',
]
