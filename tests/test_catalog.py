from firmware.catalog import Catalog, Segment, segment_id


def seg(cat_run, cam, start, end, origin="a"):
    sid = segment_id(cam, start, origin)
    return Segment(
        sid,
        cam,
        cat_run,
        f"segments/{cam}/{sid}.mp4",
        start,
        end,
        0,
        end - start,
        10,
        100,
        "0" * 64,
        origin,
        "h264",
    )


def test_runs_segments_and_gaps(tmp_path):
    cat = Catalog(tmp_path)
    r1 = cat.new_run("c", "a", 1_000_000, 1_000_000)
    cat.add_segment(seg(r1, "c", 1_000_000, 5_000_000))
    cat.add_segment(seg(r1, "c", 5_000_000, 9_000_000))
    cat.end_run(r1, "stall")
    r2 = cat.new_run("c", "a", 12_000_000, 12_000_000)
    cat.add_segment(seg(r2, "c", 12_000_000, 16_000_000))
    gaps = cat.gaps("c")
    assert [(g.start_us, g.end_us, g.reason) for g in gaps] == [(9_000_000, 12_000_000, "stall")]
    cat.end_run(r2, "recorder-stopped")
    gaps = cat.gaps("c")
    assert gaps[-1].end_us is None and gaps[-1].reason == "recorder-stopped"
    assert [s.start_us for s in cat.segments("c", 4_000_000, 13_000_000)] == [
        1_000_000,
        5_000_000,
        12_000_000,
    ]
    assert cat.gaps("c", 17_000_000, 18_000_000)[0].reason == "recorder-stopped"


def test_delete_moves_rows_to_garbage_and_drops_empty_runs(tmp_path):
    cat = Catalog(tmp_path)
    r1 = cat.new_run("c", "a", 0, 0)
    s1 = seg(r1, "c", 0, 4_000_000)
    cat.add_segment(s1)
    cat.end_run(r1, "stall")
    r2 = cat.new_run("c", "a", 10_000_000, 10_000_000)
    cat.add_segment(seg(r2, "c", 10_000_000, 14_000_000))
    paths = cat.delete_segment_rows([s1.id, "nonexistent"])
    assert paths == [s1.path]
    assert cat.garbage() == [s1.path]
    assert [r.id for r in cat.runs("c")] == [r2]
    cat.forget_garbage(paths)
    assert cat.garbage() == []


def test_catalog_is_shared_between_connections(tmp_path):
    a, b = Catalog(tmp_path), Catalog(tmp_path)
    r = a.new_run("c", "a", 0, 0)
    a.add_segment(seg(r, "c", 0, 4))
    assert len(b.segments()) == 1


def test_a_catalog_on_a_read_only_disk_is_read_with_its_write_ahead_log(tmp_path):
    """A data disk the kernel turned read-only still lists its footage, rows in the write-ahead
    log included (the board had not checkpointed them): installers and the drills read it."""
    import subprocess
    import sys

    cat = Catalog(tmp_path)
    r1 = cat.new_run("c", "a", 1_000_000, 1_000_000)
    cat.add_segment(seg(r1, "c", 1_000_000, 5_000_000))
    reader = (
        "import sys; from pathlib import Path; from firmware.catalog import Catalog; "
        "c = Catalog(Path(sys.argv[1])); print(c.read_only, len(c.segments('c')))"
    )
    # The catalog stays open here (its -wal and -shm stay), as the board's does.
    res = subprocess.run(
        ["unshare", "-m", "sh", "-c",
         'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$1" -c "$2" "$0"',
         str(tmp_path), sys.executable, reader],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["True", "1"]
    cat.close()


def test_feed_cursors_never_reuse_a_number_after_the_newest_row_is_deleted(tmp_path):
    """SQLite hands a deleted highest row id to the next insert; a peer whose feed cursor had
    passed that number would never see the new segment (nor the run change)."""
    cat = Catalog(tmp_path)
    r1 = cat.new_run("c", "a", 0, 0)
    cat.add_segment(seg(r1, "c", 0, 2_000_000))
    spare = seg(r1, "c", 2_000_000, 4_000_000)
    cat.add_segment(spare)
    seg_cursor = cat.segments_since(0, 100)[-1][0]
    run_cursor = max(r.changed for r in cat.runs_since(0, 100))
    cat.delete_segment_rows([spare.id])  # the newest row: a spare copy pruned
    r2 = cat.new_run("c", "b", 4_000_000, 4_000_000)
    late = seg(r2, "c", 4_000_000, 6_000_000, origin="b")
    cat.add_segment(late)
    assert [s.id for _, s in cat.segments_since(seg_cursor, 100)] == [late.id]
    assert r2 in [r.id for r in cat.runs_since(run_cursor, 100)]
    reopened = Catalog(tmp_path)  # the sequence survives a restart
    reopened.add_segment(seg(r2, "c", 6_000_000, 8_000_000, origin="b"))
    assert len(reopened.segments_since(seg_cursor, 100)) == 2


def test_a_thread_opening_the_catalog_after_its_disk_left_creates_nothing(tmp_path):
    """A pulled disk leaves the bare mount point behind: another thread's first query (the
    mirror feed, the API) must fail there, not start an empty catalog in it."""
    import sqlite3
    import threading

    cat = Catalog(tmp_path)
    cat.close()
    for name in [p.name for p in tmp_path.iterdir()]:
        (tmp_path / name).unlink()
    errors: list[BaseException] = []

    def query() -> None:
        try:
            cat.segments_since(0, 10)
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=query)
    t.start()
    t.join(10)
    assert len(errors) == 1 and isinstance(errors[0], sqlite3.OperationalError), errors
    assert list(tmp_path.iterdir()) == []
