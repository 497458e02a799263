"""CPU threads of a run (difface.threads): the rule, the user's own variables, `--threads`, passive waiting."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from difface import cli, threads
from difface.commands.options import FLAGS
from difface.config import ModelOptions, OptionError, say_options

ASTRONAUT = Path(__file__).resolve().parents[1] / "examples" / "astronaut_lq.png"


def test_the_rule_is_usable_cores_less_busy_ones_never_below_one():
    assert threads.auto_threads(2, 0) == 2
    assert threads.auto_threads(2, 1) == 1
    assert threads.auto_threads(2, 7) == 1
    assert threads.auto_threads(16, 3) == 13
    assert threads.auto_threads(8, None) == 8  # busy unknown (no /proc/loadavg): every usable core


def test_running_count_from_loadavg(tmp_path):
    f = tmp_path / "loadavg"
    f.write_text("7.50 5.10 2.20 4/149 17931\n")
    assert threads.running_others(samples=3, interval=0, path=str(f)) == 3  # less the reading thread itself
    f.write_text("0.00 0.00 0.00 1/80 5\n")
    assert threads.running_others(samples=1, path=str(f)) == 0
    assert threads.running_others(path=str(tmp_path / "absent")) is None
    f.write_text("garbage\n")
    assert threads.running_others(samples=1, path=str(f)) is None


def test_cgroup_quota_rounds_up_and_max_means_none(tmp_path):
    f = tmp_path / "cpu.max"
    f.write_text("150000 100000\n")
    assert threads.cgroup_cpu_quota(str(f)) == 2
    f.write_text("50000 100000\n")
    assert threads.cgroup_cpu_quota(str(f)) == 1
    f.write_text("max 100000\n")
    assert threads.cgroup_cpu_quota(str(f)) is None
    assert threads.cgroup_cpu_quota(str(tmp_path / "absent")) is None


def test_given_count_then_the_users_omp_num_threads_then_the_rule():
    usable = threads.usable_cores()
    assert usable >= 1
    c = threads.choose(3, env={"OMP_NUM_THREADS": "1"})
    assert (c.threads, c.source) == (3, "given")
    c = threads.choose(0, env={"OMP_NUM_THREADS": "5"})
    assert (c.threads, c.source) == (5, "OMP_NUM_THREADS")
    c = threads.choose(0, env={"OMP_NUM_THREADS": "nonsense"})
    assert c.source == "auto" and 1 <= c.threads <= usable
    assert c.threads == threads.auto_threads(usable, c.busy)
    line = say_options(c.line(env={"OMP_WAIT_POLICY": "PASSIVE"}), FLAGS)
    assert line.startswith(f"CPU threads: {c.threads} ({usable} usable core(s)") and "wait passive" in line
    assert "--threads" in say_options(threads.choose(2, env={}).line(env={}), FLAGS)


@pytest.mark.skipif(not Path("/proc/loadavg").exists(), reason="the running count is read from /proc/loadavg")
def test_a_busy_program_beside_counts_as_busy():
    """A CPU-bound process is running or waiting for a core at every reading, so the rule leaves it its core."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert threads.running_others() >= 1
        c = threads.choose(0, env={})
        assert c.threads <= max(1, threads.usable_cores() - 1)
    finally:
        busy.kill()
        busy.wait()


def test_wait_policy_is_passive_unless_the_user_set_one_or_torch_is_loaded():
    env = {"OMP_WAIT_POLICY": "active"}
    assert not threads.prepare_environment(env)
    assert env == {"OMP_WAIT_POLICY": "active"} and not threads.passive(env)
    env = {}
    assert not threads.prepare_environment(env)  # torch (and its OpenMP runtime) is loaded in this process
    assert env == {} and not threads.passive(env)
    assert threads.passive({"OMP_WAIT_POLICY": "passive"})


def test_the_cli_sets_the_wait_policy_before_any_command_imports_torch():
    code = ("import os, sys; from difface import cli; status = cli.main([]); "
            "print(status, os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.split()[-3:] == ["2", "PASSIVE", "False"]  # the help: no command ran, no torch loaded


def test_difface_threads_imports_no_torch():
    code = "import sys, difface.threads, difface.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_threads_option_is_checked():
    assert ModelOptions(threads=4).threads == 4
    for bad in (-1, 1.5, "2", True):
        with pytest.raises(OptionError) as e:
            ModelOptions(threads=bad)
        assert e.value.option == "threads"


def test_restore_uses_the_given_threads_says_so_and_leaves_torchs_count(tmp_path, capsys):
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    status = cli.main(["restore", str(ASTRONAUT), "-o", str(tmp_path / "o"), "--aligned", "--start-step", "0",
                       "--threads", str(other), "--backend", "torch"])
    assert status == 0 and (tmp_path / "o" / "astronaut_lq.png").is_file()
    err = capsys.readouterr().err
    assert f"CPU threads: {other} (--threads;" in err
    assert torch.get_num_threads() == before


def test_restore_threads_flag_takes_auto_and_refuses_negative(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["restore", str(ASTRONAUT), "-o", str(tmp_path / "o"), "--threads", "-2"])
    assert e.value.code == 2 and "--threads" in capsys.readouterr().err
    parsed = cli.build_parser().parse_args(["restore", "x.png", "-o", "o", "--threads", "auto"])
    assert parsed.threads == 0
