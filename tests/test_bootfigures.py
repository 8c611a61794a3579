"""The image test's boot figures are read from what the booted board's root shell printed
(hil/bootfigures.py): each phase must come from its own line, so a figure that is missing or
taken from the wrong unit shows here rather than as a wrong number in test-figures.json."""

from __future__ import annotations

from hil.bootfigures import parse_report

# As a board printed it (systemd 252, Debian's initramfs-tools: no systemd in the initramfs,
# so the manager's InitRDTimestamp is 0 and the kernel's "Run /init" marks its start).
SAMPLE = """==manager
KernelTimestampMonotonic=0
InitRDTimestampMonotonic=0
UserspaceTimestampMonotonic=7412345
FinishTimestampMonotonic=52000000
==init
[    3.104200] nvr kernel: Run /init as init process
==unit nvr.service 60500000 71250000
==unit nvr-console.service 21000000 21000000
==unit nvr-firstboot.service 18000000 20900000
==target local-fs.target 15200000
==target basic.target 19400000
==target network-online.target 0
==journal
[   22.100000] nvr systemd[1]: Starting nvr.service - NVR pair firmware...
[   36.600000] nvr systemd[1]: Started nvr.service - NVR pair firmware.
[   45.000000] nvr nvr[612]: camera cam1: recording, 0 held packets first: new run
[   58.000000] nvr systemd[1]: Stopping nvr.service - NVR pair firmware...
[   60.000000] nvr systemd[1]: Stopped nvr.service - NVR pair firmware.
[   60.400000] nvr systemd[1]: Starting nvr.service - NVR pair firmware...
[   71.250000] nvr systemd[1]: Started nvr.service - NVR pair firmware.
[   73.900000] nvr nvr[700]: camera cam1: recording, 0 held packets first: new run
==analyze
Startup finished in 7.412s (kernel) + 44.587s (userspace) = 52.000s
"""


def test_each_boot_phase_is_read_from_its_own_line():
    f = parse_report(SAMPLE, loader_s=9.87)
    assert f["loader_s"] == 9.87
    assert f["kernel_s"] == 3.1  # to the initramfs' /init
    assert f["initrd_s"] == 4.31  # from there to systemd
    assert f["userspace_s"] == 44.59 and f["boot_finished_at_s"] == 52.0
    # The running firmware: the wizard's restart, READY=1 10.75 s after its process started.
    assert f["firmware_start_s"] == 10.75 and f["nvr_started_at_s"] == 60.5
    # The boot's own first start, from the journal; the restart's stop; the last recording.
    assert f["firmware_boot_start_s"] == 14.5 and f["firmware_boot_ready_at_s"] == 36.6
    assert f["firmware_stop_s"] == 2.0
    assert f["firmware_recording_at_s"] == 73.9
    assert f["nvr_console_started_at_s"] == 21.0
    # The gates of the firmware's start; a target never reached (0) gives no figure.
    assert f["local_fs_target_at_s"] == 15.2 and f["basic_target_at_s"] == 19.4
    assert "network_online_target_at_s" not in f
    assert "firmware_restart_to_recording_s" not in f  # restarted by systemd, not in process


def test_the_setup_s_restart_in_the_firmware_s_process_is_timed_to_recording():
    journal = """==journal
[   30.000000] nvr systemd[1]: Starting nvr.service - NVR pair firmware...
[   41.000000] nvr systemd[1]: Started nvr.service - NVR pair firmware.
[   52.300000] nvr nvr[612]: WARNING firmware.board: restarting the firmware in its process: SIGUSR1
[   54.100000] nvr nvr[612]: camera cam1: recording, 0 held packets first: new run
"""
    f = parse_report(journal, loader_s=None)
    assert f["firmware_restart_to_recording_s"] == 1.8
    assert f["firmware_boot_start_s"] == 11.0


def test_a_systemd_initramfs_and_missing_lines_give_no_invented_figures():
    with_initrd = SAMPLE.replace("InitRDTimestampMonotonic=0", "InitRDTimestampMonotonic=2500000")
    f = parse_report(with_initrd, loader_s=None)
    assert "loader_s" not in f
    assert f["kernel_s"] == 2.5 and f["initrd_s"] == 4.91  # systemd's own initrd stamp wins
    bare = parse_report("==manager\nUserspaceTimestampMonotonic=7000000\n", loader_s=None)
    assert bare == {"kernel_s": 7.0}  # no finish, no units, no journal: nothing else


def test_the_boot_benchmark_puts_each_image_s_median_beside_its_runs():
    from hil.bench_boot import table

    runs = {
        "a": [{"boot_to_recording_s": 50.0}, {"boot_to_recording_s": 44.0},
              {"boot_to_recording_s": 58.0, "loader_s": 8.0}],
        "b": [{"boot_to_recording_s": 47.5}],
    }  # fmt: skip
    rows = {ln.split(" | ")[0].strip("| "): ln for ln in table(["a", "b"], runs).splitlines()}
    want = "| boot_to_recording_s | 50.0 | 50.0 44.0 58.0 | 47.5 | 47.5 |"
    assert rows["boot_to_recording_s"] == want
    assert rows["loader_s"] == "| loader_s | 8.0 | 8.0 | - |  |"
