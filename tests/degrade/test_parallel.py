"""The threaded CPU paths of USM and filter2d: exact mask cut, same numbers for any thread count, fork safety."""

from __future__ import annotations

import multiprocessing
import threading

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from degrade.filter import filter2d
from degrade.kernels import mixed_kernels
from degrade.parallel import run_parallel
from degrade.sharpen import gaussian_taps, mask_threshold, usm_sharpen


@pytest.fixture
def threads():
    """Set torch's thread count inside a test and restore it afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _neighbourhood(x: np.floating, n: int = 3) -> list[np.floating]:
    values, up, down = [x], x, x
    for _ in range(n):
        up, down = np.nextafter(up, type(x)(np.inf)), np.nextafter(down, type(x)(-np.inf))
        values += [up, down]
    return values


# float32(t / 255) is not the cut for about 1 threshold in 250, e.g. the last three listed here.
@given(threshold=st.floats(-1e3, 1e3) | st.sampled_from([10.0, 0.0, 255.0, 1.3596429821491074, 7.972768638431921,
                                                         11.226846342317115]),
       values=st.lists(st.floats(0, 10, width=32), max_size=20), dtype=st.sampled_from([np.float32, np.float64]))
def test_property_mask_cut_equals_scaled_comparison(threshold, values, dtype):
    cut = mask_threshold(threshold, dtype)
    assert cut.dtype == dtype
    # The values where the two comparisons could disagree are those next to the cut; add them.
    r = np.array(values + _neighbourhood(cut) + _neighbourhood(dtype(threshold) / dtype(255)), dtype=dtype)
    r = np.abs(r[np.isfinite(r)])
    np.testing.assert_array_equal(r > cut, r * dtype(255) > dtype(threshold))


def test_mask_cut_of_infinite_threshold_selects_nothing():
    r = np.array([0, 1, np.finfo(np.float32).max], dtype=np.float32)
    assert not (r > mask_threshold(np.inf, np.float32)).any()
    assert (r > mask_threshold(-np.inf, np.float32)).all()


def _usm_numpy(image: np.ndarray, weight: float = 0.5, threshold: float = 10) -> np.ndarray:
    """The tensor formula of usm_sharpen written plainly with whole-plane numpy temporaries; the blur is the
    vertical 1-D pass, then the horizontal one as a vertical pass over the transposed plane."""
    taps = gaussian_taps(51, dtype=torch.float32).numpy()

    def blur(plane: np.ndarray) -> np.ndarray:
        one = np.ones(1, np.float32)
        vertical = cv2.sepFilter2D(plane, -1, one, taps, borderType=cv2.BORDER_REFLECT_101)
        return cv2.sepFilter2D(np.ascontiguousarray(vertical.T), -1, one, taps, borderType=cv2.BORDER_REFLECT_101).T

    residual = image - blur(image)
    mask = (np.abs(residual) * 255 > threshold).astype(np.float32)
    soft = blur(mask)
    sharp = np.clip(image + weight * residual, 0, 1)
    return soft * sharp + (1 - soft) * image


def test_float32_usm_is_the_plain_formula_bit_for_bit(sample_batch, threads):
    threads(2)
    images = sample_batch[:2]
    out = usm_sharpen(images).numpy()
    for b in range(2):
        for c in range(3):
            np.testing.assert_array_equal(out[b, c], _usm_numpy(images[b, c].numpy()))


def _kernels(batch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    family = torch.randint(0, 7, (batch,), generator=g)
    size = 2 * torch.randint(3, 11, (batch,), generator=g) + 1
    sigma = 0.2 + 2.8 * torch.rand(2, batch, generator=g, dtype=torch.float64)
    return mixed_kernels(family, size, sigma[0], sigma[1], torch.rand(batch, generator=g) * 3.1, 0.5 + torch.rand(
        batch, generator=g) * 3, 1 + torch.rand(batch, generator=g) * 2, 21, dtype=torch.float32)


def test_results_do_not_depend_on_the_thread_count(sample_batch, threads):
    images = sample_batch.repeat(2, 1, 1, 1)[:6, :, :80, :90].contiguous()
    kernels = _kernels(6)
    results = []
    for n in (1, 2, 3):
        threads(n)
        results.append((usm_sharpen(images), filter2d(images, kernels), filter2d(images, kernels[:1])))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_run_parallel_covers_every_item_on_pool_threads_and_raises_errors(threads):
    threads(2)
    seen: dict[int, str] = {}
    run_parallel(lambda i: seen.__setitem__(i, threading.current_thread().name), 7)
    assert sorted(seen) == list(range(7)) and all(name.startswith("degrade") for name in seen.values())
    threads(1)
    run_parallel(lambda i: seen.__setitem__(i, threading.current_thread().name), [2, 5])
    assert seen[2] == seen[5] == threading.current_thread().name  # one thread: inline, no pool

    def fail(i: int) -> None:
        if i == 3:
            raise ValueError("item 3")

    threads(2)
    with pytest.raises(ValueError, match="item 3"):
        run_parallel(fail, 6)


def _usm_in_child(queue) -> None:
    torch.set_num_threads(2)
    queue.put(usm_sharpen(torch.full((2, 3, 40, 40), 0.25)).sum().item())


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs the fork start method")
def test_a_forked_child_gets_working_threads(threads):
    threads(2)
    usm_sharpen(torch.full((2, 3, 40, 40), 0.25))  # the parent's pool exists before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_usm_in_child, args=(queue,))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    assert queue.get(timeout=5) == pytest.approx(2 * 3 * 40 * 40 * 0.25)
