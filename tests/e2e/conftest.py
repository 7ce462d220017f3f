"""`make e2e`'s bookkeeping: each case's outcome, and the table printed at the end."""

from __future__ import annotations

import pytest

from e2e_support import CALL_FAILED, RESULTS, results_table


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Let the `case` fixture know, as it tears down, whether the test itself failed."""
    report = yield
    if report.when == "call" or (report.when == "setup" and report.failed):
        item.stash[CALL_FAILED] = report.failed
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    if RESULTS:
        terminalreporter.write_sep("=", "e2e cases")
        terminalreporter.write_line(results_table(RESULTS))
