"""OmniDRCA: a parallel speech-text foundation model (dual-resolution speech, contrastive alignment).

Importing the package registers the classes with transformers' Auto classes, so
`AutoConfig`/`AutoModel`/`AutoModelForMultimodalLM` resolve `model_type="omnidrca"`. Checkpoints saved
with `save_pretrained` also carry the code (`auto_map`) for `trust_remote_code=True` loading without
this package.
"""

from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForMultimodalLM, AutoProcessor

from .codec_omnidrca import OmniDRCASpeechCodec, OmniDRCASpeechCodecConfig
from .compose import compose_from_backbones, replace_speech_head
from .configuration_omnidrca import OmniDRCAConfig, OmniDRCADiffusionHeadConfig
from .feature_extraction_omnidrca import OmniDRCAFeatureExtractor
from .generation_outputs import OmniDRCAGenerateOutput
from .generation_session import GenerationSession
from .generation_settings import GenerationSettings, PromptBatch
from .modeling_omnidrca import (
    OmniDRCAForConditionalGeneration,
    OmniDRCAModel,
    OmniDRCAOutput,
    OmniDRCAPreTrainedModel,
)
from .processing_omnidrca import OmniDRCAProcessor
from .speech_heads import register_speech_head
from .streaming_omnidrca import IncrementalSpeechDecoder, OmniDRCAStreamer, StreamPiece
from .streams import AssistantStreams, StreamLayout, build_assistant_streams
from .tokenization import add_stream_special_tokens, train_text_tokenizer

__version__ = "0.1.0"

AutoConfig.register(OmniDRCAConfig.model_type, OmniDRCAConfig, exist_ok=True)
AutoModel.register(OmniDRCAConfig, OmniDRCAForConditionalGeneration, exist_ok=True)
AutoConfig.register(OmniDRCASpeechCodecConfig.model_type, OmniDRCASpeechCodecConfig, exist_ok=True)
AutoModel.register(OmniDRCASpeechCodecConfig, OmniDRCASpeechCodec, exist_ok=True)
AutoConfig.register(OmniDRCADiffusionHeadConfig.model_type, OmniDRCADiffusionHeadConfig, exist_ok=True)
AutoModelForMultimodalLM.register(OmniDRCAConfig, OmniDRCAForConditionalGeneration, exist_ok=True)
AutoFeatureExtractor.register(OmniDRCAConfig, OmniDRCAFeatureExtractor, exist_ok=True)
AutoProcessor.register(OmniDRCAConfig, OmniDRCAProcessor, exist_ok=True)
# save_pretrained copies the code next to the weights and writes `auto_map` for trust_remote_code.
OmniDRCAConfig.register_for_auto_class("AutoConfig")
OmniDRCAForConditionalGeneration.register_for_auto_class("AutoModel")
OmniDRCAFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
OmniDRCAProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "AssistantStreams",
    "GenerationSession",
    "GenerationSettings",
    "PromptBatch",
    "StreamLayout",
    "register_speech_head",
    "OmniDRCAConfig",
    "OmniDRCADiffusionHeadConfig",
    "IncrementalSpeechDecoder",
    "OmniDRCAFeatureExtractor",
    "OmniDRCAGenerateOutput",
    "OmniDRCAStreamer",
    "StreamPiece",
    "OmniDRCAProcessor",
    "OmniDRCASpeechCodec",
    "OmniDRCASpeechCodecConfig",
    "OmniDRCAForConditionalGeneration",
    "OmniDRCAModel",
    "OmniDRCAOutput",
    "OmniDRCAPreTrainedModel",
    "add_stream_special_tokens",
    "build_assistant_streams",
    "compose_from_backbones",
    "replace_speech_head",
    "train_text_tokenizer",
]
