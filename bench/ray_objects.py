"""Ray's counterparts of lumen's object rows (`examples/microbenchmark.rs`, rows `lumen: ...`).

Same timing as Ray's `ray microbenchmark` (and lumen's): a warm-up, then timed rounds; prints
`NAME per second MEAN +- STD`. A numpy array stands for `Buffer<u8>` (Ray reads it zero-copy
from its store); `bytes` for `Vec<u8>` (a serialized value, copied on read).

    /tmp/raypeer-mb/bin/python bench/ray_objects.py [--rounds 4] [--seconds 2] [--two-nodes]

`--two-nodes` starts a head with no CPUs and a second node with the machine's CPUs
(`ray.cluster_utils.Cluster`), so the task row moves the array from one node's store to the
other's, as lumen's `--two-nodes`.
"""
import argparse
import time

import numpy as np
import ray

MIB = 1024 * 1024


def timeit(name, op, per_call, rounds, seconds):
    warm = time.perf_counter()
    while time.perf_counter() - warm < seconds / 2:
        op()
    rates = []
    for _ in range(rounds):
        start = time.perf_counter()
        calls = 0
        while time.perf_counter() - start < seconds:
            op()
            calls += 1
        rates.append(calls * per_call / (time.perf_counter() - start))
    mean = sum(rates) / len(rates)
    std = (sum((r - mean) ** 2 for r in rates) / len(rates)) ** 0.5
    print(f"{name} per second {mean:.2f} +- {std:.2f}", flush=True)


@ray.remote
def array_len(a):
    return len(a)


@ray.remote
def fresh_buffer(n):
    return np.ones(n, dtype=np.uint8)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--two-nodes", action="store_true")
    args = p.parse_args()
    if args.two_nodes:
        from ray.cluster_utils import Cluster

        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        cluster.add_node(num_cpus=2)
        ray.init(address=cluster.address)
        prefix = "2n: "
    else:
        # Loopback: the machine's own address may not be reachable from itself.
        ray.init(_node_ip_address="127.0.0.1")
        prefix = ""
    r, s = args.rounds, args.seconds
    as_bytes = ray.put(np.ones(100 * MIB, dtype=np.uint8).tobytes())
    timeit(prefix + "lumen: 100 MiB object to a task gigabytes",
           lambda: ray.get(array_len.remote(as_bytes)), 0.1048576, r, s)
    del as_bytes
    big = ray.put(np.ones(100 * MIB, dtype=np.uint8))
    timeit(prefix + "lumen: 100 MiB Buffer to a task gigabytes",
           lambda: ray.get(array_len.remote(big)), 0.1048576, r, s)
    timeit(prefix + "lumen: get 100 MiB Buffer gigabytes",
           lambda: len(ray.get(big)), 0.1048576, r, s)
    del big
    timeit(prefix + "lumen: 100 MiB result pulled by the driver gigabytes",
           lambda: len(ray.get(fresh_buffer.remote(100 * MIB))), 0.1048576, r, s)
    arr = np.ones(100 * MIB, dtype=np.uint8)
    timeit(prefix + "lumen: put 100 MiB Buffer gigabytes", lambda: ray.put(arr), 0.1048576, r, s)
    as_bytes = ray.put(arr.tobytes())
    timeit(prefix + "lumen: get 100 MiB Vec<u8> gigabytes",
           lambda: len(ray.get(as_bytes)), 0.1048576, r, s)
    del as_bytes
    small = np.ones(MIB, dtype=np.uint8)
    small_bytes = small.tobytes()
    timeit(prefix + "lumen: put 1 MiB Buffer", lambda: ray.put(small), 1.0, r, s)
    timeit(prefix + "lumen: put 1 MiB Vec<u8>", lambda: ray.put(small_bytes), 1.0, r, s)
    buf_ref, bytes_ref = ray.put(small), ray.put(small_bytes)
    timeit(prefix + "lumen: get 1 MiB Buffer", lambda: len(ray.get(buf_ref)), 1.0, r, s)
    timeit(prefix + "lumen: get 1 MiB Vec<u8>", lambda: len(ray.get(bytes_ref)), 1.0, r, s)
    ray.shutdown()


if __name__ == "__main__":
    main()
