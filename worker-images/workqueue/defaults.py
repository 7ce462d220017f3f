"""Tunables shared by the seeder, the workers and the chart's defaults."""

LEASE_SECONDS = 60.0
"""How long a leased item stays reserved without a heartbeat, in seconds."""

HEARTBEAT_FRACTION = 3
"""Heartbeats per lease period: leases are renewed every LEASE_SECONDS / HEARTBEAT_FRACTION s."""

BATCH_SIZE = 100
"""The most items leased per round trip in fine mode (Redis batch, RabbitMQ prefetch)."""

BATCH_SECONDS = 1.0
"""A fine-mode worker leases about this many seconds of work at once (judged by its last
batch), up to BATCH_SIZE items: fast items in batches, slow ones one by one. A crash re-runs at
most that much work. 0: always lease BATCH_SIZE items."""

MAX_ATTEMPTS = 3
"""Runs of one item before it is dead-lettered, counting the first."""

RETRY_DELAY_SECONDS = 0.0
"""Wait before the first retry of a failed item, in seconds; each later retry waits twice as
long (with jitter) up to RETRY_DELAY_MAX_SECONDS. 0: retry at once. The chart sets 10."""

RETRY_DELAY_MAX_SECONDS = 300.0
"""Longest wait before a retry, in seconds."""

SEED_BATCH_SIZE = 1000
"""Tasks written to the broker per atomic seeding step."""

SEED_BATCH_MAX_CHARS = 4 * 1024 * 1024
"""A seeding step also ends once its tasks hold this many characters, to bound the seeder's
memory when tasks are large."""

POLL_SECONDS = 1.0
"""Wait between checks while the queue is empty but not drained, in seconds."""

GRACE_SECONDS = 20.0
"""After SIGTERM, how long the running item may go on before it is stopped and given back, in
seconds. Keep it below the pod's terminationGracePeriodSeconds (30 by default)."""

CONNECT_TIMEOUT_SECONDS = 300.0
"""How long to keep retrying an unreachable broker before giving up, in seconds. Pods may start
before the broker is ready, so this is generous."""

INTERACTIVE_WAIT_SECONDS = 10.0
"""How long status, report and the other commands a person runs wait for an unreachable
broker before they say so (--connect-timeout waits longer)."""

OUTAGE_SECONDS = 900.0
"""How long a worker keeps retrying a broker it had reached, in seconds: long enough for a
broker pod to be rescheduled, its volume re-attached and its image pulled."""

SEED_TIMEOUT_SECONDS = 900.0
"""How long an idle worker waits for seeding to complete before it gives up, in seconds."""

WAIT_LOG_SECONDS = 30.0
"""While a worker waits (for the seeder, or for items other workers hold), one log line this
often."""

MAX_PAYLOAD_BYTES = 256 * 1024
"""Largest task payload, in bytes of UTF-8. Larger inputs belong in object storage; pass a
reference instead."""

QUEUE_NAME = "tasks"
"""Queue name used when none is given; the chart passes the release's name."""

LOCAL_WORKERS_PER_CPU = 8
"""run-local's bound on --parallelism, per CPU: its workers are processes of this machine, and
they mostly wait on their commands, so a few per CPU keep it busy without crowding it out."""

METRICS_REPORT_SECONDS = 60.0
"""`workqueue exporter`: seconds between two reads of the per-task report (the counts are read
at every scrape)."""

METRICS_BROKER_WAIT_SECONDS = 5.0
"""`workqueue exporter`: how long a scrape waits for a broker that does not answer before it
reports workqueue_broker_up 0 (Prometheus gives a scrape 10 s by default)."""

DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                    600.0, 1800.0, 3600.0)
"""Upper bounds of the task run-time histograms (exporter and workers), in seconds."""
