"""Putting adapters on a model and taking them off.

Lowest first: `config` (RepAdapterConfig, a leaf), `hosts` (the adapted host class and the fold
of one host), `inspection` (has_adapters, adapter_config, counts), `inject` (planning and
injection), `adapter_files` (save, load and the checks before a load), `merge` (merge, unmerge,
unload); then `hub` (Hugging Face Hub folders) and `convert` (the official code's checkpoints).
"""
