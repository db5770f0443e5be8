"""`varcompress prune`: static baselines (FFN neuron pruning by magnitude or Wanda, static token
pruning, both) at a FLOPs target, optionally fine-tuned with a distillation recipe's budget.

Public API:
    PruneConfig, prune(var, cfg, calib=None, sampling=None) -> PruneResult(model, info),
    save_pruned(model, info, out_dir, source=None, finetune=None, force=False), load_pruned(dir, vae=None),
    budget_from_recipe(recipe) -> FinetuneBudget, finetune(student, teacher, data, budget) -> summary,
    neuron_scores / select_neurons / prune_neurons / activation_stats (the neuron-pruning pieces).
See docs/COMPARE.md.
"""
from ..formats.pruned import is_pruned_dir, load_pruned, read_prune_info, save_pruned
from .api import PruneResult, model_gflops, prune
from .config import METHODS, PruneConfig
from .finetune import FinetuneBudget, budget_from_recipe, finetune, teacher_data
from .neurons import activation_stats, neuron_scores, prune_neurons, select_neurons

__all__ = ["METHODS", "FinetuneBudget", "PruneConfig", "PruneResult", "activation_stats", "budget_from_recipe",
           "finetune", "is_pruned_dir", "load_pruned", "model_gflops", "neuron_scores", "prune", "prune_neurons",
           "read_prune_info", "save_pruned", "select_neurons", "teacher_data"]
