r"""The configuration axis: which inputs carry it, and how a chunk of it is laid out.

A sweep's K configurations share one leading axis over every batched input (the
schedules always; the initial parameters and the problem where they are batched).
Below both wings (`_sweep/` and `_kernels/`), this module holds what either does with
that axis:

- `Batch`: which inputs carry the axis, and its length;
- `pad` and `rows`: a chunk's rows, padded to a fixed size (shape bucketing);
- `devices_mesh`, `shard`, `shard_over`, `on_one_device`, `gather`: the axis across
  JAX's devices (and hosts) and back;
- `ceil_power_of_two` and `floor_power_of_two`, the sizes every padding rounds to.
"""

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._programs import stored_program


@dataclasses.dataclass(frozen=True)
class Batch:
    """Which inputs carry the configuration axis, and how long it is."""

    size: int
    w0: bool
    problem: bool

    def axis(self, batched: bool):
        """`vmap`'s `in_axes` for an input: its arrays' leading axis, or None."""
        return eqx.if_array(0) if batched else None

    def take(self, tree, batched: bool, index):
        """Rows `index` of the configuration axis (the whole tree when unbatched)."""
        if not batched:
            return tree
        return jax.tree_util.tree_map(
            lambda x: x[index] if eqx.is_array(x) else x, tree
        )

    def resized(self, size: int) -> "Batch":
        """The same inputs batched, over `size` configurations."""
        return dataclasses.replace(self, size=size)


def one_configuration(tree, batched: bool):
    """One configuration of `tree` as shapes (`jax.ShapeDtypeStruct`), for tracing:
    the leading axis of a batched tree's arrays dropped, nothing computed."""

    def shape(x):
        if not eqx.is_array(x):
            return x
        return jax.ShapeDtypeStruct(x.shape[1:] if batched else x.shape, x.dtype)

    return jax.tree_util.tree_map(shape, tree)


def shapes_of(fn, *args):
    """`jax.eval_shape(fn, *args)` for arguments that hold arrays, shapes
    (`jax.ShapeDtypeStruct`) and other objects (kept as they are)."""
    is_leaf = lambda x: eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)
    dynamic, static = eqx.partition(args, is_leaf, is_leaf=is_leaf)
    return jax.eval_shape(lambda d: fn(*eqx.combine(d, static)), dynamic)


def ceil_power_of_two(count: int) -> int:
    """The smallest power of two >= `count` (>= 1)."""
    return 1 << (max(count, 1) - 1).bit_length()


def floor_power_of_two(count: int) -> int:
    """The largest power of two <= `count` (>= 1)."""
    return 1 << (max(count, 1).bit_length() - 1)


def pad(tree, batched: bool, size: int):
    """Repeat the last configuration until the leading axis has length `size`."""
    if not batched:
        return tree

    def pad_leaf(x):
        if not eqx.is_array(x) or x.shape[0] == size:
            return x
        extra = jnp.repeat(x[-1:], size - x.shape[0], axis=0)
        return jnp.concatenate([x, extra], axis=0)

    return jax.tree_util.tree_map(pad_leaf, tree)


@stored_program
def rows(tree, index):
    """Rows `index` of every array of `tree` (one program for the whole tree: op by
    op, each leaf's indexing would compile several small programs per shape)."""
    return jax.tree_util.tree_map(lambda x: x[index] if eqx.is_array(x) else x, tree)


def stack(trees):
    """Pytrees of the same structure stacked along a new leading axis."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def devices_mesh() -> Mesh:
    """All devices (of every process), along the configuration axis."""
    return Mesh(np.array(jax.devices()), ("config",))


def first_device_mesh() -> Mesh:
    """This process's first device alone."""
    return Mesh(np.array(jax.local_devices()[:1]), ("config",))


def shard(tree, batched: bool, mesh: Mesh):
    """Put the configuration axis of batched leaves across the mesh."""
    if not batched:
        return tree
    sharding = NamedSharding(mesh, PartitionSpec("config"))
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, sharding) if eqx.is_array(x) else x, tree
    )


def shard_map(f, mesh: Mesh, in_specs, out_specs):
    """`jax.shard_map` (JAX >= 0.7), or its experimental form on older JAX; no
    replication checks (diffrax's loops and a kernel launch have no rule for them)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(
            f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False
        )
    from jax.experimental.shard_map import shard_map as experimental

    return experimental(
        f, mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False
    )


def shard_over(mesh: Mesh, solve, batch: Batch, problem, schedules, w0, *shared):
    """`solve(problem, schedules, w0, *shared, batch)` with each device solving its
    shard of the configurations in a program of its own (`shard_map`).

    The schedules are always batched; the problem and `w0` where `batch` says so; the
    `shared` arguments are replicated. `solve` receives the local `Batch` (its size
    per device). Every output leaf has the configuration axis first.
    """
    dynamic, static = eqx.partition((problem, schedules, w0, shared), eqx.is_array)
    across, whole = PartitionSpec("config"), PartitionSpec()

    def specs(tree, batched):
        return jax.tree_util.tree_map(lambda _: across if batched else whole, tree)

    in_specs = (
        specs(dynamic[0], batch.problem),
        specs(dynamic[1], True),
        specs(dynamic[2], batch.w0),
        specs(dynamic[3], False),
    )
    local_batch = batch.resized(batch.size // mesh.size)

    def local(dynamic):
        problem, schedules, w0, shared = eqx.combine(dynamic, static)
        return solve(problem, schedules, w0, *shared, local_batch)

    return shard_map(local, mesh, (in_specs,), across)(dynamic)


def gather(x, n: int | None = None) -> np.ndarray:
    """The first `n` rows (all with None) of `x`, from every process, as NumPy."""
    if jax.process_count() > 1 and not getattr(x, "is_fully_addressable", True):
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(x)[:n]


def on_one_device(tree):
    """The arrays of `tree` gathered onto this process's first device."""
    device = jax.local_devices()[0]
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(gather(x), device) if eqx.is_array(x) else x,
        tree,
    )
