"""NVML sampling through the same code path a GPU node runs, with the stand-in module injected."""
from __future__ import annotations

import logging

import pytest

import fake_nvml
from scheduler.metrics.nvml import NvmlReader, PeakMemory, job_memory, load_module, peak_job_memory
from scheduler.metrics.sampler import _Sampler, gpu_views, nvml_nodes, NodeReport

MIB = 1 << 20


@pytest.fixture
def fake():
    fake_nvml.configure([fake_nvml.t4(0, util=73, used=5000 * MIB, power_mw=41500, procs=[(101, 3000 * MIB)]),
                         fake_nvml.t4(1, util=0, used=300 * MIB, power_mw=None, procs=[(102, None), (103, 200 * MIB)])])
    yield fake_nvml
    fake_nvml.configure()


def test_device_figures_are_converted_to_base_units(fake):
    s = NvmlReader(fake, hostname="n1", clock=lambda: 42.0).sample()
    assert (s.hostname, s.at, len(s.devices)) == ("n1", 42.0, 2)
    d0, d1 = s.devices
    assert (d0.index, d0.uuid, d0.name) == (0, "GPU-fake-0000", "Tesla T4")
    assert d0.utilisation_ratio == pytest.approx(0.73)
    assert d0.power_watts == pytest.approx(41.5)
    assert (d0.memory_used_bytes, d0.memory_total_bytes) == (5000 * MIB, 15 << 30)
    assert d1.power_watts is None  # NotSupported stays unknown, never 0
    assert d0.mig_enabled is None
    assert [(p.pid, p.used_memory_bytes) for p in d1.processes] == [(102, None), (103, 200 * MIB)]
    assert fake.CALLS["init"] == fake.CALLS["shutdown"] == 1


def test_mig_enabled_gpu_reports_mode_and_no_utilisation(fake):
    dev = fake_nvml.t4(0)
    dev["mig"] = 1
    fake.configure([dev])
    (d,) = NvmlReader(fake).sample().devices
    assert d.mig_enabled is True and d.utilisation_ratio is None


@pytest.mark.parametrize("error", ["LibraryNotFound", "DriverNotLoaded"])
def test_no_driver_logs_once_and_makes_nothing_up(fake, caplog, error):
    fake.configure([fake_nvml.t4(0)], init_error=error)
    reader = NvmlReader(fake, hostname="cpu-node")
    with caplog.at_level(logging.WARNING, logger="scheduler.metrics.nvml"):
        assert [reader.sample() for _ in range(3)] == [None, None, None]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and error in warnings[0] and "cpu-node" in warnings[0]


def test_a_gpu_lost_mid_read_gives_no_sample_and_still_shuts_down(fake):
    lost = fake_nvml.t4(1)
    lost["lost"] = True
    fake.configure([fake_nvml.t4(0), lost])
    assert NvmlReader(fake).sample() is None
    assert fake.CALLS["init"] == fake.CALLS["shutdown"] == 1


def test_module_comes_from_the_environment(monkeypatch, fake):
    monkeypatch.setenv("FAIRGPU_NVML_MODULE", "fake_nvml")
    assert load_module() is fake_nvml
    assert NvmlReader().sample().devices[0].uuid == "GPU-fake-0000"


def test_an_unimportable_module_is_the_same_as_no_driver(caplog):
    reader = NvmlReader("no_such_nvml_module_xyz")
    with caplog.at_level(logging.WARNING, logger="scheduler.metrics.nvml"):
        assert reader.sample() is None and reader.sample() is None
    assert len(caplog.records) == 1


def test_real_pynvml_on_this_machine():
    """The real library: on a node without a driver it must return None; with one, real devices."""
    import pynvml

    reader = NvmlReader(pynvml)
    s = reader.sample()
    try:
        pynvml.nvmlInit()
        has_driver = True
        pynvml.nvmlShutdown()
    except pynvml.NVMLError:
        has_driver = False
    assert (s is not None) == has_driver
    if s is not None:
        assert all(d.memory_total_bytes > 0 and d.uuid.startswith(("GPU-", "MIG-")) for d in s.devices)


def test_the_stand_in_only_defines_names_pynvml_has():
    import pynvml

    ours = {n for n in dir(fake_nvml) if n.startswith(("nvml", "NVMLError"))}
    assert ours and ours <= set(dir(pynvml))


def test_per_process_memory_is_matched_to_jobs_by_pid(fake):
    s = NvmlReader(fake).sample()
    assert job_memory(s, {101: "job-1", 103: "job-1", 102: "job-2", 999: "job-3"}) == {
        "job-1": 3200 * MIB, "job-2": 0}


def test_peak_memory_is_the_largest_over_samples(fake):
    samples = []
    for used in (100, 900, 400):
        fake.configure([fake_nvml.t4(0, procs=[(7, used * MIB), (8, 50 * MIB)])])
        samples.append(NvmlReader(fake).sample())
    assert peak_job_memory(samples, {7: "a", 8: "b"}) == {"a": 900 * MIB, "b": 50 * MIB}
    tracker = PeakMemory()
    tracker.update({"a": 5})
    tracker.update({"a": 3})
    assert tracker.pop("a") == 5 and tracker.pop("a") is None


def test_sampler_body_and_views(fake):
    body = _Sampler(fake, hostname="n1")
    assert body.job_memory({101: 9}) == {9: 3000 * MIB}
    reports = [NodeReport("id1", "n1", body.sample()), NodeReport("id2", "n2", None), NodeReport("id3", None, None, ok=False)]
    views = gpu_views(reports)
    assert [(g.hostname, g.index, g.model_name) for g in views] == [("n1", 0, "Tesla T4"), ("n1", 1, "Tesla T4")]
    assert views[1].power_watts is None
    assert nvml_nodes(reports) == {"n1": True, "n2": False, "id3": False}
