"""Measurements that produce committed result files: latency, merge exactness."""
