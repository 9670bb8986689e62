"""An application route for the local gateway's route-selection tests."""

from __future__ import annotations

import json
from typing import Any

from tether.liveness import counts_as_sign_of_life


@counts_as_sign_of_life
def echo(event: dict[str, Any], context: Any) -> dict[str, Any]:
    body = json.loads(event["body"])
    return {
        "statusCode": 200,
        "body": json.dumps({"echo": body, "route": event["requestContext"]["routeKey"]}),
    }


def quiet(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A route that answers nothing back (a fire-and-forget message)."""
    return {"statusCode": 200}


def unsendable(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A route whose answer is not valid text (a lone surrogate, as json.loads of a
    client's "\\ud800" gives): it cannot be sent."""
    return {"statusCode": 200, "body": "half a character: \ud800"}


def exits(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A route that ends its process, as application code calling sys.exit() does: on
    AWS, Lambda's runtime fails that one invocation (Runtime.ExitError)."""
    raise SystemExit(3)
