"""Offline image-quality metrics: Frechet distance, precision/recall, testbed evaluator."""
