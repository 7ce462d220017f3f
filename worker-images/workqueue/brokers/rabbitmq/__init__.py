"""RabbitMQ broker: the queue-wide calls (broker.py), one worker's consumer (consumer.py), the
per-task report (records.py), connections that come back (connection.py), message formats
(messages.py).

Queues, all durable, named ``wq.<queue>.<role>``:
  tasks    quorum queue of items (persistent messages); consumers use prefetch and manual ack
  done     receipts {"ids": [[start, end], ...]}, one per batch of items done, naming them by
           index ranges, merged as they are counted (an item settled twice counts once)
  dead     dead-lettered items with their last error
  retries  one receipt per retry          seed     one message: the seeding cursor
  seeded   one message once seeding is complete: {total, fingerprint}
  refused  one message while the seeder's last attempt was refused: its reason
  delayed  quorum queue of failed items waiting out their retry delay: each has a TTL, and the
           server moves it to `tasks` when that runs out (at-least-once dead-lettering)
  report   records of settled items, [[id, record], ...] per message: one message per settle,
           published in its transaction, and merged into chunks as the report is read
  isolated quorum queue of suspects: tasks that came back from a worker that held others too;
           each runs alone, so that a crash while it runs is charged to it alone
  suspects quorum queue of tasks that came back from a worker that held them alone: each waits
           one lease (TTL), then moves to `isolated`, where it is charged the run unless
  pardons  holds a word from its worker, alive, that only its connection was lost
           {"id", "token", "at"}

Settling items publishes their receipt and acks the deliveries in one AMQP transaction, so each
item is counted once, as done or dead. A transaction is not atomic across queues, though (a lost
node, a crash mid-commit): a receipt may outlive its acks, and its items run and settle again;
receipts name their items, so those still count once. That keeps "drained" exact:
done + dead == total, with nothing waiting.
A retry republishes the item with its attempt count in a header; a worker that dies mid-item drops
its connection and the server redelivers (x-delivery-count counts those returns), so there is no
lease to reap. A dropped connection looks the same to the server as a dead worker, so a return
is charged only after the lease, and only if the worker did not vouch for it (`pardons`).
"""

from .broker import RabbitMQBroker

__all__ = ["RabbitMQBroker"]
