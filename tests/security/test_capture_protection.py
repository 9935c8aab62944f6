"""Issue 18, item 5: the traffic capture is opt-in and governed. It ships off (the demo turns
it on in its own config), writes private files, forgets what is older than its retention,
can be erased by date or prediction id (local disk and moto's S3 server), and never writes
the features it is told to leave out. Real files, a real S3 API."""

import datetime as dt
import os
import stat
import time
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pytest
import yaml

from sparc_ray.cli import main
from sparc_ray.data.captured import labelled_rows, read_labels, read_predictions
from sparc_ray.monitoring.capture import CaptureWriter, _table
from sparc_ray.registry.layout import capture_root
from sparc_ray.registry.storage import open_fs
from sparc_ray.serving.settings import PostprocessorSettings, ServingSettings
from tests.s3_server import running_s3, s3_uri

ROOT = Path(__file__).resolve().parents[2]
OLD_DAY = "2020-01-01"


def scored(writer, ids, version="v1"):
    """One scored group of one row per id (features x, c and an identifier, email)."""
    n = len(ids)
    items = [{"prediction_id": p, "n_rows": 1} for p in ids]
    columns = {
        "x": np.arange(float(n)),
        "c": np.array(["a"] * n, dtype=object),
        "email": np.array([f"{p}@example.org" for p in ids], dtype=object),
    }
    writer.offer_predictions(version, items, columns, ["yes"] * n, np.tile([[0.3, 0.7]], (n, 1)))


def old_partition(writer):
    """A labels partition dated OLD_DAY, written through the writer's own write path."""
    record = {"prediction_id": ["old"], "row": [0], "label": ["yes"], "timestamp": time.time()}
    writer._write("labels", None, OLD_DAY, _table("labels", [record]))


def test_capture_ships_off_and_the_demo_turns_it_on_in_its_own_config(tmp_path):
    from ray.serve.schema import ServeDeploySchema

    from sparc_ray.demo import write_config

    shipped = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    (app,) = shipped["applications"]
    assert ServingSettings.from_app(app).Postprocessor.capture_rate == 0.0
    assert PostprocessorSettings().capture_rate == 0.0
    out = tmp_path / ".demo" / "serve_config.yaml"
    write_config(str(out), str(ROOT / "serve_config.yaml"))
    demo = yaml.safe_load(out.read_text())
    ServeDeploySchema.model_validate(demo)
    assert ServingSettings.from_app(demo["applications"][0]).Postprocessor.capture_rate == 1.0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    post = next(d for d in app["deployments"] if d["name"] == "Postprocessor")
    post["user_config"]["capture_rate"] = 1.0
    assert demo == shipped  # nothing else differs
    makefile = (ROOT / "Makefile").read_text()
    assert "serve deploy $(DEMO)/serve_config.yaml" in makefile
    assert "--write-config $(DEMO)/serve_config.yaml" in makefile


def test_captured_files_are_0600_and_directories_0700_on_local_disks(tmp_path):
    old = os.umask(0o022)
    try:
        root = capture_root(str(tmp_path / "store"), "m")
        writer = CaptureWriter(root, 1.0, flush_s=3600)
        scored(writer, ["p1", "p2"])
        writer.offer_labels([{"prediction_id": "p1", "row": 0, "label": "yes"}])
        writer.close()
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    dirs = [p for p in (tmp_path / "store" / "m").rglob("*") if p.is_dir()]
    assert len(files) == 2 and writer.written == 3
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o600}
    assert {
        stat.S_IMODE(p.stat().st_mode) for p in [*dirs, tmp_path / "store" / "m" / "_capture"]
    } == {0o700}


def test_the_writer_deletes_days_older_than_the_retention(tmp_path):
    setup = CaptureWriter(str(tmp_path), 1.0, flush_s=3600)
    old_partition(setup)
    scored(setup, ["p1"])
    setup.close()
    assert len(list(tmp_path.rglob("*.parquet"))) == 2
    writer = CaptureWriter(str(tmp_path), 1.0, flush_s=3600, retention_days=30)
    writer.close()  # the retention is enforced when the writer starts (then hourly)
    assert not list(tmp_path.rglob(f"capture_date={OLD_DAY}"))
    assert read_predictions(str(tmp_path)).prediction_id.tolist() == ["p1"]
    assert writer.errors == 0


def test_the_postprocessor_hands_retention_and_exclusions_to_the_writer(tmp_path):
    import asyncio

    from tests.postprocessors import Loader, local_postprocessor

    async def scenario():
        post = await local_postprocessor(Loader())
        config = {
            "capture_rate": 1.0,
            "capture_uri": str(tmp_path),
            "capture_retention_days": 7,
            "capture_exclude_features": ["email"],
        }
        await post.reconfigure(config)
        writer = post.capture
        post.tasks.cancel()
        writer.close()
        return writer

    writer = asyncio.run(scenario())
    assert writer.retention_days == 7 and writer.exclude == {"email"}
    with pytest.raises(ValueError, match="capture_retention_days"):
        PostprocessorSettings(capture_retention_days=0)


def test_excluded_features_are_never_written(tmp_path):
    writer = CaptureWriter(str(tmp_path), 1.0, flush_s=3600, exclude=["email"])
    scored(writer, ["p1", "p2"])
    writer.close()
    rows = read_predictions(str(tmp_path))
    assert len(rows) == 2 and "email" not in rows.columns and {"x", "c"} <= set(rows.columns)
    assert not any(b"example.org" in p.read_bytes() for p in tmp_path.rglob("*.parquet"))


def test_purge_erases_a_predictions_rows_and_labels_on_local_disk(tmp_path, capsys):
    store = tmp_path / "store"
    root = capture_root(str(store), "m")
    writer = CaptureWriter(root, 1.0, flush_s=3600)
    old_partition(writer)
    scored(writer, ["p1", "p2", "p3"])
    writer.offer_labels([{"prediction_id": p, "row": 0, "label": "yes"} for p in ("p1", "p2")])
    writer.close()
    args = ["capture", "purge", "--store", str(store), "--name", "m"]
    assert main([*args, "--prediction-id", "p1", "--prediction-id", "p3"]) == 0
    assert "3 rows and labels erased" in capsys.readouterr().out
    assert sorted(read_predictions(root).prediction_id) == ["p2"]
    assert sorted(read_labels(root).prediction_id) == ["old", "p2"]
    assert labelled_rows(root).prediction_id.tolist() == ["p2"]
    files = list(store.rglob("*"))
    assert not [p for p in files if p.name.startswith(".")]  # no temporary file left
    assert not any(b"p1@example.org" in p.read_bytes() for p in files if p.is_file())
    assert {stat.S_IMODE(p.stat().st_mode) for p in files if p.is_file()} == {0o600}
    assert main([*args, "--before", "2021-01-01"]) == 0
    assert "1 date partitions deleted" in capsys.readouterr().out
    assert sorted(read_labels(root).prediction_id) == ["p2"]
    assert main(args) == 2 and "--before DATE or --prediction-id" in capsys.readouterr().err
    assert main([*args, "--before", "yesterday"]) == 2


def test_purge_and_retention_on_s3(capsys):
    with running_s3() as (endpoint, client):
        client.create_bucket(Bucket="captures")
        root = s3_uri(endpoint, "captures", "m/_capture")
        writer = CaptureWriter(root, 1.0, flush_s=3600)
        old_partition(writer)
        scored(writer, ["p1", "p2"])
        writer.offer_labels([{"prediction_id": "p1", "row": 0, "label": "yes"}])
        writer.close()
        assert writer.written == 3 and writer.errors == 0
        assert main(["capture", "purge", "--uri", root, "--prediction-id", "p1"]) == 0
        assert "2 rows and labels erased" in capsys.readouterr().out
        assert read_predictions(root).prediction_id.tolist() == ["p2"]
        assert read_labels(root).prediction_id.tolist() == ["old"]
        keys = [o["Key"] for o in client.list_objects_v2(Bucket="captures")["Contents"]]
        assert not [k for k in keys if "/." in k]
        retained = CaptureWriter(root, 1.0, flush_s=3600, retention_days=30)
        retained.close()
        assert retained.errors == 0 and read_labels(root).empty
        fs, path = open_fs(root)
        found = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        assert not [f for f in found if OLD_DAY in f.path]
        assert main(["capture", "purge", "--uri", root, "--before", "2999-01-01"]) == 0
        assert read_predictions(root).empty
    today = dt.datetime.now(dt.UTC).date().isoformat()
    assert today < "2999-01-01"
