#!/usr/bin/env python3
"""Writes a synthetic inventory (the JSON `ecs-xds discover --json` prints) for load tests:
SERVICES ECS services named service-0000... with TASKS tasks each over three zones.

    scripts/gen-inventory.py --services 1000 --tasks 10 > inventory.json

The addresses are data only (nothing connects to them): 127.x loopback addresses.
"""
import argparse
import json

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--services", type=int, default=1000)
p.add_argument("--tasks", type=int, default=10, help="tasks per service")
p.add_argument("--weighted", action="store_true",
               help="tasks alternate between revisions 7 and 8 and every service splits 90/10 "
                    "between them, with a 2 s timeout and 2 retries (the traffic-policy load)")
args = p.parse_args()

clusters = {}
for s in range(args.services):
    name = f"service-{s:04d}"
    endpoints = []
    for t in range(args.tasks):
        n = s * args.tasks + t
        endpoints.append({
            "address": f"127.{1 + n // 65536 % 250}.{n // 256 % 256}.{n % 256}",
            "port": 8080,
            "health": "healthy",
            "locality": {"region": "us-east-1", "zone": f"us-east-1{'abc'[t % 3]}"},
            "weight": 1,
            "id": f"task-{n:06d}",
            "revision": 7 + (t % 2 if args.weighted else 0),
        })
    clusters[name] = {
        "name": name,
        "source": {"kind": "ecs", "ecs_cluster": "prod", "service": name},
        "endpoints": endpoints,
    }
    if args.weighted:
        clusters[name]["route"] = {
            "timeout": "2s",
            "retries": 2,
            "weights": [{"revision": 8, "weight": 10}, {"revision": 7, "weight": 90}],
        }
print(json.dumps({"clusters": clusters}))
