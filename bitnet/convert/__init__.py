"""bitnet.convert: Hugging Face checkpoints of every ternary family -> GGUF files.

- ``checkpoint`` / ``safetensors_file``: the directory, its config and memory-mapped tensors;
- ``families``: which family a config is, its GGUF arch, tensor names and sizes;
- ``weights``: packed / latent / ternary HF weights -> I2_S, TQ2_0, TQ1_0 or F16 bytes;
- ``vocab``: tokenizer files -> tokenizer.* metadata;
- ``to_gguf``: the conversion itself (checked first, then streamed tensor by tensor);
- ``cache``: convert once into the user's cache (``bitnet.load(CHECKPOINT_DIR)``).
"""

from __future__ import annotations

from bitnet.convert.cache import cached_gguf
from bitnet.convert.checkpoint import is_checkpoint_dir
from bitnet.convert.errors import ConvertError
from bitnet.convert.to_gguf import convert_checkpoint

__all__ = ["ConvertError", "cached_gguf", "convert_checkpoint", "is_checkpoint_dir"]
