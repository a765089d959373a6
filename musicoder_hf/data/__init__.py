"""Real music for MusiCoder: the unlabeled pre-training corpus, the labeled tasks, and loaders for user folders."""
