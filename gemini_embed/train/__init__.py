"""Training: state and optimizer, the jitted train step, gradient caching."""
from gemini_embed.train.state import (LossConfig, OptimConfig, TrainState, abstract_train_state,
                                      current_learning_rate, init_train_state, make_optimizer, make_schedule,
                                      train_state_shardings, weight_decay_mask, with_shardings)
from gemini_embed.train.step import batch_spec, compile_train_step, make_train_step, memory_report

__all__ = ["LossConfig", "OptimConfig", "TrainState", "abstract_train_state", "batch_spec", "compile_train_step",
           "current_learning_rate", "init_train_state", "make_optimizer", "make_schedule", "make_train_step",
           "memory_report", "train_state_shardings", "weight_decay_mask", "with_shardings"]
