"""Distillery's core: data, models, distillation, training, evaluation, store, jobs, export.

Nothing in this package imports streamlit; pages/ call into it.
"""
