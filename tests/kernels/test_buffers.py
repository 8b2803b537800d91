"""The kernels' output pool reuses a block only after every tensor on it is gone, and keeps to its cap."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from normlab.kernels.buffers import HUGE_PAGE, OutputPool

MIB = 1 << 20


def test_block_is_reused_after_the_tensor_is_freed():
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    a = pool.empty((2 * MIB // 4,), torch.float32)
    address = a.data_ptr()
    del a
    b = pool.empty((2 * MIB // 4,), torch.float32)
    assert b.data_ptr() == address and pool.hits == 1


def test_block_is_not_reused_while_a_view_is_alive():
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    a = pool.empty((512, 1024), torch.float32)
    a.fill_(3.0)
    view = a[7]  # keeps the storage alive
    del a
    gc.collect()
    b = pool.empty((512, 1024), torch.float32)
    b.fill_(-1.0)
    assert (view == 3.0).all(), "a block was handed out while a view still read it"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_output_has_the_requested_shape_dtype_and_is_writable(dtype):
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    t = pool.empty((3, 1024, 257), dtype)
    t.fill_(1.5)
    assert t.shape == (3, 1024, 257) and t.dtype == dtype and t.is_contiguous()
    assert (t.float() == 1.5).all()


def test_idle_blocks_respect_the_cap_and_small_outputs_bypass_the_pool():
    pool = OutputPool(max_bytes=3 * MIB, min_pooled_bytes=MIB)
    blocks = [pool.empty((MIB // 4 * 2,), torch.float32) for _ in range(3)]  # 2 MiB each
    del blocks
    assert pool.idle_bytes() <= 3 * MIB
    small = pool.empty((MIB // 8,), torch.float32)  # 512 KiB: under the pool's minimum
    assert pool.misses == 3 and small.numel() == MIB // 8


def test_held_blocks_never_exceed_the_cap_and_idle_ones_make_room():
    pool = OutputPool(max_bytes=5 * MIB, min_pooled_bytes=MIB)
    held = [pool.empty((MIB // 4 * 2,), torch.float32) for _ in range(3)]  # 2 MiB each: the third is not pooled
    assert pool.held_bytes() == 4 * MIB and all(t.shape == (MIB // 2,) for t in held)
    del held
    other = pool.empty((MIB // 4 * 3,), torch.float32)  # 3 MiB, another shape: idle blocks are let go for it
    assert pool.held_bytes() <= 5 * MIB and other.numel() == 3 * MIB // 4


def test_a_zero_cap_turns_reuse_off():
    pool = OutputPool(max_bytes=0, min_pooled_bytes=MIB)
    a = pool.empty((MIB,), torch.float32)
    del a
    pool.empty((MIB,), torch.float32)
    assert pool.hits == 0 and pool.idle_bytes() == 0


LAYOUTS = {
    "nchw": ((4, 64, 32, 32), torch.contiguous_format),
    "nhwc": ((4, 64, 32, 32), torch.channels_last),
    "ndhwc": ((2, 16, 8, 16, 32), torch.channels_last_3d),
    "small-nhwc": ((2, 3, 4, 5), torch.channels_last),  # under the pool's minimum: torch.empty_strided
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("layout", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_empty_like_dense_keeps_the_layout(layout, dtype):
    shape, memory_format = layout
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    like = torch.empty(shape, dtype=dtype).contiguous(memory_format=memory_format)
    out = pool.empty_like_dense(like)
    assert out.shape == like.shape and out.dtype == dtype and out.stride() == like.stride()
    assert out.is_contiguous(memory_format=memory_format)


def test_empty_like_dense_block_is_reused_only_when_tensor_and_views_are_gone():
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    like = torch.empty(8, 64, 32, 32).contiguous(memory_format=torch.channels_last)
    out = pool.empty_like_dense(like)
    first = out.data_ptr()
    out.fill_(3.0)
    view = out[1]
    del out
    gc.collect()
    again = pool.empty_like_dense(like)  # the first block is still read by ``view``: a new block
    assert again.data_ptr() != first and pool.hits == 0
    again.fill_(-1.0)
    assert (view == 3.0).all(), "a block was handed out while a view still read it"
    del view
    gc.collect()
    reused = pool.empty_like_dense(like)
    assert reused.data_ptr() == first and pool.hits == 1


def test_a_numpy_view_of_an_output_keeps_its_block_busy():
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    like = torch.empty(8, 64, 32, 32)
    out = pool.empty_like_dense(like)
    view = out.numpy().reshape(-1)
    view[:4] = 7.0
    del out
    gc.collect()
    again = pool.empty_like_dense(like)
    again.fill_(-1.0)
    assert (view[:4] == 7.0).all(), "a block was handed out while a NumPy view still read it"
    del again, view
    gc.collect()
    assert pool.empty_like_dense(like) is not None and pool.hits == 1


def _vm_flags(address: int) -> list[str]:
    """The ``VmFlags`` of the mapping of this process that holds ``address`` (Linux ``/proc/self/smaps``)."""
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                start, end = (int(v, 16) for v in head.split("-"))
                inside = start <= address < end
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    raise AssertionError(f"no mapping holds {address:#x}")


THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@pytest.mark.skipif(not THP.exists(), reason="huge-page blocks need Linux with transparent huge pages")
@pytest.mark.parametrize("mib, huge", [(2, True), (8, True), (1, False)], ids=["2MiB", "8MiB", "1MiB"])
def test_large_blocks_are_aligned_mappings_advised_for_huge_pages(mib, huge):
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    t = pool.empty((mib * MIB // 4,), torch.float32)
    t.fill_(1.0)
    flags = _vm_flags(t.data_ptr())
    assert ("hg" in flags) == huge, f"VmFlags {flags}: MADV_HUGEPAGE {'missing' if huge else 'unexpected'}"
    if huge:
        assert t.data_ptr() % HUGE_PAGE == 0 and _vm_flags(t.data_ptr() + t.nbytes - 1) == flags


@pytest.mark.skipif(not THP.exists(), reason="huge-page blocks need Linux with transparent huge pages")
def test_a_huge_page_block_is_unmapped_once_the_pool_and_its_tensors_let_it_go():
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    t = pool.empty((2 * MIB // 4,), torch.float32)
    (array,) = next(iter(pool._arrays.values()))
    mapping = weakref.ref(array.base.base.obj)  # block → its uint8 buffer → memoryview → the mmap
    del array
    view = t[5:]
    del t
    pool.clear()  # the view still reads the block: it stays mapped
    gc.collect()
    assert mapping() is not None and not mapping().closed
    del view
    gc.collect()
    assert mapping() is not None, "the block was unmapped while the pool still held it"
    pool.clear()
    gc.collect()
    assert mapping() is None, "the pool let the block go, but its mapping is still alive"


# (shape, pooled): glibc may trim its heap when a chunk of 64 KiB or more is freed, so from there up a statistics
# array comes from the pool and is never freed by the call that used it
STATS_SIZES = {"64KiB": ((2, 8192), True), "256KiB": ((2, 32, 1024), True), "32KiB": ((2, 4096), False)}


@pytest.mark.parametrize("shape, pooled", STATS_SIZES.values(), ids=STATS_SIZES.keys())
def test_statistics_arrays_from_64_kib_are_pooled_and_reused(shape, pooled):
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    a = pool.float32_array(shape)
    assert a.shape == shape and a.dtype == np.float32 and a.flags.c_contiguous
    address = a.ctypes.data
    del a
    b = pool.float32_array(shape)
    assert pool.held_bytes() == (b.nbytes if pooled else 0) and pool.hits == (1 if pooled else 0)
    if pooled:  # (a small one may or may not land on the same bytes again: that is glibc's choice)
        assert b.ctypes.data == address


def test_a_statistics_array_is_not_reused_while_it_or_a_view_of_it_is_alive():
    pool = OutputPool(max_bytes=64 * MIB, min_pooled_bytes=MIB)
    kept = pool.float32_array((2, 8192))
    kept[:] = 3.0
    row = pool.float32_array((2, 8192))[0]  # only a view of the second block is kept
    row[:] = 5.0
    fresh = pool.float32_array((2, 8192))
    fresh[:] = -1.0
    assert (kept == 3.0).all() and (row == 5.0).all() and pool.misses == 3
    del kept
    pool.float32_array((2, 8192))
    assert pool.hits == 1  # the first block is free again once its array is gone


def test_a_zero_cap_gives_statistics_arrays_of_their_own():
    pool = OutputPool(max_bytes=0, min_pooled_bytes=MIB)
    a = pool.float32_array((2, 65536))
    assert a.shape == (2, 65536) and pool.held_bytes() == 0 and pool.misses == 0
