"""mlinguality: find language-specific neurons in multilingual language models."""

from mlinguality.model import GEMMA_SPEC, ModelLoadError, TinyModelConfig, load_model

__version__ = "0.1.0"

__all__ = ["GEMMA_SPEC", "ModelLoadError", "TinyModelConfig", "__version__", "load_model"]
