#!/usr/bin/env python3
"""The soak: the whole stack (scripts/stack.py) under steady load for a long time with nobody
scraping /metrics, sampling every process's memory, descriptors and threads and the data
directory's size, then reporting what grew per million requests.

    scripts/soak [--minutes 10] [--interval 30] [--no-faults]     # release builds, the long version

1. Calibrate: 10 s at 64 concurrent clients through the gateway (two-row predictions) gives
   the stack's maximum here; the soak runs open loop at --load (default 70%) of it.
2. Soak: every --interval seconds, each process's RSS, peak RSS, open descriptors and threads,
   and the sizes of the logger's spool, its retired history and sagemaker-local's records and
   offline store. The first --warmup seconds are warm-up; growth is measured from the last
   sample before it ends.
3. Faults (the long version, unless --no-faults): one logger SIGKILL (restarted on the same
   address 2 s later) at 40% of the run, and one 30 s cut of the feature store (a proxy in
   front of it) at 60%.
4. After the load: wait until the logger's spool is shipped, take a last sample, and check
   that every answered interaction is in the feature store with the prediction the client
   got (`loadgen verify`).

Nothing reads /metrics until the load is over and the last sample is taken: the point is a
stack that nobody scrapes. Prints a table and, with --report FILE, writes the figures as JSON.
"""
import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from stack import Stack, metric  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "python"))
from faults import CuttableProxy  # noqa: E402

BODY = json.dumps({"instances": [[63, 40, 29.01, 0, 4, 0, 2, 1], [53, 66, 92.71, 3, 3, 1, 1, 0]]})
ROWS_PER_REQUEST = 2


def proc_status(pid):
    """RSS and peak RSS in MB, and threads, from /proc/PID/status; open descriptors."""
    fields = {}
    for line in open(f"/proc/{pid}/status"):
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return {
        "rss_mb": int(fields["VmRSS"][0]) / 1024,
        # The heap and other private memory: RSS without the binary's pages, which a debug
        # build touches for a while as new code paths run.
        "anon_mb": int(fields["RssAnon"][0]) / 1024,
        "peak_mb": int(fields["VmHWM"][0]) / 1024,
        "threads": int(fields["Threads"][0]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def theil_sen(points):
    """The median of the slopes between every two points: a trend that one outlier (a burst
    of in-flight requests, a page-cache fill) does not make."""
    slopes = sorted((b[1] - a[1]) / (b[0] - a[0]) for i, a in enumerate(points) for b in points[i + 1:] if b[0] > a[0])
    if not slopes:
        return 0.0
    mid = len(slopes) // 2
    return slopes[mid] if len(slopes) % 2 else (slopes[mid - 1] + slopes[mid]) / 2


def tree_mb(path):
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass  # removed while walking (a shipped spool, a flushed queue)
    return total / (1 << 20)


def disk(data_dir):
    """The data directory's parts that could grow, in MB."""
    sm = os.path.join(data_dir, "sagemaker-local")
    spool = os.path.join(data_dir, "interaction-logger")
    return {
        "logger_spool_mb": tree_mb(spool),
        "logger_retired_history_mb": tree_mb(os.path.join(spool, "retired")),
        "sagemaker_records_mb": sum(os.path.getsize(os.path.join(sm, f)) for f in os.listdir(sm)
                                    if os.path.isfile(os.path.join(sm, f))) / (1 << 20),
        "sagemaker_offline_store_mb": tree_mb(os.path.join(sm, "s3")),
        "stack_log_mb": os.path.getsize(os.path.join(data_dir, "stack.log")) / (1 << 20)
        if os.path.exists(os.path.join(data_dir, "stack.log")) else 0.0,
    }


def loadgen_cmd(bin_dir, url, seconds, rate=None, concurrency=64, answers=None):
    cmd = [os.path.join(bin_dir, "loadgen"), "http", "--url", url + "/v1/predict", "--body", BODY,
           "--seconds", str(seconds), "--concurrency", str(concurrency)]
    if rate:
        # In-flight requests bounded as the calibration's clients were: a stall of the
        # machine shows as latency, not as memory held by a pile of open requests.
        cmd += ["--rate", str(rate), "--max-in-flight", str(concurrency)]
    if answers:
        cmd += ["--answers", answers]
    return cmd


class Soak:
    def __init__(self, bin_dir, data_dir, seconds, interval=30.0, warmup=60.0, load=0.7, faults=True,
                 progress=print, log=None, min_requests=0):
        self.bin_dir, self.data_dir = str(bin_dir), str(data_dir)
        self.seconds, self.interval, self.warmup, self.load, self.faults = seconds, interval, warmup, load, faults
        # Growth per million requests is only as good as the requests behind it: on a slow machine
        # the soak runs longer until the load after the warm-up reaches this many.
        self.min_requests = min_requests
        self.progress = progress
        self.log = log
        self.samples = []  # (t, {process: status}, disk)
        self.events = []

    def sample(self, t):
        procs = {}
        for svc in self.stack.services:
            if svc.proc.poll() is None:
                try:
                    procs[svc.name] = dict(proc_status(svc.proc.pid), pid=svc.proc.pid)
                except OSError:
                    pass  # exited between the poll and the read (the killed logger)
        self.samples.append((t, procs, disk(self.data_dir)))

    def run(self):
        log = self.log or open(os.path.join(self.data_dir, "stack.log"), "w")
        self.stack = Stack(self.bin_dir, self.data_dir, log=log, pipeline=True)
        proxy = None
        try:
            if self.faults:
                proxy = self._logger_behind_proxy()
            env = self.stack.aws_env
            self.progress(f"[soak] calibrating: 10 s at 64 concurrent clients through {self.stack.url}")
            out = subprocess.run(loadgen_cmd(self.bin_dir, self.stack.url, 10), env=env, capture_output=True,
                                 text=True, check=True)
            calibration = json.loads(out.stdout.strip().splitlines()[-1])
            rate = max(10.0, round(calibration["rps"] * self.load))
            needed = self.warmup + self.min_requests / rate
            if needed > self.seconds:
                self.progress(f"[soak] {self.seconds:.0f} s at {rate:.0f} req/s is under {self.min_requests} requests "
                              f"after the warm-up: soaking {needed:.0f} s instead")
                self.seconds = float(round(needed))
            self.progress(f"[soak] maximum {calibration['rps']:.0f} req/s; soaking at {rate:.0f} req/s "
                          f"({self.load:.0%}) for {self.seconds:.0f} s, a sample every {self.interval:.0f} s")
            self._wait_drained()
            answers = os.path.join(self.data_dir, "answers.csv")
            started = time.time()
            load = subprocess.Popen(loadgen_cmd(self.bin_dir, self.stack.url, self.seconds, rate=rate,
                                                answers=answers),
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            schedule = self._fault_schedule(proxy) if self.faults else []
            self.sample(0.0)
            next_sample = self.interval
            while load.poll() is None:
                t = time.time() - started
                while schedule and t >= schedule[0][0]:
                    _, name, action = schedule.pop(0)
                    self.progress(f"[soak] {t:.0f} s: {name}")
                    self.events.append((round(t, 1), name))
                    action()
                if t >= next_sample:
                    self.sample(t)
                    last = self.samples[-1][1]
                    self.progress(f"[soak] {t:.0f} s: " + ", ".join(
                        f"{n} {s['rss_mb']:.1f} MB" for n, s in last.items()))
                    next_sample += self.interval
                time.sleep(0.2)
            stdout, stderr = load.communicate()
            if load.returncode != 0:
                raise RuntimeError(f"loadgen failed ({load.returncode}): {stderr}")
            result = json.loads(stdout.strip().splitlines()[-1])
            elapsed = time.time() - started
            self.progress(f"[soak] load done: {result['requests']} requests, {result['errors']} errors, "
                          f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms; waiting for the spool to ship")
            drained = self._wait_drained()
            self.sample(elapsed)
            self.progress(f"[soak] spool shipped in {drained:.1f} s; checking every answered interaction is stored")
            check = subprocess.run([os.path.join(self.bin_dir, "loadgen"), "verify", "--answers", answers,
                                    "--feature-group", "my-mlops-user-interactions-v1"],
                                   env=env, capture_output=True, text=True)
            verified = json.loads(check.stdout.strip().splitlines()[-1]) if check.stdout.strip() else {
                "error": check.stderr}
            verified["ok"] = check.returncode == 0
            return self._report(calibration, rate, result, verified, drained)
        finally:
            codes = self.stack.stop()
            self.exit_codes = codes
            if self.log is None:
                log.close()

    def _logger_behind_proxy(self):
        """The logger reaches the feature store through a proxy the soak can cut."""
        host, port = self.stack.sagemaker.addrs["http"].rsplit(":", 1)
        proxy = CuttableProxy(host, int(port))
        logger = self.stack.logger
        self.logger_args = ["--listen", logger.addrs["grpc"], "--admin-listen", logger.addrs["admin"],
                            "--spool-dir", os.path.join(self.data_dir, "interaction-logger")]
        logger.stop()
        logger.env = dict(logger.env, AWS_ENDPOINT_URL_SAGEMAKER_FEATURESTORE_RUNTIME=proxy.url)
        self.stack.restart(logger, self.logger_args)
        return proxy

    def _fault_schedule(self, proxy):
        logger = self.stack.logger

        def kill_and_restart():
            logger.kill()
            time.sleep(2.0)
            self.stack.restart(logger, self.logger_args)

        def cut():
            proxy.down()
            threading.Timer(30.0, proxy.up).start()

        return [(0.4 * self.seconds, "SIGKILL the interaction-logger, restart it 2 s later", kill_and_restart),
                (0.6 * self.seconds, "cut the feature store for 30 s", cut)]

    def _wait_drained(self, timeout=600):
        """Until the logger's spool and the gateway's retry buffer are empty; seconds taken."""
        started = time.time()
        logger = f"http://{self.stack.logger.addrs['admin']}/metrics"
        while time.time() - started < timeout:
            try:
                if metric(logger, "logger_spool_depth") == 0 and \
                        metric(self.stack.url + "/metrics", "gateway_interactions_buffered") == 0:
                    return time.time() - started
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the spool was not shipped within {timeout} s")

    def _report(self, calibration, rate, result, verified, drained):
        base = [s for s in self.samples if s[0] <= self.warmup][-1]
        end = self.samples[-1]
        requests_after = rate * (end[0] - base[0]) if end[0] > base[0] else 0
        processes = {}
        for name, last in end[1].items():
            # A process restarted during the soak (the killed logger) is measured from its
            # own first sample after warm-up.
            mine = [s for s in self.samples if name in s[1] and s[1][name]["pid"] == last["pid"]]
            base_t = max(base[0], mine[0][0])
            first = [s for s in mine if s[0] >= base_t][0][1][name]
            after = [(s[0], s[1][name]["rss_mb"]) for s in mine if s[0] >= base_t]
            start_rss = min(v for _, v in after)
            # MB per second of load -> MB per million requests at the soak's rate
            slope = theil_sen(after) / rate * 1e6 if rate else None
            processes[name] = {
                "restarted": mine[0][0] > 0,
                "rss_start_mb": round(first["rss_mb"], 1), "rss_end_mb": round(last["rss_mb"], 1),
                "rss_min_after_warmup_mb": round(start_rss, 1),
                "rss_max_mb": round(max(s[1][name]["rss_mb"] for s in self.samples if name in s[1]), 1),
                "rss_growth_mb": round(last["rss_mb"] - first["rss_mb"], 2),
                "rss_growth_mb_per_million": round((last["rss_mb"] - first["rss_mb"]) / (rate * (end[0] - base_t)) * 1e6, 2)
                if end[0] > base_t else None,
                "rss_trend_mb_per_million": round(slope, 2) if slope is not None else None,
                "fds_start": first["fds"], "fds_end": last["fds"],
                "threads_start": first["threads"], "threads_end": last["threads"],
            }
        disk_growth = {k: round(end[2][k] - base[2][k], 2) for k in end[2]}
        return {
            "seconds": self.seconds, "interval": self.interval, "warmup": self.warmup,
            "calibration_rps": round(calibration["rps"], 1), "rate": rate,
            "requests": result["requests"], "errors": result["errors"],
            "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "requests_after_warmup": round(requests_after),
            "events": self.events, "drain_seconds": round(drained, 1),
            "processes": processes,
            "disk_start_mb": {k: round(v, 2) for k, v in base[2].items()},
            "disk_end_mb": {k: round(v, 2) for k, v in end[2].items()},
            "disk_growth_mb": disk_growth,
            "disk_growth_mb_per_million": {k: round(v / requests_after * 1e6, 2) if requests_after else None
                                           for k, v in disk_growth.items()},
            "verified": verified,
            "samples": [{"t": round(t, 1), "processes": p, "disk": d} for t, p, d in self.samples],
        }


def table(report):
    lines = [f"{report['requests']} requests at {report['rate']:.0f}/s ({report['seconds']:.0f} s; "
             f"maximum {report['calibration_rps']:.0f}/s), {report['errors']} errors; warm-up {report['warmup']:.0f} s, "
             f"then {report['requests_after_warmup']} requests",
             "| process | RSS after warm-up MB | end MB | max MB | growth MB | per million requests MB | trend MB per million | fds | threads |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, p in report["processes"].items():
        lines.append(f"| {name} | {p['rss_start_mb']} | {p['rss_end_mb']} | {p['rss_max_mb']} | {p['rss_growth_mb']} | "
                     f"{p['rss_growth_mb_per_million']} | {p['rss_trend_mb_per_million']} | {p['fds_start']} -> {p['fds_end']} | "
                     f"{p['threads_start']} -> {p['threads_end']} |")
    lines += ["| disk | after warm-up MB | end MB | growth MB | per million requests MB |", "|---|---|---|---|---|"]
    for k, v in report["disk_end_mb"].items():
        lines.append(f"| {k} | {report['disk_start_mb'][k]} | {v} | {report['disk_growth_mb'][k]} | "
                     f"{report['disk_growth_mb_per_million'][k]} |")
    v = report["verified"]
    lines.append(f"events: {report['events'] or 'none'}; spool shipped {report['drain_seconds']} s after the load; "
                 f"answered interactions in the feature store: {v.get('found')} of {v.get('answers')} "
                 f"(missing {v.get('missing')}, mismatched {v.get('mismatched')})")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--data-dir", help="default: a new temporary folder")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--interval", type=float, default=30.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds of warm-up before growth is measured")
    ap.add_argument("--load", type=float, default=0.7, help="share of the calibrated maximum")
    ap.add_argument("--min-requests", type=int, default=0,
                    help="run longer than --minutes if needed so this many requests follow the warm-up")
    ap.add_argument("--no-faults", action="store_true", help="no logger SIGKILL and no feature-store cut")
    ap.add_argument("--report", help="write the figures as JSON here")
    args = ap.parse_args()
    data = args.data_dir or tempfile.mkdtemp(prefix="mlops-soak-")
    os.makedirs(data, exist_ok=True)
    soak = Soak(args.bin_dir, data, args.minutes * 60, interval=args.interval, warmup=args.warmup,
                load=args.load, faults=not args.no_faults, min_requests=args.min_requests,
                progress=lambda m: print(m, flush=True))
    report = soak.run()
    print(table(report))
    if args.report:
        with open(args.report, "w") as f:
            json.dump(report, f, indent=1)
    ok = report["verified"]["ok"] and all(c == 0 for c in soak.exit_codes.values())
    print("exit codes after SIGTERM:", soak.exit_codes)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
