"""Research diagnostics: tools that study a trained KARL (not needed to train or use one).

Run them from the repository root: `python -m research.halting_headroom ...`, `python -m research.readme_figure`.
"""
