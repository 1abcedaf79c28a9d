"""Multi-device training: a ``("data", "student")`` device mesh for jit's SPMD partitioner.

    mesh = D × S devices:  batch rows on "data" (D shards), the leading K axis of every student
    group's variables (params, BatchNorm statistics, Adam moments) on "student" (S shards);
    the embedding table and its moments replicated, or (``mesh.embedding = "rows"``) split by rows
    over all D·S devices; every scalar replicated.

The math is that of one device: the partitioner inserts the all-reduces, so BatchNorm statistics,
the teacher σ(mean_k z_k), the examination scores, the loss and the gradients are those of the
GLOBAL batch (only the floating-point reduction order differs). A group whose size K_g is not a
multiple of S (e.g. KDEF_Latest's one IPNN) is replicated over "student" and runs data-parallel.
``config.mesh.data = 0`` (default) takes every device the student axis leaves; one device in all
means no mesh at all (the single-device program, unchanged). Across processes (kdef_jax/distributed.py)
the mesh takes every device, ordered by process, so each process holds whole data-axis rows and,
when mesh.student divides its local device count, whole student shards: host arrays go on with
``to_mesh`` and come back with ``to_host``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXES = ("data", "student")


def make_mesh(mesh_config, batch_sizes: dict, devices=None) -> Mesh | None:
    """The (data, student) mesh of ``mesh_config`` over ``devices`` (default: all), or None for one device.

    ``batch_sizes``: {config key: batch size}, each must divide over the data axis (named in the error).
    """
    devices = sorted(jax.devices() if devices is None else devices, key=lambda d: (d.process_index, d.id))
    s = int(mesh_config.student)  # mesh.data >= 0 and mesh.student >= 1: config.validate
    if len(devices) % s:
        raise ValueError(f"config mesh.student: {s} does not divide the {len(devices)} devices")
    d = int(mesh_config.data) or len(devices) // s
    if d * s > len(devices):
        raise ValueError(f"config mesh.data × mesh.student = {d} × {s} needs {d * s} devices; this host has {len(devices)}")
    if jax.process_count() > 1 and d * s != len(devices):
        raise ValueError(f"config mesh.data × mesh.student = {d} × {s}: a {jax.process_count()}-process run "
                         f"must use all {len(devices)} devices")
    if d * s == 1:
        return None
    for key, b in batch_sizes.items():
        if b % d:
            raise ValueError(f"config {key}: {b} rows do not split over the {d} devices of mesh.data; "
                             f"use a multiple of {d} or set mesh.data")
    return Mesh(np.asarray(devices[: d * s], dtype=object).reshape(d, s), AXES)


def splits(count: int, student: int) -> bool:
    """Whether a group of ``count`` students is split over a student axis of size ``student``."""
    return student > 1 and count % student == 0


def _is_student_leaf(path, leaf, counts: dict, student: int) -> bool:
    """Whether ``leaf`` (at ``path`` in a params-like tree) carries a group's leading K axis that splits over S."""
    for key in path:
        name = getattr(key, "key", None)
        if isinstance(name, str) and name in counts:
            k = counts[name]
            return splits(k, student) and getattr(leaf, "ndim", 0) >= 1 and leaf.shape[0] == k
    return False


TABLE_ROWS = P(AXES, None)  # the embedding table's rows over every device of the mesh


def table_rows(total_rows: int, mesh: Mesh) -> int:
    """The table's row count split over ``mesh``: ``total_rows`` rounded up to a multiple of its size."""
    return -(-total_rows // mesh.size) * mesh.size


def row_split_lookup(mesh: Mesh):
    """``lookup(table, ids) -> table[ids]`` ([B, C, d]) for a table split by rows (TABLE_ROWS) and
    table-row ids [B, C] split by batch rows over "data": the model-parallel embedding lookup.

    Device n = (data i, student j), n = i·S + j, holds table rows [n·R, (n+1)·R). It gathers the
    global batch's ids over "data", looks up the ones in its range (zeros elsewhere), and a
    reduce-scatter over "data" plus a sum over "student" hands each device its batch rows' sums,
    in which exactly one device contributed each row. Per step that moves B·C ids and B·C·d values,
    never the table; autodiff turns it into the matching all-gather and a local scatter-add into
    each device's rows. (Left to jit's partitioner, the same ``jnp.take`` all-gathers the whole table
    and all-reduces its whole gradient.)
    """
    s = mesh.shape["student"]

    def local(table, ids):
        n_rows = table.shape[0]
        shard = jax.lax.axis_index("data") * s + jax.lax.axis_index("student")
        local_ids = jax.lax.all_gather(ids, "data", axis=0, tiled=True) - shard * n_rows
        hit = (local_ids >= 0) & (local_ids < n_rows)
        part = jnp.take(table, jnp.where(hit, local_ids, 0), axis=0) * hit[..., None].astype(table.dtype)
        out = jax.lax.psum_scatter(part, "data", scatter_dimension=0, tiled=True)
        return jax.lax.psum(out, "student")  # over a 1-device student axis: a copy (vma typing needs it)

    return jax.shard_map(local, mesh=mesh, in_specs=(TABLE_ROWS, P("data")), out_specs=P("data"))


def table_lookup(mesh: Mesh | None, mesh_config):
    """``row_split_lookup(mesh)`` when ``mesh_config.embedding`` splits the table by rows on a mesh, else
    None (the model's own gather of a replicated or single-device table)."""
    if mesh is None or mesh_config.get("embedding", "replicated") != "rows":
        return None
    return row_split_lookup(mesh)


def state_shardings(mesh: Mesh, state, groups, *, split_table: bool = False) -> object:
    """NamedShardings for every leaf of a TrainState: student-group leaves P("student"); with
    ``split_table`` the embedding table and every leaf of its shape (its Adam moments) TABLE_ROWS;
    the rest P()."""
    counts = {f"group{i}_{g.kind}": g.count for i, g in enumerate(groups)}
    s = mesh.shape["student"]
    table_shape = state.params["embedding"]["table"].shape
    if split_table and table_shape[0] % mesh.size:
        raise ValueError(f"config model.embedding_rows: a table of {table_shape[0]} rows does not split over "
                         f"{mesh.size} devices (mesh.embedding='rows'); use 0 or a multiple of {mesh.size}")

    def spec(path, leaf):
        if _is_student_leaf(path, leaf, counts, s):
            return NamedSharding(mesh, P("student"))
        if split_table and getattr(leaf, "shape", None) == table_shape:
            return NamedSharding(mesh, TABLE_ROWS)
        return NamedSharding(mesh, P())

    return jax.tree_util.tree_map_with_path(spec, state)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Every batch array ([B, C] ids, [B] labels and mask) split by rows over "data"."""
    return NamedSharding(mesh, P("data"))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def to_mesh(tree, shardings):
    """Host (numpy) or single-device arrays → global arrays with ``shardings`` (one, or a matching tree).

    One process: ``jax.device_put``. Several: every process holds the same full values and each
    places only the slices its own devices hold (``jax.make_array_from_callback``).
    """
    if jax.process_count() == 1:
        return jax.device_put(tree, shardings)

    def put(x, sh):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda index: x[index])

    if isinstance(shardings, NamedSharding):
        return jax.tree.map(lambda x: put(x, shardings), tree)
    return jax.tree.map(put, tree, shardings)


def to_host(tree):
    """Device arrays → numpy; an array spread over several processes is gathered whole on every one."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def describe(mesh: Mesh | None, groups, split_table: bool = False) -> str:
    """One log line: the mesh, which groups split over its student axis, where the table lives."""
    if mesh is None:
        return f"1 device ({jax.devices()[0].device_kind})"
    hosts = f", {jax.process_count()} processes" if jax.process_count() > 1 else ""
    s = mesh.shape["student"]
    split = [f"{g.name} {'split' if splits(g.count, s) else 'replicated'}" for g in groups] if s > 1 else []
    return (f"{mesh.size} devices ({mesh.devices.flat[0].device_kind}{hosts}): data {mesh.shape['data']} × student {s}"
            + (f"; {', '.join(split)}" if split else "")
            + (f"; embedding table split by rows over {mesh.size}" if split_table else ""))
