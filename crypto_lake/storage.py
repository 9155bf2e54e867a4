"""The Dagster instance's storage, with a checkpoint of every check's status per partition.

Why: the checks page, the asset graph and the asset's overview show each partitioned check's
status over every partition (passed, failed, skipped, in progress). Dagster OSS works that
status out from nothing on every page load (``get_checkpointed_asset_check_state`` returns an
empty state there) and validates each partition key as it goes: at a year of 13 symbols,
4,745 partitions x 8 checks on ``bars_1s``, that is about 7 s of webserver CPU a load. Here
the computed status is kept in the instance's key-value store (a checkpoint per check), and
the next load applies only the partitions that changed since, with Dagster's own
``AssetCheckState.with_updates``.

What keeps a checkpoint true:
- it names the partitions definition it was computed for (its snapshot's digest): a changed
  definition (a symbol added, another start date) starts again from nothing;
- it records the largest event id and check-record id that existed before it was read; the
  next load re-reads every partition with a check record or a materialization after those
  (less ``LAG_IDS``, for a Postgres transaction that committed after a later one), and those
  of the runs it saw in progress, whose planned records get their result in place;
- a re-read partition's old status is removed first: its latest record alone decides it;
- any deletion (a run's events, an asset wiped, the instance wiped) drops every checkpoint,
  and the next read computes each from nothing.

Within one process a state it computed is given again while the largest ids, its stored
checkpoint and the partitions definition are those it was computed at and no run is in
progress, for at most ``MEMO_SECONDS``: the checks page asks for every check's status from two
queries at once, and one computation at a time serves both. Each check's latest execution
(every checks query asks for it) is given again the same way.

When the webserver prepares the storage (``optimize_for_webserver``) it also gets faster
partition health bars (``crypto_lake.ui_partition_keys``).

``dagster.yaml`` selects these classes: the embedded default through ``LakeInstance``
(Dagster's SQLite layout under ``$DAGSTER_HOME``), production through ``storage: custom`` with
``LakePostgresStorage`` (``deploy/dagster.yaml``). Unpartitioned checks have one record each
and are always read whole.
"""

import hashlib
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as db
import yaml
from dagster import AssetCheckKey, AssetKey, DagsterInstance
from dagster._core.asset_graph_view.serializable_entity_subset import SerializableEntitySubset
from dagster._core.definitions.partitions.definition.partitions_definition import (
    PartitionsDefinition,
)
from dagster._core.definitions.partitions.snap.snap import PartitionsSnap
from dagster._core.events import DagsterEventType
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionRecordStatus,
    AssetCheckPartitionInfo,
)
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus as Resolved,
)
from dagster._core.storage.asset_check_state import AssetCheckState
from dagster._core.storage.dagster_run import FINISHED_STATUSES, DagsterRunStatus, RunsFilter
from dagster._core.storage.event_log.schema import (
    AssetCheckExecutionsTable,
    SqlEventLogStorageTable,
)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.runs.schema import KeyValueStoreTable
from dagster._core.storage.sqlalchemy_compat import db_select
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData, deserialize_value, serialize_value
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.utils import get_token_provider_from_config, pg_url_from_config

from crypto_lake import ui_partition_keys

log = logging.getLogger(__name__)

KV_PREFIX = "crypto_lake/check_state/"
FORMAT = 2
# Re-read this many storage ids before the checkpoint: covers a Postgres transaction that took
# its id before, and committed after, one the checkpoint already saw.
LAG_IDS = 1000
# Beyond this many changed partitions a check's update reads them all (one IN list less).
MAX_LISTED_PARTITIONS = 500
# A state this process computed is given again for at most this long while the largest ids
# stay the same; short, as a late Postgres commit (LAG_IDS) does not move them.
MEMO_SECONDS = 10.0


def _kv_name(key: AssetCheckKey) -> str:
    return KV_PREFIX + key.to_user_string()


def partitions_digest(partitions_def: PartitionsDefinition | None) -> str:
    """What the definition is, not when it is asked: start, schedule, offsets, static keys."""
    if partitions_def is None:
        return "unpartitioned"
    snap = serialize_value(PartitionsSnap.from_def(partitions_def))
    return hashlib.sha256(snap.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Checkpoint:
    """A check's state and how far into the event log it had looked: the largest event id and
    check-execution row id that existed just before it was read."""

    state: AssetCheckState
    event_mark: int
    row_mark: int


@dataclass(frozen=True)
class _Memo:
    """A check's state as this process last computed it, and what it was computed at."""

    state: AssetCheckState
    event_mark: int
    row_mark: int
    stored: str | None  # its checkpoint in the key-value store just after
    digest: str
    at: float  # time.monotonic()

    def holds(self, event_mark: int, row_mark: int, stored: str | None, digest: str,
              now: float) -> bool:  # fmt: skip
        """Whether it is still the state: nothing recorded or dropped since, nothing in
        progress that a run's end could resolve, not older than MEMO_SECONDS."""
        return ((self.event_mark, self.row_mark, self.stored, self.digest)
                == (event_mark, row_mark, stored, digest)
                and not self.state.in_progress_runs and now - self.at < MEMO_SECONDS)  # fmt: skip


def encode(point: Checkpoint, digest: str) -> str:
    state = point.state
    return json.dumps({
        "format": FORMAT,
        "partitions": digest,
        "event_mark": point.event_mark,
        "row_mark": point.row_mark,
        "latest_storage_id": state.latest_storage_id,
        "subsets": {status.value: serialize_value(s) for status, s in state.subsets.items()},
        "in_progress_runs": {run: serialize_value(s) for run, s in state.in_progress_runs.items()},
    })  # fmt: skip


def decode(text: str | None, digest: str) -> Checkpoint | None:
    """The checkpoint ``text`` holds; None when there is none, or it is of another format or
    partitions definition, or unreadable (then it is recomputed, never trusted)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        if data.get("format") != FORMAT or data.get("partitions") != digest:
            return None
        subsets = data["subsets"].items()
        runs = data["in_progress_runs"].items()
        state = AssetCheckState(
            latest_storage_id=int(data["latest_storage_id"]),
            subsets={Resolved(k): deserialize_value(v) for k, v in subsets},
            in_progress_runs={run: deserialize_value(v) for run, v in runs},
        )
        return Checkpoint(state, int(data["event_mark"]), int(data["row_mark"]))
    except Exception:
        log.warning("asset check state checkpoint unreadable; recomputing", exc_info=True)
        return None


def _without(state: AssetCheckState, key: AssetCheckKey, pdef: PartitionsDefinition | None,
             infos) -> AssetCheckState:  # fmt: skip
    """``state`` with the partitions of ``infos`` removed from every status and in-progress run.

    Each info is its partition's latest record, which alone decides its status; Dagster's
    ``with_updates`` only adds a current result to its status (a partition that passed and
    later failed would be in both), so the old status goes first.
    """
    keys = sorted({i.partition_key for i in infos if i.partition_key is not None})
    keys = [k for k in keys if pdef is not None and pdef.has_partition_key(k)]
    if not keys:
        return state
    gone = SerializableEntitySubset.from_coercible_value(key, keys, pdef)
    runs = {run: sub.compute_difference(gone) for run, sub in state.in_progress_runs.items()}
    return AssetCheckState(
        latest_storage_id=state.latest_storage_id,
        subsets={status: sub.compute_difference(gone) for status, sub in state.subsets.items()},
        in_progress_runs={run: sub for run, sub in runs.items() if not sub.is_empty},
    )


_CHECKS = AssetCheckExecutionsTable
ROW = [_CHECKS.c.id, _CHECKS.c.asset_key, _CHECKS.c.check_name, _CHECKS.c.partition,
       _CHECKS.c.execution_status, _CHECKS.c.evaluation_event_storage_id,
       _CHECKS.c.materialization_event_storage_id, _CHECKS.c.run_id]  # fmt: skip
# Historical planned records may lack their event id; Dagster's own query skips them too.
_HAS_RESULT = _CHECKS.c.evaluation_event_storage_id.isnot(None)


def _newest(rows) -> dict[tuple, Any]:
    """The newest row of each (asset, check, partition)."""
    out: dict[tuple, Any] = {}
    for row in rows:
        slot = (row.asset_key, row.check_name, row.partition)
        if slot not in out or row.id > out[slot].id:
            out[slot] = row
    return out


def _info(key: AssetCheckKey, row, mat_id: int | None,
          unpartitioned_id: int | None) -> AssetCheckPartitionInfo:  # fmt: skip
    """The record Dagster's ``get_asset_check_partition_info`` makes of the same row."""
    return AssetCheckPartitionInfo(
        check_key=key,
        partition_key=row.partition,
        latest_execution_status=AssetCheckExecutionRecordStatus(row.execution_status),
        latest_target_materialization_storage_id=row.materialization_event_storage_id,
        latest_planned_run_id=row.run_id,
        latest_check_event_storage_id=row.evaluation_event_storage_id,
        latest_materialization_storage_id=max(
            filter(None, [mat_id, unpartitioned_id]), default=None
        ),
    )


class CheckStateCheckpoints:
    """Mixin for a SQL event log storage: ``get_asset_check_state`` from a checkpoint."""

    def _kvs(self):
        return self._instance.run_storage  # type: ignore[attr-defined]

    def _memo(self, name: str = "check_state") -> tuple[threading.Lock, dict]:
        """This process's memo ``name`` (check states, or latest executions) and its lock."""
        return self.__dict__.setdefault(f"_{name}_memo", (threading.Lock(), {}))

    def get_asset_check_state(
        self, keys: Sequence[tuple[AssetCheckKey, PartitionsDefinition | None]]
    ) -> Mapping[AssetCheckKey, AssetCheckState]:
        """What Dagster's ``bulk_update_asset_check_state`` computes from nothing, computed
        from each check's checkpoint and the partitions that changed since (module doc).

        One computation at a time per process, and a state this process computed is given
        again while nothing changed (the same largest ids, its checkpoint as it left it, no
        run in progress, at most ``MEMO_SECONDS`` old): a page asks for the same checks from
        two queries at once, and a reload asks again."""
        lock, memo = self._memo()
        with lock:
            return self._check_state(keys, memo)

    def get_latest_asset_check_execution_by_key(self, check_keys, partition_filter=None):
        """Dagster's answer, given again while nothing changed (the same largest ids, at most
        ``MEMO_SECONDS`` old): every query of a checks page asks for the latest execution of
        each check, a query that groups all of a year's executions of those checks."""
        key = (tuple(check_keys), partition_filter)
        lock, memo = self._memo("latest_execution")
        marks, now = self._marks(), time.monotonic()
        with lock:
            hit = memo.get(key)
            if hit is not None and hit[0] == marks and now - hit[1] < MEMO_SECONDS:
                self.latest_memo_hits = getattr(self, "latest_memo_hits", 0) + 1
                return hit[2]
        out = super().get_latest_asset_check_execution_by_key(  # type: ignore[misc]
            check_keys, partition_filter
        )
        with lock:
            if len(memo) >= 256:  # the check sets the pages ask for: a few dozen
                memo.clear()
            memo[key] = (marks, now, out)
        return out

    def _check_state(self, keys, memo: dict[AssetCheckKey, _Memo]):
        pdefs = dict(keys)
        partitioned = [key for key, pdef in keys if pdef is not None]
        digests = {key: partitions_digest(pdefs[key]) for key in partitioned}
        names = {key: _kv_name(key) for key in partitioned}
        event_mark, row_mark = self._marks()  # before anything is read
        saved = self._kvs().get_cursor_values(set(names.values())) if names else {}
        now = time.monotonic()
        seen = {}
        for key in partitioned:
            m = memo.get(key)
            if m is not None and m.holds(event_mark, row_mark, saved.get(names[key]),
                                         digests[key], now):  # fmt: skip
                seen[key] = m.state
        self.check_state_memo_hits = getattr(self, "check_state_memo_hits", 0) + len(seen)
        if len(seen) == len(keys):
            return seen
        rest = [(key, pdef) for key, pdef in keys if key not in seen]
        out = {**seen, **self._computed(rest, digests, names, saved, (event_mark, row_mark),
                                        memo, now)}  # fmt: skip
        return {key: out[key] for key, _ in keys}

    def _computed(self, keys, digests, names, saved, marks, memo, now):
        pdefs = dict(keys)
        partitioned = [key for key, pdef in keys if pdef is not None]
        event_mark, row_mark = marks
        warm = {key: p for key in partitioned
                if (p := decode(saved.get(names[key]), digests[key])) is not None}  # fmt: skip
        since = self._infos_since(warm) if warm else []
        if since is None:  # too much changed: read every check whole, from nothing
            warm, since = {}, []
        infos = since + self._partition_infos({k: p for k, p in pdefs.items() if k not in warm})
        by_key: dict[AssetCheckKey, list] = {key: [] for key in pdefs}
        for info in infos:
            by_key[info.check_key].append(info)
        statuses = self._finished_runs(warm.values(), infos)
        out, changed = {}, {}
        for key, pdef in keys:
            point = warm.get(key)
            before = point.state if point else AssetCheckState.empty()
            start = _without(before, key, pdef, by_key[key]) if point else before
            out[key] = state = start.with_updates(key, pdef, by_key[key], statuses)
            if key not in names:
                continue
            moved = point is None or max(event_mark - point.event_mark,
                                         row_mark - point.row_mark) > LAG_IDS  # fmt: skip
            if moved or state != before:
                changed[names[key]] = encode(Checkpoint(state, event_mark, row_mark), digests[key])
        stored = saved
        if changed:
            try:
                self._kvs().set_cursor_values(changed)
                stored = {**saved, **changed}
            except Exception:  # a busy or read-only store: the page still gets its answer
                log.warning("could not store %d check status checkpoints; the next read "
                            "applies the changes again", len(changed), exc_info=True)  # fmt: skip
        for key in partitioned:
            memo[key] = _Memo(out[key], event_mark, row_mark, stored.get(names[key]),
                              digests[key], now)  # fmt: skip
        return out

    def _partition_infos(
        self, pdefs: Mapping[AssetCheckKey, PartitionsDefinition | None]
    ) -> list[AssetCheckPartitionInfo]:
        """Each partition's latest check record and materialization, read whole: Dagster's
        query for partitioned checks; an unpartitioned check's one record directly (Dagster's
        query also aggregates every materialization of a partitioned asset, for nothing)."""
        partitioned = [key for key, pdef in pdefs.items() if pdef is not None]
        single = [key for key, pdef in pdefs.items() if pdef is None]
        infos = []
        if partitioned:
            infos += self.get_asset_check_partition_info(partitioned)  # type: ignore[attr-defined]
        if not single:
            return infos
        checks = AssetCheckExecutionsTable
        unpartitioned = self._latest_unpartitioned({key.asset_key for key in single})
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            for key in single:
                row = conn.execute(
                    db_select(ROW).where(checks.c.asset_key == key.asset_key.to_string(),
                                         checks.c.check_name == key.name,
                                         checks.c.partition.is_(None), _HAS_RESULT)
                    .order_by(checks.c.id.desc()).limit(1)
                ).first()  # fmt: skip
                if row is not None:
                    infos.append(_info(key, row, None, unpartitioned.get(key.asset_key)))
        return infos

    def _latest_unpartitioned(self, assets) -> Mapping[AssetKey, int]:
        return self._get_latest_unpartitioned_materialization_storage_ids(sorted(assets))  # type: ignore[attr-defined]

    def _marks(self) -> tuple[int, int]:
        events, checks = SqlEventLogStorageTable, AssetCheckExecutionsTable
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            event_mark = conn.execute(db_select([db.func.max(events.c.id)])).scalar()
            row_mark = conn.execute(db_select([db.func.max(checks.c.id)])).scalar()
        return event_mark or 0, row_mark or 0

    def _infos_since(self, warm: Mapping[AssetCheckKey, Checkpoint]) -> list | None:
        """The latest record of every partition of these checks that may have changed since
        their checkpoints, or None when that is too much to list (read them whole then):

        - a check record inserted after the checkpoint (less ``LAG_IDS``): the newest of
          those is the partition's latest;
        - a record of a run the checkpoint saw in progress on that partition: its planned
          record got its result in place (anything newer is in the first set);
        - a materialization after the checkpoint: the check's result may no longer be
          current; its latest record is read whole (rare: a refresh checks what it builds).
        """
        checks, events = AssetCheckExecutionsTable, SqlEventLogStorageTable
        row_after = min(p.row_mark for p in warm.values()) - LAG_IDS
        event_after = min(p.event_mark for p in warm.values()) - LAG_IDS
        by_name = {(key.asset_key.to_string(), key.name): key for key in warm}
        assets = sorted({asset for asset, _ in by_name})
        in_progress = {
            (key.asset_key.to_string(), key.name, pk, run)
            for key, point in warm.items()
            for run, subset in point.state.in_progress_runs.items()
            for pk in subset.subset_value.get_partition_keys()
        }
        mat = DagsterEventType.ASSET_MATERIALIZATION.value
        with self.index_connection() as conn:  # type: ignore[attr-defined]
            rows = conn.execute(db_select(ROW).where(
                checks.c.id > row_after, checks.c.asset_key.in_(assets), _HAS_RESULT
            )).fetchall()  # fmt: skip
            latest = _newest(r for r in rows if (r.asset_key, r.check_name) in by_name)
            runs = sorted({run for *_, run in in_progress})
            if runs:
                for r in conn.execute(db_select(ROW).where(
                    checks.c.asset_key.in_(assets), checks.c.run_id.in_(runs), _HAS_RESULT
                )).fetchall():  # fmt: skip
                    slot = (r.asset_key, r.check_name, r.partition)
                    if (*slot, r.run_id) in in_progress and slot not in latest:
                        latest[slot] = r
            materialized = conn.execute(
                db_select([events.c.asset_key, events.c.partition]).distinct()
                .where(events.c.asset_key.in_(assets), events.c.dagster_event_type == mat,
                       events.c.id > event_after)
            ).fetchall()  # fmt: skip
            if any(partition is None for _, partition in materialized):
                return None  # an unpartitioned materialization touches every partition
            partitions = {(r.asset_key, r.partition) for r in latest.values()}
            partitions |= {(asset, partition) for asset, partition in materialized}
            if len(partitions) > MAX_LISTED_PARTITIONS:
                return None
            mat_ids = {}
            for asset in assets:
                listed = sorted(p for a, p in partitions if a == asset and p is not None)
                if listed:
                    mat_ids.update(((asset, p), i) for p, i in conn.execute(
                        db_select([events.c.partition, db.func.max(events.c.id)])
                        .where(events.c.asset_key == asset, events.c.dagster_event_type == mat,
                               events.c.partition.in_(listed))
                        .group_by(events.c.partition)
                    ).fetchall())  # fmt: skip
        unpartitioned = self._latest_unpartitioned({key.asset_key for key in warm})
        infos = [
            _info(by_name[(asset, name)], row, mat_ids.get((asset, partition)),
                  unpartitioned.get(by_name[(asset, name)].asset_key))
            for (asset, name, partition), row in latest.items() if partition is not None
        ]  # fmt: skip
        for key in warm:  # materialized anew, no check record since: read whole
            asset = key.asset_key.to_string()
            stale = sorted(p for a, p in materialized
                           if a == asset and (asset, key.name, p) not in latest)  # fmt: skip
            if stale:
                infos += self.get_asset_check_partition_info(  # type: ignore[attr-defined]
                    [key], partition_keys=stale
                )
        return infos

    def _finished_runs(self, points, infos) -> dict[str, DagsterRunStatus]:
        """The finished runs among those the states saw in progress and those the new records
        plan (Dagster resolves their partitions to skipped or execution failed)."""
        run_ids = {run for p in points for run in p.state.in_progress_runs}
        planned = AssetCheckExecutionRecordStatus.PLANNED
        run_ids |= {i.latest_planned_run_id for i in infos if i.latest_execution_status == planned}
        if not run_ids:
            return {}
        runs = self._instance.get_runs(  # type: ignore[attr-defined]
            filters=RunsFilter(run_ids=sorted(run_ids), statuses=FINISHED_STATUSES)
        )
        return {run.run_id: run.status for run in runs}

    def optimize_for_webserver(self, statement_timeout: int, pool_recycle: int,
                               max_overflow: int) -> None:  # fmt: skip
        """The webserver's set-up of the storage, and its faster partition health bars
        (``crypto_lake.ui_partition_keys``)."""
        super().optimize_for_webserver(statement_timeout, pool_recycle, max_overflow)  # type: ignore[misc]
        ui_partition_keys.install()

    def drop_check_state(self) -> None:
        """Forget every checkpoint: the next read computes each check's status from nothing.

        Called whenever records are deleted. Narrower would be wrong: SQLite reuses the ids
        of deleted rows at the top of a table, so a kept checkpoint could look past them.
        """
        for lock, memo in (self._memo(), self._memo("latest_execution")):
            with lock:
                memo.clear()
        names = _checkpoint_names(self._kvs())
        if names:
            self._kvs().set_cursor_values(dict.fromkeys(names, ""))

    def delete_events(self, run_id: str) -> None:
        super().delete_events(run_id)  # type: ignore[misc]
        self.drop_check_state()

    def wipe_asset(self, asset_key: AssetKey) -> None:
        super().wipe_asset(asset_key)  # type: ignore[misc]
        self.drop_check_state()

    def wipe(self) -> None:
        super().wipe()  # type: ignore[misc]
        self.drop_check_state()


def _checkpoint_names(kvs) -> list[str]:
    """The keys of the stored (not yet dropped) checkpoints in the key-value store."""
    table = KeyValueStoreTable
    with kvs.connect() as conn:
        rows = conn.execute(
            db_select([table.c.key]).where(table.c.key.startswith(KV_PREFIX), table.c.value != "")
        ).fetchall()
    return [row[0] for row in rows]


# --- SQLite: the embedded default ---------------------------------------------------------------
class LakeSqliteEventLogStorage(CheckStateCheckpoints, SqliteEventLogStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **config_value)


class LakeSqliteStorage(DagsterSqliteStorage):
    """Dagster's SQLite storage (the same files under ``base_dir``) with checkpointed check
    state."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None):
        super().__init__(base_dir, inst_data=inst_data)
        self._event_log_storage.dispose()
        self._event_log_storage = LakeSqliteEventLogStorage(self._event_log_dir)

    @property
    def _event_log_dir(self) -> str:
        return _event_logs_directory(self.base_dir)

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls.from_local(inst_data=inst_data, **config_value)

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        return ConfigurableClassData(
            __name__,
            LakeSqliteEventLogStorage.__name__,
            yaml.dump({"base_dir": self._event_log_dir}),
        )


class LakeInstance(DagsterInstance):
    """The embedded default: Dagster's defaults for ``$DAGSTER_HOME`` with ``LakeSqliteStorage``
    as the storage (``instance_class`` in ``dagster.yaml``)."""

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        return {}

    @staticmethod
    def config_defaults(base_dir: str) -> Mapping[str, ConfigurableClassData | None]:
        defaults = dict(InstanceRef.config_defaults(base_dir))
        defaults["storage"] = ConfigurableClassData(
            __name__, LakeSqliteStorage.__name__, yaml.dump({"base_dir": base_dir})
        )
        return defaults


# --- Postgres: production ------------------------------------------------------------------------
def _pg_args(config_value: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "postgres_url": pg_url_from_config(config_value),
        "should_autocreate_tables": config_value.get("should_autocreate_tables", True),
        "token_provider": get_token_provider_from_config(config_value),
    }


class LakePostgresEventLogStorage(CheckStateCheckpoints, PostgresEventLogStorage):
    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **_pg_args(config_value))


class LakePostgresStorage(DagsterPostgresStorage):
    """Dagster's Postgres storage (the same tables) with checkpointed check state."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None, token_provider=None):  # fmt: skip
        super().__init__(postgres_url, should_autocreate_tables, inst_data, token_provider)
        self._event_log_storage.dispose()
        self._event_log_storage = LakePostgresEventLogStorage(
            postgres_url, should_autocreate_tables, token_provider=token_provider
        )

    @classmethod
    def from_config_value(cls, inst_data, config_value):
        return cls(inst_data=inst_data, **_pg_args(config_value))

    @property
    def event_storage_data(self) -> ConfigurableClassData | None:
        if self.inst_data is None:
            return None
        return ConfigurableClassData(
            __name__, LakePostgresEventLogStorage.__name__, self.inst_data.config_yaml
        )
