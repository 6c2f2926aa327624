"""A real single-node SLURM on localhost for tests: munged, slurmctld and slurmd under one temporary folder.

Debian's slurm-wlm (tests/system_deps.sh installs it) runs as root without systemd or cgroups when configured as
below (see docs in /work/shared/reference/stack_notes.md, "A real single-node SLURM on localhost"). Everything the
daemons write (munge key and socket, state, spool, logs, pid files) stays under the base folder, and the ports are
picked free, so a test cluster never touches a system one.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "sinfo", "squeue", "scancel")


class ClusterUnavailable(RuntimeError):
    "SLURM cannot start on this machine; the message says why (the test is skipped with it)."


@dataclass
class SlurmCluster:
    "A running single-node cluster: its base folder, configuration file and daemon processes."
    base: Path
    conf: Path
    node: str
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        "The environment for client commands (`sbatch`, `scontrol`, ...): SLURM_CONF points at this cluster."
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        "Run a SLURM client command against this cluster."
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env, timeout=timeout)

    def log(self, name: str) -> str:
        path = self.base / "log" / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.is_file() else f"(no {path})"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_line(node: str) -> str:
    "The NodeName line for this machine from `slurmd -C`, with RealMemory at about 90% of what is available."
    found = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    first = next((line for line in found.splitlines() if line.startswith("NodeName=")), None)
    if not first:
        raise ClusterUnavailable(f"`slurmd -C` printed no NodeName line: {found!r}")
    fields = dict(item.split("=", 1) for item in first.split())
    available_mib = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20
    fields["RealMemory"] = str(int(min(int(fields.get("RealMemory", available_mib)), available_mib) * 0.9))
    fields.pop("NodeName")
    return f"NodeName={node} NodeAddr=127.0.0.1 " + " ".join(f"{k}={v}" for k, v in fields.items()) + " State=UNKNOWN"


def write_config(base: Path, node: str) -> Path:
    "slurm.conf for a one-node cluster on 127.0.0.1 with everything under `base`."
    conf = base / "slurm.conf"
    conf.write_text(f"""\
ClusterName=mdrtest
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={base}/munge/munge.socket
StateSaveLocation={base}/state
SlurmdSpoolDir={base}/spool
SlurmctldPidFile={base}/run/slurmctld.pid
SlurmdPidFile={base}/run/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerParameters=batch_sched_delay=0
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={base}/log/jobcomp.txt
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=300
{node_line(node)}
PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP
""")
    return conf


def _wait(what: str, check, timeout: float, cluster: SlurmCluster, log: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise ClusterUnavailable(f"{what} within {timeout:.0f} s; {log} log:\n{cluster.log(log)}")


def _start(cluster: SlurmCluster, name: str, args: list[str]):
    out = open(cluster.base / "log" / f"{name}.out", "w")  # noqa: SIM115 (the daemon writes to it while it runs)
    cluster.processes[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=cluster.env,
                                               start_new_session=True)


def start_cluster(base: Path) -> SlurmCluster:
    "Start munged, slurmctld and slurmd under `base`; returns when the node is idle and a warm-up job has run."
    missing = [name for name in DAEMONS if not shutil.which(name)]
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (run tests/system_deps.sh)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("the test cluster runs its daemons as root (SlurmUser=root)")
    base = Path(base)
    for sub in ("munge", "state", "spool", "run", "log"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)
    os.chmod(base / "munge", 0o755)  # munged refuses a socket folder others cannot read
    node = socket.gethostname().split(".")[0]
    cluster = SlurmCluster(base, write_config(base, node), node)
    try:
        key = base / "munge" / "munge.key"
        subprocess.run(["mungekey", "-c", "-k", str(key)], check=True, capture_output=True, timeout=30)
        _start(cluster, "munged", ["munged", "-F", "--force", f"--socket={base}/munge/munge.socket",
                                   f"--key-file={key}", f"--pid-file={base}/run/munged.pid",
                                   f"--log-file={base}/log/munged.log", f"--seed-file={base}/munge/munged.seed"])
        _wait("munged did not open its socket", lambda: (base / "munge" / "munge.socket").exists(), 15, cluster, "munged")
        _start(cluster, "slurmctld", ["slurmctld", "-D", "-f", str(cluster.conf)])
        _wait("slurmctld did not answer `scontrol ping`",
              lambda: "UP" in cluster.run("scontrol", "ping").stdout, 30, cluster, "slurmctld")
        _start(cluster, "slurmd", ["slurmd", "-D", "-N", node, "-f", str(cluster.conf)])
        _wait("the node did not become idle", lambda: cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle",
              30, cluster, "slurmd")
        warm = cluster.run("sbatch", "--parsable", "--wrap", "true", f"--output={base}/log/warmup.out")
        if warm.returncode:
            raise ClusterUnavailable(f"the warm-up job was refused: {warm.stderr.strip()}")
        job = warm.stdout.strip().split(";")[0]
        _wait("the warm-up job did not complete",
              lambda: "JobState=COMPLETED" in cluster.run("scontrol", "show", "job", job).stdout, 60, cluster, "slurmd")
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: SlurmCluster, timeout: float = 30):
    "Cancel every job, wait for the queue to empty, then stop slurmd, slurmctld and munged (by their PIDs)."
    if "slurmctld" in cluster.processes and cluster.processes["slurmctld"].poll() is None:
        cluster.run("scancel", "--full", "--user", "root")
        deadline = time.time() + timeout
        while time.time() < deadline and cluster.run("squeue", "-h").stdout.strip():
            time.sleep(0.5)
    for name in ("slurmd", "slurmctld", "munged"):
        process = cluster.processes.get(name)
        if process is None or process.poll() is not None:
            continue
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

