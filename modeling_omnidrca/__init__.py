"""OmniDRCA: a parallel speech-text foundation model (dual-resolution speech, contrastive alignment).

Importing the package registers the classes with transformers' Auto classes, so
`AutoConfig`/`AutoModel`/`AutoModelForMultimodalLM` resolve `model_type="omnidrca"`. Checkpoints saved
with `save_pretrained` also carry the code (`auto_map`) for `trust_remote_code=True` loading without
this package.
"""

from transformers import AutoConfig, AutoModel, AutoModelForMultimodalLM

from .compose import compose_from_backbones
from .configuration_omnidrca import OmniDRCAConfig
from .modeling_omnidrca import (
    OmniDRCAForConditionalGeneration,
    OmniDRCAModel,
    OmniDRCAOutput,
    OmniDRCAPreTrainedModel,
)
from .streams import AssistantStreams, build_assistant_streams

__version__ = "0.1.0"

AutoConfig.register(OmniDRCAConfig.model_type, OmniDRCAConfig, exist_ok=True)
AutoModel.register(OmniDRCAConfig, OmniDRCAForConditionalGeneration, exist_ok=True)
AutoModelForMultimodalLM.register(OmniDRCAConfig, OmniDRCAForConditionalGeneration, exist_ok=True)
# save_pretrained copies the code next to the weights and writes `auto_map` for trust_remote_code.
OmniDRCAConfig.register_for_auto_class("AutoConfig")
OmniDRCAForConditionalGeneration.register_for_auto_class("AutoModel")

__all__ = [
    "AssistantStreams",
    "OmniDRCAConfig",
    "OmniDRCAForConditionalGeneration",
    "OmniDRCAModel",
    "OmniDRCAOutput",
    "OmniDRCAPreTrainedModel",
    "build_assistant_streams",
    "compose_from_backbones",
]
