"""The landscape stage: loss-landscape metadata for every annotated checkpoint.

``annotate`` plans and runs the stage's tasks, ``hessian`` estimates the Hessian's top
eigenvalues and trace from Hessian-vector products, ``metrics`` holds the weight metrics, CKA,
barriers and mode connectivity, ``phases`` labels grid cells with the Yang et al. taxonomy.
"""

from zoo.stages.landscape.annotate import (
    COLUMN_DOCS,
    LandscapeBatch,
    annotate,
    landscape_task,
    plan_landscape,
    plan_landscape_batches,
)

__all__ = [
    "COLUMN_DOCS",
    "LandscapeBatch",
    "annotate",
    "landscape_task",
    "plan_landscape",
    "plan_landscape_batches",
]
