"""Released KARL checkpoints (downloaded, git-ignored) and their download script."""
