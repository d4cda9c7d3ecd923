"""The cell cache: keys, atomic writes, refusal of corrupt and foreign entries."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from malleability.reports.audit.cache import (
    CellCache,
    atomic_write_json,
    cell_key,
    code_version,
    computed_config,
    config_to_jsonable,
    entry_checksum,
    non_finite_to_null,
    source_hash,
    strict_loads,
)


@dataclass(frozen=True)
class Inner:
    n: int
    classes: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Outer:
    data: Inner
    width: int
    eps: float = 0.3


CODE = {"package": "0", "source_sha256": "abc", "cell_protocol": 1}


def test_config_to_jsonable_nested_and_tuples():
    cfg = Outer(Inner(5, (3, 8)), 16)
    assert config_to_jsonable(cfg) == {"data": {"n": 5, "classes": [3, 8]}, "width": 16, "eps": 0.3}


def test_key_depends_on_kind_config_and_code():
    cfg = Outer(Inner(5), 16)
    k = cell_key("ntk", cfg, CODE)
    assert len(k) == 24 and int(k, 16) >= 0
    assert k == cell_key("ntk", Outer(Inner(5), 16), CODE)  # equal configs, equal keys
    assert k != cell_key("flip", cfg, CODE)
    assert k != cell_key("ntk", Outer(Inner(5), 32), CODE)
    assert k != cell_key("ntk", Outer(Inner(5, (3, 8)), 16), CODE)
    assert k != cell_key("ntk", cfg, {**CODE, "source_sha256": "abd"})


def test_code_version_hashes_the_computational_source():
    cv = code_version()
    assert set(cv) == {"package", "source_sha256", "cell_protocol"}
    assert len(source_hash()) == 64


def test_put_get_roundtrip(tmp_path):
    cache = CellCache(tmp_path)
    cfg = Outer(Inner(5), 16)
    assert cache.get("ntk", cfg, CODE) is None
    entry = cache.put("ntk", cfg, {"distance": 1.5, "rows": (1, 2)}, wall_time_s=0.25, provenance={"x": 1}, code=CODE)
    got = cache.get("ntk", cfg, CODE)
    assert got == entry
    assert got["result"] == {"distance": 1.5, "rows": [1, 2]}
    assert got["wall_time_s"] == 0.25 and got["config"] == config_to_jsonable(cfg)
    # nothing but the entry is left in the folder (the temp file was renamed)
    assert [p.name for p in (tmp_path / "ntk").iterdir()] == [f"{entry['key']}.json"]
    assert cache.refusals == []


def test_corrupt_entry_is_refused_and_logged(tmp_path):
    logged = []
    cache = CellCache(tmp_path, log=logged.append)
    cfg = Outer(Inner(5), 16)
    entry = cache.put("ntk", cfg, {"d": 1.0}, wall_time_s=0.0, code=CODE)
    path = cache.path_for("ntk", entry["key"])
    path.write_text('{"key": "truncated', encoding="utf-8")  # a torn write
    assert cache.get("ntk", cfg, CODE) is None
    assert len(logged) == 1 and "unreadable" in logged[0] and str(path) in logged[0]
    path.write_text("[1, 2]", encoding="utf-8")
    assert cache.get("ntk", cfg, CODE) is None
    assert "not a cell entry" in logged[1]


def test_foreign_config_at_this_key_is_refused(tmp_path):
    """An entry copied from another cache (another config) under this key is never used."""
    logged = []
    cache = CellCache(tmp_path, log=logged.append)
    mine, other = Outer(Inner(5), 16), Outer(Inner(6), 16)
    foreign = cache.put("ntk", other, {"d": 99.0}, wall_time_s=0.0, code=CODE)
    target = cache.path_for("ntk", cell_key("ntk", mine, CODE))
    target.write_text(cache.path_for("ntk", foreign["key"]).read_text(), encoding="utf-8")
    assert cache.get("ntk", mine, CODE) is None
    assert "configuration differs" in logged[-1]


def test_other_code_version_is_refused(tmp_path):
    logged = []
    cache = CellCache(tmp_path, log=logged.append)
    cfg = Outer(Inner(5), 16)
    entry = cache.put("ntk", cfg, {"d": 1.0}, wall_time_s=0.0, code=CODE)
    path = cache.path_for("ntk", entry["key"])
    data = json.loads(path.read_text())
    data["code_version"]["source_sha256"] = "something-else"
    data["checksum"] = entry_checksum(data)  # as another version would have written it: intact, but not ours
    path.write_text(json.dumps(data))
    assert cache.get("ntk", cfg, CODE) is None
    assert "another code version" in logged[-1]
    assert cache.count_foreign(["ntk"], CODE) == 1
    # and under a new code version the old entry is simply not found
    cache2 = CellCache(tmp_path)
    cache2.put("ntk", cfg, {"d": 1.0}, wall_time_s=0.0, code=CODE)
    assert cache2.get("ntk", cfg, {**CODE, "cell_protocol": 2}) is None


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "sub" / "x.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"b": [1.5, None]})
    assert json.loads(path.read_text()) == {"b": [1.5, None]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["x.json"]


def test_atomic_write_failure_leaves_old_file(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]


def test_key_and_lookup_depend_on_the_data_fingerprint(tmp_path):
    logged = []
    cache = CellCache(tmp_path, log=logged.append)
    cfg = Outer(Inner(5), 16)
    k = cell_key("ntk", cfg, CODE, "fp-a")
    assert k != cell_key("ntk", cfg, CODE, "fp-b") and k != cell_key("ntk", cfg, CODE)
    cache.put("ntk", cfg, {"d": 1.0}, wall_time_s=0.0, code=CODE, data="fp-a")
    assert cache.get("ntk", cfg, CODE, "fp-a")["data_fingerprint"] == "fp-a"
    assert cache.get("ntk", cfg, CODE, "fp-b") is None and cache.get("ntk", cfg, CODE) is None
    assert logged == []  # other data is a different key, not a refusal
    # an intact entry for other data copied under this key is refused
    other = cache.put("ntk", cfg, {"d": 2.0}, wall_time_s=0.0, code=CODE, data="fp-b")
    target = cache.path_for("ntk", k)
    target.write_text(cache.path_for("ntk", other["key"]).read_text())
    assert cache.get("ntk", cfg, CODE, "fp-a") is None and "other data" in logged[-1]


def test_entry_checksum_covers_every_field(tmp_path):
    cache = CellCache(tmp_path)
    entry = cache.put("ntk", Outer(Inner(5), 16), {"d": 1.0}, wall_time_s=0.5, code=CODE)
    assert len(entry["checksum"]) == 64 and entry["checksum"] == entry_checksum(entry)
    for field, value in [("result", {"d": 1.0000001}), ("wall_time_s", 0.6), ("provenance", {"x": 1}),
                         ("finished_at", "1970-01-01T00:00:00Z"), ("key", "0" * 24)]:
        assert entry_checksum({**entry, field: value}) != entry["checksum"], field


def test_non_finite_result_is_stored_as_null_with_its_place(tmp_path):
    cache = CellCache(tmp_path)
    cfg = Outer(Inner(5), 16)
    entry = cache.put("ntk", cfg, {"d": float("nan"), "rows": [1.0, float("inf")], "ok": 2.0},
                      wall_time_s=0.0, code=CODE)
    assert entry["result"] == {"d": None, "rows": [1.0, None], "ok": 2.0}
    assert sorted(entry["non_finite"]) == ["result.d: nan", "result.rows[1]: inf"]
    text = cache.path_for("ntk", entry["key"]).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert cache.get("ntk", cfg, CODE) == entry


def test_non_finite_helpers():
    assert non_finite_to_null({"a": [float("-inf"), 1]}) == ({"a": [None, 1]}, ["$.a[0]: -inf"])
    assert non_finite_to_null(3.5) == (3.5, [])
    for token in ("NaN", "[Infinity]", '{"a": -Infinity}'):
        with pytest.raises(ValueError):
            strict_loads(token)
    assert strict_loads('{"a": 1e308}') == {"a": 1e308}


def test_atomic_write_is_strict_json(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "x.json", {"a": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_non_finite_configuration_is_bad_input():
    from malleability.errors import MalleabilityError

    with pytest.raises(MalleabilityError, match="non-finite"):
        cell_key("ntk", Outer(Inner(5), 16, eps=float("nan")), CODE)


@dataclass(frozen=True)
class Rooted:
    n: int
    data_root: str | None = None


@dataclass(frozen=True)
class RootedCell:
    data: Rooted
    width: int


def test_the_data_root_leaves_the_key_only_where_a_fingerprint_names_the_rows(tmp_path):
    a, b = RootedCell(Rooted(5, "/data"), 16), RootedCell(Rooted(5, "/mnt/../data/"), 16)
    assert computed_config(a) == computed_config(b) == {"data": {"n": 5}, "width": 16}
    assert computed_config({"n": [8], "data_root": "/x"}) == {"n": [8]}  # k-layer: the root at the top
    assert cell_key("ntk", a, CODE, "fp") == cell_key("ntk", b, CODE, "fp")
    assert cell_key("ntk", a, CODE, "fp") != cell_key("ntk", RootedCell(Rooted(6, "/data"), 16), CODE, "fp")
    assert cell_key("ntk", a, CODE) != cell_key("ntk", b, CODE)  # no fingerprint: the root is all that names the data
    assert cell_key("ntk", a, CODE, "fp", legacy=True) != cell_key("ntk", b, CODE, "fp", legacy=True)
    logged = []
    cache = CellCache(tmp_path, log=logged.append)
    cache.put("ntk", a, {"d": 1.0}, wall_time_s=0.0, code=CODE, data="fp")
    assert cache.get("ntk", b, CODE, "fp")["result"] == {"d": 1.0} and logged == []
    assert cache.get("ntk", b, CODE, "other-fp") is None  # other rows under the same root: never this entry
