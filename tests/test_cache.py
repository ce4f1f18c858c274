"""The compiled-kernel cache: in memory, on disk under SPC_CACHE_DIR, shared between
processes; and SPC_DUMP, which writes every compilation stage.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import spc
from spc.codegen.cpu import CPUTarget
from spc.runtime import cache

REPO = Path(__file__).resolve().parent.parent
EXPR = "y[i] = A[i,j] * x[j]"


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """An empty disk cache and an empty memory cache for this test only."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SPC_CACHE_DIR", str(d))
    monkeypatch.delenv("SPC_NO_DISK_CACHE", raising=False)
    monkeypatch.delenv("SPC_DUMP", raising=False)
    monkeypatch.setattr(cache, "_memory", {})
    monkeypatch.setattr(cache, "_said", set())
    return d


@pytest.fixture
def builds(monkeypatch) -> list[str]:
    """Names of the kernels the CPU target builds during the test."""
    built: list[str] = []
    real_build = CPUTarget.build

    def counting_build(self, source, kernel):
        built.append(kernel.name)
        return real_build(self, source, kernel)

    monkeypatch.setattr(CPUTarget, "build", counting_build)
    return built


def entries(d: Path) -> dict[Path, int]:
    """Cache entries (path -> mtime in ns)."""
    if not d.exists():
        return {}
    return {p: p.stat().st_mtime_ns for p in d.rglob("*.bin")}


def leftovers(d: Path) -> list[Path]:
    """Anything in the cache that is not a finished entry (e.g. temporary files)."""
    if not d.exists():
        return []
    return [p for p in d.rglob("*") if p.is_file() and p.suffix != ".bin"]


def run_spmv(k=None):
    A = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 3], [4, 5, 0]], dtype=np.float32))
    x = np.array([1, 10, 100], dtype=np.float32)
    k = k or spc.compile("spmv", fmt="csr")
    np.testing.assert_allclose(k(A, x), A @ x)


# ---------------------------------------------------------------------- in memory


def test_second_compile_reuses_the_binary_in_memory(cache_dir, builds):
    run_spmv()
    assert builds == ["spmv_csr_dense_dense"]
    for p in entries(cache_dir):           # the memory cache alone must serve the next compile
        p.unlink()
    run_spmv()
    run_spmv()
    assert builds == ["spmv_csr_dense_dense"], "a second spc.compile rebuilt the kernel"
    assert entries(cache_dir) == {}, "a memory hit should not touch the disk"


def test_explicit_build_is_cached_too(cache_dir, builds):
    spc.compile("spmm", fmt="csr").build()
    spc.compile("spmm", fmt="csr").build()
    assert builds == ["spmm_csr_dense_dense"]


def test_different_kernels_get_different_entries(cache_dir, builds):
    run_spmv()
    run_spmv(spc.compile("spmv", fmt="csr", dtype="float64"))
    run_spmv(spc.compile("spmv", fmt="coo"))
    assert len(builds) == 3
    assert len(entries(cache_dir)) == 3


def test_assembling_kernel_caches_both_phases(cache_dir, builds):
    k = spc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"})
    A = sp.random(6, 5, density=0.4, format="csr", dtype=np.float32, random_state=1)
    np.testing.assert_allclose(k(A=A, B=A).toarray(), (2 * A).toarray())
    assert len(builds) == 2 and len(entries(cache_dir)) == 2
    k2 = spc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"})
    k2(A=A, B=A)
    assert len(builds) == 2


# ---------------------------------------------------------------------- on disk


def test_disk_entry_is_written_under_spc_cache_dir(cache_dir, builds):
    run_spmv()
    found = entries(cache_dir)
    assert len(found) == 1
    (path,) = found
    assert path.parent.parent == cache_dir
    assert path.name.startswith(path.parent.name), "entries are sharded by key prefix"
    assert path.stat().st_size > 0
    assert leftovers(cache_dir) == []


def test_disk_entry_is_used_after_the_memory_cache_is_cleared(cache_dir, builds):
    run_spmv()
    before = entries(cache_dir)
    cache.clear_memory()
    run_spmv()
    assert len(builds) == 1, "the disk entry should have been used instead of a rebuild"
    assert entries(cache_dir) == before, "a disk hit should not rewrite the entry"


def test_no_disk_cache_writes_nothing(cache_dir, builds, monkeypatch):
    monkeypatch.setenv("SPC_NO_DISK_CACHE", "1")
    run_spmv()
    assert builds == ["spmv_csr_dense_dense"]
    assert not cache_dir.exists() or entries(cache_dir) == {}


def test_unwritable_cache_dir_costs_speed_not_correctness(tmp_path, monkeypatch, builds):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SPC_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(cache, "_memory", {})
    monkeypatch.setattr(cache, "_said", set())
    with pytest.warns(spc.CacheWarning, match="memory only"):
        run_spmv()
    assert builds == ["spmv_csr_dense_dense"]


class _FailingReplace:
    """``os`` for the cache module, except that renaming the finished file fails
    (as on a full or read-only file system)."""

    def __getattr__(self, name):
        return getattr(os, name)

    @staticmethod
    def replace(src, dst):
        raise OSError(28, "No space left on device")


def test_failed_write_leaves_no_temporary_file(cache_dir, builds, monkeypatch):
    monkeypatch.setattr(cache, "os", _FailingReplace())
    with pytest.warns(spc.CacheWarning, match="memory only"):
        run_spmv()
    assert builds == ["spmv_csr_dense_dense"]
    assert entries(cache_dir) == {}
    assert leftovers(cache_dir) == [], "the temporary file of a failed write was left behind"


# ---------------------------------------------------------------------- across processes

CHILD = textwrap.dedent("""
    import os, sys, time
    import numpy as np, scipy.sparse as sp
    import spc
    from spc.codegen.cpu import CPUTarget

    if os.environ.get("CHILD_FORBID_BUILD"):
        def forbidden(self, source, kernel):
            raise SystemExit("rebuilt " + kernel.name + " although the disk cache had it")
        CPUTarget.build = forbidden
    go = os.environ.get("CHILD_GO_FILE")
    if go:
        deadline = time.time() + 60
        while not os.path.exists(go) and time.time() < deadline:
            time.sleep(0.005)
    k = spc.compile(os.environ["CHILD_EXPR"], formats={"A": "csr"})
    rng = np.random.default_rng(0)
    A = sp.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=3)
    x = rng.random(40).astype(np.float32)
    y = k(A=A, x=x)
    np.testing.assert_allclose(y, A @ x, rtol=1e-5)
    print("child ok")
""")


def child_env(cache_dir: Path, **extra) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO), SPC_CACHE_DIR=str(cache_dir), CHILD_EXPR=EXPR)
    env.pop("SPC_NO_DISK_CACHE", None)
    env.pop("SPC_DUMP", None)
    env.update(extra)
    return env


def run_child(cache_dir: Path, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD], env=child_env(cache_dir, **extra),
                          capture_output=True, text=True, timeout=120)


def assert_child_ok(proc) -> None:
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    assert "child ok" in proc.stdout


def test_second_process_reuses_the_disk_entry(cache_dir):
    assert_child_ok(run_child(cache_dir))
    first = entries(cache_dir)
    assert len(first) == 1
    time.sleep(0.01)                       # make a rewrite visible in the mtime
    assert_child_ok(run_child(cache_dir, CHILD_FORBID_BUILD="1"))
    assert entries(cache_dir) == first, "the second process wrote a new entry"
    assert leftovers(cache_dir) == []


def forbidden_build(self, source, kernel):
    raise AssertionError(f"rebuilt {kernel.name} although the disk cache had it")


def test_concurrent_processes_share_one_valid_entry(cache_dir, tmp_path, monkeypatch):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD],
                              env=child_env(cache_dir, CHILD_GO_FILE=str(go)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    time.sleep(0.5)                        # let all four import spc and wait at the barrier
    go.write_text("go")
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    for proc in results:
        assert_child_ok(proc)
    assert len(entries(cache_dir)) == 1, "the cache should hold exactly one entry"
    assert leftovers(cache_dir) == [], "temporary files were left behind"
    # the entry is valid: this process loads and runs it without building
    monkeypatch.setattr(CPUTarget, "build", forbidden_build)
    k = spc.compile(EXPR, formats={"A": "csr"})
    A = sp.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=3)
    x = np.random.default_rng(0).random(40).astype(np.float32)
    np.testing.assert_allclose(k(A=A, x=x), A @ x, rtol=1e-5)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_disk_entry_is_rebuilt_not_loaded(cache_dir, damage):
    """A damaged entry (disk full, killed writer, stray file) must not crash the process."""
    spc.compile(EXPR, formats={"A": "csr"}).build()      # the entry the child will look up
    (path,) = entries(cache_dir)
    data = path.read_bytes()
    damaged = {"truncated": data[:len(data) // 3], "empty": b""}[damage]
    path.write_bytes(damaged)
    proc = run_child(cache_dir)
    assert proc.returncode >= 0, f"the child crashed with signal {-proc.returncode}"
    assert_child_ok(proc)


# ---------------------------------------------------------------------- SPC_DUMP


def stage_files(k, kernel_name: str) -> list[str]:
    """The IR dump files of one kernel, in pipeline order: lowering, then each pass."""
    passes = [p.__name__ for p in k.target.pipeline(k.schedule)]
    assert "simplify" in passes and "map_parallel" in passes
    return [f"{kernel_name}.00_lower.ir"] + [f"{kernel_name}.{n:02d}_{p}.ir"
                                              for n, p in enumerate(passes, start=1)]


def dump_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def test_spc_dump_writes_every_stage(cache_dir, tmp_path, monkeypatch):
    root = tmp_path / "dump"
    monkeypatch.setenv("SPC_DUMP", str(root))
    k = spc.compile("spmv", fmt="csr")
    (d,) = dump_dirs(root)
    assert d.name.startswith(k.name)
    name = k.name
    stages = stage_files(k, name)
    assert sorted(p.name for p in d.iterdir()) == sorted(["expression", f"{name}.source"] + stages)
    expression = (d / "expression").read_text()
    assert "y[i] = A[i,j] * x[j]" in expression and "csr" in expression
    lowered = (d / stages[0]).read_text()
    assert lowered.startswith(f"kernel {name}(")
    assert "@parallel" not in lowered
    for stage in stages:
        assert (d / stage).read_text().startswith(f"kernel {name}("), stage
    assert (d / stages[-1]).read_text() == k.ir
    assert (d / f"{name}.source").read_text() == k.source


def test_spc_dump_of_a_two_kernel_program(cache_dir, tmp_path, monkeypatch):
    root = tmp_path / "dump"
    monkeypatch.setenv("SPC_DUMP", str(root))
    k = spc.compile("C[i,j] = A[i,j] + B[i,j]", formats={"A": "csr", "B": "csr", "C": "csr"})
    (d,) = dump_dirs(root)
    files = {p.name for p in d.iterdir()}
    finals = []
    for kernel in (f"{k.name}_assemble", k.name):
        stages = stage_files(k, kernel)
        assert set(stages) <= files
        assert f"{kernel}.source" in files
        finals.append((d / stages[-1]).read_text())
    assert "\n".join(finals) == k.ir


def test_no_dump_without_spc_dump(cache_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spc.compile("spmv", fmt="csr")
    expected = [cache_dir] if cache_dir.exists() else []
    assert list(tmp_path.iterdir()) == expected


def test_spc_dump_of_the_int64_index_variant(cache_dir, tmp_path, monkeypatch):
    root = tmp_path / "dump"
    monkeypatch.setenv("SPC_DUMP", str(root))
    k = spc.compile("spmv", fmt="csr")
    A = sp.random(5, 4, density=0.5, format="csr", dtype=np.float32, random_state=2)
    A.indptr, A.indices = A.indptr.astype(np.int64), A.indices.astype(np.int64)
    x = np.ones(4, np.float32)
    np.testing.assert_allclose(k(A, x), A @ x, rtol=1e-6)
    dirs = dump_dirs(root)
    assert len(dirs) == 2, "one dump per index-width variant"
    lowered = [(d / f"{k.name}.00_lower.ir").read_text() for d in dirs]
    assert sum("A1_pos: i64*" in text for text in lowered) == 1
    assert sum("A1_pos: i32*" in text for text in lowered) == 1


# ---------------------------------------------------------------------- faults (issue 10)


def _entry_for(key: str, payload: bytes, magic: bytes = cache._MAGIC, digest_of=None) -> bytes:
    import hashlib
    digest = hashlib.sha256(digest_of if digest_of is not None else key.encode() + payload)
    return magic + digest.digest() + payload


def _only_entry(cache_dir: Path) -> Path:
    spc.compile(EXPR, formats={"A": "csr"}).build()
    (path,) = entries(cache_dir)
    return path


@pytest.mark.parametrize("damage", ["truncated", "empty", "old-format", "garbage-own-checksum",
                                    "garbage-keyed-checksum", "other-key", "elf-garbage"])
def test_unusable_entry_is_reported_and_rebuilt(cache_dir, builds, damage):
    path = _only_entry(cache_dir)
    key = path.stem
    data = path.read_bytes()
    payload = data[len(cache._MAGIC) + 32:]
    garbage = bytes(range(256)) * 8
    path.write_bytes({
        "truncated": data[:len(data) // 3],
        "empty": b"",
        "old-format": _entry_for(key, payload, magic=b"spc-cache-1\n", digest_of=payload),
        "garbage-own-checksum": _entry_for(key, garbage, digest_of=garbage),
        "garbage-keyed-checksum": _entry_for(key, garbage),
        "other-key": _entry_for("0" * 64, payload),
        "elf-garbage": None,
    }[damage] if damage != "elf-garbage" else _entry_for(key, b"\x7fELF" + garbage))
    cache.clear_memory()
    builds.clear()
    with pytest.warns(spc.CacheWarning, match="rebuilt"):
        run_spmv(spc.compile(EXPR, formats={"A": "csr"}))
    assert builds == [spc.compile(EXPR, formats={"A": "csr"}).name]
    # the entry was replaced by a good one: the next process loads it without building
    assert_child_ok(run_child(cache_dir, CHILD_FORBID_BUILD="1"))


def test_unwritable_cache_dir_is_reported_once(tmp_path, monkeypatch, builds):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("SPC_CACHE_DIR", str(blocker / "cache"))
    monkeypatch.setattr(cache, "_memory", {})
    monkeypatch.setattr(cache, "_said", set())
    import warnings
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        run_spmv()
        spc.compile("y[i] = A[i,j]*x[j]*2", formats={"A": "csr"}).build()
    said = [w for w in seen if issubclass(w.category, spc.CacheWarning)]
    assert len(said) == 1 and "memory only" in str(said[0].message)


KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    import spc
    from spc.runtime import cache
    real_replace = os.replace
    class SlowOs:
        def __getattr__(self, name):
            return getattr(os, name)
        @staticmethod
        def replace(src, dst):
            print("writing", flush=True)
            time.sleep(60)               # killed here, before the rename
            real_replace(src, dst)
    cache.os = SlowOs()
    spc.compile(os.environ["CHILD_EXPR"], formats={"A": "csr"}).build()
""")


def test_writer_killed_mid_write_leaves_no_entry_and_the_next_process_works(cache_dir):
    import signal
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WRITER], env=child_env(cache_dir),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert entries(cache_dir) == {}
    (tmp,) = leftovers(cache_dir)              # the killed writer's temporary file
    old = time.time() - 2 * cache._STALE_TMP_S
    os.utime(tmp, (old, old))
    assert_child_ok(run_child(cache_dir))      # builds, writes, and sweeps the stale file
    assert len(entries(cache_dir)) == 1
    assert leftovers(cache_dir) == []


def test_eight_processes_at_once_share_one_valid_entry(cache_dir, tmp_path):
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", CHILD],
                              env=child_env(cache_dir, CHILD_GO_FILE=str(go)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    time.sleep(1.0)
    go.write_text("go")
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert_child_ok(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    assert len(entries(cache_dir)) == 1
    assert leftovers(cache_dir) == []
    assert_child_ok(run_child(cache_dir, CHILD_FORBID_BUILD="1"))


def test_sixteen_threads_compiling_at_once(cache_dir):
    from concurrent.futures import ThreadPoolExecutor
    A = sp.random(30, 20, density=0.3, format="csr", dtype=np.float64, random_state=1)
    x = np.arange(20.0)

    def work(n):
        k = spc.compile(f"y[i] = A[i,j]*x[j]*{n % 4 + 1}", formats={"A": "csr"},
                        dtype="float64")
        return n, k(A, x)

    with ThreadPoolExecutor(16) as pool:
        for n, y in pool.map(work, range(32)):
            np.testing.assert_allclose(y, (n % 4 + 1) * (A @ x))


# ---------------------------------------------------------------------- spc.cache, logging


def test_cache_info_and_clear(cache_dir):
    k = spc.compile("spmv", fmt="csr")
    run_spmv(k)
    info = spc.cache.info()
    assert info["directory"] == str(cache_dir)
    assert info["entries"] == len(entries(cache_dir)) >= 1
    assert info["bytes"] == sum(p.stat().st_size for p in entries(cache_dir))
    assert info["memory_entries"] >= 1 and info["disk"] is True
    assert spc.cache.clear() == info["entries"]
    assert spc.cache.info()["entries"] == 0 and spc.cache.info()["memory_entries"] == 0
    run_spmv(k)                              # kernels compiled already keep working
    run_spmv(spc.compile("spmv", fmt="csr"))  # and new ones rebuild


def test_the_disk_cache_keeps_under_its_cap_dropping_the_least_recently_used(
        cache_dir, monkeypatch):
    kernels = [dict(fmt="csr"), dict(fmt="csr", parallel=False), dict(fmt="coo"),
               dict(fmt="csc")]
    written = []
    for k, kw in enumerate(kernels[:3]):
        run_spmv(spc.compile("spmv", **kw))
        (new,) = set(entries(cache_dir)) - set(written)
        written.append(new)
        # used k+1 hundred seconds ago: the first written is the least recently used
        os.utime(new, ns=(time.time_ns() - (3 - k) * 10**11, new.stat().st_mtime_ns))
    cap = sum(p.stat().st_size for p in written)           # the next entry passes it
    monkeypatch.setenv("SPC_CACHE_MAX_BYTES", str(cap))
    run_spmv(spc.compile("spmv", **kernels[3]))
    left = entries(cache_dir)
    assert written[0] not in left                          # the least recently used went
    assert len(set(left) - set(written)) == 1              # the new entry stayed
    assert sum(p.stat().st_size for p in left) <= cap


def test_a_disk_hit_counts_as_a_use_without_rewriting_the_entry(cache_dir):
    run_spmv(spc.compile("spmv", fmt="csr"))
    (entry,) = entries(cache_dir)
    os.utime(entry, ns=(time.time_ns() - 10**11, entry.stat().st_mtime_ns))
    mtime, atime = entry.stat().st_mtime_ns, entry.stat().st_atime
    cache.clear_memory()
    run_spmv(spc.compile("spmv", fmt="csr"))
    assert entry.stat().st_mtime_ns == mtime and entry.stat().st_atime > atime


def test_compiles_and_cache_hits_are_logged(cache_dir, caplog):
    import logging
    with caplog.at_level(logging.DEBUG, logger="spc"):
        run_spmv(spc.compile("spmv", fmt="csr"))
        cache.clear_memory()
        run_spmv(spc.compile("spmv", fmt="csr"))
    messages = [r.getMessage() for r in caplog.records if r.name == "spc"]
    assert any(m.startswith("built ") for m in messages)
    assert any(m.startswith("cache hit on disk") for m in messages)


def test_the_schedule_a_build_chose_is_logged(cache_dir, caplog):
    import logging
    k = spc.compile("spmm", fmt="csr", schedule=spc.Schedule(reorder_rows="length"))
    with caplog.at_level(logging.INFO, logger="spc"):
        k.build()
    (line,) = [r.getMessage() for r in caplog.records
               if r.name == "spc" and "schedule Schedule(" in r.getMessage()]
    assert line.startswith(f"{k.name} (cpu, f32, i32 indices)")
    assert str(k.schedule) in line and "reorder_rows='length'" in line


@pytest.mark.parametrize("platform, env, want", [
    ("linux", {"XDG_CACHE_HOME": "/x"}, "/x/spc"),
    ("darwin", {}, "~/Library/Caches/spc"),
    ("win32", {"LOCALAPPDATA": "C:/Users/u/AppData/Local"}, "C:/Users/u/AppData/Local/spc/Cache"),
])
def test_the_default_cache_directory_is_the_platforms(platform, env, want, monkeypatch):
    from spc import config
    monkeypatch.delenv("SPC_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(config.sys, "platform", platform)
    assert config.cache_dir() == Path(os.path.expanduser(want))


def test_a_malformed_cache_cap_is_an_spc_error(monkeypatch):
    from spc import config
    monkeypatch.setenv("SPC_CACHE_MAX_BYTES", "lots")
    with pytest.raises(spc.SpcError, match="SPC_CACHE_MAX_BYTES"):
        config.cache_max_bytes()
