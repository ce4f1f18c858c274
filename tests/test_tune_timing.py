"""spc.tuning.timing: warm-up, rotation through argument copies, median of repeats."""
import numpy as np
import pytest

from spc.tuning.timing import rotated_copies, time_call


def test_warmup_repeats_and_rotation():
    seen = []
    sets = [(np.zeros(1),), (np.ones(1),), (np.full(1, 2.0),)]
    t = time_call(lambda a: seen.append(float(a[0])), sets, repeats=4, warmup=2)
    assert seen == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]           # 2 warm-up calls, then 4 timed
    assert len(t.samples) == 4 and t.warmup == 2
    assert t.best <= t.median


def test_median_of_samples():
    import time
    delays = iter([0.0, 0.03, 0.0, 0.0])                  # one slow outlier after warm-up

    def fn():
        time.sleep(next(delays))
    t = time_call(fn, [()], repeats=3, warmup=1)
    assert t.median < 0.02 < max(t.samples)


def test_copies_span_the_requested_bytes_in_new_memory():
    a = np.ones((256, 256), np.float32)                   # 256 KiB
    sets = rotated_copies((a,), min_bytes=1 << 20, most=8)
    assert len(sets) == 4
    assert sets[0][0] is a and all(s[0] is not a and np.array_equal(s[0], a) for s in sets[1:])
    assert len(rotated_copies((a,), min_bytes=1 << 30, most=8)) == 8
    assert len(rotated_copies((), min_bytes=1 << 20)) == 1


@pytest.mark.parametrize("repeats, sets", [(0, [()]), (1, [])])
def test_bad_requests(repeats, sets):
    with pytest.raises(ValueError):
        time_call(lambda: None, sets, repeats=repeats)
