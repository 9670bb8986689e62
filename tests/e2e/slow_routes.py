"""Routes whose handler takes its time (a slow backend), for the gateway's tests."""

from __future__ import annotations

import json
import time
from typing import Any

SLOW_SECONDS = 4.0
SLOWER_SECONDS = 10.0


def slow(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(SLOW_SECONDS)
    return {"statusCode": 200, "body": json.dumps({"route": "slow"})}


def slower(event: dict[str, Any], context: Any) -> dict[str, Any]:
    time.sleep(SLOWER_SECONDS)
    return {"statusCode": 200, "body": json.dumps({"route": "slower"})}
