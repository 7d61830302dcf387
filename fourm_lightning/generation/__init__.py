"""Any-to-any generation: sampling primitives, MaskGIT / ROAR / autoregression, guidance, chains."""

from fourm_lightning.generation.sampler import (
    GenerationStep,
    State,
    autoregressive,
    clone_state,
    empty_target,
    generate,
    maskgit,
    position_logits,
    roar,
)
from fourm_lightning.generation.sampling import (
    filter_logits,
    guide,
    sample_tokens,
    temperatures,
    tokens_per_step,
)

__all__ = [
    "GenerationStep",
    "State",
    "autoregressive",
    "clone_state",
    "empty_target",
    "filter_logits",
    "generate",
    "guide",
    "maskgit",
    "position_logits",
    "roar",
    "sample_tokens",
    "temperatures",
    "tokens_per_step",
]
