"""kdef-jax: the KDEF ensemble framework for CTR prediction in JAX/Flax.

K student networks share one embedding table; the teacher is sigmoid(mean of the student logits);
each student learns from the labels, the teacher (KD) and its peers (DML), weighted per batch by
the examination mechanism. See README.md.
"""

__version__ = "0.1.0"
