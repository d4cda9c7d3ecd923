"""malleability: an audit suite for arXiv 2603.13085 (Influence Malleability in Linearized Attention).

Subpackages:
    malleability.theory      exact / float64 / mpmath checks of Thm 4.1, Prop 4.5, Thm 4.7, k-layer
    malleability.properties  Hypothesis strategies and property definitions
    malleability.empirics    data, models, empirical NTK, influence, attacks, malleability experiments
    malleability.reports     the click CLI, cache, executor and report rendering
"""

__version__ = "0.1.0"

from malleability.errors import MalleabilityError, require  # noqa: E402

__all__ = ["MalleabilityError", "require", "__version__"]
