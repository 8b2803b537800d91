r"""Atomic counters for the Numba kernels whose parallel region has two phases (BatchNorm over channels-last rows).

A BatchNorm pass needs every row's statistics before it can write any output, so it used to run as two parallel
regions with the merge between them. Each region start wakes the thread team, which costs from a few µs to
about 100 µs here (``benchmarks/parallel_region.py``). One region does both phases when the work is handed out
as numbered tasks that threads claim from a shared counter:

- each thread :func:`claim`\ s the next task of phase one until none is left, runs it and counts it done;
- a thread with nothing left to claim waits (:func:`wait_for`) until every task of phase one is done; every task
  it waits for is held by a thread that is running it, so the wait always ends — even when Numba runs the
  ``prange`` iterations one after another on fewer threads than asked;
- then it claims the tasks of phase two.

A late thread takes fewer tasks instead of delaying the others, and the result does not depend on which thread
ran a task: phase one writes per-task partials that every thread merges in task order.

Counters are ``int64`` arrays, zeroed before the region; ``claim`` is a sequentially consistent fetch-and-add,
``wait_for`` an acquire load, so a task's writes are seen by every thread that saw it counted.
"""

from __future__ import annotations

from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic


def _counter_pointer(context, builder, array_type, array, index):
    array = context.make_array(array_type)(context, builder, array)
    return cgutils.get_item_pointer(context, builder, array_type, array, [index], wraparound=False)


@intrinsic
def claim(typingctx, counters, index):
    """``counters[index] += 1`` atomically; returns the value before (the claimed task's number)."""
    signature = types.int64(counters, index)

    def codegen(context, builder, sig, args):
        pointer = _counter_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.atomic_rmw("add", pointer, context.get_constant(types.int64, 1), "seq_cst")

    return signature, codegen


@intrinsic
def _load_acquire(typingctx, counters, index):
    signature = types.int64(counters, index)

    def codegen(context, builder, sig, args):
        pointer = _counter_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load_atomic(pointer, "acquire", 8)

    return signature, codegen


@njit(cache=True, inline="always")
def wait_for(counters, index, count):
    """Spin until ``counters[index]`` reaches ``count`` (only ever called for work that running threads hold)."""
    while _load_acquire(counters, index) < count:
        pass
