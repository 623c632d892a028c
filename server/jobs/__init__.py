"""Durable background jobs: see `server/jobs/queue.py`."""

from server.jobs.queue import JobContext, JobQueue, backoff_seconds, job

__all__ = ["JobContext", "JobQueue", "backoff_seconds", "job"]
