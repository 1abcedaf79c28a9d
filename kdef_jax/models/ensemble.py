"""The KDEF model: one shared embedding, then groups of students, logits stacked to [K, B].

A group is K_g copies of one student kind as ONE ``nn.vmap``-ed module: params and BatchNorm
statistics carry a leading K_g axis (``variable_axes``), each copy draws its own init and dropout
keys (``split_rngs``), and the embedding output is broadcast (``in_axes=None``) — so K MLPs run as
one batched matmul per layer. On CPU the same module (same variables) executes unrolled per student
(``group_impl``), which XLA:CPU runs faster. Groups are concatenated in config order: students
[0, K_0) are group 0, [K_0, K_0+K_1) group 1, and so on.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from kdef_jax.models.embedding import FeatureEmbedding, int32_ids
from kdef_jax.models.layers import dense
from kdef_jax.models.registry import get_student, import_student_modules


@dataclasses.dataclass(frozen=True)
class StudentGroup:
    kind: str
    count: int
    kwargs: tuple = ()  # sorted (name, value) pairs: hashable, so the module stays a static pytree

    def __post_init__(self):
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            raise ValueError(f"StudentGroup {self.kind!r}: count must be an integer >= 1, got {self.count!r}")

    @property
    def name(self) -> str:
        return f"{self.kind}x{self.count}"


def vmapped(cls, count: int):
    """``cls`` repeated ``count`` times along a leading axis of its variables and outputs."""
    return nn.vmap(
        cls,
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(None, None, None),
        out_axes=0,
        axis_size=count,
    )


@functools.lru_cache(maxsize=None)
def unrolled(cls, count: int):
    """The same group as ``vmapped(cls, count)`` — identical variables, leading K axis, split rngs —
    executed as K per-student computations (``nn.scan`` fully unrolled) instead of batched ones.
    XLA:CPU runs the resulting 2-D matmuls and row reductions as fast as K separate modules and a
    few % faster than the batched [K, B, ·] forms (K=10, train step, unrolled ÷ vmap: Zen 4 1.04× median,
    0.98-1.05 per process, benchmarks/results/cpu_zen4/group_vs_loop_cpu.json; Zen 5 1.01×, 0.93-1.03,
    benchmarks/results/group_vs_loop_cpu.json); on accelerators the batched form wins."""

    class Body(cls):
        def __call__(self, carry, emb, train, mask):
            return carry, super().__call__(emb, train, mask)

    Body.__name__ = cls.__name__
    return nn.scan(
        Body,
        variable_axes={"params": 0, "batch_stats": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast, nn.broadcast, nn.broadcast),
        out_axes=0,
        length=count,
        unroll=count,
    )


GROUP_IMPLS = ("auto", "vmap", "unrolled")


def _unroll(impl: str) -> bool:
    if impl not in GROUP_IMPLS:
        raise ValueError(f"group_impl {impl!r} is not one of {GROUP_IMPLS}")
    return impl == "unrolled" or (impl == "auto" and jax.default_backend() == "cpu")


class KDEFModel(nn.Module):
    vocab_sizes: Sequence[int]
    groups: Sequence[StudentGroup]
    embedding_dim: int = 16
    max_lens: Sequence[int] | None = None
    embedding_init_std: float = 1e-4
    compute_dtype: str = "float32"  # "bfloat16": students compute in bf16, params/optimizer stay fp32
    group_impl: str = "auto"  # how a group of K copies executes: vmap (batched) | unrolled | auto (unrolled on CPU)
    embedding_rows: int = 0  # table rows (0: Σ V_f); more pads zero rows, for a table split by rows
    concat_head: bool = False  # MLPs_concat (loss.variant="concat"): + a head over the students' last hidden layers

    @nn.compact
    def __call__(self, ids, train: bool = False, mask=None, emb_rows=None):
        """ids int32 [B, C] → student logits [K, B]; with ``concat_head`` [K + 1, B], the last row the
        head's logit w·[a_1; …; a_K] + b (a_k: student k's last hidden layer, after its dropout; w, b a
        Linear(K·u → 1) initialised as every Linear). ``emb_rows``: pre-gathered embedding rows [B, C, d].
        Ids of another integer dtype are int32 first (wider ones clipped: out of range is OOV either way);
        anything but an integer [B, C] array is a ValueError."""
        ids = jnp.asarray(ids)
        if ids.ndim != 2 or not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"ids: an integer array [batch, columns], got {ids.dtype} of shape {ids.shape}")
        ids = int32_ids(ids)  # (uint64 + int32 offsets would promote to float under x64)
        emb = FeatureEmbedding(self.vocab_sizes, self.embedding_dim, self.max_lens, self.embedding_init_std,
                               self.embedding_rows, name="embedding")(
            ids, emb_rows
        )
        if self.concat_head and any(g.kind != "mlp" for g in self.groups):
            raise ValueError(f"loss.variant='concat' (the MLPs_concat head) reads the last hidden layer of MLP "
                             f"students; these students are {', '.join(g.name for g in self.groups)}")
        outs = []
        for i, g in enumerate(self.groups):
            cls, _ = get_student(g.kind)
            kwargs = dict(g.kwargs, dtype=jnp.dtype(self.compute_dtype))
            if self.concat_head:
                kwargs["with_hidden"] = True
            name = f"group{i}_{g.kind}"
            if self.is_initializing() or not _unroll(self.group_impl):  # init always by vmap: same params
                outs.append(vmapped(cls, g.count)(**kwargs, name=name)(emb, train, mask))
            else:
                outs.append(unrolled(cls, g.count)(**kwargs, name=name)(None, emb, train, mask)[1])
            _check_logits(outs[-1][0] if self.concat_head else outs[-1], g, cls, ids.shape[0])
        if self.concat_head:
            hidden = jnp.concatenate([h for _, h in outs], axis=0)  # [K, B, u], students in [K] order
            a = jnp.swapaxes(hidden, 0, 1).reshape(hidden.shape[1], -1)  # [B, K·u] = [a_1; …; a_K] per row
            head = dense(1, dtype=jnp.dtype(self.compute_dtype), name="concat_head")(a)[:, 0].astype(jnp.float32)
            outs = [z for z, _ in outs] + [head[None]]
        return jnp.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]

    @property
    def num_students(self) -> int:
        return sum(g.count for g in self.groups)


def _check_logits(z, g: StudentGroup, cls, batch: int) -> None:
    """A group's output must be float logits [count, batch] (a kind of the user's own may return others)."""
    if not (jnp.issubdtype(z.dtype, jnp.floating) and z.shape == (g.count, batch)):
        raise ValueError(f"student kind {g.kind!r} ({cls.__module__}.{cls.__name__}) returned {z.dtype} of shape "
                         f"{tuple(z.shape[1:])} per student; a student returns float logits of shape [batch] = ({batch},)")


def groups_from_config(m) -> tuple:
    """config.model → student groups. ``m.students`` "mlp:8,ecn:2" or, if empty, ``m.student`` × num_students;
    the modules of ``m.student_modules`` (kinds of the user's own) are imported first."""
    import_student_modules(m.get("student_modules", ()))
    spec = m.students.strip() or f"{m.student}:{m.num_students}"
    groups = []
    for part in spec.split(","):
        kind, _, count = (t.strip() for t in part.partition(":"))
        if count and not (count.isascii() and count.isdigit()):  # int() would take +2, 1_000 and other digits
            raise ValueError(f"config model.students: bad count in {part!r} (use kind:count, e.g. mlp:3)")
        n = int(count) if count else 1
        if not 1 <= n < 2**31:
            raise ValueError(f"config model.students / num_students: need 1 to 2**31 - 1 students per group, got {part!r}")
        _, builder = get_student(kind)
        groups.append(StudentGroup(kind, n, tuple(sorted(builder(m).items()))))
    return tuple(groups)


def build_model(model_config, feature_map, concat_head: bool = False) -> KDEFModel:
    """The model of ``config.model`` over ``feature_map``'s fields; ``concat_head``: with the MLPs_concat
    head (a run whose ``loss.variant`` is "concat": ``fusion_of(variant) == "concat"``)."""
    return KDEFModel(
        vocab_sizes=feature_map.vocab_sizes,
        groups=groups_from_config(model_config),
        embedding_dim=model_config.embedding_dim,
        max_lens=feature_map.max_lens,
        embedding_init_std=model_config.embedding_init_std,
        compute_dtype=model_config.compute_dtype,
        group_impl=model_config.group_impl,
        embedding_rows=model_config.get("embedding_rows", 0),  # absent in runs saved before it existed
        concat_head=concat_head,
    )
