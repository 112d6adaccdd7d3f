"""benchlib.py — what the benchmark scripts (gpt2_bench.py, scrub_bench.py)
share: running commands, long-lived peer processes (Worker), reading the peak
probe's fields, waiting for a quiet machine, OpenBLAS's thread count, and
writing a script's own section of bench/RESULTS.md. Import it before anything
changes os.environ: CHILD_ENV is the caller's environment, which the circc
programs and probes run with."""
import atexit
import ctypes
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

CHILD_ENV = dict(os.environ)


def log(msg):
    print(msg, flush=True)


def die(msg):
    print(f"{os.path.splitext(os.path.basename(sys.argv[0]))[0]}: error: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def run(cmd, env=None, **kw):
    p = subprocess.run(cmd, env=env or CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)
    if p.returncode != 0:
        die(f"{' '.join(cmd)} exited with {p.returncode}:\n{p.stdout}")
    return p.stdout


def field(key, text):
    m = re.search(rf"\b{key}=([0-9.eE+-]+)", text)
    return float(m.group(1)) if m else None


def med(xs):
    return statistics.median(xs)


def openblas():
    """The OpenBLAS torch uses (already loaded, so dlopen returns it), or None."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0")
        lib.openblas_get_config.restype = ctypes.c_char_p
        lib.openblas_get_corename.restype = ctypes.c_char_p
        return lib
    except (OSError, AttributeError):
        return None


def set_torch_threads(torch, n):
    torch.set_num_threads(n)
    ob = openblas()
    if ob is not None:
        ob.openblas_set_num_threads(n)


class Worker:
    """A long-lived child process that answers each JSON line on its stdin with
    one JSON line on its stdout (a peer that keeps its model loaded between
    rounds). It is stopped (SIGSTOP) between requests, so that its idle
    threads, spinning ones too, take no CPU from what runs meanwhile."""

    def __init__(self, name, cmd, env):
        self.name = name
        self.p = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        atexit.register(self.kill)  # die() must not leave a stopped worker behind

    def ask(self, req):
        os.kill(self.p.pid, signal.SIGCONT)
        try:
            self.p.stdin.write(json.dumps(req) + "\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            pass  # it exited: readline says so
        line = self.p.stdout.readline()
        if not line:
            die(f"{self.name} exited with {self.p.wait()} on the request {req}")
        os.kill(self.p.pid, signal.SIGSTOP)
        out = json.loads(line)
        if "error" in out:
            die(f"{self.name}: {out['error']}")
        return out

    def close(self):
        os.kill(self.p.pid, signal.SIGCONT)
        self.p.stdin.close()
        self.p.wait()

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def cpu_seconds(pid):
    """User + system time of a live process (all its threads), in s."""
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rpartition(")")[2].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime: fields 14, 15


class CpuMeter:
    """CPU time other processes used since start(), in cores: the machine's
    busy time (/proc/stat) minus this process's, its waited-for children's and
    its workers' (pids: the Worker processes, not waited for until the end)."""

    def __init__(self, pids=()):
        self.pids = list(pids)

    def start(self):
        self.t, self.busy, self.own = time.time(), self.machine_busy(), self.own_time()

    def others(self):
        dt = time.time() - self.t
        return max(0.0, (self.machine_busy() - self.busy - (self.own_time() - self.own)) / dt)

    @staticmethod
    def machine_busy():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait

    def own_time(self):
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system + sum(cpu_seconds(p) for p in self.pids)


def wait_quiet(args):
    """Waits (within the --quiet-wait budget, args.quiet_budget seconds) for a
    second in which other processes use less than half a core, so fewer rounds
    share the machine."""
    m = CpuMeter()
    while args.quiet_budget > 0:
        m.start()
        time.sleep(1)
        if m.others() < 0.5:
            return
        args.quiet_budget -= 1


def write_section(path, name, body):
    """Replaces the section between `<!-- NAME: begin -->` and `<!-- NAME: end -->`
    of path (appends it if absent) with the lines of body, atomically."""
    begin, end = f"<!-- {name}: begin -->", f"<!-- {name}: end -->"
    section = "\n".join([begin] + body + [end]) + "\n"
    try:
        text = open(path).read()
    except OSError:
        text = "# circc benchmark results\n\n"
    if begin in text and end in text:
        a, b = text.index(begin), text.index(end) + len(end)
        text = text[:a] + section.rstrip("\n") + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
