"""Stage 6: steering: set language neurons during generation and measure the output language.

``interventions`` (what to write where: deactivate source neurons, activate target neurons,
strength ``alpha``, positions; checked hooks), ``generation`` (batched, padded generation on a
TransformerBridge with the hooks active at every step), ``directions`` (language directions:
the difference of mean ``resid_post`` between two languages, and random directions of equal
norm), ``direction_hooks`` (add ``alpha * direction`` at neuron steering's positions).
"""

from mlinguality.steering.direction_hooks import (
    DirectionHooks,
    DirectionIntervention,
    direction_hooks,
    steer_direction,
)
from mlinguality.steering.directions import (
    direction_from_means,
    language_direction,
    language_means,
    mean_residuals,
    random_direction,
)
from mlinguality.steering.generation import Generations, check_kv_cache, generate
from mlinguality.steering.interventions import (
    Intervention,
    SteeringError,
    SteeringHooks,
    SteeringWindow,
    language_intervention,
    steer,
    steering_hooks,
)

__all__ = [
    "DirectionHooks",
    "DirectionIntervention",
    "Generations",
    "Intervention",
    "SteeringError",
    "SteeringHooks",
    "SteeringWindow",
    "check_kv_cache",
    "direction_from_means",
    "direction_hooks",
    "generate",
    "language_direction",
    "language_intervention",
    "language_means",
    "mean_residuals",
    "random_direction",
    "steer",
    "steer_direction",
    "steering_hooks",
]
