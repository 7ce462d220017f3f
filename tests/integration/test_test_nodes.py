"""The tests' own RabbitMQ nodes recover from rabbitmq-server#16652: a queue deleted while its
dead-letter worker registers (the teardown of a test that restarted the node) crash-loops that
worker until the node's supervisor of them gives up for good. Every later at-least-once queue
then answers 541 at its declaration and never moves a message: in CI, three crash-isolation
tests on 4.0 each waited out their 600 s after a 541 at setup.
"""

from __future__ import annotations

import pytest

from conftest import VERSIONS
from servers import RabbitNode

pytestmark = pytest.mark.slow


def test_a_restarted_node_that_lost_its_dead_letter_supervisor_is_restarted_again():
    node = RabbitNode(root=VERSIONS["rabbitmq-4.0"]).start()
    try:
        # Given a node restarted by a test, whose dead-letter supervisor has given up since
        node.restart()
        node.stop_dead_lettering()
        assert not node.dead_lettering_runs()
        boots = node.boots
        # When the next test asks for it, it is restarted, and dead-letters again (a restart
        # waits for an expired message to move between two quorum queues)
        assert node.heal()
        assert node.boots == boots + 1 and node.dead_lettering_runs()
        # And a node checked since its last boot is not checked again
        node.stop_dead_lettering()
        assert not node.heal()
    finally:
        node.cleanup()
