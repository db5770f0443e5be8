"""Built-in testbed: small class-conditional 32x32 image sets and their trained teachers."""
from .datasets import DATASETS, dataset_info, get_dataset
from .teachers import load_teacher

__all__ = ["DATASETS", "dataset_info", "get_dataset", "load_teacher"]
