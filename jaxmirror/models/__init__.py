"""Models built from matrix pairs: single-layer attention and LoRA adapters.

Each model's trainable part is a product of two factors, so weight decay on both factors
is the `MatrixFactorization` pair. A `*_task` function returns `(problem, pair, w0)` for
`jm.train` / `jm.solve` on the flattened product; the Equinox modules run the same model
with any Optax loop.
"""

from ._attention import (
    attention_task as attention_task,
    SoftmaxAttention as SoftmaxAttention,
)
from ._lora import lora_task as lora_task, LoRALinear as LoRALinear
from ._spectral import spectral_trace as spectral_trace, SpectralTrace as SpectralTrace
