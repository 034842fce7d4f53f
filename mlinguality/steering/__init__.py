"""Stage 6: steering: set language neurons during generation and measure the output language.

``interventions`` (what to write where: deactivate source neurons, activate target neurons,
strength ``alpha``, positions; checked hooks), ``generation`` (batched, padded generation on a
TransformerBridge with the hooks active at every step).
"""

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
    "Generations",
    "Intervention",
    "SteeringError",
    "SteeringHooks",
    "SteeringWindow",
    "check_kv_cache",
    "generate",
    "language_intervention",
    "steer",
    "steering_hooks",
]
