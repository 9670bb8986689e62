"""The operators' API and live page (FastAPI through Mangum), behind an API Gateway HTTP API."""

from mangum import Mangum

from tether.admin.app import TEXT_MIME_TYPES, create_app
from tether.aws.observability import invocation

lambda_handler = invocation(Mangum(create_app(), lifespan="off", text_mime_types=TEXT_MIME_TYPES))

__all__ = ["lambda_handler"]
