"""Training adapters: the recipe (a leaf config), the methods and baselines, the task kinds,
the data kinds, the training loop, the model-selection protocol and the resume contract."""
