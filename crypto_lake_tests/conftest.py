"""Suite-wide hygiene shared by every test package."""

import gc
import sys
from collections.abc import Iterator

import pytest

# The suite runs in two worker processes, a test module per worker at a time (pytest-xdist,
# ``--dist loadfile`` in pyproject.toml). These modules take minutes, mostly waiting on
# processes they started; they go first so the short ones fill in around them.
# (``--no-loadscope-reorder`` keeps this order: by default xdist hands out the modules with
# the most tests first, which left the deploy and UI modules for the last minutes.)
LONG_FIRST = ("test_demo.py", "test_simulator_to_bars.py", "e2e/", "test_production_deploy.py",
              "test_container_k8s.py", "test_capture.py",
              "test_fastparse.py", "test_book_fuzz.py", "test_unclean_stop.py",
              "test_partition_truth.py", "test_schema_registry.py", "test_history_import.py",
              "test_bars_fuzz.py", "test_archive_defs.py")  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        path = item.path.as_posix()
        return next((i for i, part in enumerate(LONG_FIRST) if part in path), len(LONG_FIRST))

    items.sort(key=rank)  # stable: the order within a module is kept


@pytest.fixture(autouse=True)
def _no_leaked_dagster_instance() -> Iterator[None]:
    """Fail the test that leaves a Dagster instance's state storage installed.

    Dagster keeps the current instance's defs-state storage in a context variable. A schedule or
    sensor context that opened an instance from a ref and was never closed (no ``with``) resets
    that variable to the *test fixture's* instance whenever the garbage collector gets to it, so
    a later, unrelated ``defs()`` call fails with "undefined DagsterInstance weakref". Collecting
    here makes the failure point at the test that caused it.
    """
    yield
    if "dagster" not in sys.modules:
        return
    from dagster._core.storage.defs_state import base

    gc.collect()
    storage = base.DefsStateStorage.get()
    base._current_storage.set(None)  # one offender, one failure: later tests start clean
    assert storage is None, (
        "this test left a Dagster instance open (use `with dg.build_schedule_context(...)` / "
        f"`with dg.build_sensor_context(...)`): {storage!r}"
    )
