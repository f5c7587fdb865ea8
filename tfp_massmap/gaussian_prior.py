"""Transition alias: the module moved to `tfp_massmap.priors.gaussian`.

Import ``from tfp_massmap.priors import gaussian`` (or
``tfp_massmap.priors.GaussianPrior``); this alias goes once every caller does.
"""

from tfp_massmap.priors.gaussian import GaussianPrior
from tfp_massmap.priors.gaussian import fourier_filter

__all__ = ['GaussianPrior', 'fourier_filter']
