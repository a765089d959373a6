"""Datasets for MusiCoder: featurisation into Arrow (`features`) and labeled audio folders with their splits and
folds (`labeled`). The builders that write the corpus and the tasks are tooling in `musicoder_hf.builders`."""
