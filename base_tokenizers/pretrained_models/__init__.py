"""Pretrained base-tokenizer files (downloaded, git-ignored) and their download script."""
