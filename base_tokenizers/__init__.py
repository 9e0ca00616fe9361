"""Base (2D) tokenizers KARL distils from: the MAGE VQGAN and the MAR KL VAE, behind one interface."""

from base_tokenizers.base import AutoencoderOutput, BaseEncoding, BaseTokenizer
from base_tokenizers.patch_vae import PatchVAEConfig, PatchVAETokenizer
from base_tokenizers.registry import (
    create_base_tokenizer,
    default_checkpoint_path,
    list_base_tokenizers,
    register_base_tokenizer,
)
from base_tokenizers.vae import VAEConfig, VAETokenizer
from base_tokenizers.vqgan import VQGANConfig, VQGANTokenizer

__all__ = [
    "AutoencoderOutput",
    "BaseEncoding",
    "BaseTokenizer",
    "PatchVAEConfig",
    "PatchVAETokenizer",
    "VAEConfig",
    "VAETokenizer",
    "VQGANConfig",
    "VQGANTokenizer",
    "create_base_tokenizer",
    "default_checkpoint_path",
    "list_base_tokenizers",
    "register_base_tokenizer",
]
