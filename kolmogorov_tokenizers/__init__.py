"""KARL: single-pass adaptive image tokenization (arXiv 2507.07995).

    from kolmogorov_tokenizers import create_model, load_tokenizer
    model = create_model("karl_demo", base_tokenizer="vqgan_demo")
    embedding, reconstruction, info = model.encode(images01, desired_reconstruction_quality=0.05)
"""
from kolmogorov_tokenizers.api import ActiveTokens, EncodeResult, PhaseOutput, TrainOutput
from kolmogorov_tokenizers.checkpoint import export_safetensors, load_release_state_dict, load_tokenizer
from kolmogorov_tokenizers.config import EPSILON_BINS, KARLConfig
from kolmogorov_tokenizers.karl import KARLTokenizer
from kolmogorov_tokenizers.registry import create_model, list_models, register_model

__all__ = [
    "ActiveTokens", "EncodeResult", "PhaseOutput", "TrainOutput", "EPSILON_BINS", "KARLConfig", "KARLTokenizer",
    "create_model", "export_safetensors", "list_models", "load_release_state_dict", "load_tokenizer",
    "register_model", "load_image",
]


def __getattr__(name: str):
    # load_image reads one image file into the (1, 3, S, S) tensor encode takes; resolved on first use so that
    # importing the package stays light.
    if name == "load_image":
        from engine.data import load_image

        return load_image
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
