"""The training engine: recipe, training loop, selection protocol, VTAB suite."""
