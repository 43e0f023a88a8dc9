"""The Broker contract, run against every broker (memory always; the real ones on their servers).

The checks live in :mod:`mesh.testing.brokers` so an adapter outside this repository runs the
same ones; here they are parametrised over every broker type. A check that needs a capability a
broker lacks is skipped by its ``Features`` record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mesh.testing.brokers import CONTRACT, ContractCheck, FeatureMissing
from tests.support import unique

pytestmark = pytest.mark.timeout(90)


@pytest.mark.parametrize("check", CONTRACT, ids=str)
async def test_contract(check: ContractCheck, make_broker: Callable[..., Any]) -> None:
    try:
        await check.run(make_broker, unique)
    except FeatureMissing as exc:
        pytest.skip(str(exc))


def test_every_check_is_listed() -> None:
    import mesh.testing.brokers as suite

    defined = {name.removeprefix("check_") for name in vars(suite) if name.startswith("check_")}
    assert defined == {c.name for c in CONTRACT}
