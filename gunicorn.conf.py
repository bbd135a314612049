"""gunicorn settings read from the working directory (`gunicorn wsgi:app`).

gunicorn answers an over-long request line or header with its own HTML page before the app sees
the request. Its limits are set to the largest it allows here, above the app's own
(core/request_limits.py: URL 4 KiB, 100 header fields of 8 KiB), so that the app refuses first,
as problem+json. A request line over 8190 bytes is still answered by gunicorn itself: its only
larger setting is 0 = unlimited, which would let one request line fill a worker's memory.
"""

limit_request_line = 8190
limit_request_fields = 200
limit_request_field_size = 16380
