"""A distilled student's item table started from its teacher's: the teacher's item vectors
projected onto their top principal directions.

Item tables hold most of a recommender's parameters, so a small student is above all a
narrow item table. Trained alone, a very narrow one (a 2-wide SASRec on the demo shop, 1% of
its teacher's parameters) never leaves the popularity ranking: its few dimensions get too
weak a signal to find the catalog's structure. The teacher has found it. Its item vectors,
centred and projected onto their ``d`` leading principal directions (a truncated SVD, the
best rank-``d`` approximation of the table), give the student's ``d``-wide table a start
that already places similar items close together; training then moves on from there.

The mean item vector is removed first: a component shared by every item adds the same
amount to every item's score, so it never changes a ranking, and keeping it would spend one
of the student's few dimensions on nothing. Everything else the student has (positions,
attention, user table) keeps its own random initialisation, the same as its no-teacher
twin's, so the pair still differs only by what the teacher gives.

Opt-in per run (``DistillConfig.teacher_init``), and only for a teacher and a student that
both have an item table over the same catalog (SASRec, MF, two-tower); otherwise the run
says why in its notes and starts from random weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from core.models import Recommender


def item_table(model: Recommender) -> Tensor | None:
    """The model's ``[n_items, dim]`` item vectors (a view of its weights), or None."""
    emb = getattr(model, "item_emb", None)
    if not isinstance(emb, torch.nn.Embedding):
        return None
    weight = emb.weight
    # SASRec's table has a padding row 0 in front of the catalog.
    if weight.shape[0] == model.n_items + 1:
        return weight[1:]
    if weight.shape[0] == model.n_items:
        return weight
    return None


def principal_projection(table: Tensor, dim: int) -> tuple[Tensor, float]:
    """``table`` ``[n, D]`` centred and projected onto its ``dim`` leading principal directions:
    ``[n, dim]`` (zero columns past ``D``), and the share of the variance they keep."""
    centred = table.detach().double()
    centred = centred - centred.mean(dim=0, keepdim=True)
    _, singular, right = torch.linalg.svd(centred, full_matrices=False)
    k = min(dim, right.shape[0])
    projected = torch.zeros(table.shape[0], dim, dtype=torch.float64, device=table.device)
    projected[:, :k] = centred @ right[:k].T
    total = float(singular.pow(2).sum())
    kept = float(singular[:k].pow(2).sum()) / total if total > 0 else 0.0
    return projected, kept


@torch.no_grad()
def init_from_teacher(student: Recommender, teacher: Recommender) -> str:
    """Overwrite the student's item table with the teacher's projection (see the module
    docstring); returns the sentence the run's notes get."""
    target, source = item_table(student), item_table(teacher)
    if target is None or source is None:
        return (
            f"The student's item table was not started from the teacher's: a {teacher.family} "
            f"teacher and a {student.family} student do not both have one over the catalog."
        )
    if source.shape[0] != target.shape[0]:
        return (
            "The student's item table was not started from the teacher's: they cover "
            f"{source.shape[0]:,} and {target.shape[0]:,} items."
        )
    projected, kept = principal_projection(source, target.shape[1])
    target.copy_(projected.to(target))
    return (
        f"The student's item table started from the teacher's, projected onto its "
        f"{min(target.shape[1], source.shape[1])} leading principal directions "
        f"({kept:.0%} of its variance)."
    )
