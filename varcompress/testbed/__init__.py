"""Built-in testbed: small class-conditional 32x32 image sets that work offline."""
from .datasets import DATASETS, dataset_info, get_dataset

__all__ = ["DATASETS", "dataset_info", "get_dataset"]
