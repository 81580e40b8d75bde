"""Putting adapters on a model and taking them off: the config, injection, merge and unmerge,
adapter files, the Hub, and conversion of the official code's checkpoints."""
