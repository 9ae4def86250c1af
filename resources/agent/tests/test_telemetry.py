"""Telemetry parsers on nvidia-smi output recorded on the H100 (tests/fixtures/nvidia-smi/, see its
README for which files are recorded and which are derived), and the sampler's plumbing."""

from __future__ import annotations

import json
import os
import statistics
import sys
import textwrap
import time

import pytest

from kvscope_agent import telemetry
from kvscope_agent.clock import RunClock
from kvscope_agent.emit import EventWriter

FIX = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "nvidia-smi")
MIB = 1 << 20
PROBE_CMD_FIELDS = (
    "index,name,uuid,pci.bus_id,driver_version,memory.total,memory.used,pcie.link.gen.current,"
    "pcie.link.gen.max,pcie.link.width.current,pcie.link.width.max,power.draw,clocks.sm,"
    "utilization.gpu,utilization.memory,temperature.gpu"
).split(",")


def read(name: str) -> str:
    with open(os.path.join(FIX, name), encoding="utf-8") as f:
        return f.read()


def test_markers_for_missing_values() -> None:
    for raw in ("[N/A]", "[Not Supported]", "[Unknown Error]", "N/A", " ", ""):
        assert telemetry.field_value(raw) is None
        assert telemetry.number(raw) is None
    assert telemetry.number("124.77 W") == 124.77
    assert telemetry.number("81559 MiB") == 81559
    assert telemetry.number("Disabled") is None


def test_h100_probe_csv_with_header_and_units() -> None:
    rows = telemetry.parse_csv_rows(read("h100-query-gpu-probe.csv"), PROBE_CMD_FIELDS)
    assert len(rows) == 1  # the header line is not a GPU
    (gpu,) = telemetry.gpus_from_probe(rows, {0: None})
    assert gpu == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "uuid": "GPU-<uuid>",
        "memory_total_bytes": 81559 * MIB,
        "pcie_gen": 5,
        "pcie_width": 16,
        "c2c": None,
    }
    ev, why = telemetry.sample_from_row(rows[0])
    assert why is None
    assert ev == {
        "index": 0,
        "mem_used_bytes": 0,
        "util_pct": 0.0,
        "mem_util_pct": 0.0,
        "power_w": 124.77,
        "sm_clock_mhz": 1980,
        "pcie_gen": 5,
        "pcie_width": 16,
    }


def test_h100_loop_mode_timestamps_are_200ms_apart() -> None:
    rows = telemetry.parse_csv_rows(
        read("h100-query-gpu-lms200.csv"), ("timestamp", "memory.used", "utilization.gpu")
    )
    assert len(rows) == 20
    ts = [telemetry.parse_timestamp_ns(r["timestamp"]) for r in rows]
    assert all(t is not None for t in ts)
    gaps_ms = [(b - a) / 1e6 for a, b in zip(ts, ts[1:])]  # type: ignore[operator]
    assert statistics.median(gaps_ms) == pytest.approx(200, abs=2)
    assert telemetry.parse_timestamp_ns("[N/A]") is None
    assert telemetry.parse_timestamp_ns("Fri Nov 27") is None


def test_derived_samples_with_missing_fields() -> None:
    rows = telemetry.parse_csv_rows(read("derived-query-gpu-sample.csv"), telemetry.SAMPLE_FIELDS)
    assert len(rows) == 4
    got = [telemetry.sample_from_row(r) for r in rows]
    full, no_power, sparse, mig = got
    assert full[0] is not None and full[0]["power_w"] == 124.77 and full[0]["pcie_width"] == 16
    assert no_power[0] is not None
    assert "power_w" not in no_power[0] and "mem_util_pct" not in no_power[0]
    assert no_power[0]["sm_clock_mhz"] == 1980
    assert sparse[0] == {"index": 0, "mem_used_bytes": 0, "util_pct": 0.0, "mem_util_pct": 0.0}
    # No utilization.gpu (as on a MIG slice): the required key is kept, as null.
    assert mig[0] == {"index": 0, "mem_used_bytes": 0, "util_pct": None, "power_w": 124.77,
                      "sm_clock_mhz": 1980, "pcie_gen": 5, "pcie_width": 16}
    assert telemetry.sample_from_row({"index": "[N/A]"}) == (None, "no index")


def test_dmon_real_and_derived() -> None:
    assert telemetry.parse_dmon(read("h100-dmon-t.txt")) == [
        (0, 0, 0),
        (0, 0, 1_000_000),
        (0, 0, 0),
    ]
    # -s pucvmet puts rxpci/txpci last among 22 columns: found by name.
    assert telemetry.parse_dmon(read("h100-dmon-pucvmet.txt")) == [
        (0, 0, 0),
        (0, 0, 0),
        (0, 0, 1_000_000),
    ]
    assert telemetry.parse_dmon(read("derived-dmon-t-na.txt")) == [
        (0, None, None),
        (0, 5_120_000_000, 12_000_000),
    ]


def test_q_pci_and_versions() -> None:
    q = read("h100-q-head120.txt")
    pci = telemetry.parse_q_pci(q)
    assert pci == {
        "00000000:00:06.0": {
            "bus_id": "00000000:00:06.0",
            "pcie_gen_max": 5,
            "pcie_gen_current": 5,
            "pcie_width_max": 16,
            "pcie_width_current": 16,
            "tx_kb_per_s": 781,
            "rx_kb_per_s": 417,
        }
    }
    assert telemetry.parse_versions(q) == {"driver_version": "580.159.04", "cuda_version": "13.0"}
    assert telemetry.parse_versions(read("h100-banner.txt")) == {
        "driver_version": "580.159.04",
        "cuda_version": "13.0",
    }


def test_probe_fields_with_na() -> None:
    rows = telemetry.parse_csv_rows(read("derived-query-gpu-probe-na.csv"), telemetry.PROBE_FIELDS)
    (gpu,) = telemetry.gpus_from_probe(rows)
    assert gpu["memory_total_bytes"] is None and gpu["pcie_gen"] is None
    assert gpu["pcie_width"] is None and gpu["name"] == "NVIDIA H100 80GB HBM3"
    assert telemetry.parse_c2c_mode("Disabled") is False
    assert telemetry.parse_c2c_mode("Enabled") is True
    assert telemetry.parse_c2c_mode("[N/A]") is None


# A stand-in nvidia-smi that replays the first H100 sample row (derived-query-gpu-sample.csv)
# with live timestamps at the requested -lms period, and dmon rows in dmon's recorded format.
# It is used only where no real nvidia-smi exists, to exercise the sampler's process, pty and
# clock plumbing; the parsers above are what is checked against real output.
FAKE_SMI = textwrap.dedent(
    """\
    #!{python}
    import sys, time, datetime
    args = sys.argv[1:]
    if args and args[0] == "dmon":
        print("# gpu  rxpci  txpci ")
        print("# Idx   MB/s   MB/s ")
        while True:
            print("    0   5120     12 ")
            time.sleep(0.2)
    assert "--format=csv,noheader,nounits" in args, args
    assert args[0] == "--query-gpu={fields}", args
    period = int(args[args.index("-lms") + 1]) / 1000
    while True:
        now = datetime.datetime.now().strftime("%Y/%m/%d %H:%M:%S.%f")[:-3]
        print(now + ", 0, 1234, 56, 7, 124.77, 1980, 5, 16")
        time.sleep(period)
    """
)


def _events(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


def _fake_smi_on_path(tmp_path, monkeypatch) -> None:
    """FAKE_SMI as the only nvidia-smi on PATH; skips where real NVML would mix into the replay."""
    if telemetry.Nvml.open()[0] is not None:
        pytest.skip("NVML present: the sampler would mix real NVML PCIe values into the replay")
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text(FAKE_SMI.format(python=sys.executable, fields=",".join(telemetry.SAMPLE_FIELDS)))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ.get("PATH", ""))


def test_sampler_emits_gpu_events_on_the_run_clock(tmp_path, monkeypatch) -> None:
    _fake_smi_on_path(tmp_path, monkeypatch)
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    sampler = telemetry.start_sampler(writer, clock, [0], 50)
    assert sampler is not None and sampler.capability["source"] == "nvidia-smi"
    assert sampler.capability["pcie_source"] == "nvidia-smi dmon"
    time.sleep(1.2)
    summary = sampler.stop()
    writer.close()
    events = _events(log)
    gpu = [e for e in events if e["type"] == "gpu"]
    assert len(gpu) >= 10  # 1.2 s at 50 ms, allowing for start-up
    assert summary["samples"][0] == len(gpu)
    assert all(e["source"] == "nvidia-smi" and e["index"] == 0 for e in gpu)
    assert gpu[-1]["mem_used_bytes"] == 1234 * MIB and gpu[-1]["util_pct"] == 56
    # dmon's values (MB/s) reach the samples once its first row is in.
    assert gpu[-1]["pcie_rx_bytes_per_s"] == 5_120_000_000
    assert gpu[-1]["pcie_tx_bytes_per_s"] == 12_000_000
    ts = [e["t"] for e in gpu]
    assert ts == sorted(ts)
    # t comes from nvidia-smi's own timestamp (ms resolution), so it is at or before the line's
    # arrival, which is at or before the event's seq order position in time.
    assert all(0 <= e["t"] <= clock.now() for e in gpu)
    infos = [e for e in events if e["type"] == "log" and e["level"] == "info"]
    assert any("achieved" in e["msg"] for e in infos)
    warns = [e for e in events if e["type"] == "log" and e["level"] == "warn"]
    assert any("libnvidia-ml" in e["msg"] for e in warns)  # why PCIe is only per second
    # Stopping it is no failure: nvidia-smi exits 0 on SIGTERM, which must not read as a crash
    # (the H100 smoke run showed a false "sampling stopped" warning before this was fixed).
    assert not any("sampling stopped" in e["msg"] for e in warns)
    assert summary["source"] == "nvidia-smi"


def test_no_nvidia_smi_no_nvml_degrades_with_a_reason(tmp_path, monkeypatch) -> None:
    if telemetry.Nvml.open()[0] is not None:
        pytest.skip("NVML present on this machine: cannot observe the no-NVML path")
    monkeypatch.setenv("PATH", str(tmp_path))
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    assert telemetry.start_sampler(writer, clock, [0], 100) is None
    writer.close()
    (ev,) = _events(log)
    assert ev["type"] == "log" and ev["level"] == "warn"
    assert "nvidia-smi not found" in ev["msg"] and "libnvidia-ml.so.1" in ev["msg"]
    host = telemetry.probe_host([0])
    assert host["gpus"] == [] and "nvidia-smi" in host["probe_error"]
    assert host["python_version"] and host["hostname"]


def test_available_sources_says_what_is_missing(tmp_path, monkeypatch) -> None:
    if telemetry.Nvml.open()[0] is not None:
        pytest.skip("NVML present on this machine: cannot observe the no-NVML path")
    monkeypatch.setenv("PATH", str(tmp_path))
    off = telemetry.available_sources(100)
    assert off["on"] is False and "nvidia-smi not found" in off["reason"]
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    on = telemetry.available_sources(100)
    assert on == {"on": True, "source": "nvidia-smi", "sample_ms": 100,
                  "pcie_source": "nvidia-smi dmon", "reason": ""}


def test_nvidia_smi_that_refuses_the_query_is_reported(tmp_path, monkeypatch) -> None:
    # An older driver's nvidia-smi refuses unknown fields and exits at once; the run must say so.
    if telemetry.Nvml.open()[0] is not None:
        pytest.skip("NVML present: the sampler would fall back to it instead")
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\n"
        "case \"$1\" in dmon) sleep 30;; esac\n"
        "echo 'Field \"pcie.link.gen.current\" is not a valid field to query.' >&2\nexit 2\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    sampler = telemetry.start_sampler(writer, clock, [0], 100)
    assert sampler is not None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "stopped" not in log.read_text():
        writer.flush()
        time.sleep(0.05)
    sampler.stop()
    writer.close()
    warns = [e["msg"] for e in _events(log) if e["type"] == "log" and e["level"] == "warn"]
    assert any("exit 2" in w and "not a valid field" in w and "telemetry off" in w for w in warns)


def test_h100_sampling_query_at_100ms() -> None:
    # The agent's exact sampling query, recorded on the H100 for 3 s at -lms 100.
    rows = telemetry.parse_csv_rows(read("h100-query-gpu-sample-lms100.csv"), telemetry.SAMPLE_FIELDS)
    assert len(rows) == 30
    samples = [telemetry.sample_from_row(r) for r in rows]
    assert all(why is None and ev is not None for ev, why in samples)
    first = samples[0][0]
    assert first == {"index": 0, "mem_used_bytes": 0, "util_pct": 0.0, "mem_util_pct": 0.0,
                     "power_w": 122.65, "sm_clock_mhz": 1980, "pcie_gen": 5, "pcie_width": 16}
    ts = [telemetry.parse_timestamp_ns(r["timestamp"]) for r in rows]
    gaps_ms = [(b - a) / 1e6 for a, b in zip(ts, ts[1:])]  # type: ignore[operator]
    assert statistics.median(gaps_ms) == pytest.approx(100, abs=2)  # the true rate: 10/s


def test_h100_probe_query_and_c2c() -> None:
    rows = telemetry.parse_csv_rows(read("h100-query-gpu-probe-fields.csv"), telemetry.PROBE_FIELDS)
    c2c_rows = telemetry.parse_csv_rows(read("h100-query-gpu-c2c.csv"), ("index", "c2c.mode"))
    assert telemetry.parse_c2c_mode(c2c_rows[0]["c2c.mode"]) is False
    (gpu,) = telemetry.gpus_from_probe(rows, {0: False})
    assert gpu == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-<uuid>",
                   "memory_total_bytes": 81559 * MIB, "pcie_gen": 5, "pcie_width": 16, "c2c": False}


# Replays the H100's recorded answers to the three commands probe_host runs.
FAKE_PROBE_SMI = textwrap.dedent(
    """\
    #!/bin/sh
    case "$1" in
      --query-gpu=index,c2c.mode) cat "{fix}/h100-query-gpu-c2c.csv" ;;
      --query-gpu={probe}) cat "{fix}/{probe_file}" ;;
      -q) cat "{fix}/h100-q-head120.txt" ;;
      *) echo "unexpected: $*" >&2; exit 9 ;;
    esac
    """
)


@pytest.mark.parametrize("probe_file", ["h100-query-gpu-probe-fields.csv", "derived-query-gpu-probe-na.csv"])
def test_probe_host_from_replayed_h100_answers(tmp_path, monkeypatch, probe_file) -> None:
    fake = tmp_path / "nvidia-smi"
    fake.write_text(FAKE_PROBE_SMI.format(fix=FIX, probe=",".join(telemetry.PROBE_FIELDS), probe_file=probe_file))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    host = telemetry.probe_host([0])
    assert "probe_error" not in host
    assert host["driver_version"] == "580.159.04" and host["cuda_version"] == "13.0"
    (gpu,) = host["gpus"]
    # With the query's gen/width N/A (derived file), they come from -q's PCI section.
    assert (gpu["pcie_gen"], gpu["pcie_width"], gpu["c2c"]) == (5, 16, False)
    assert host["python_version"] and host["hostname"]
    assert telemetry.probe_host([1])["gpus"] == []  # a GPU the run does not use is left out


def test_pcie_reads_can_be_turned_off(tmp_path, monkeypatch) -> None:
    # KVSCOPE_PCIE_MS=0: the other counters keep coming, no PCIe reader runs, no PCIe keys.
    _fake_smi_on_path(tmp_path, monkeypatch)
    monkeypatch.setenv("KVSCOPE_PCIE_MS", "0")
    clock = RunClock()
    log = tmp_path / "events.jsonl"
    writer = EventWriter(str(log), clock)
    sampler = telemetry.start_sampler(writer, clock, [0], 50)
    assert sampler is not None and sampler.capability["pcie_source"] is None
    time.sleep(0.6)
    sampler.stop()
    writer.close()
    gpu = [e for e in _events(log) if e["type"] == "gpu"]
    assert len(gpu) >= 4 and not any("pcie_rx_bytes_per_s" in e for e in gpu)
    assert not any("dmon" in " ".join(map(str, p.args)) for p in sampler._procs)


def test_h100_full_q_and_units_csv() -> None:
    q = read("h100-q.txt")
    assert telemetry.parse_versions(q) == {"driver_version": "580.159.04", "cuda_version": "13.0"}
    (bus, pci), = telemetry.parse_q_pci(q).items()
    assert bus == "00000000:00:06.0"
    assert (pci["pcie_gen_max"], pci["pcie_gen_current"], pci["pcie_width_max"], pci["pcie_width_current"]) == (5, 5, 16, 16)
    assert pci["tx_kb_per_s"] == 938 and pci["rx_kb_per_s"] == 569
    # With --format=csv (header, units): the header line is skipped, units are stripped.
    (row,) = telemetry.parse_csv_rows(read("h100-query-gpu-sample-units.csv"), telemetry.SAMPLE_FIELDS)
    ev, why = telemetry.sample_from_row(row)
    assert why is None and ev == {"index": 0, "mem_used_bytes": 0, "util_pct": 0.0, "mem_util_pct": 0.0,
                                  "power_w": 75.53, "sm_clock_mhz": 345, "pcie_gen": 5, "pcie_width": 16}
