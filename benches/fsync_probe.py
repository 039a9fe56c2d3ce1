"""What one fsync of this disk costs: the floor under any durable answer.

    python3 benches/fsync_probe.py [DIR] [-n N]

Appends a small record to a temporary file in DIR (default: the current
directory) and fsyncs it, N times (default 2000), then prints
`SUMMARY fsync dir=DIR n=N p50_us=.. p99_us=..`. Standard library only.
"""

import argparse
import math
import os
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "dir", nargs="?", default=".", help="directory of the disk to probe"
    )
    parser.add_argument("-n", type=int, default=2000, help="number of fsyncs")
    args = parser.parse_args()
    if args.n < 1:
        parser.error("-n must be at least 1")

    record = b"x" * 63 + b"\n"
    times = []
    fd, path = tempfile.mkstemp(prefix="fsync_probe.", dir=args.dir)
    try:
        for _ in range(args.n):
            os.write(fd, record)
            start = time.perf_counter_ns()
            os.fsync(fd)
            times.append((time.perf_counter_ns() - start) // 1000)
    finally:
        os.close(fd)
        os.unlink(path)

    times.sort()

    def pct(q: float) -> int:
        return times[math.ceil(q * len(times)) - 1]  # nearest rank

    print(
        f"SUMMARY fsync dir={args.dir} n={args.n} p50_us={pct(0.50)} p99_us={pct(0.99)}"
    )


if __name__ == "__main__":
    main()
